//! docs/architecture.md is the map of the crate: this test holds it against the code. Every
//! `crate::` path in src/ (in `use` lines, grouped or not, and inline in code) is an edge between
//! two top-level modules; the edges must be exactly those of the documented table ("Dependencies
//! between modules"), no more (an undocumented dependency) and no fewer (a claim that is no
//! longer true). Edges point one way: the only loop between modules is the documented one
//! (`app` ↔ `ui`: the model and its pure render). It also checks the documented home of
//! `anyhow` and that every module is listed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

type Edges = BTreeMap<String, BTreeSet<String>>;

/// All `.rs` files under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The source without comments, string and char literals (so prose and messages that mention
/// `crate::x` do not count as dependencies).
fn code_only(source: &str) -> String {
    let b = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                && !b[..i]
                    .last()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') =>
            {
                // Raw string: r"..." or r#"..."#.
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                j += 1;
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                while j < b.len() && !b[j..].starts_with(&close) {
                    j += 1;
                }
                i = j + close.len();
                out.push_str("\"\"");
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}') or a lifetime ('a): skip only literals.
                let literal = matches!(
                    (b.get(i + 1), b.get(i + 2)),
                    (Some(b'\\'), _) | (Some(_), Some(b'\''))
                );
                if literal {
                    i += 1;
                    while i < b.len() && b[i] != b'\'' {
                        if b[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                    i += 1;
                    out.push_str("' '");
                } else {
                    out.push('\'');
                    i += 1;
                }
            }
            _ => {
                // Keep multi-byte characters whole.
                let ch = source[i..].chars().next().expect("char boundary");
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

/// The first path segments named by a use-tree or path that starts right after `crate::`:
/// `foo::Bar` → foo; `{foo::{A, B}, bar, self}` → foo, bar.
fn first_segments(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut items = Vec::new();
        let mut current = String::new();
        for c in inner.chars() {
            match c {
                '{' => {
                    depth += 1;
                    current.push(c);
                }
                '}' if depth == 0 => break,
                '}' => {
                    depth -= 1;
                    current.push(c);
                }
                ',' if depth == 0 => items.push(std::mem::take(&mut current)),
                _ => current.push(c),
            }
        }
        items.push(current);
        return items
            .iter()
            .filter_map(|item| ident(item.trim()))
            .filter(|name| name != "self")
            .collect();
    }
    ident(rest).into_iter().collect()
}

fn ident(text: &str) -> Option<String> {
    let name: String = text
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The top-level module a file belongs to (`src/session/machine.rs` → `session`), `None` for
/// the crate root and the binary.
fn top_module(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(Path::new(ROOT).join("src")).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// Every edge between top-level modules found in src/, with one file that makes it.
fn code_edges() -> (Edges, BTreeMap<(String, String), PathBuf>) {
    let mut edges = Edges::new();
    let mut witness = BTreeMap::new();
    for file in rust_files(&Path::new(ROOT).join("src")) {
        let Some(from) = top_module(&file) else {
            continue;
        };
        edges.entry(from.clone()).or_default();
        let code = code_only(&std::fs::read_to_string(&file).expect("read source"));
        let mut at = 0;
        while let Some(pos) = code[at..].find("crate::") {
            let start = at + pos;
            at = start + "crate::".len();
            // `aai_live_crate::` or `$crate::` are not ours.
            let before = code[..start].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            for to in first_segments(&code[at..]) {
                if to != from {
                    witness
                        .entry((from.clone(), to.clone()))
                        .or_insert_with(|| file.clone());
                    edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    (edges, witness)
}

fn architecture_doc() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("docs/architecture.md"))
        .expect("docs/architecture.md")
}

/// The documented table: rows `| `module` | `a`, `b` (...) | why |` under the heading
/// "Dependencies between modules". Backticked names in the second column are the edges
/// (`app::state` counts as `app`), parenthesised notes are not; `—` means none.
fn documented_edges(doc: &str) -> Edges {
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Dependencies between modules"))
        .expect("docs/architecture.md has a \"## Dependencies between modules\" section");
    let mut edges = Edges::new();
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(module), Some(uses)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Some(module) = backticked(module).into_iter().next() else {
            continue; // header or separator row
        };
        let to: BTreeSet<String> = backticked(&without_notes(uses))
            .into_iter()
            .map(|name| name.split("::").next().unwrap_or_default().to_owned())
            .collect();
        assert!(
            edges.insert(module.clone(), to).is_none(),
            "module `{module}` has two rows in the table"
        );
    }
    edges
}

/// `text` without its parenthesised notes.
fn without_notes(text: &str) -> String {
    let mut depth = 0_u32;
    text.chars()
        .filter(|c| match c {
            '(' => {
                depth += 1;
                false
            }
            ')' => {
                depth = depth.saturating_sub(1);
                false
            }
            _ => depth == 0,
        })
        .collect()
}

fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The top-level modules declared in src/lib.rs.
fn declared_modules() -> BTreeSet<String> {
    std::fs::read_to_string(Path::new(ROOT).join("src/lib.rs"))
        .expect("src/lib.rs")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_owned())
        .collect()
}

#[test]
fn module_edges_are_exactly_the_documented_ones() {
    let (code, witness) = code_edges();
    let documented = documented_edges(&architecture_doc());
    let mut problems = Vec::new();
    for module in declared_modules() {
        if !documented.contains_key(&module) {
            problems.push(format!("module `{module}` has no row in the table"));
        }
    }
    for (from, tos) in &code {
        let allowed = documented.get(from).cloned().unwrap_or_default();
        for to in tos.difference(&allowed) {
            problems.push(format!(
                "`{from}` uses `{to}` (e.g. in {}), which the table does not list",
                witness[&(from.clone(), to.clone())]
                    .strip_prefix(ROOT)
                    .unwrap_or(Path::new("?"))
                    .display()
            ));
        }
    }
    for (from, tos) in &documented {
        let used = code.get(from).cloned().unwrap_or_default();
        for to in tos.difference(&used) {
            problems.push(format!(
                "the table says `{from}` uses `{to}`, but no `crate::{to}` path in src/{from}* \
                 does"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/architecture.md and the code disagree:\n  {}",
        problems.join("\n  ")
    );
}

/// The groups of modules that reach each other (strongly connected components of more than one
/// module), each sorted: every module in a group depends, through others, on every other.
fn loops(edges: &Edges) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges
        .keys()
        .chain(edges.values().flat_map(|tos| tos.iter()))
        .collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for to in edges.get(&n).into_iter().flatten() {
                if seen.insert(to.clone()) {
                    stack.push(to.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut groups: BTreeSet<Vec<String>> = BTreeSet::new();
    for n in &nodes {
        let group: Vec<String> = nodes
            .iter()
            .filter(|m| reached[*n].contains(**m) && reached[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        if group.len() > 1 {
            groups.insert(group);
        }
    }
    groups.into_iter().collect()
}

/// The loop the architecture allows: the dashboard's model (`app`) renders through `ui`, which
/// reads the model's state types.
const ALLOWED_LOOP: [&str; 2] = ["app", "ui"];

#[test]
fn module_edges_point_one_way() {
    let (code, _) = code_edges();
    let found = loops(&code);
    let allowed = vec![ALLOWED_LOOP.map(str::to_owned).to_vec()];
    assert_eq!(
        found, allowed,
        "modules that depend on each other (directly or through others): only app ↔ ui may"
    );
}

#[test]
fn the_loop_finder_finds_loops() {
    let edge = |from: &str, to: &[&str]| {
        (
            from.to_owned(),
            to.iter().map(|t| (*t).to_owned()).collect(),
        )
    };
    let edges: Edges = [
        edge("a", &["b"]),
        edge("b", &["c"]),
        edge("c", &["a", "d"]),
        edge("d", &[]),
        edge("e", &["d"]),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        loops(&edges),
        vec![vec!["a".to_owned(), "b".into(), "c".into()]]
    );
}

#[test]
fn anyhow_only_where_documented() {
    let doc = architecture_doc();
    let line = doc
        .lines()
        .find(|l| l.contains("`anyhow` only in"))
        .expect("docs/architecture.md names where `anyhow` is used (\"`anyhow` only in ...\")");
    let allowed: BTreeSet<String> = backticked(line)
        .into_iter()
        .filter(|name| Path::new(name).extension().is_some_and(|e| e == "rs"))
        .collect();
    let mut found = BTreeSet::new();
    for file in rust_files(&Path::new(ROOT).join("src")) {
        let code = code_only(&std::fs::read_to_string(&file).expect("read source"));
        if code.contains("anyhow") {
            let rel = file
                .strip_prefix(Path::new(ROOT).join("src"))
                .expect("under src");
            found.insert(rel.display().to_string());
        }
    }
    assert_eq!(
        found, allowed,
        "files using anyhow vs the files docs/architecture.md names"
    );
}

#[test]
fn the_scanner_reads_grouped_nested_and_inline_paths() {
    let code = code_only(
        "use crate::{a::{B, C}, b, self};\n// crate::commented\nlet s = \"crate::quoted\";\n\
         let r = r#\"crate::raw\"#; let x = crate::d::f(); let c = '\"'; use crate::e;",
    );
    let mut names = Vec::new();
    let mut at = 0;
    while let Some(pos) = code[at..].find("crate::") {
        at += pos + "crate::".len();
        names.extend(first_segments(&code[at..]));
    }
    assert_eq!(names, ["a", "b", "d", "e"]);
    let doc = "# x\n\n## Dependencies between modules\n\n| module | uses | why |\n|---|---|---|\n\
               | `ui` | `app::state`, `strings` (for `mm_ss`) | words |\n| `protocol` | — | leaf |\n\n\
               ## Next\n";
    let edges = documented_edges(doc);
    assert_eq!(
        edges["ui"],
        BTreeSet::from(["app".into(), "strings".into()])
    );
    assert!(edges["protocol"].is_empty());
}
