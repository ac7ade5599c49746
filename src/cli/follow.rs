//! Following transfers to their end: a progress bar each on a terminal,
//! a line each as it finishes, and carrying on here when the pigeon that
//! held the home stops meanwhile.

use std::io::IsTerminal;

use anyhow::Result;
use pigeon_core::engine::ClientHandle;
use pigeon_core::home::Home;
use pigeon_core::policy::escape_control;
use pigeon_core::view::{plural, Event, LogLevel, TransferId, TransferStatus};

use super::args::Conn;
use super::owner;
use super::print::print_report;
use super::setup::shutdown_signal;

/// Follow `ids` to their end on `client`'s engine, printing each as it
/// finishes, then let the engine go. If the process that held the home
/// stops meanwhile, carry on here: take the home over (or attach to the
/// command that did) and resume what was left. True when all completed.
pub async fn follow(
    home: &Home,
    conn: &Conn,
    mut client: owner::Client,
    mut events: tokio::sync::broadcast::Receiver<Event>,
    mut ids: Vec<TransferId>,
    command: &str,
) -> Result<bool> {
    let mut all_ok = true;
    loop {
        match wait_for(&client.handle, &mut events, &ids, conn.json).await {
            Waited::Finished { ok } => {
                client.close().await;
                return Ok(all_ok && ok);
            }
            Waited::Interrupted => {
                client.close_now().await;
                return Ok(false);
            }
            Waited::OwnerGone { left, ok } => {
                all_ok &= ok;
                let gone = client.owner.take();
                eprintln!(
                    "pigeon: the pigeon process that held this home ({}) stopped; carrying on from here",
                    gone.as_ref().map_or_else(|| "?".into(), |o| o.describe())
                );
                let conn = owner::takeover_conn(conn, gone.as_ref());
                client = owner::client(home, &conn, command, true).await?;
                events = client.handle.events();
                ids = vec![];
                for id in left {
                    match client
                        .handle
                        .resume_matching(Some(id.to_string()), false)
                        .await
                    {
                        Ok(resumed) => ids.extend(resumed),
                        // It ended before the owner stopped: say how.
                        Err(_) => match client.handle.find(id.to_string()).await {
                            Ok(report) => {
                                all_ok &= report.status == TransferStatus::Completed;
                                print_report(&report, conn.json);
                            }
                            Err(e) => {
                                all_ok = false;
                                eprintln!("pigeon: transfer {}: {e}", id.short());
                            }
                        },
                    }
                }
            }
        }
    }
}

/// How [`wait_for`] ended.
enum Waited {
    /// Every transfer ended; `ok` when all completed.
    Finished { ok: bool },
    /// Ctrl-C or SIGTERM: they stop, progress kept.
    Interrupted,
    /// The engine went away (the process holding the home stopped) with
    /// these still running.
    OwnerGone { left: Vec<TransferId>, ok: bool },
}

/// Wait until every transfer in `ids` has finished; print each as it does.
async fn wait_for(
    handle: &ClientHandle,
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    ids: &[TransferId],
    json: bool,
) -> Waited {
    let mut pending: std::collections::HashSet<TransferId> = ids.iter().copied().collect();
    let mut all_ok = true;
    let bars = progress_bars(handle, ids);
    let interrupted = shutdown_signal();
    tokio::pin!(interrupted);
    // Closes when the engine does: the owner's, if it stops.
    let mut engine = handle.snapshot();
    // The links' health, to say a link that failed beside working ones.
    let mut links = handle.snapshot();
    let mut failed_told = std::collections::HashSet::new();
    say_failed_links(&links.borrow_and_update(), &mut failed_told, bars.as_ref());
    let clear = |bars: &Option<indicatif::MultiProgress>| {
        if let Some(b) = bars {
            let _ = b.clear();
        }
    };
    while !pending.is_empty() {
        let received = tokio::select! {
            e = events.recv() => e,
            () = &mut interrupted => {
                clear(&bars);
                eprintln!(
                    "pigeon: interrupted; {} stopped with their progress kept: run the same command again to resume",
                    plural(pending.len() as u64, "transfer")
                );
                return Waited::Interrupted;
            }
            Ok(()) = links.changed() => {
                say_failed_links(&links.borrow_and_update(), &mut failed_told, bars.as_ref());
                continue;
            }
            () = async { while engine.changed().await.is_ok() {} } => {
                // Events already sent still count.
                while let Ok(e) = events.try_recv() {
                    if let Event::Finished(report) = e {
                        if let Ok(id) = report.id.parse() {
                            if pending.remove(&id) {
                                all_ok &= report.status == TransferStatus::Completed;
                                print_report(&report, json);
                            }
                        }
                    }
                }
                clear(&bars);
                if pending.is_empty() {
                    break;
                }
                return Waited::OwnerGone { left: pending.into_iter().collect(), ok: all_ok };
            }
        };
        let event = match received {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => {
                clear(&bars);
                return Waited::OwnerGone {
                    left: pending.into_iter().collect(),
                    ok: all_ok,
                };
            }
        };
        match event {
            Event::Finished(report)
                if report
                    .id
                    .parse::<TransferId>()
                    .is_ok_and(|id| pending.contains(&id)) =>
            {
                if let Ok(id) = report.id.parse::<TransferId>() {
                    pending.remove(&id);
                }
                if report.status != TransferStatus::Completed {
                    all_ok = false;
                }
                if let Some(b) = &bars {
                    b.suspend(|| print_report(&report, json));
                } else {
                    print_report(&report, json);
                }
            }
            Event::Log {
                level: LogLevel::Warn | LogLevel::Error,
                message,
            } => {
                eprintln!("pigeon: {}", escape_control(&message));
            }
            _ => {}
        }
    }
    clear(&bars);
    Waited::Finished { ok: all_ok }
}

/// Say each link that failed for a setting (in `pigeon transports test`'s
/// words) beside others that carry on, once per reason. With one link the
/// command's own failure says it.
fn say_failed_links(
    snapshot: &pigeon_core::view::EngineSnapshot,
    told: &mut std::collections::HashSet<String>,
    bars: Option<&indicatif::MultiProgress>,
) {
    if snapshot.transports.len() < 2 {
        return;
    }
    for why in snapshot.transports.iter().filter_map(|t| t.failure()) {
        if told.insert(why.clone()) {
            let line = format!(
                "pigeon: transport failed: {}; the other transports carry on without it",
                escape_control(&why)
            );
            match bars {
                Some(b) => b.suspend(|| eprintln!("{line}")),
                None => eprintln!("{line}"),
            }
        }
    }
}

/// A progress bar per transfer when stderr is a terminal.
fn progress_bars(handle: &ClientHandle, ids: &[TransferId]) -> Option<indicatif::MultiProgress> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let multi = indicatif::MultiProgress::new();
    // The line is built to the terminal's width by `progress::line`.
    let style = indicatif::ProgressStyle::with_template("{msg}").ok()?;
    let bars: Vec<(TransferId, indicatif::ProgressBar)> = ids
        .iter()
        .map(|id| {
            let b = multi.add(indicatif::ProgressBar::new(0));
            b.set_style(style.clone());
            (*id, b)
        })
        .collect();
    let mut snapshots = handle.snapshot();
    tokio::spawn(async move {
        while snapshots.changed().await.is_ok() {
            let snap = snapshots.borrow_and_update().clone();
            for (id, bar) in &bars {
                if let Some(t) = snap.transfers.iter().find(|t| t.id == *id) {
                    let name = escape_control(&t.remote_path);
                    let progress = crate::progress::Progress {
                        name: &name,
                        done: t.bytes_done,
                        total: t.size,
                        rate: t.rate,
                        eta: t.eta,
                    };
                    // Asked each time: the terminal may have been resized.
                    // One column spare: a line as wide as the terminal
                    // wraps in some of them.
                    let width = crate::progress::terminal_width().saturating_sub(1);
                    bar.set_message(crate::progress::line(&progress, width));
                    bar.set_length(t.size);
                    bar.set_position(t.bytes_done);
                    if t.status.is_finished() {
                        bar.finish_and_clear();
                    }
                }
            }
        }
    });
    Some(multi)
}
