//! The commands that start, stop and tidy transfers: `upload`,
//! `download`, `resume`, `pause`, `cancel`, `forget` and `clean`. Those
//! that move files follow them to their end ([`super::follow`]); the
//! others act on the engine of the pigeon holding the home, or on the
//! home's store when none does.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use pigeon_core::engine::{ClientHandle, DownloadOptions, TransferAction, UploadOptions};
use pigeon_core::home::Home;
use pigeon_core::ledger::{self, CleanChoice, Ledger};
use pigeon_core::policy::escape_control;
use pigeon_core::view::{plural, Event, LogLevel, TransferId, TransferReport, TransferStatus};

use super::args::Conn;
use super::follow::follow;
use super::owner;
use super::print::{cannot, short};
use super::setup::resolve_transports;

/// `pigeon upload`: queue each file (a folder's, each in it), then follow them all; true when all completed.
pub async fn upload(
    home: Home,
    files: Vec<PathBuf>,
    to: Option<String>,
    options: UploadOptions,
    conn: Conn,
) -> Result<bool> {
    // Each source lands on one remote path: a lone source on `--to` itself
    // (a folder's files then go under it), several under `--to` as a folder.
    let roots: Vec<(PathBuf, String)> = files
        .iter()
        .map(|file| {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let remote = match (&to, files.len()) {
                (Some(t), 1) if !t.ends_with('/') => t.clone(),
                (Some(dir), _) => crate::local_tree::join_remote(dir, &name),
                (None, _) => name,
            };
            (file.clone(), remote)
        })
        .collect();
    let (pairs, capped) = crate::local_tree::expand_roots(roots);
    if capped {
        bail!(
            "these folders hold more than {}; upload them in parts",
            plural(crate::local_tree::MAX_FILES as u64, "file")
        );
    }
    if pairs.is_empty() {
        bail!("no files to upload: the folders given are empty");
    }
    let mut seen = std::collections::HashSet::new();
    if let Some((_, dup)) = pairs.iter().find(|(_, r)| !seen.insert(r.as_str())) {
        bail!(
            "two of these files would land on the same remote path {}; rename one or upload them separately",
            escape_control(dup)
        );
    }
    let client = owner::client(&home, &conn, "pigeon upload", true).await?;
    let events = client.handle.events();
    let mut ids = vec![];
    let mut ok = true;
    for (file, remote) in pairs {
        match client
            .handle
            .upload(file.clone(), remote, options.clone())
            .await
        {
            Ok(id) => ids.push(id),
            Err(e) => {
                eprintln!(
                    "pigeon: {}",
                    cannot("upload", &file.display().to_string(), &e)
                );
                ok = false;
            }
        }
    }
    let done = follow(&home, &conn, client, events, ids, "pigeon upload").await?;
    Ok(ok && done)
}

/// `pigeon download`: a file, or a folder (ending in `/`) file by file; true when all completed.
pub async fn download(
    home: Home,
    remote: String,
    output: Option<PathBuf>,
    options: DownloadOptions,
    conn: Conn,
) -> Result<bool> {
    let client = owner::client(&home, &conn, "pigeon download", true).await?;
    let events = client.handle.events();
    if remote.is_empty() || remote.ends_with('/') {
        return download_folder(&home, &conn, client, events, &remote, output, options).await;
    }
    let id = match client
        .handle
        .download_with(remote.clone(), output.unwrap_or_default(), options)
        .await
    {
        Ok(id) => id,
        Err(e) => {
            client.close().await;
            return Err(anyhow!(cannot("download", &remote, &e)));
        }
    };
    follow(&home, &conn, client, events, vec![id], "pigeon download").await
}

/// Everything under the remote folder `remote` into `output` (default:
/// the folder's name, here), as one download per file.
async fn download_folder(
    home: &Home,
    conn: &Conn,
    client: owner::Client,
    events: tokio::sync::broadcast::Receiver<Event>,
    remote: &str,
    output: Option<PathBuf>,
    options: DownloadOptions,
) -> Result<bool> {
    let dir = remote.trim_matches('/');
    let root = output.unwrap_or_else(|| match dir.rsplit('/').next() {
        Some(name) if !name.is_empty() => PathBuf::from(name),
        _ => PathBuf::from("."),
    });
    let tree = match crate::remote_tree::walk(&client.handle, dir, &root).await {
        Ok(tree) => tree,
        Err(e) => {
            client.close().await;
            return Err(anyhow!(cannot("download", remote, &e)));
        }
    };
    if tree.capped {
        client.close().await;
        bail!(
            "{} holds more than {}; download its folders one by one",
            escape_control(remote),
            plural(crate::remote_tree::MAX_FILES as u64, "file")
        );
    }
    if tree.refused > 0 {
        eprintln!(
            "pigeon: left out {} the agent listed outside {} or under names that cannot be files here",
            plural(tree.refused as u64, "entry"),
            escape_control(remote)
        );
    }
    if tree.files.is_empty() {
        client.close().await;
        eprintln!(
            "nothing to download: {} holds no files",
            escape_control(remote)
        );
        return Ok(tree.refused == 0);
    }
    let mut ids = vec![];
    let mut ok = true;
    for (entry, local) in tree.files {
        let queued = match local.parent().map(std::fs::create_dir_all) {
            Some(Err(e)) => Err(anyhow!(
                "cannot download {}: cannot create {}: {e}",
                escape_control(&entry.path),
                local.display()
            )),
            _ => client
                .handle
                .download_with(entry.path.clone(), local, options.clone())
                .await
                .map_err(|e| anyhow!(cannot("download", &entry.path, &e))),
        };
        match queued {
            Ok(id) => ids.push(id),
            Err(e) => {
                eprintln!("pigeon: {e}");
                ok = false;
            }
        }
    }
    let done = follow(home, conn, client, events, ids, "pigeon download").await?;
    Ok(ok && done)
}

/// `pigeon resume ID|--all`, followed to the end; true when all completed.
pub async fn resume(home: Home, id: Option<String>, all: bool, conn: Conn) -> Result<bool> {
    if id.is_none() && !all {
        bail!("name a transfer id (see `pigeon status`) or pass --all");
    }
    let conn = match recorded_transports(&home, &conn, id.as_deref()).await? {
        Some(transports) => Conn { transports, ..conn },
        None => conn,
    };
    let client = owner::client(&home, &conn, "pigeon resume", true).await?;
    let mut events = client.handle.events();
    let ids = match client.handle.resume_matching(id, all).await {
        Ok(ids) => ids,
        Err(e) => {
            client.close().await;
            return Err(e.into());
        }
    };
    // What it said while choosing (the transfers it left, and why).
    while let Ok(event) = events.try_recv() {
        if let Event::Log {
            level: LogLevel::Warn | LogLevel::Error,
            message,
        } = event
        {
            eprintln!("pigeon: {}", escape_control(&message));
        }
    }
    if ids.is_empty() {
        eprintln!("nothing to resume");
        client.close().await;
        return Ok(true);
    }
    follow(&home, &conn, client, events, ids, "pigeon resume").await
}

/// With no `--transport` and none in config.toml, the transports the
/// transfers to resume went over (as each record names them): the ones
/// most of them used (they all go to the same agent).
/// None when given or configured, or when a running pigeon holds the home
/// (its engine has its own).
async fn recorded_transports(
    home: &Home,
    conn: &Conn,
    prefix: Option<&str>,
) -> Result<Option<Vec<String>>> {
    if !conn.transports.is_empty() || !home.config()?.transports.is_empty() {
        return Ok(None);
    }
    // A pigeon that holds the home but no longer answers is on its way out
    // (the command of a transfer just paused): wait for it to let go.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let reports = loop {
        match Ledger::open(home) {
            Ok(ledger) => break ledger.reports()?,
            Err(pigeon_core::error::CoreError::StoreLocked { .. }) => {
                let answers =
                    tokio::net::UnixStream::connect(pigeon_core::socket::path(home.dir()))
                        .await
                        .is_ok();
                if answers || tokio::time::Instant::now() >= deadline {
                    return Ok(None);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let wanted: Vec<&TransferReport> = reports
        .iter()
        .filter(|r| {
            !matches!(
                r.status,
                TransferStatus::Completed | TransferStatus::Cancelled
            )
        })
        .filter(|r| prefix.is_none_or(|p| r.id.starts_with(&p.to_ascii_lowercase())))
        .filter(|r| !r.transport.is_empty())
        .collect();
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in &wanted {
        *counts.entry(r.transport.as_str()).or_default() += 1;
    }
    let Some((&chosen, _)) = counts.iter().max_by_key(|(_, n)| **n) else {
        return Ok(None);
    };
    eprintln!(
        "pigeon: resuming over {}, as recorded",
        escape_control(chosen)
    );
    Ok(Some(chosen.split(", ").map(str::to_string).collect()))
}

/// `pigeon pause ID`: on the running engine, or marked in the store.
pub async fn pause(home: &Home, id: &str) -> Result<()> {
    let report = match owner::attached(home).await? {
        Some(owner) => {
            let paused = act_on(&owner.handle, id, TransferAction::Pause).await;
            owner.handle.shutdown().await;
            paused?
        }
        // Nothing runs it: marked paused, nothing starts it until resumed.
        None => ledger::report(&Ledger::open(home)?.pause(id)?),
    };
    eprintln!(
        "paused {} ({}); `pigeon resume {}` continues it where it stopped",
        short(&report.id),
        escape_control(&report.remote_path),
        short(&report.id)
    );
    Ok(())
}

/// `pigeon cancel ID`: here, and told to the agent when there is a way to it.
pub async fn cancel(home: Home, id: String, conn: Conn) -> Result<()> {
    let wait = Duration::from_secs(conn.timeout.clamp(1, 30));
    // An engine of our own is let go after saying what happened.
    let mut ours = None;
    let (short, told) = if let Some(owner) = owner::attached(&home).await? {
        let cancelled = cancel_on(&owner.handle, &id, wait).await;
        owner.handle.shutdown().await;
        let (report, told) = cancelled?;
        (short(&report.id).to_string(), Some(told))
    } else if resolve_transports(&home, &conn.transports).is_ok() {
        let client = owner::client(&home, &conn, "pigeon cancel", false).await?;
        let cancelled = cancel_on(&client.handle, &id, wait).await;
        ours = Some(client);
        match cancelled {
            Ok((report, told)) => (short(&report.id).to_string(), Some(told)),
            Err(e) => {
                if let Some(client) = ours {
                    client.close().await;
                }
                return Err(e);
            }
        }
    } else {
        // No way to the agent: cancel here alone.
        let ledger = Ledger::open(&home)?;
        let rec = ledger.find(&id)?;
        if rec.status.is_finished() {
            bail!(
                "transfer {} already {}",
                rec.id.short(),
                rec.status.as_str()
            );
        }
        ledger.cancel_here(&rec)?;
        (rec.id.short(), None)
    };
    match told {
        Some(true) => eprintln!("cancelled {short}; the agent confirmed it holds nothing of it"),
        Some(false) => eprintln!(
            "cancelled {short} here; the agent did not confirm within {} s, so until it does it keeps what it received: the cancel is said again the next time pigeon reaches it (any command on this home, or `pigeon cancel {short}` again)",
            wait.as_secs()
        ),
        None => eprintln!(
            "cancelled {short} here; no transport to tell the agent (give --transport): the cancel is said the next time pigeon reaches it, and until then the agent keeps what it received"
        ),
    }
    if let Some(client) = ours {
        client.close().await;
    }
    Ok(())
}

/// Cancel the transfer `prefix` names on `handle`'s engine, telling the
/// agent within `wait`; whether it was told.
async fn cancel_on(
    handle: &ClientHandle,
    prefix: &str,
    wait: Duration,
) -> Result<(TransferReport, bool)> {
    // Cancelled before, perhaps while the agent was away: say it again
    // until the agent confirms (the engine answers at once if it did).
    let report = handle.find(prefix.to_string()).await?;
    if report.status == TransferStatus::Cancelled {
        let id: TransferId = report.id.parse().map_err(|e: String| anyhow!(e))?;
        let told = handle.cancel_telling(id, wait).await?;
        if told {
            bail!(
                "transfer {} already cancelled; the agent confirmed it holds nothing of it",
                short(&report.id)
            );
        }
        return Ok((report, told));
    }
    let (report, id) = unfinished(handle, prefix).await?;
    let told = handle.cancel_telling(id, wait).await?;
    Ok((report, told))
}

/// Do `action` to the unfinished transfer `prefix` names.
async fn act_on(
    handle: &ClientHandle,
    prefix: &str,
    action: TransferAction,
) -> Result<TransferReport> {
    let (report, id) = unfinished(handle, prefix).await?;
    handle.act(id, action).await?;
    Ok(report)
}

/// The unfinished transfer `prefix` names, and its id.
async fn unfinished(handle: &ClientHandle, prefix: &str) -> Result<(TransferReport, TransferId)> {
    let report = handle.find(prefix.to_string()).await?;
    if report.status.is_finished() {
        bail!(
            "transfer {} already {}",
            short(&report.id),
            report.status.as_str()
        );
    }
    let id: TransferId = report.id.parse().map_err(|e: String| anyhow!(e))?;
    Ok((report, id))
}

/// `pigeon forget ID`: a finished transfer off this party's list.
pub async fn forget(home: &Home, id: &str) -> Result<()> {
    let report = match owner::attached(home).await? {
        Some(owner) => {
            let forgotten = owner.handle.forget(id.to_string()).await;
            owner.handle.shutdown().await;
            forgotten?
        }
        None => ledger::report(&Ledger::open(home)?.forget(id)?),
    };
    eprintln!(
        "forgot {} ({} {})",
        short(&report.id),
        report.status.as_str(),
        escape_control(&report.remote_path)
    );
    Ok(())
}

/// `pigeon clean` on a client: finished transfers off its list in bulk.
pub async fn clean(home: &Home, choice: CleanChoice, dry_run: bool) -> Result<()> {
    let chosen = match owner::attached(home).await? {
        Some(owner) => {
            let cleaned = owner.handle.clean(choice, dry_run).await;
            owner.handle.shutdown().await;
            cleaned?
        }
        None => Ledger::open(home)?
            .clean(&choice, dry_run)?
            .iter()
            .map(ledger::report)
            .collect(),
    };
    for report in &chosen {
        println!(
            "{} {}  {:<9}  {}",
            if dry_run { "would remove" } else { "removed" },
            short(&report.id),
            report.status.as_str(),
            escape_control(&report.remote_path)
        );
    }
    if chosen.is_empty() {
        eprintln!("nothing to clean");
    }
    Ok(())
}
