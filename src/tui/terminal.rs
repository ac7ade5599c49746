//! Owning the terminal, and giving it back on every exit path.
//!
//! [`enter`] switches to raw mode and the alternate screen and returns a
//! [`TerminalGuard`]. Dropping the guard (normal return, `?` on an error,
//! unwinding from a panic in the loop) restores the terminal. A panic hook,
//! installed once and chained to the previous one, restores it too while
//! the TUI is active, before the panic message prints, so the message is
//! readable and the shell usable. Signals are the event loop's job: it
//! turns SIGTERM, SIGHUP and SIGINT into a normal return.

use std::io::{self, Stdout, Write};
use std::panic;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crossterm::cursor::Show;
use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

pub type Tui = Terminal<CrosstermBackend<Stdout>>;

/// True between [`enter`] and the guard's drop: the panic hook only touches
/// the terminal while we own it.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// Restores the terminal when dropped.
pub struct TerminalGuard(());

/// Take over the terminal; with `mouse`, clicks and the wheel come to us
/// (the terminal's own selection then needs Shift held).
pub fn enter(mouse: bool) -> io::Result<(Tui, TerminalGuard)> {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if ACTIVE.swap(false, Ordering::SeqCst) {
                restore();
            }
            previous(info);
        }));
    });
    ACTIVE.store(true, Ordering::SeqCst);
    // From here on the guard restores, even if a step below fails.
    let guard = TerminalGuard(());
    enable_raw_mode()?;
    execute!(io::stdout(), EnterAlternateScreen)?;
    if mouse {
        execute!(io::stdout(), EnableMouseCapture)?;
    }
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    terminal.clear()?;
    Ok((terminal, guard))
}

/// Leave raw mode and the alternate screen, show the cursor. Harmless when
/// the terminal was never entered.
fn restore() {
    let _ = disable_raw_mode();
    let mut out = io::stdout();
    let _ = execute!(out, DisableMouseCapture, LeaveAlternateScreen, Show);
    let _ = out.flush();
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        if ACTIVE.swap(false, Ordering::SeqCst) {
            restore();
        }
    }
}
