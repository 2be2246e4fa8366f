//! The failure panel: what happened and what to do, above the transcript (which stays). A failed
//! provider, a refused key, a lost device: each becomes one of these, never a crash.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{Ctx, wrap};
use crate::app::state::DashboardState;

/// Rows the panel needs at `width`, at most `max` (0 when there is no problem).
pub fn height(state: &DashboardState, width: u16, max: u16) -> u16 {
    let Some(problem) = state.problems.first() else {
        return 0;
    };
    let room = usize::from(width.saturating_sub(2)).max(1);
    let mut lines = wrap(&problem.detail, room).len() + wrap(&problem.hint, room).len();
    if state.problems.len() > 1 {
        lines += 1;
    }
    (lines as u16 + 2).min(max)
}

pub fn render(frame: &mut Frame<'_>, area: Rect, cx: Ctx<'_>) {
    let Ctx { state, t, .. } = cx;
    let Some(problem) = state.problems.first() else {
        return;
    };
    let block = t
        .block(Line::styled(format!(" {} ", problem.title), t.error()))
        .border_style(t.error());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let room = usize::from(inner.width).max(1);
    let rows = usize::from(inner.height);
    let mut detail = wrap(&problem.detail, room);
    let hint = wrap(&problem.hint, room);
    let also = state.problems.len() > 1;
    // When the panel is short, the hint (what to do) wins over the tail of the detail.
    let keep = rows.saturating_sub(hint.len() + usize::from(also)).max(1);
    if detail.len() > keep {
        detail.truncate(keep);
        if let Some(last) = detail.last_mut() {
            last.push_str(t.ellipsis());
        }
    }
    let mut lines: Vec<Line<'static>> = detail
        .into_iter()
        .map(|l| Line::styled(l, t.text()))
        .collect();
    lines.extend(hint.into_iter().map(|l| Line::styled(l, t.strong())));
    if also {
        let others: Vec<&str> = state.problems[1..]
            .iter()
            .map(|p| p.title.as_str())
            .collect();
        lines.push(Line::from(vec![
            Span::styled("also: ", t.label()),
            Span::styled(others.join("; "), t.warn()),
        ]));
    }
    lines.truncate(rows);
    frame.render_widget(Paragraph::new(lines), inner);
}
