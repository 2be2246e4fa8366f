//! The audio panel (level meter with RMS and peak, clipping, muted, input name, dropped frames)
//! and the throughput figures (latency p50/p95, words per minute).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::header::clip;
use super::{Ctx, Theme, bar};

const LABEL_W: usize = 8;
/// Room kept after the peak meter for the clipping tag.
const CLIP_W: usize = 7;
/// The meter's scale: -60 dBFS (empty) to 0 dBFS (full).
const FLOOR_DB: f32 = -60.0;

pub fn render(frame: &mut Frame<'_>, area: Rect, cx: Ctx<'_>, with_throughput: bool) {
    let Ctx { state, t, .. } = cx;
    let block = t.block(" audio ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let w = usize::from(inner.width);
    let mut lines = if state.sources.is_empty() {
        vec![
            meter_line(
                "rms",
                state.audio.level.rms_dbfs,
                cx,
                w.saturating_sub(CLIP_W),
            ),
            peak_line(cx, w),
            input_line(cx, w),
        ]
    } else {
        // Meeting mode: a level per input (its RMS), muted ones dimmed.
        let mut lines: Vec<Line<'static>> = state
            .sources
            .iter()
            .map(|s| {
                let name: String = s.label.display_name().chars().take(LABEL_W - 1).collect();
                let muted = s.mic && state.audio.muted;
                level_line(&name, s.level.rms_dbfs, muted, cx, w.saturating_sub(CLIP_W))
            })
            .collect();
        lines.push(input_line(cx, w));
        lines
    };
    if with_throughput {
        lines.push(latency_line(cx, w));
    } else {
        lines.push(dropped_line(cx, w));
        let native = &state.audio.stats.native;
        if native.sample_rate > 0 {
            lines.push(clip(
                vec![
                    label("source", t),
                    Span::styled(native.to_string(), t.dim()),
                ],
                w,
                t,
            ));
        }
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// Latency, pace and totals (the wide layout's third panel).
pub fn render_throughput(frame: &mut Frame<'_>, area: Rect, cx: Ctx<'_>) {
    let Ctx { state, now, t } = cx;
    let block = t.block(" throughput ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let w = usize::from(inner.width);
    let ms = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v} ms"));
    let wpm = state
        .rate
        .per_minute(now, state.session.run_started)
        .map_or_else(|| "-".to_owned(), |v| v.to_string());
    let finals = state.transcript.all().len();
    let lines = vec![
        clip(
            vec![
                label("p50", t),
                Span::styled(ms(state.latency.p50), t.text()),
            ],
            w,
            t,
        ),
        clip(
            vec![
                label("p95", t),
                Span::styled(ms(state.latency.p95), t.text()),
            ],
            w,
            t,
        ),
        clip(
            vec![
                label("pace", t),
                Span::styled(format!("{wpm} wpm"), t.text()),
            ],
            w,
            t,
        ),
        clip(
            vec![
                label("finals", t),
                Span::styled(format!("{finals} turns"), t.text()),
            ],
            w,
            t,
        ),
        clip(
            vec![
                label("audio", t),
                Span::styled(
                    format!("{:.0} s captured", state.audio.stats.seconds()),
                    t.text(),
                ),
            ],
            w,
            t,
        ),
    ];
    frame.render_widget(Paragraph::new(lines), inner);
}

fn label(text: &str, t: Theme) -> Span<'static> {
    Span::styled(format!("{text:<LABEL_W$}"), t.label())
}

fn ratio(db: f32) -> f64 {
    f64::from(((db - FLOOR_DB) / -FLOOR_DB).clamp(0.0, 1.0))
}

fn db_text(db: f32) -> String {
    if db <= FLOOR_DB {
        " -inf dB".to_owned()
    } else {
        format!(" {db:>4.0} dB")
    }
}

fn meter_line(name: &str, db: f32, cx: Ctx<'_>, w: usize) -> Line<'static> {
    level_line(name, db, cx.state.audio.muted, cx, w)
}

fn level_line(name: &str, db: f32, muted: bool, cx: Ctx<'_>, w: usize) -> Line<'static> {
    let t = cx.t;
    let text = db_text(db);
    let cells = w.saturating_sub(LABEL_W + text.len()).min(40);
    let (full, empty) = bar(ratio(db), cells, t);
    let style = if muted {
        t.dim()
    } else if db > -6.0 {
        t.warn()
    } else {
        t.ok()
    };
    clip(
        vec![
            label(name, t),
            Span::styled(full, style),
            Span::styled(empty, t.dim()),
            Span::styled(text, t.text()),
        ],
        w,
        t,
    )
}

fn peak_line(cx: Ctx<'_>, w: usize) -> Line<'static> {
    let Ctx { state, t, .. } = cx;
    let level = &state.audio.level;
    let mut line = meter_line("peak", level.peak_dbfs, cx, w.saturating_sub(CLIP_W));
    if level.clipping {
        line.spans.push(Span::raw(" "));
        line.spans.push(Span::styled(
            if t.ascii { "[CLIP]" } else { " CLIP " },
            t.tag(Color::Red),
        ));
    }
    line
}

fn input_line(cx: Ctx<'_>, w: usize) -> Line<'static> {
    let Ctx { state, t, .. } = cx;
    let mut spans = vec![label("input", t)];
    if state.audio.muted {
        spans.push(Span::styled(
            if t.ascii { "[MUTED]" } else { " MUTED " },
            t.tag(Color::Yellow),
        ));
        spans.push(Span::raw(" "));
    } else if !state.audio.open {
        spans.push(Span::styled(format!("closed{}", t.dot()), t.error()));
    }
    spans.push(Span::styled(state.info.input.clone(), t.text()));
    let dropped = state.audio.stats.dropped_frames;
    if dropped > 0 {
        spans.push(Span::styled(
            format!("{}{dropped} dropped", t.dot()),
            t.warn(),
        ));
    }
    clip(spans, w, t)
}

fn dropped_line(cx: Ctx<'_>, w: usize) -> Line<'static> {
    let Ctx { state, t, .. } = cx;
    let counts = &state.audio.stats;
    let style = if counts.dropped_frames > 0 {
        t.warn()
    } else {
        t.text()
    };
    clip(
        vec![
            label("dropped", t),
            Span::styled(
                format!(
                    "{} frames ({} overflows)",
                    counts.dropped_frames, counts.overflows
                ),
                style,
            ),
        ],
        w,
        t,
    )
}

fn latency_line(cx: Ctx<'_>, w: usize) -> Line<'static> {
    let Ctx { state, now, t } = cx;
    let ms = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v} ms"));
    let wpm = state
        .rate
        .per_minute(now, state.session.run_started)
        .map_or_else(|| "-".to_owned(), |v| v.to_string());
    clip(
        vec![
            Span::styled("p50 ", t.label()),
            Span::styled(ms(state.latency.p50), t.text()),
            Span::styled(format!("{}p95 ", t.dot()), t.label()),
            Span::styled(ms(state.latency.p95), t.text()),
            Span::styled(format!("{}{wpm} wpm", t.dot()), t.text()),
        ],
        w,
        t,
    )
}

/// The second status row of the compact layout.
pub fn compact_line(cx: Ctx<'_>, w: usize) -> Line<'static> {
    let Ctx { state, now, t } = cx;
    let mut line = meter_line("level", state.audio.level.rms_dbfs, cx, w.min(30));
    let s = &state.session;
    let p50 = state
        .latency
        .p50
        .map_or_else(|| "-".to_owned(), |v| format!("{v} ms"));
    let wpm = state
        .rate
        .per_minute(now, s.run_started)
        .map_or_else(|| "-".to_owned(), |v| v.to_string());
    let mut extra = Vec::new();
    if state.audio.muted {
        extra.push(Span::raw(" "));
        extra.push(Span::styled(
            if t.ascii { "[MUTED]" } else { " MUTED " },
            t.tag(Color::Yellow),
        ));
    }
    extra.push(Span::styled(
        format!(
            "{}{} rot{}{} rec{}p50 {p50}{}{wpm} wpm",
            t.dot(),
            s.rotations,
            t.dot(),
            s.reconnects,
            t.dot(),
            t.dot()
        ),
        t.text(),
    ));
    line.spans.extend(extra);
    clip(line.spans, w, t)
}
