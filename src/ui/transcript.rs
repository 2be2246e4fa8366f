//! The transcript pane: final turns with their stream time and speaker, and the live partial
//! below them, styled apart. Lines are built from the bottom turn upwards only until the pane is
//! full, so a frame costs the same with 100 or 100 000 turns in history.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{Ctx, Theme, display_width, wrap};
use crate::app::action::Action;
use crate::app::transcript::Turn;

pub fn render(frame: &mut Frame<'_>, area: Rect, cx: Ctx<'_>) {
    let Ctx { state, t, .. } = cx;
    let view = &state.transcript;
    let title = if state.info.demo.is_some() {
        " transcript (offline demo: the emulator knows the recording's words) "
    } else if state.limits.partials_withheld {
        " transcript (personal information redacted: each turn shows when it ends) "
    } else if state.limits.redacting {
        " transcript (personal information redacted) "
    } else {
        " transcript "
    };
    let mut block = t.block(title);
    if !view.is_following() {
        let follow = state
            .keymap
            .first_key(Action::ScrollBottom)
            .map_or_else(String::new, |k| format!("{}{k} to follow", t.dot()));
        let n = view.below();
        block = block.title_bottom(Line::styled(
            format!(
                " {} {n} new turn{} below{follow} ",
                t.down(),
                if n == 1 { "" } else { "s" }
            ),
            t.warn(),
        ));
    }
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let lines = visible_lines(cx, usize::from(inner.width), usize::from(inner.height));
    let lines = if lines.is_empty() {
        placeholder(cx, usize::from(inner.width))
    } else {
        lines
    };
    frame.render_widget(Paragraph::new(lines), inner);
}

/// The lines that fit, bottom-aligned: from the bottom turn (and the partial, when following)
/// upwards, stopping once `height` lines are collected.
pub fn visible_lines(cx: Ctx<'_>, width: usize, height: usize) -> Vec<Line<'static>> {
    let Ctx { state, t, .. } = cx;
    let view = &state.transcript;
    let mut up: Vec<Line<'static>> = Vec::with_capacity(height);
    if height == 0 || width == 0 {
        return up;
    }
    if view.is_following()
        && let Some(p) = view.partial()
    {
        let text = format!("{}{}", p.text, t.ellipsis());
        for line in stamped(p.start_ms, None, &text, width, t, t.partial())
            .into_iter()
            .rev()
        {
            up.push(line);
        }
    }
    if let Some(bottom) = view.bottom() {
        let all = view.all();
        let mut i = bottom + 1;
        while i > view.visible_from() && up.len() < height {
            i -= 1;
            let turn: &Turn = &all[i];
            let input = turn
                .source
                .as_deref()
                .and_then(|label| state.sources.iter().position(|s| s.label.as_str() == label));
            // An echo (the microphone hearing the speakers) is kept, dimmed and marked.
            let (who, style) = match (turn.who(), turn.echo) {
                (Some(who), true) => (Some(format!("{who} (echo)")), t.dim()),
                (None, true) => (Some("(echo)".to_owned()), t.dim()),
                (who, false) => (who, t.text()),
            };
            // The language the service heard, as the exports write it: `[es] Them · Ana`.
            let who = match (&turn.language, who) {
                (Some(lang), Some(who)) => Some(format!("[{lang}] {who}")),
                (Some(lang), None) => Some(format!("[{lang}]")),
                (None, who) => who,
            };
            let lines = stamped(
                turn.start_ms,
                who.as_deref().map(|w| (w, t.who(input))),
                &turn.text,
                width,
                t,
                style,
            );
            up.extend(lines.into_iter().rev());
        }
    }
    up.truncate(height);
    up.reverse();
    up
}

/// A turn's lines: `mm:ss ` then who said it (in its style) and the text, wrapped with a
/// hanging indent.
fn stamped(
    start_ms: u64,
    speaker: Option<(&str, ratatui::style::Style)>,
    text: &str,
    width: usize,
    t: Theme,
    style: ratatui::style::Style,
) -> Vec<Line<'static>> {
    let stamp = format!("{} ", stamp(start_ms));
    let indent = display_width(&stamp);
    let (speaker, who_style) = match speaker {
        Some((s, style)) => (Some(format!("{s}: ")), style),
        None => (None, t.strong()),
    };
    let body = format!("{}{text}", speaker.as_deref().unwrap_or(""));
    let room = width.saturating_sub(indent).max(1);
    let mut out = Vec::new();
    for (n, piece) in wrap(&body, room).into_iter().enumerate() {
        let mut spans = if n == 0 {
            vec![Span::styled(stamp.clone(), t.dim())]
        } else {
            vec![Span::raw(" ".repeat(indent))]
        };
        match (&speaker, n) {
            (Some(sp), 0) if piece.starts_with(sp.as_str()) => {
                spans.push(Span::styled(sp.clone(), who_style));
                spans.push(Span::styled(piece[sp.len()..].to_owned(), style));
            }
            _ => spans.push(Span::styled(piece, style)),
        }
        out.push(Line::from(spans));
    }
    out
}

/// Stream time as `mm:ss`, or `h:mm:ss` from an hour.
fn stamp(ms: u64) -> String {
    crate::strings::mm_ss(std::time::Duration::from_millis(ms))
}

fn placeholder(cx: Ctx<'_>, width: usize) -> Vec<Line<'static>> {
    let Ctx { state, t, .. } = cx;
    let start = state
        .keymap
        .first_key(Action::ToggleStream)
        .map_or_else(|| "the start key".to_owned(), |k| k.to_string());
    let help = state
        .keymap
        .first_key(Action::Help)
        .map_or_else(String::new, |k| format!(" {k} lists every key."));
    let mut paragraphs = Vec::new();
    if state.lifecycle.running {
        paragraphs.push((
            format!(
                "Listening{} final turns appear here, the turn being spoken below them.",
                t.ellipsis()
            ),
            t.dim(),
        ));
    } else {
        paragraphs.push((
            format!("Press {start} to start streaming.{help}"),
            t.strong(),
        ));
    }
    if state.info.demo.is_some() {
        paragraphs.push((
            "This is the offline demo: audio goes to a local emulator of the streaming API, which \
             knows the words of the bundled recording. Sessions last 60 s here, so within the \
             first minute you see a token minted ahead of need, the session gauge turn amber, \
             and a rotation to a fresh session with no words lost."
                .to_owned(),
            t.dim(),
        ));
    }
    let mut lines = Vec::new();
    for (text, style) in paragraphs {
        if !lines.is_empty() {
            lines.push(Line::raw(""));
        }
        lines.extend(
            wrap(&text, width)
                .into_iter()
                .map(|l| Line::styled(l, style)),
        );
    }
    lines
}
