//! The demo's guide line: one row above the transcript saying what the screen shows right now —
//! a token being minted, a session about to rotate, a hand-over, a replay after a drop — so a
//! newcomer can follow the story while the recording streams, not only before the first words.
//! Drawn only in `aai-live demo`; everything it says is read from the model, never scripted.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Span;
use ratatui::widgets::Paragraph;

use super::header::clip;
use super::{Ctx, lifetimes, until};
use crate::app::action::Action;
use crate::events::View;
use crate::strings::mm_ss;

/// Rows the guide takes: one in the demo, none otherwise.
pub fn height(cx: Ctx<'_>) -> u16 {
    u16::from(cx.state.info.demo.is_some())
}

pub fn render(frame: &mut Frame<'_>, area: Rect, cx: Ctx<'_>) {
    let Ctx { t, .. } = cx;
    let (text, urgent) = sentence(cx);
    let style = if urgent { t.warn() } else { t.accent() };
    let spans = vec![
        Span::styled(" what you are seeing: ", t.label()),
        Span::styled(text, style),
    ];
    frame.render_widget(
        Paragraph::new(clip(spans, usize::from(area.width), t)),
        area,
    );
}

/// The sentence for the current moment, and whether it is about something imminent (amber).
/// Short enough for the 100-column terminal the README shows; `clip` marks a cut.
pub fn sentence(cx: Ctx<'_>) -> (String, bool) {
    let Ctx { state, t, .. } = cx;
    let s = &state.session;
    if !state.lifecycle.running {
        let start = state
            .keymap
            .first_key(Action::ToggleStream)
            .map_or_else(|| "the start key".to_owned(), |k| k.to_string());
        return (format!("stopped; {start} starts streaming again"), false);
    }
    if state.audio.muted {
        let said = "muted: silence is sent, so the session stays open";
        return (said.to_owned(), false);
    }
    let said = match &s.view {
        View::Idle | View::Minting { .. } if s.rotations == 0 && s.reconnects == 0 => {
            "a one-time token is minted, to open one session".to_owned()
        }
        View::Idle | View::Minting { .. } | View::Connecting { .. } => {
            "opening a new session; the audio meanwhile is kept for it".to_owned()
        }
        View::Rotating { new, new_ready, .. } => {
            let step = if *new_ready {
                format!("connection {new} is ready; the audio moves over at the next turn end")
            } else {
                format!("connection {new} opens with a fresh token before the old one ends")
            };
            return (format!("a rotation: {step}"), true);
        }
        View::Streaming { .. } => return streaming(cx),
        View::Backoff { .. } => {
            let said =
                "the connection dropped; the audio since then is replayed to the next session";
            return (said.to_owned(), true);
        }
        View::Draining { .. } | View::Stopped => format!(
            "stopping: the last turns are collected{} the transcript saved",
            t.dot()
        ),
        View::Failed(_) => {
            return (
                "the run failed; the panel above says why and what to do".to_owned(),
                true,
            );
        }
    };
    (said, false)
}

/// While a session streams: when it rotates (amber when that is near), and what came before.
fn streaming(cx: Ctx<'_>) -> (String, bool) {
    let Ctx { state, now, t } = cx;
    let s = &state.session;
    let so_far = match s.rotations {
        0 => String::new(),
        1 => format!("{}1 rotation so far, no words lost", t.dot()),
        n => format!("{}{n} rotations so far, no words lost", t.dot()),
    };
    let Some(life) = s.active_life() else {
        return (format!("live words from the local emulator{so_far}"), false);
    };
    let Some(rotates_at) = life.rotates_at else {
        let ends = mm_ss(until(life.expires_at, now));
        return (
            format!(
                "live words{}this session ends in {ends}, then a new one opens{so_far}",
                t.dot()
            ),
            false,
        );
    };
    let left = mm_ss(until(rotates_at, now));
    if until(rotates_at, now) <= lifetimes::NOTICE {
        return (
            format!(
                "the gauge turned amber: in {left} a successor session opens with a fresh token"
            ),
            true,
        );
    }
    (
        format!("live words{}next rotation in {left}{so_far}", t.dot()),
        false,
    )
}
