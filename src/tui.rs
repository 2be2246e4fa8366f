//! The terminal: a guard that enters raw mode, the alternate screen and mouse capture and
//! restores all three on every exit path (drop, error, panic).

use std::io::{self, Stdout};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, ThreadId};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{EnterAlternateScreen, enable_raw_mode};

pub type Term = Terminal<CrosstermBackend<Stdout>>;

/// Owns the terminal while the dashboard runs. Dropping it restores the terminal.
pub struct TerminalGuard {
    terminal: Term,
    active: Arc<AtomicBool>,
}

impl TerminalGuard {
    /// Take over the terminal. On failure the terminal is restored before returning the error.
    ///
    /// Not `ratatui::try_init`: its panic hook restores the terminal on a panic in *any* thread,
    /// and tokio catches panics in tasks, so a panicking background task would leave the
    /// dashboard drawing into a cooked terminal. This hook restores only for a panic on the UI
    /// thread (the one that unwinds through the dashboard), then runs the previous hook so the
    /// message lands on the restored screen.
    pub fn new() -> io::Result<Self> {
        let active = Arc::new(AtomicBool::new(true));
        install_panic_hook(thread::current().id(), Arc::clone(&active));
        let entered = enable_raw_mode()
            .and_then(|()| execute!(io::stdout(), EnterAlternateScreen, EnableMouseCapture))
            .and_then(|()| Terminal::new(CrosstermBackend::new(io::stdout())));
        match entered {
            Ok(terminal) => Ok(Self { terminal, active }),
            Err(e) => {
                restore(&active);
                Err(e)
            }
        }
    }

    pub fn terminal_mut(&mut self) -> &mut Term {
        &mut self.terminal
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = self.terminal.show_cursor();
        restore(&self.active);
    }
}

/// Leave mouse capture, raw mode and the alternate screen, once.
fn restore(active: &AtomicBool) {
    if active.swap(false, Ordering::SeqCst) {
        let _ = execute!(io::stdout(), DisableMouseCapture);
        let _ = ratatui::try_restore();
    }
}

fn install_panic_hook(ui_thread: ThreadId, active: Arc<AtomicBool>) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if thread::current().id() == ui_thread {
            restore(&active);
        }
        previous(info);
    }));
}
