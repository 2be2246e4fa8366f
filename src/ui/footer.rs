//! The footer: the main keys from the live keymap (as many as fit, help and quit always), or a
//! short notice after an action.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Span;
use ratatui::widgets::Paragraph;

use super::Ctx;
use super::header::join_left_right;
use crate::app::action::Action;
use crate::app::state::{DashboardState, Severity};

/// The prompt being typed: what it is for, the text and a cursor, and how to finish.
fn prompt_line(
    cx: Ctx<'_>,
    prompt: &crate::app::state::Prompt,
    width: usize,
) -> ratatui::text::Line<'static> {
    use crate::app::state::PromptPurpose;
    let t = cx.t;
    let asked = match &prompt.purpose {
        PromptPurpose::SpeakerName { source, speaker } => {
            let of = source
                .as_deref()
                .and_then(|s| s.parse::<crate::config::Label>().ok())
                .map_or_else(String::new, |l| format!(" of {}", l.display_name()));
            format!(" name speaker {speaker}{of}: ")
        }
        PromptPurpose::Settings => " live settings: ".to_owned(),
    };
    let cursor = if t.ascii { "_" } else { "█" };
    let keys = "enter ok · esc cancel ";
    // A line longer than the room shows its end, where the typing is.
    let room = width.saturating_sub(asked.chars().count() + keys.chars().count() + 2);
    let typed = prompt.text.chars().count();
    let text = if typed > room {
        let tail: String = prompt
            .text
            .chars()
            .skip(typed - room.saturating_sub(1))
            .collect();
        format!("…{tail}")
    } else {
        prompt.text.clone()
    };
    join_left_right(
        vec![
            Span::styled(asked, t.label()),
            Span::styled(text, t.strong()),
            Span::styled(cursor.to_owned(), t.accent()),
        ],
        vec![Span::styled(keys.to_owned(), t.dim())],
        width,
        t,
    )
}

/// Footer keys, most important first; shown in `Action::all()` order.
const PRIORITY: [Action; 10] = [
    Action::Help,
    Action::Quit,
    Action::ToggleStream,
    Action::Pause,
    Action::ForceEndpoint,
    Action::ToggleEvents,
    Action::Reconnect,
    Action::MintToken,
    Action::Export,
    Action::Clear,
];

pub fn render(frame: &mut Frame<'_>, area: Rect, cx: Ctx<'_>) {
    let Ctx { state, now, t } = cx;
    let width = usize::from(area.width);
    if let Some(prompt) = &state.prompt {
        frame.render_widget(Paragraph::new(prompt_line(cx, prompt, width)), area);
        return;
    }
    let notice = if state.lifecycle.quitting.is_some() {
        Some((
            format!(
                "quitting: waiting for the last turns and saving{}",
                t.ellipsis()
            ),
            Severity::Info,
        ))
    } else {
        state
            .notice
            .as_ref()
            .filter(|n| n.until > now)
            .map(|n| (n.text.clone(), n.level))
    };
    let line = if let Some((text, level)) = notice {
        let right = key_spans(cx, &[Action::Help, Action::Quit]);
        join_left_right(
            vec![Span::styled(format!(" {text}"), t.severity(level))],
            right,
            width,
            t,
        )
    } else {
        let mut chosen: Vec<Action> = Vec::new();
        let mut used = 1;
        for action in PRIORITY {
            let w = item_width(state, action);
            if w > 0 && used + w <= width {
                used += w;
                chosen.push(action);
            }
        }
        let ordered: Vec<Action> = Action::all().filter(|a| chosen.contains(a)).collect();
        let mut spans = vec![Span::raw(" ")];
        spans.extend(key_spans(cx, &ordered));
        ratatui::text::Line::from(spans)
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// Columns of `key label  ` (0 when the action has no key).
fn item_width(state: &DashboardState, action: Action) -> usize {
    state.keymap.first_key(action).map_or(0, |k| {
        k.to_string().chars().count() + 1 + action.label().chars().count() + 2
    })
}

fn key_spans(cx: Ctx<'_>, actions: &[Action]) -> Vec<Span<'static>> {
    let Ctx { state, t, .. } = cx;
    let mut spans = Vec::new();
    for &action in actions {
        if let Some(key) = state.keymap.first_key(action) {
            spans.push(Span::styled(key.to_string(), t.key()));
            spans.push(Span::styled(format!(" {}  ", action.label()), t.label()));
        }
    }
    spans
}
