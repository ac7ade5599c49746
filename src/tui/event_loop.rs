//! The one loop that owns the terminal.
//!
//! It waits on six sources with `tokio::select!`: terminal input
//! (crossterm's `EventStream`), the engine's snapshot `watch`, the engine's
//! event `broadcast`, results of effects the UI started, changes in the
//! Files pane's folder ([`super::watch`]), and termination signals. Each wake-up updates the [`App`] and marks the screen dirty; a
//! frame is drawn only when dirty, and at most every [`FRAME`] (about 20
//! per second). An idle screen wakes nothing, draws nothing and costs no
//! bandwidth over SSH.

use std::time::Duration;

use anyhow::Context as _;
use crossterm::event::{Event as TermEvent, EventStream};
use futures::StreamExt;
use std::io::Write as _;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use pigeon_core::engine::ClientHandle;

use super::app::App;
use super::effect::{self, Effect};
use super::panes::log::Level;
use super::terminal::Tui;

/// The shortest time between two frames.
pub const FRAME: Duration = Duration::from_millis(50);

/// Run until the user quits, the terminal closes or a signal arrives.
pub async fn run(
    terminal: &mut Tui,
    app: &mut App,
    handle: ClientHandle,
    initial: Vec<Effect>,
    stopped: &str,
) -> anyhow::Result<()> {
    let (tx, mut results) = mpsc::unbounded_channel();
    let mut snapshots = handle.snapshot();
    let mut events = handle.events();
    let mut input = EventStream::new();
    let mut sigterm = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut sighup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let mut sigint = signal(SignalKind::interrupt()).context("listening for SIGINT")?;

    app.on_snapshot(snapshots.borrow_and_update().clone());
    for effect in initial {
        effect::spawn(effect, &handle, &tx);
    }

    let mut engine_running = true;
    let mut events_open = true;
    let mut dirty = true;
    let mut last_frame: Option<Instant> = None;
    let (changed_tx, mut folder_changed) = mpsc::unbounded_channel();
    let mut folder = super::watch::FolderWatch::new(changed_tx);
    // When to read the Files pane's folder again (a change seen, settling).
    let mut reread: Option<Instant> = None;

    while !app.should_quit() {
        folder.follow(app.files_folder());
        if dirty {
            let now = Instant::now();
            let due = match last_frame {
                None => true,
                Some(t) => now >= t + FRAME,
            };
            if due {
                terminal
                    .draw(|frame| app.render(frame))
                    .context("drawing the screen")?;
                dirty = false;
                last_frame = Some(now);
            }
        }
        let next_frame = last_frame.map_or_else(Instant::now, |t| t + FRAME);

        let effects = tokio::select! {
            input_event = input.next() => match input_event {
                Some(Ok(TermEvent::Key(key))) => {
                    dirty = true;
                    app.on_key(key)
                }
                Some(Ok(TermEvent::Mouse(mouse))) => {
                    dirty = true;
                    app.on_mouse(mouse)
                }
                Some(Ok(TermEvent::Resize(..))) => {
                    // `draw` resizes its buffers to the new size.
                    dirty = true;
                    Vec::new()
                }
                Some(Ok(_)) => Vec::new(),
                Some(Err(e)) => return Err(e).context("reading the terminal"),
                // The terminal is gone: nobody to show anything to.
                None => break,
            },
            changed = snapshots.changed(), if engine_running => {
                dirty = true;
                match changed {
                    Ok(()) => app.on_snapshot(snapshots.borrow_and_update().clone()),
                    Err(_) => {
                        engine_running = false;
                        app.notify(Level::Error, stopped.to_string());
                    }
                }
                Vec::new()
            },
            event = events.recv(), if events_open => {
                dirty = true;
                match event {
                    Ok(event) => app.on_event(event),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        app.notify(Level::Warn, format!("{missed} engine events were missed (UI too slow)"));
                        Vec::new()
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        events_open = false;
                        Vec::new()
                    }
                }
            },
            Some(msg) = results.recv() => {
                dirty = true;
                app.on_msg(msg)
            },
            Some(()) = folder_changed.recv() => {
                reread.get_or_insert_with(|| Instant::now() + super::watch::SETTLE);
                Vec::new()
            },
            () = tokio::time::sleep_until(reread.unwrap_or_else(Instant::now)), if reread.is_some() => {
                reread = None;
                vec![app.reload_files()]
            },
            _ = sigterm.recv() => break,
            _ = sighup.recv() => break,
            _ = sigint.recv() => break,
            () = tokio::time::sleep_until(next_frame), if dirty => Vec::new(),
        };

        for effect in effects {
            match effect {
                Effect::Bell => {
                    let backend = terminal.backend_mut();
                    let _ = backend.write_all(b"\x07").and_then(|()| backend.flush());
                }
                other => effect::spawn(other, &handle, &tx),
            }
        }
    }
    Ok(())
}
