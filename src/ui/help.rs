//! The help overlay, generated from the live keymap: every action with its keys and what it
//! does, so rebinding in `[keys]` shows here at once.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

use super::header::clip;
use super::{Ctx, display_width};
use crate::app::action::Action;

pub fn render(frame: &mut Frame<'_>, area: Rect, cx: Ctx<'_>) {
    let Ctx { state, t, .. } = cx;
    let keys: Vec<(String, &str)> = Action::all()
        .map(|a| (state.keymap.keys_text(a), a.describe()))
        .chain([
            ("mouse wheel".to_owned(), "scroll the transcript"),
            ("esc".to_owned(), "close this help"),
        ])
        .collect();
    let key_w = keys
        .iter()
        .map(|(k, _)| display_width(k))
        .max()
        .unwrap_or(0)
        .min(16);
    let want_w = keys
        .iter()
        .map(|(_, d)| key_w + 2 + display_width(d))
        .max()
        .unwrap_or(0)
        + 4;
    let width = (want_w as u16).min(area.width.saturating_sub(2)).max(20);
    let height = (keys.len() as u16 + 2)
        .min(area.height.saturating_sub(2))
        .max(5);
    let popup = area.centered(Constraint::Length(width), Constraint::Length(height));
    let block = t.block(" keys (rebind them in [keys] of the config file) ");
    let inner = block.inner(popup);
    frame.render_widget(Clear, popup);
    frame.render_widget(block, popup);
    let room = usize::from(inner.width);
    let mut lines: Vec<Line<'static>> = Vec::new();
    for (key, what) in keys {
        lines.push(clip(
            vec![
                Span::styled(format!(" {key:>key_w$}  "), t.key()),
                Span::styled(what.to_owned(), t.text()),
            ],
            room,
            t,
        ));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}
