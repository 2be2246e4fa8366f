//! The lifetimes panel: the live session's time left as a gauge (amber from [`NOTICE`] before its
//! successor is prepared — the supervisor's rotation rule, reported with `Begin` — or before its
//! end with rotation off; the hand-over while rotating), the ready token's redemption window (or how old the token
//! file is), rotation and reconnect counters, and the last close in plain words.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::header::clip;
use super::{Ctx, Theme, bar, since, until};
use crate::events::View;
use crate::provider::TokenState;
use crate::strings::mm_ss;

const LABEL_W: usize = 9;
/// How long before a rotation (or, with rotation off, the end) the gauge turns amber: long enough
/// to be seen, as the hand-over itself takes about a second.
pub const NOTICE: std::time::Duration = std::time::Duration::from_secs(10);

pub fn render(frame: &mut Frame<'_>, area: Rect, cx: Ctx<'_>, detailed: bool) {
    let Ctx { state, t, .. } = cx;
    let block = t.block(" lifetimes ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let w = usize::from(inner.width);
    if !state.sources.is_empty() {
        // Meeting mode: each input's session, then the run's totals.
        let mut lines: Vec<Line<'static>> = state
            .sources
            .iter()
            .map(|s| {
                let name: String = s.label.display_name().chars().take(LABEL_W - 1).collect();
                panel_line(cx, &s.session, &name, w)
            })
            .collect();
        lines.push(token_line(cx, w));
        lines.push(counters_line(cx, w));
        lines.push(last_close_line(cx, w));
        frame.render_widget(Paragraph::new(lines), inner);
        return;
    }
    let mut lines = vec![session_line(cx, w)];
    if detailed {
        lines.push(rotation_line(cx, w));
        lines.push(token_line(cx, w));
        lines.push(token_gauge(cx, w));
    } else if matches!(state.session.view, View::Rotating { .. }) {
        lines.push(rotation_line(cx, w));
    } else {
        lines.push(token_line(cx, w));
    }
    lines.push(counters_line(cx, w));
    lines.push(last_close_line(cx, w));
    frame.render_widget(Paragraph::new(lines), inner);
}

fn label(text: &str, t: Theme) -> Span<'static> {
    Span::styled(format!("{text:<LABEL_W$}"), t.label())
}

/// The session gauge (also the first status row of the compact layout).
pub fn session_line(cx: Ctx<'_>, width: usize) -> Line<'static> {
    panel_line(cx, &cx.state.session, "session", width)
}

/// A session gauge under `name`: the run's, or one input's in meeting mode.
fn panel_line(
    cx: Ctx<'_>,
    s: &crate::app::state::SessionPanel,
    name: &str,
    width: usize,
) -> Line<'static> {
    let Ctx { state, now, t } = cx;
    let mut spans = vec![label(name, t)];
    if let Some(life) = s.active_life() {
        let left = until(life.expires_at, now);
        let total = life
            .expires_at
            .duration_since(life.began_at)
            .unwrap_or_default();
        let ratio = if total.is_zero() {
            0.0
        } else {
            left.as_secs_f64() / total.as_secs_f64()
        };
        let watch = life.rotates_at.unwrap_or(life.expires_at);
        let amber = until(watch, now) <= NOTICE;
        let style = if left.is_zero() {
            t.error()
        } else if amber {
            t.warn()
        } else {
            t.ok()
        };
        let text = format!(" {} left", mm_ss(left));
        let cells = width.saturating_sub(LABEL_W + text.len()).min(40);
        let (full, empty) = bar(ratio, cells, t);
        spans.push(Span::styled(full, style));
        spans.push(Span::styled(empty, t.dim()));
        spans.push(Span::styled(text, style));
        return clip(spans, width, t);
    }
    let (text, style) = match &s.view {
        View::Idle if state.lifecycle.running => ("starting".to_owned(), t.accent()),
        View::Idle | View::Stopped => ("not streaming".to_owned(), t.dim()),
        View::Minting { .. } => (format!("getting a token{}", t.ellipsis()), t.accent()),
        View::Connecting { .. } => (format!("connecting{}", t.ellipsis()), t.accent()),
        View::Streaming { .. } | View::Rotating { .. } | View::Draining { .. } => {
            ("open".to_owned(), t.text())
        }
        View::Backoff { attempt, class, .. } => {
            let wait = s
                .retry_at
                .map_or_else(String::new, |at| format!(" in {}", mm_ss(until(at, now))));
            (
                format!("retry {attempt}{wait} ({})", class.describe()),
                t.warn(),
            )
        }
        View::Failed { .. } => ("failed".to_owned(), t.error()),
    };
    spans.push(Span::styled(text, style));
    clip(spans, width, t)
}

/// While rotating: the hand-over; otherwise when the next rotation starts.
fn rotation_line(cx: Ctx<'_>, width: usize) -> Line<'static> {
    let Ctx { state, now, t } = cx;
    let s = &state.session;
    let mut spans = vec![label("handover", t)];
    match &s.view {
        View::Rotating { new, new_ready, .. } => {
            let what = if *new_ready {
                format!("{} conn {new} ready, at next turn end", t.arrow())
            } else {
                format!("{} opening conn {new}{}", t.arrow(), t.ellipsis())
            };
            spans.push(Span::styled(what, t.accent()));
        }
        View::Streaming { .. } if state.limits.rotation => {
            if let Some(at) = s.active_life().and_then(|life| life.rotates_at) {
                spans.push(Span::styled(
                    format!("next rotation in {}", mm_ss(until(at, now))),
                    t.dim(),
                ));
            }
        }
        View::Streaming { .. } => {
            spans.push(Span::styled("rotation off: expiry reconnects", t.dim()));
        }
        _ => spans.push(Span::styled("none", t.dim())),
    }
    clip(spans, width, t)
}

/// The ready token's window, or what the pre-minter is doing.
pub fn token_line(cx: Ctx<'_>, width: usize) -> Line<'static> {
    let Ctx { state, now, t } = cx;
    let mut spans = vec![label("token", t)];
    match &state.token {
        TokenState::None => spans.push(Span::styled("none held (minted when needed)", t.dim())),
        TokenState::Fetching { since: at } => spans.push(Span::styled(
            format!("minting{} {}", t.ellipsis(), mm_ss(since(*at, now))),
            t.accent(),
        )),
        TokenState::Ready {
            provider,
            fingerprint,
            minted_at,
            redeem_by,
            discard_at,
        } => {
            let deadline = redeem_by.unwrap_or(*discard_at);
            let left = until(deadline, now);
            if *provider == "file" {
                spans.push(Span::styled(
                    format!(
                        "file token {} old{}",
                        mm_ss(since(*minted_at, now)),
                        t.dot()
                    ),
                    t.text(),
                ));
            }
            let style = if left.as_secs() < 5 { t.warn() } else { t.ok() };
            spans.push(Span::styled(
                format!("ready, redeem in {}", mm_ss(left)),
                style,
            ));
            spans.push(Span::styled(
                format!(" ({})", fingerprint.get(..8).unwrap_or(fingerprint)),
                t.dim(),
            ));
        }
        TokenState::Failed {
            class,
            message,
            retry_at,
        } => {
            let retry = retry_at.map_or_else(String::new, |at| {
                format!("; retry in {}", mm_ss(until(at, now)))
            });
            let style = if class.is_fatal() {
                t.error()
            } else {
                t.warn()
            };
            spans.push(Span::styled(format!("failed ({class}){retry}: "), style));
            // The message is long; the dashboard's events pane has it whole.
            spans.push(Span::styled(message.clone(), t.dim()));
        }
    }
    clip(spans, width, t)
}

/// The ready token's window as a gauge (wide layout).
fn token_gauge(cx: Ctx<'_>, width: usize) -> Line<'static> {
    let Ctx { state, now, t } = cx;
    let mut spans = vec![label("window", t)];
    if let TokenState::Ready {
        minted_at,
        redeem_by,
        discard_at,
        ..
    } = &state.token
    {
        let deadline = redeem_by.unwrap_or(*discard_at);
        let total = deadline.duration_since(*minted_at).unwrap_or_default();
        let left = until(deadline, now);
        let ratio = if total.is_zero() {
            0.0
        } else {
            left.as_secs_f64() / total.as_secs_f64()
        };
        let cells = width.saturating_sub(LABEL_W).min(40);
        let (full, empty) = bar(ratio, cells, t);
        spans.push(Span::styled(full, t.accent()));
        spans.push(Span::styled(empty, t.dim()));
    } else {
        spans.push(Span::styled("no token waiting", t.dim()));
    }
    clip(spans, width, t)
}

fn counters_line(cx: Ctx<'_>, width: usize) -> Line<'static> {
    let Ctx { state, t, .. } = cx;
    let s = &state.session;
    let mut spans = vec![
        label("count", t),
        Span::styled(plural(u64::from(s.rotations), "rotation"), t.text()),
        Span::styled(
            format!(
                "{}{}",
                t.dot(),
                plural(u64::from(s.reconnects), "reconnect")
            ),
            t.text(),
        ),
    ];
    if s.audio_lost_ms > 0 {
        spans.push(Span::styled(
            format!("{}{:.1} s lost", t.dot(), s.audio_lost_ms as f64 / 1000.0),
            t.error(),
        ));
    }
    clip(spans, width, t)
}

fn last_close_line(cx: Ctx<'_>, width: usize) -> Line<'static> {
    let Ctx { state, t, .. } = cx;
    let mut spans = vec![label("closed", t)];
    match &state.session.last_close {
        None => spans.push(Span::styled("no unexpected close", t.dim())),
        Some(close) => {
            let code = close
                .code
                .map_or_else(|| "no code".to_owned(), |c| c.to_string());
            let style = if close.class.retryable() {
                t.warn()
            } else {
                t.error()
            };
            spans.push(Span::styled(
                format!("{code} {}", close.class.describe()),
                style,
            ));
            if !close.reason.is_empty() {
                spans.push(Span::styled(format!(": {}", close.reason), t.dim()));
            }
        }
    }
    clip(spans, width, t)
}

/// `1 rotation`, `2 rotations`.
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
