//! Text from the network — close reasons, `Error` and `Warning` text, transcripts — made safe
//! to show. A server (or anything between it and us) can put escape sequences, bidi overrides
//! and megabytes into a close reason; printed as they are, they rewrite the user's terminal or
//! flood the log. Everything untrusted goes through here on its way out. A JSON value that is
//! not what was expected is described by its kind ([`json_kind`]), never shown.

use std::borrow::Cow;

/// Longest untrusted text shown on a terminal, stderr or the log, in characters.
pub const TERMINAL_MAX_CHARS: usize = 512;

/// Longest untrusted text put in an NDJSON event, in bytes (JSON escaping already makes control
/// characters harmless there; only the size is bounded).
pub const JSON_MAX_BYTES: usize = 4096;

const ELLIPSIS: char = '…';

/// Characters that change how a terminal shows what follows: C0 and C1 controls (ESC starts
/// escape sequences, CSI is one in C1), DEL, and the Unicode bidi controls that can make text
/// read differently from what it is ("Trojan Source").
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// For a terminal line, stderr or the log: unsafe characters dropped (line breaks and tabs
/// become spaces), at most [`TERMINAL_MAX_CHARS`] characters (then `…`).
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    let clean = text.chars().all(|c| !is_unsafe(c));
    if clean && text.len() <= TERMINAL_MAX_CHARS {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(TERMINAL_MAX_CHARS * 4));
    let mut chars = 0;
    for c in text.chars() {
        let c = match c {
            '\n' | '\r' | '\t' => ' ',
            c if is_unsafe(c) => continue,
            c => c,
        };
        if chars == TERMINAL_MAX_CHARS {
            out.push(ELLIPSIS);
            break;
        }
        out.push(c);
        chars += 1;
    }
    Cow::Owned(out)
}

/// For text shown in full on the dashboard (a transcript turn): unsafe characters dropped,
/// nothing cut.
pub fn without_controls(text: &str) -> Cow<'_, str> {
    if text.chars().all(|c| !is_unsafe(c)) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .filter_map(|c| match c {
                '\n' | '\r' | '\t' => Some(' '),
                c if is_unsafe(c) => None,
                c => Some(c),
            })
            .collect(),
    )
}

/// For a line of a text file someone will `cat` (a transcript, a caption's text, a label or a
/// name from the server): the terminal-safe form of [`without_controls`], nothing cut. A final
/// holding `ESC[2J` or an OSC 52 sequence must not clear the screen or write the clipboard of
/// whoever reads the file.
pub fn for_text_file(text: &str) -> Cow<'_, str> {
    without_controls(text)
}

/// For the text of a subtitle cue (SRT, WebVTT): [`for_text_file`] (so no line break, hence no
/// blank line that would end the cue) and no `-->`, which would make the line a cue's timing:
/// server text cannot add cues. `-->` becomes `→`.
pub fn for_cue(text: &str) -> Cow<'_, str> {
    let safe = for_text_file(text);
    if safe.contains("-->") {
        Cow::Owned(safe.replace("-->", "→"))
    } else {
        safe
    }
}

/// For an NDJSON field: at most [`JSON_MAX_BYTES`] (cut on a character boundary, then `…`).
pub fn for_json(text: &str) -> Cow<'_, str> {
    if text.len() <= JSON_MAX_BYTES {
        return Cow::Borrowed(text);
    }
    let mut end = JSON_MAX_BYTES - ELLIPSIS.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{ELLIPSIS}", &text[..end]))
}

/// The kind of a JSON value, as words for a message ("a string", "an object"): an error about
/// a document from outside (a token answer, a fault rule) says what arrived without echoing it.
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON document by its shape, never its content: an object's keys (the first 8, each shown
/// only when it is a plain name of at most 40 letters, digits, `_` or `-`) with the kind of
/// each value: `{"token": a string, "expires_in_seconds": a string}`. What a server sent is
/// described well enough to see what is wrong with it, and no value in it (a token of any
/// length) is repeated.
pub fn json_shape(value: &serde_json::Value) -> String {
    use serde_json::Value;
    const KEYS: usize = 8;
    match value {
        Value::Object(object) => {
            let mut fields: Vec<String> = object
                .iter()
                .take(KEYS)
                .map(|(key, value)| {
                    let plain = !key.is_empty()
                        && key.len() <= 40
                        && key
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
                    let key = if plain { key.as_str() } else { "…" };
                    format!("\"{key}\": {}", json_kind(value))
                })
                .collect();
            if object.len() > KEYS {
                fields.push(format!("… ({} keys)", object.len()));
            }
            format!("{{{}}}", fields.join(", "))
        }
        Value::Array(items) => format!("an array of {} values", items.len()),
        other => json_kind(other).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_bidi_overrides_are_dropped() {
        let evil = "Bad\u{1b}[2J\u{1b}]0;pwned\u{7}request\u{9b}31m \u{202E}txt.exe\nnext";
        let shown = for_terminal(evil);
        assert_eq!(shown, "Bad[2J]0;pwnedrequest31m txt.exe next");
        assert!(shown.chars().all(|c| !is_unsafe(c)));
        assert_eq!(without_controls("a\u{1b}[1mb\tc"), "a[1mb c");
        assert!(matches!(for_terminal("plain words"), Cow::Borrowed(_)));
    }

    #[test]
    fn cues_hold_no_timing_line_and_no_blank_line() {
        let evil = "a\n\n2\n00:00:01,000 --> 00:00:02,000\ninjected\u{1b}]52;c;cHduZWQ=\u{7} --->";
        let cue = for_cue(evil);
        assert!(!cue.contains("-->"), "{cue}");
        assert!(!cue.contains('\n') && !cue.contains('\u{1b}'), "{cue}");
        assert_eq!(for_cue("plain -> text"), "plain -> text");
        assert!(matches!(for_cue("plain"), Cow::Borrowed(_)));
    }

    proptest::proptest! {
        /// Whatever a server sends, a cue's text is one line with no control character, no
        /// bidi override and no `-->`; a text file's line likewise has no control character.
        #[test]
        fn any_text_becomes_a_safe_cue(text in "[-> \\n\\r\\x1b\\x07\\x9b\\u{202e}a-z0-9]{0,64}|\\PC{0,64}") {
            let cue = for_cue(&text);
            proptest::prop_assert!(!cue.contains("-->"), "{:?}", cue);
            proptest::prop_assert!(cue.chars().all(|c| !is_unsafe(c)), "{:?}", cue);
            let line = for_text_file(&text);
            proptest::prop_assert!(line.chars().all(|c| !is_unsafe(c)), "{:?}", line);
        }
    }

    #[test]
    fn lengths_are_capped() {
        let long = "é".repeat(100_000);
        let shown = for_terminal(&long);
        assert_eq!(shown.chars().count(), TERMINAL_MAX_CHARS + 1);
        assert!(shown.ends_with(ELLIPSIS));
        let json = for_json(&long);
        assert!(json.len() <= JSON_MAX_BYTES, "{}", json.len());
        assert!(json.ends_with(ELLIPSIS));
        assert_eq!(for_json("short"), "short");
    }

    #[test]
    fn json_documents_are_quoted_by_shape() {
        use serde_json::json;
        let doc = json!({"token": "short-tok-1", "expires_in_seconds": "soon", "a b\u{1b}": 1});
        let shape = json_shape(&doc);
        assert_eq!(
            shape,
            r#"{"…": a number, "expires_in_seconds": a string, "token": a string}"#
        );
        assert_eq!(json_shape(&json!([1, 2])), "an array of 2 values");
        assert_eq!(json_shape(&json!("tok")), "a string");
    }

    proptest::proptest! {
        /// No string value of a document ever appears in its shape.
        #[test]
        fn shapes_repeat_no_value(secret in "[A-Z0-9+/=]{1,30}", key in "[a-z_]{1,12}") {
            let doc = serde_json::json!({ format!("k_{key}"): secret.clone(), "list": [secret.clone()] });
            let shape = json_shape(&doc);
            proptest::prop_assert!(!shape.contains(&secret), "{}", shape);
            proptest::prop_assert!(shape.contains("a string"), "{}", shape);
        }
    }

    #[test]
    fn json_values_are_named_by_kind() {
        use serde_json::json;
        let kinds: Vec<&str> = [
            json!(null),
            json!(true),
            json!(1.5),
            json!("x"),
            json!([]),
            json!({}),
        ]
        .iter()
        .map(json_kind)
        .collect();
        assert_eq!(
            kinds,
            [
                "null",
                "a boolean",
                "a number",
                "a string",
                "an array",
                "an object"
            ]
        );
    }
}
