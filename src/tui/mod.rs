//! The full-screen terminal UI: `pigeon` with no subcommand.
//!
//! [`run`] takes a running engine's [`ClientHandle`] and drives it from the
//! keyboard until the user quits. The pieces:
//!
//! - [`event_loop`]: the one loop that owns the terminal; it waits on input,
//!   engine snapshots and events, and effect results, and draws at most
//!   ~20 frames per second, only when something changed;
//! - [`app::App`]: plain state, routing keys to the focused pane or the top
//!   popup, returning [`effect::Effect`]s instead of doing I/O;
//! - [`effect`]: the tasks that do the I/O (directory reads on blocking
//!   threads, engine calls in tokio tasks) and report back;
//! - [`panes`]: Files, Remote, Queue, Chunks, Transports and Log, each owning
//!   its state; [`widgets`]: the chunk map and transport health;
//! - [`keymap`]: typed actions and their bindings, from `<home>/keymap.toml`;
//!   [`help`] draws the help overlay from it; [`popup`] the modal layers;
//! - [`theme`]: basic ANSI colours, or none under `NO_COLOR`;
//! - [`terminal`]: raw mode and the alternate screen, restored on every exit;
//! - [`pigeon_core::policy::escape_control`]: names made safe to print.

pub mod app;
pub mod effect;
pub mod entries;
pub mod event_loop;
pub mod format;
pub mod help;
pub mod keymap;
pub mod layout;
pub mod panes;
pub mod popup;
pub mod status;
pub mod terminal;
pub mod theme;
pub mod watch;
pub mod widgets;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod screen_tests;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use pigeon_core::engine::ClientHandle;

use app::{App, AppConfig};
use keymap::Keymap;
use panes::log::{Level, LogLine};
use theme::Theme;

/// How the TUI starts.
#[derive(Clone, Debug)]
pub struct TuiOptions {
    /// The pigeon home (shown in the log).
    pub home: PathBuf,
    /// `<home>/keymap.toml`; a missing file means the defaults.
    pub keymap_path: PathBuf,
    /// Where the Files pane opens.
    pub start_dir: PathBuf,
    /// The peer is the agent embedded in this process: say so on screen.
    pub embedded_agent: bool,
    /// Ring the terminal bell when a transfer finishes or fails.
    pub bell: bool,
    /// Clicks and the wheel (config.toml `mouse = false` leaves the mouse
    /// to the terminal).
    pub mouse: bool,
    /// The engine is another process's (`pid 1234, pigeon upload`): this
    /// TUI is attached to it through the home's control socket.
    pub attached_to: Option<String>,
}

/// Run the TUI until the user quits. Owns the terminal meanwhile and gives
/// it back as it was on every exit path. Transfers keep going in the engine;
/// the caller shuts it down.
pub async fn run(handle: ClientHandle, options: TuiOptions) -> anyhow::Result<()> {
    let theme = Theme::from_env();
    let (keymap, keymap_notes) = load_keymap(&options.keymap_path).await;
    let config = AppConfig {
        start_dir: options.start_dir.clone(),
        embedded_agent: options.embedded_agent,
        bell: options.bell,
    };
    let (mut app, initial) = App::new(config, keymap, theme);
    app.log(LogLine::new(
        Level::Info,
        format!("pigeon home: {}", options.home.display()),
    ));
    if let Some(owner) = &options.attached_to {
        app.log(LogLine::new(
            Level::Info,
            format!("attached to the pigeon process holding this home ({owner})"),
        ));
    }
    for note in keymap_notes {
        app.notify(Level::Warn, note);
    }

    let (mut terminal, guard) = terminal::enter(options.mouse)
        .context("the TUI needs an interactive terminal; from scripts use `pigeon upload`, `download` or `status`")?;
    let stopped = match &options.attached_to {
        Some(owner) => format!(
            "the pigeon process holding this home ({owner}) has stopped; q quits, and `pigeon` again takes over"
        ),
        None => "the engine has stopped; q quits".to_string(),
    };
    let result = event_loop::run(&mut terminal, &mut app, handle, initial, &stopped).await;
    drop(guard);
    result
}

/// The keymap in force and notes about the file (unknown actions, bad keys,
/// a file that could not be read). A missing file is not worth a note.
async fn load_keymap(path: &Path) -> (Keymap, Vec<String>) {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (Keymap::defaults(), Vec::new())
        }
        Err(e) => {
            return (
                Keymap::defaults(),
                vec![format!(
                    "{} not read ({e}); using the default keys",
                    path.display()
                )],
            )
        }
    };
    match Keymap::from_toml(&text) {
        Ok((keymap, warnings)) => {
            let notes = warnings
                .into_iter()
                .map(|w| format!("{}: {w}", path.display()))
                .collect();
            (keymap, notes)
        }
        Err(e) => (
            Keymap::defaults(),
            vec![format!(
                "{} is not valid TOML ({e}); using the default keys",
                path.display()
            )],
        ),
    }
}
