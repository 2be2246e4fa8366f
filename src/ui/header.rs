//! The header: the state badge, the session, elapsed time, the live feed and its consumers,
//! muted and demo tags; then where tokens come from and where audio goes (kind and URL or path,
//! never a secret).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{Ctx, Theme, display_width, since, truncate};
use crate::strings::{self, mm_ss, short_id};

pub fn render(frame: &mut Frame<'_>, area: Rect, cx: Ctx<'_>) {
    let width = usize::from(area.width);
    let mut lines = vec![first_line(cx, width)];
    if area.height > 1 {
        lines.push(second_line(cx, width));
    }
    frame.render_widget(Paragraph::new(lines), area);
}

fn first_line(cx: Ctx<'_>, width: usize) -> Line<'static> {
    let Ctx { state, now, t } = cx;
    let mut left = vec![
        Span::styled(" aai-live ", t.strong()),
        t.badge(&state.session.view),
    ];
    if let Some(life) = state.session.active_life() {
        let id = if width >= 120 {
            life.session_id.as_str()
        } else {
            short_id(&life.session_id)
        };
        left.push(Span::styled("  session ", t.label()));
        left.push(Span::styled(id.to_owned(), t.text()));
        left.push(Span::styled(
            format!("{}conn {}", t.dot(), life.generation),
            t.dim(),
        ));
    }
    let elapsed = match (state.session.run_started, state.session.run_ended) {
        (Some(start), Some(end)) => format!("  ran {}", mm_ss(since(start, end))),
        (Some(start), None) => format!("  {} elapsed", mm_ss(since(start, now))),
        _ => String::new(),
    };
    left.push(Span::styled(elapsed, t.label()));

    let mut right = Vec::new();
    if state.audio.muted {
        right.push(Span::styled(
            if t.ascii { "[MUTED]" } else { " MUTED " },
            t.tag(Color::Yellow),
        ));
        right.push(Span::raw(" "));
    }
    if state.info.demo.is_some() {
        right.push(Span::styled(
            if t.ascii {
                "[OFFLINE DEMO]"
            } else {
                " OFFLINE DEMO "
            },
            t.tag(Color::Magenta),
        ));
        right.push(Span::raw(" "));
    }
    join_left_right(left, right, width, t)
}

/// `--feed`: where it listens (no scheme: always http) and who follows it, at the right of
/// the second line.
fn feed(cx: Ctx<'_>) -> Vec<Span<'static>> {
    let Ctx { state, t, .. } = cx;
    let Some(feed) = &state.feed else {
        return Vec::new();
    };
    let address = feed
        .address
        .strip_prefix("http://")
        .unwrap_or(&feed.address);
    vec![
        Span::styled("feed ", t.label()),
        Span::styled(address.to_owned(), t.accent()),
        Span::styled(
            format!("{}{} ", t.dot(), strings::consumers(feed.consumers)),
            t.label(),
        ),
    ]
}

fn second_line(cx: Ctx<'_>, width: usize) -> Line<'static> {
    let Ctx { state, t, .. } = cx;
    let info = &state.info;
    let mut spans = vec![Span::raw(" ")];
    if let Some(addr) = &info.demo {
        // Token and streaming URLs share the emulator's address: say it once, plainly.
        spans.push(Span::styled(
            format!("offline emulator at {addr}, not AssemblyAI"),
            t.warn(),
        ));
        spans.push(Span::styled(t.dot(), t.dim()));
        spans.push(Span::styled("tokens ", t.label()));
        spans.push(Span::styled(info.provider.clone(), t.accent()));
        spans.push(Span::styled(
            format!(
                " {} {} {}",
                url_path(&info.source),
                t.arrow(),
                url_path(&info.endpoint)
            ),
            t.text(),
        ));
        live_settings(&mut spans, cx);
        return join_left_right(spans, feed(cx), width, t);
    }
    // Narrow: the secure schemes go without saying; http:// and ws:// stay visible.
    let shown = |url: &str| {
        if width < 120 {
            url.strip_prefix("https://")
                .or_else(|| url.strip_prefix("wss://"))
                .unwrap_or(url)
                .to_owned()
        } else {
            url.to_owned()
        }
    };
    spans.push(Span::styled("tokens ", t.label()));
    spans.push(Span::styled(info.provider.clone(), t.accent()));
    spans.push(Span::styled(format!(" {}", shown(&info.source)), t.text()));
    spans.push(Span::styled(format!(" {} ", t.arrow()), t.dim()));
    // The streaming endpoint usually shares the token endpoint's host: then its path says it.
    let endpoint = if same_origin(&info.source, &info.endpoint) {
        url_path(&info.endpoint).to_owned()
    } else {
        shown(&info.endpoint)
    };
    spans.push(Span::styled(endpoint, t.text()));
    if let Some(region) = &info.region {
        spans.push(Span::styled(
            format!("{}region {region}", t.dot()),
            t.label(),
        ));
    }
    live_settings(&mut spans, cx);
    join_left_right(spans, feed(cx), width, t)
}

/// The live settings that are set (keyterms, turn silences), after where audio goes.
fn live_settings(spans: &mut Vec<Span<'static>>, cx: Ctx<'_>) {
    let (live, t) = (&cx.state.live, cx.t);
    if !live.keyterms.is_empty() {
        spans.push(Span::styled(format!("{}keyterms ", t.dot()), t.label()));
        spans.push(Span::styled(live.keyterms.join(", "), t.text()));
    }
    for (name, value) in [
        ("min silence", live.min_turn_silence),
        ("max silence", live.max_turn_silence),
    ] {
        if let Some(ms) = value {
            spans.push(Span::styled(
                format!("{}{name} {ms} ms", t.dot()),
                t.label(),
            ));
        }
    }
}

/// Whether two URLs name the same host and port, whatever their schemes (https and wss).
fn same_origin(a: &str, b: &str) -> bool {
    let host = |s: &str| {
        s.split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(rest).to_owned())
    };
    host(a).is_some() && host(a) == host(b)
}

/// The path of a URL (`http://h:1/v3/token` → `/v3/token`); other text as it is.
fn url_path(s: &str) -> &str {
    s.split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(s)
}

/// `left` then `right` flush with the right edge; `left` is cut when both do not fit.
pub fn join_left_right(
    left: Vec<Span<'static>>,
    right: Vec<Span<'static>>,
    width: usize,
    t: Theme,
) -> Line<'static> {
    let right_w: usize = right.iter().map(Span::width).sum();
    let mut spans = clip(left, width.saturating_sub(right_w), t).spans;
    let left_w: usize = spans.iter().map(Span::width).sum();
    if left_w + right_w <= width {
        spans.push(Span::raw(" ".repeat(width - left_w - right_w)));
        spans.extend(right);
    }
    Line::from(spans)
}

/// Cut a line of spans to `width` columns, with an ellipsis on the last one cut.
pub fn clip(spans: Vec<Span<'static>>, width: usize, t: Theme) -> Line<'static> {
    let mut out = Vec::new();
    let mut used = 0;
    for span in spans {
        let w = span.width();
        if used + w <= width {
            used += w;
            out.push(span);
            continue;
        }
        let room = width - used;
        if room > 0 {
            let cut = truncate(&span.content, room, t.ellipsis());
            if display_width(&cut) <= room {
                out.push(Span::styled(cut, span.style));
            }
        }
        break;
    }
    Line::from(out)
}
