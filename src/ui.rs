//! The dashboard's view: `render(frame, &state, now)` draws the whole screen from the model and
//! the current time, and nothing else, so a frame is reproducible (snapshot tests render at a
//! fixed `now`). One file per screen area; styles and symbols in `theme`.
//!
//! ```text
//! full (≥ 70×20)                                   wide (≥ 140×36): three panels, events beside
//! ┌──────────────────────────────────────────────┐
//! │ header: badge, session, elapsed, provider    │ 2 rows
//! ├ lifetimes ───────────────┬ audio ────────────┤ 6 rows (8 wide)
//! │ session gauge, token,    │ level, peak,      │
//! │ rotations, last close    │ input, latency    │
//! ├ problem (only on failure) ───────────────────┤ 3-7 rows
//! │ guide: what you are seeing (demo only)       │ 1 row
//! ├ transcript ────────────────┬ events (toggle) ┤ the rest
//! │ [00:12] final turns        │ state changes   │
//! │ [00:15] live partial…      │ and errors      │
//! ├──────────────────────────────────────────────┤
//! │ footer: main keys, or a notice               │ 1 row
//! └──────────────────────────────────────────────┘
//! compact (< 70×20): 1-row header, 2 status rows, transcript, footer; help is an overlay.
//! ```

pub mod audio;
pub mod events;
pub mod footer;
pub mod guide;
pub mod header;
pub mod help;
pub mod lifetimes;
pub mod problem;
pub mod theme;
pub mod transcript;

use std::time::{Duration, SystemTime};

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::state::DashboardState;
pub use theme::Theme;

/// Smaller than this, only a "too small" message is drawn.
pub const MIN_SIZE: (u16, u16) = (40, 10);
/// From this size, the full layout with panels.
pub const FULL_SIZE: (u16, u16) = (70, 20);
/// From this size, the wide layout.
pub const WIDE_SIZE: (u16, u16) = (140, 36);

/// What every panel is drawn from: the model, the instant of the frame and the theme — one
/// value passed by copy, rather than the same three arguments to every function.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub state: &'a DashboardState,
    pub now: SystemTime,
    pub t: Theme,
}

/// Draw the whole dashboard.
pub fn render(frame: &mut Frame<'_>, state: &DashboardState, now: SystemTime) {
    let area = frame.area();
    let theme = Theme::new(state.ui);
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        too_small(frame, area, theme);
        return;
    }
    let cx = Ctx {
        state,
        now,
        t: theme,
    };
    let full = area.width >= FULL_SIZE.0 && area.height >= FULL_SIZE.1;
    let wide = area.width >= WIDE_SIZE.0 && area.height >= WIDE_SIZE.1;
    let problem_height = problem::height(state, area.width, if full { 7 } else { 4 });
    let guide_height = guide::height(cx);
    let (header_h, panels_h) = if wide {
        (2, 8)
    } else if full {
        (2, 6)
    } else {
        (1, 2)
    };
    let [
        header_area,
        panels_area,
        problem_area,
        guide_area,
        body_area,
        footer_area,
    ] = Layout::vertical([
        Constraint::Length(header_h),
        Constraint::Length(panels_h),
        Constraint::Length(problem_height),
        Constraint::Length(guide_height),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);

    header::render(frame, header_area, cx);
    if full {
        let ratios: &[u16] = if wide { &[40, 30, 30] } else { &[55, 45] };
        let columns =
            Layout::horizontal(ratios.iter().map(|&r| Constraint::Fill(r))).split(panels_area);
        lifetimes::render(frame, columns[0], cx, wide);
        if wide {
            audio::render(frame, columns[1], cx, false);
            audio::render_throughput(frame, columns[2], cx);
        } else {
            audio::render(frame, columns[1], cx, true);
        }
    } else {
        compact_status(frame, panels_area, cx);
    }
    if problem_height > 0 {
        problem::render(frame, problem_area, cx);
    }
    if guide_height > 0 {
        guide::render(frame, guide_area, cx);
    }
    if state.show_events {
        if wide || (full && area.width >= 110) {
            let [left, right] =
                Layout::horizontal([Constraint::Fill(3), Constraint::Fill(2)]).areas(body_area);
            transcript::render(frame, left, cx);
            events::render(frame, right, cx);
        } else {
            let events_h = (body_area.height / 2).clamp(3, 10);
            let [top, bottom] =
                Layout::vertical([Constraint::Min(3), Constraint::Length(events_h)])
                    .areas(body_area);
            transcript::render(frame, top, cx);
            events::render(frame, bottom, cx);
        }
    } else {
        transcript::render(frame, body_area, cx);
    }
    footer::render(frame, footer_area, cx);
    if state.show_help {
        help::render(frame, area, cx);
    }
}

fn too_small(frame: &mut Frame<'_>, area: Rect, theme: Theme) {
    let text = format!(
        "aai-live: the terminal is {}x{}; make it at least {}x{}. q quits.",
        area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
    );
    let lines: Vec<Line<'_>> = wrap(&text, usize::from(area.width.max(1)))
        .into_iter()
        .map(|l| Line::styled(l, theme.warn()))
        .collect();
    frame.render_widget(Paragraph::new(lines), area);
}

/// The two status rows of the compact layout.
fn compact_status(frame: &mut Frame<'_>, area: Rect, cx: Ctx<'_>) {
    let width = usize::from(area.width);
    let first = lifetimes::session_line(cx, width);
    let second = audio::compact_line(cx, width);
    frame.render_widget(Paragraph::new(vec![first, second]), area);
}

/// Greedy word wrap to `width` display columns. Words longer than a line are split.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut used = 0;
    for word in text.split_whitespace() {
        let w = display_width(word);
        if used > 0 && used + 1 + w <= width {
            line.push(' ');
            line.push_str(word);
            used += 1 + w;
            continue;
        }
        if used > 0 {
            lines.push(std::mem::take(&mut line));
            used = 0;
        }
        if w <= width {
            line.push_str(word);
            used = w;
            continue;
        }
        // A word wider than the line: cut it by characters.
        for c in word.chars() {
            let cw = display_width(c.encode_utf8(&mut [0; 4]));
            if used + cw > width && used > 0 {
                lines.push(std::mem::take(&mut line));
                used = 0;
            }
            line.push(c);
            used += cw;
        }
    }
    if used > 0 || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Columns a string takes on screen.
pub fn display_width(s: &str) -> usize {
    Span::raw(s).width()
}

/// Cut `s` to `width` columns, ending with an ellipsis when cut.
pub fn truncate(s: &str, width: usize, ellipsis: &str) -> String {
    if display_width(s) <= width {
        return s.to_owned();
    }
    let room = width.saturating_sub(display_width(ellipsis));
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let cw = display_width(c.encode_utf8(&mut [0; 4]));
        if used + cw > room {
            break;
        }
        out.push(c);
        used += cw;
    }
    if width >= display_width(ellipsis) {
        out.push_str(ellipsis);
    }
    out
}

/// Time from `now` until `at` (zero once passed).
pub fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or_default()
}

/// Time from `at` until `now` (zero if `at` is later).
pub fn since(at: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(at).unwrap_or_default()
}

/// A horizontal bar `cells` wide, `ratio` (0..=1) filled.
pub fn bar(ratio: f64, cells: usize, t: Theme) -> (String, String) {
    let ratio = if ratio.is_finite() {
        ratio.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let filled = ((ratio * cells as f64).round() as usize).min(cells);
    (t.full().repeat(filled), t.empty().repeat(cells - filled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_is_greedy_and_splits_long_words() {
        assert_eq!(
            wrap("the quick brown fox", 9),
            vec!["the quick", "brown fox"]
        );
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 5), vec![""]);
        assert_eq!(wrap("a  b", 10), vec!["a b"]);
    }

    #[test]
    fn truncate_marks_the_cut() {
        assert_eq!(truncate("hello world", 8, "…"), "hello w…");
        assert_eq!(truncate("hello", 8, "…"), "hello");
        assert_eq!(truncate("hello world", 8, "..."), "hello...");
    }

    #[test]
    fn bar_fills_by_ratio() {
        let t = Theme {
            mono: false,
            ascii: true,
        };
        assert_eq!(bar(0.5, 4, t), ("##".into(), "..".into()));
        assert_eq!(bar(f64::NAN, 2, t), (String::new(), "..".into()));
    }
}
