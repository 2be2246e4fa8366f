//! The events pane (toggle): recent state changes and errors in plain words, newest at the
//! bottom, each with its age.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{Ctx, since, wrap};

/// Width of the age column ("12s ", "3m  ").
const AGE_W: usize = 4;

pub fn render(frame: &mut Frame<'_>, area: Rect, cx: Ctx<'_>) {
    let Ctx { state, now, t } = cx;
    let block = t.block(" events ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let (width, height) = (usize::from(inner.width), usize::from(inner.height));
    let room = width.saturating_sub(AGE_W).max(1);
    let mut up: Vec<Line<'static>> = Vec::with_capacity(height);
    for entry in state.events.entries().iter().rev() {
        if up.len() >= height {
            break;
        }
        let style = t.severity(entry.level);
        let pieces = wrap(&entry.text, room);
        let mut lines: Vec<Line<'static>> = pieces
            .into_iter()
            .enumerate()
            .map(|(n, piece)| {
                let first = if n == 0 {
                    Span::styled(format!("{:<AGE_W$}", age(since(entry.at, now))), t.dim())
                } else {
                    Span::raw(" ".repeat(AGE_W))
                };
                Line::from(vec![first, Span::styled(piece, style)])
            })
            .collect();
        lines.reverse();
        up.extend(lines);
    }
    if up.is_empty() {
        up.push(Line::styled("nothing yet", t.dim()));
    }
    up.truncate(height);
    up.reverse();
    frame.render_widget(Paragraph::new(up), inner);
}

/// A short age: `now`, `12s`, `3m`, `2h`.
fn age(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "now".into(),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}
