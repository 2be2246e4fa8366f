//! Named styles and symbols, in one place: colour or mono (`ui.theme = "mono"`, `NO_COLOR`), and
//! Unicode or ASCII (`ui.ascii`, or a locale that is not UTF-8). Mono keeps meaning through
//! bold, reverse and dim; ASCII swaps every drawn symbol for a 7-bit one.

use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::border;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders};

use crate::app::state::{Severity, UiOptions};
use crate::events::View;

const ASCII_BORDER: border::Set<'static> = border::Set {
    top_left: "+",
    top_right: "+",
    bottom_left: "+",
    bottom_right: "+",
    vertical_left: "|",
    vertical_right: "|",
    horizontal_top: "-",
    horizontal_bottom: "-",
};

/// Styles and symbols for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    pub mono: bool,
    pub ascii: bool,
}

impl Theme {
    pub fn new(ui: UiOptions) -> Self {
        Self {
            mono: ui.mono,
            ascii: ui.ascii,
        }
    }

    fn fg(self, color: Color) -> Style {
        if self.mono {
            Style::new()
        } else {
            Style::new().fg(color)
        }
    }

    /// A bordered panel with a title.
    pub fn block<'a>(self, title: impl Into<Line<'a>>) -> Block<'a> {
        let block = Block::new()
            .borders(Borders::ALL)
            .border_style(self.border())
            .title(title)
            .title_style(self.title());
        if self.ascii {
            block.border_set(ASCII_BORDER)
        } else {
            block.border_set(border::ROUNDED)
        }
    }

    pub fn border(self) -> Style {
        self.fg(Color::DarkGray)
    }

    pub fn title(self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    /// Labels ("session", "token").
    pub fn label(self) -> Style {
        if self.mono {
            Style::new().add_modifier(Modifier::DIM)
        } else {
            Style::new().fg(Color::Gray)
        }
    }

    pub fn dim(self) -> Style {
        if self.mono {
            Style::new().add_modifier(Modifier::DIM)
        } else {
            Style::new().fg(Color::DarkGray)
        }
    }

    pub fn text(self) -> Style {
        Style::new()
    }

    pub fn strong(self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    pub fn key(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    pub fn ok(self) -> Style {
        self.fg(Color::Green)
    }

    /// Amber: a rotation (or the end) is near, backoff, warnings.
    pub fn warn(self) -> Style {
        if self.mono {
            Style::new().add_modifier(Modifier::BOLD)
        } else {
            Style::new().fg(Color::Yellow)
        }
    }

    pub fn error(self) -> Style {
        if self.mono {
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        } else {
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
        }
    }

    pub fn accent(self) -> Style {
        self.fg(Color::Cyan)
    }

    /// The live partial: distinct from finals without colour too.
    /// Who said a turn: each input of a meeting its own colour (bold in mono).
    pub fn who(self, input: Option<usize>) -> Style {
        const COLOURS: [Color; 4] = [Color::Cyan, Color::Magenta, Color::Yellow, Color::Green];
        match input {
            Some(i) if !self.mono => self
                .fg(COLOURS[i % COLOURS.len()])
                .add_modifier(Modifier::BOLD),
            _ => self.strong(),
        }
    }

    pub fn partial(self) -> Style {
        if self.mono {
            Style::new().add_modifier(Modifier::ITALIC | Modifier::DIM)
        } else {
            Style::new()
                .fg(Color::LightBlue)
                .add_modifier(Modifier::ITALIC)
        }
    }

    pub fn severity(self, level: Severity) -> Style {
        match level {
            Severity::Info => self.text(),
            Severity::Warn => self.warn(),
            Severity::Error => self.error(),
        }
    }

    /// A reversed tag such as ` MUTED `.
    pub fn tag(self, color: Color) -> Style {
        if self.mono {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::new()
                .fg(Color::Black)
                .bg(color)
                .add_modifier(Modifier::BOLD)
        }
    }

    /// The session state as a coloured badge.
    pub fn badge(self, view: &View) -> Span<'static> {
        let (text, color) = match view {
            View::Idle => ("IDLE", Color::Gray),
            View::Minting { .. } => ("MINTING", Color::Blue),
            View::Connecting { .. } => ("CONNECTING", Color::Blue),
            View::Streaming { .. } => ("STREAMING", Color::Green),
            View::Rotating { .. } => ("ROTATING", Color::Cyan),
            View::Draining { .. } => ("DRAINING", Color::Magenta),
            View::Stopped => ("STOPPED", Color::Gray),
            View::Backoff { .. } => ("BACKOFF", Color::Yellow),
            View::Failed { .. } => ("FAILED", Color::Red),
        };
        let shown = if self.ascii {
            format!("[{text}]")
        } else {
            format!(" {text} ")
        };
        Span::styled(shown, self.tag(color))
    }

    /// A filled cell of a bar.
    pub fn full(self) -> &'static str {
        if self.ascii { "#" } else { "█" }
    }

    /// An empty cell of a bar.
    pub fn empty(self) -> &'static str {
        if self.ascii { "." } else { "░" }
    }

    pub fn dot(self) -> &'static str {
        if self.ascii { " - " } else { " · " }
    }

    pub fn arrow(self) -> &'static str {
        if self.ascii { "->" } else { "→" }
    }

    pub fn ellipsis(self) -> &'static str {
        if self.ascii { "..." } else { "…" }
    }

    pub fn down(self) -> &'static str {
        if self.ascii { "v" } else { "▼" }
    }

    /// The peak marker on the level meter.
    pub fn peak(self) -> &'static str {
        if self.ascii { "|" } else { "▌" }
    }
}
