//! The commands that ask: `ls` and a client's `share`, `unshare`,
//! `shares` and `quota` ask the agent; `status` and `history` ask this
//! home (its running pigeon, its store, or what an agent mirrored).

use std::time::Duration;

use anyhow::{Context, Result};
use pigeon_core::engine::ClientHandle;
use pigeon_core::home::Home;
use pigeon_core::ledger::Ledger;
use pigeon_core::policy::escape_control;
use pigeon_core::protocol::ShareOp;
use pigeon_core::view::TransferReport;

use super::args::Conn;
use super::owner;
use super::print::{json_line, link_json, link_line, print_entries, print_shares};

/// `pigeon ls [DIR]`: the agent's listing.
pub async fn ls(home: Home, dir: String, conn: Conn) -> Result<()> {
    let client = owner::client(&home, &conn, "pigeon ls", false).await?;
    let entries = match client.handle.list(dir).await {
        Ok(entries) => entries,
        Err(e) => {
            client.close().await;
            return Err(e.into());
        }
    };
    print_entries(&entries, conn.json);
    // Printed first: commands attached meanwhile may keep this one serving.
    client.close().await;
    Ok(())
}

/// `pigeon status` (every transfer, and the links) and `pigeon history` (`finished_only`).
pub async fn status(home: &Home, json: bool, finished_only: bool) -> Result<()> {
    let mut links = vec![];
    let live = match owner::attached(home).await? {
        Some(owner) => {
            let reports = owner.handle.reports().await;
            if !finished_only {
                links = live_links(&owner.handle).await;
            }
            owner.handle.shutdown().await;
            Some(reports?)
        }
        None => None,
    };
    let reports = match live.map_or_else(|| Ledger::open(home).map(|l| l.reports()), |r| Ok(Ok(r)))
    {
        Ok(reports) => reports?,
        // A process that takes no commands (an agent) holds the store:
        // show what it last mirrored.
        Err(pigeon_core::error::CoreError::StoreLocked { .. }) => {
            let path = home.dir().join("status.json");
            let text = std::fs::read(&path).with_context(|| {
                format!(
                    "another pigeon holds this home and {} is missing",
                    path.display()
                )
            })?;
            let age = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .map_or(0, |d| d.as_secs());
            if !json {
                eprintln!(
                    "(live view from the pigeon process using this home, updated {age} s ago)"
                );
            }
            if !finished_only {
                links = std::fs::read(home.dir().join(pigeon_core::engine::LINKS_FILE))
                    .ok()
                    .and_then(|t| serde_json::from_slice(&t).ok())
                    .unwrap_or_default();
            }
            serde_json::from_slice(&text).with_context(|| format!("reading {}", path.display()))?
        }
        Err(e) => return Err(e.into()),
    };
    let shown: Vec<TransferReport> = reports
        .into_iter()
        .filter(|r| !finished_only || r.status.is_finished())
        .collect();
    if json {
        for (i, link) in links.iter().enumerate() {
            println!("{}", json_line(&link_json(i, link)));
        }
        for rep in &shown {
            println!("{}", json_line(rep));
        }
        return Ok(());
    }
    for (i, link) in links.iter().enumerate() {
        println!("{}", link_line(i, link));
    }
    if shown.is_empty() {
        eprintln!("no transfers yet");
    }
    for rep in shown {
        let pct = if rep.chunks_total == 0 {
            0.0
        } else {
            100.0 * rep.chunks_sent as f64 / rep.chunks_total as f64
        };
        let upload = rep.direction == pigeon_core::view::Direction::Upload;
        let error = rep
            .error
            .as_deref()
            .map(|e| format!("\n          error: {}", escape_control(e)))
            .unwrap_or_default();
        println!(
            "{}  {:<8} {:<11} {:>5.1}%  {:>9}  {} {} {}  faults: corrupt {} dup {} reordered {} retransmitted {}{error}",
            super::print::short(&rep.id),
            if upload { "upload" } else { "download" },
            rep.status.as_str(),
            pct,
            pigeon_core::view::human_bytes(rep.size),
            escape_control(&rep.local_path),
            if upload { "->" } else { "<-" },
            escape_control(&rep.remote_path),
            rep.faults.corrupt,
            rep.faults.duplicate,
            rep.faults.reordered,
            rep.faults.retransmitted,
        );
    }
    Ok(())
}

/// The links of the pigeon process serving this home, as its engine sees
/// them (nothing when it says nothing within a second).
async fn live_links(handle: &ClientHandle) -> Vec<pigeon_core::view::TransportHealth> {
    let mut rx = handle.snapshot();
    let seen = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|s| s.version > 0)).await;
    match seen {
        Ok(Ok(s)) => s.transports.clone(),
        _ => vec![],
    }
}

/// `pigeon share`, `unshare` and `shares` on a client: asked of the agent.
pub async fn client_shares(home: Home, op: ShareOp, conn: Conn) -> Result<()> {
    let client = owner::client(&home, &conn, "pigeon share", false).await?;
    let answer = client.handle.shares(op).await;
    client.close().await;
    let (done, shares) = answer?;
    if !done.is_empty() {
        eprintln!("{}", escape_control(&done));
        return Ok(());
    }
    print_shares(&shares, conn.json);
    Ok(())
}

/// `pigeon quota` on a client: this peer's use, asked of the agent.
pub async fn client_quota(home: Home, conn: Conn) -> Result<()> {
    let client = owner::client(&home, &conn, "pigeon quota", false).await?;
    let lines = client.handle.quota().await;
    client.close().await;
    for line in lines? {
        match conn.json {
            true => println!("{}", json_line(&line)),
            false => println!("{}", line.describe()),
        }
    }
    Ok(())
}
