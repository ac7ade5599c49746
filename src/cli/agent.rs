//! The agent's commands: `pigeon agent` runs one; `audit`, `quarantine`,
//! `clean --agent` and, on the agent's home, `quota` and `shares` are
//! asked of the running agent over its socket, or of the home's store
//! when none runs.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pigeon_core::engine::agent::{
    self,
    admin::{now_unix, AdminAnswer, AdminAsk, AuditRecord},
    policy::Held,
};
use pigeon_core::home::Home;
use pigeon_core::policy::escape_control;
use pigeon_core::view::human_bytes;

use super::args::{AuditArgs, AuditCommand, AuditFilter, QuarantineCommand, RootArg};
use super::print::{format_time, json_line, print_shares};
use super::setup::{parse_transports, resolve_bwlimit, shutdown_signal};

/// `pigeon agent`: serve on `transports` until SIGINT or SIGTERM.
pub async fn run_agent(
    home: Home,
    transports: Vec<String>,
    root: Option<PathBuf>,
    bwlimit: Option<String>,
    shared: bool,
) -> Result<()> {
    let transports = parse_transports(&transports)?;
    let bwlimit = resolve_bwlimit(&home, bwlimit.as_deref(), true)?;
    let root = root.unwrap_or_else(|| home.storage_dir());
    eprintln!("pigeon agent: key {}", home.identity()?.public());
    let mut settings = home.config()?.agent;
    if shared {
        settings.shared = Some(true);
    }
    agent::run(
        agent::AgentConfig {
            settings,
            home,
            root,
            transports,
            bwlimit,
        },
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// `pigeon audit [verify|export]`: false when the chain does not verify.
pub async fn audit(home: &Home, args: AuditArgs) -> Result<bool> {
    let root = args.root.clone();
    let AdminAnswer::Audit {
        records,
        broken,
        head,
    } = ask(home, &root, AdminAsk::Audit).await?
    else {
        bail!("the agent answered something else");
    };
    match args.action {
        Some(AuditCommand::Verify) => {
            match &broken {
                Some(why) => {
                    eprintln!(
                        "audit log BROKEN: {why}; the {} before it verify",
                        pigeon_core::view::plural(records.len() as u64, "record")
                    );
                }
                None => println!(
                    "audit log intact: {}, chained from the first; last record's SHA-256 {}",
                    pigeon_core::view::plural(records.len() as u64, "record"),
                    head.as_deref().unwrap_or("-")
                ),
            }
            return Ok(broken.is_none());
        }
        Some(AuditCommand::Export { output, filter }) => {
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut n = 0;
            for r in records.iter().filter(|r| keep(&filter, r)) {
                writeln!(out, "{}", json_line(&json_of(r)))?;
                n += 1;
            }
            out.flush()?;
            if let Some(path) = output {
                eprintln!("wrote {n} audit records to {}", path.display());
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            for r in records.iter().filter(|r| keep(&args.filter, r)) {
                if args.json {
                    writeln!(out, "{}", json_line(&json_of(r)))?;
                    continue;
                }
                let who = match &r.key_id {
                    Some(k) if !r.peer.starts_with("untrusted") => {
                        format!("{} ({})", r.peer, k.get(..8).unwrap_or(k))
                    }
                    _ => r.peer.clone(),
                };
                let size = r.size.map(human_bytes).unwrap_or_default();
                let sha = r
                    .sha256
                    .as_deref()
                    .map(|s| format!(" sha256 {}", s.get(..16).unwrap_or(s)))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{}  {who}  {}  {}  {size}  {}{sha}  [{}]",
                    when(r.time_unix),
                    r.action,
                    escape_control(if r.path.is_empty() { "-" } else { &r.path }),
                    escape_control(&r.outcome),
                    r.transport
                )?;
            }
        }
    }
    if let Some(why) = broken {
        eprintln!("warning: the audit log does not verify past this point: {why}");
        return Ok(false);
    }
    Ok(true)
}

/// `pigeon quota` on the agent's home: each peer's use and all peers'.
pub async fn quota(home: &Home, json: bool, root: RootArg) -> Result<()> {
    let AdminAnswer::Quota(lines) = ask(home, &root, AdminAsk::Quota).await? else {
        bail!("the agent answered something else");
    };
    for line in lines {
        if json {
            println!("{}", json_line(&line));
        } else {
            println!("{}", line.describe());
        }
    }
    Ok(())
}

/// `pigeon shares` on the agent: every share between its peers.
pub async fn shares(home: &Home, json: bool, root: RootArg) -> Result<()> {
    let AdminAnswer::Shares(all) = ask(home, &root, AdminAsk::Shares).await? else {
        bail!("the agent answered something else");
    };
    print_shares(&all, json);
    Ok(())
}

/// `pigeon quarantine list|show|release|delete`.
pub async fn quarantine(home: &Home, cmd: QuarantineCommand, root: RootArg) -> Result<()> {
    match cmd {
        QuarantineCommand::List { json } => {
            let AdminAnswer::Held(all) = ask(home, &root, AdminAsk::Held).await? else {
                bail!("the agent answered something else");
            };
            if all.is_empty() && !json {
                eprintln!("the quarantine is empty");
            }
            for h in all {
                match json {
                    true => println!("{}", json_line(&h)),
                    false => println!("{}", held_line(&h)),
                }
            }
        }
        QuarantineCommand::Show { id } => {
            let AdminAnswer::Held(all) = ask(home, &root, AdminAsk::Held).await? else {
                bail!("the agent answered something else");
            };
            let id = id.trim().to_ascii_lowercase();
            let found: Vec<&Held> = all
                .iter()
                .filter(|h| !id.is_empty() && h.id.starts_with(&id))
                .collect();
            let [h] = found.as_slice() else {
                bail!(
                    "{id:?} names {} held files; see `pigeon quarantine list`",
                    found.len()
                );
            };
            println!("id        {}", h.id);
            println!("peer      {}", h.peer);
            println!("path      {}", escape_control(&h.path));
            println!("size      {} ({} bytes)", human_bytes(h.size), h.size);
            println!("sha256    {}", h.sha256);
            println!("held      {}", when(h.held_unix));
            println!("reason    {}", escape_control(&h.reason));
        }
        QuarantineCommand::Release { id, overwrite } => {
            let AdminAnswer::Released(at) =
                ask(home, &root, AdminAsk::Release { id, overwrite }).await?
            else {
                bail!("the agent answered something else");
            };
            println!("released to {at}");
        }
        QuarantineCommand::Delete { id } => {
            let AdminAnswer::Deleted(h) = ask(home, &root, AdminAsk::Delete { id }).await? else {
                bail!("the agent answered something else");
            };
            println!("deleted {} ({})", h.id, escape_control(&h.path));
        }
    }
    Ok(())
}

/// `pigeon clean --agent`: the agent's cleanup policies, now.
pub async fn clean(home: &Home, dry_run: bool, root: RootArg) -> Result<()> {
    let AdminAnswer::Cleaned(lines) = ask(home, &root, AdminAsk::Clean { dry_run }).await? else {
        bail!("the agent answered something else");
    };
    if lines.is_empty() {
        eprintln!("nothing to clean under the agent's policies ([agent.cleanup] in config.toml)");
    }
    for line in lines {
        println!(
            "{} {line}",
            if dry_run { "would remove" } else { "removed" }
        );
    }
    Ok(())
}

/// Whether an agent answers on this home's socket right now.
pub fn agent_running(home: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(pigeon_core::socket::admin::path(home)).is_ok()
}

async fn ask(home: &Home, root: &RootArg, question: AdminAsk) -> Result<AdminAnswer> {
    Ok(pigeon_core::socket::admin::ask(home, root.root.as_deref(), question).await?)
}

fn since_cut(since: Option<Duration>) -> u64 {
    since.map_or(0, |d| now_unix().saturating_sub(d.as_secs()))
}

fn keep(filter: &AuditFilter, r: &AuditRecord) -> bool {
    r.time_unix >= since_cut(filter.since)
        && filter
            .peer
            .as_deref()
            .is_none_or(|p| r.peer == p || (p == "untrusted" && r.peer.starts_with("untrusted:")))
}

fn when(t: u64) -> String {
    format_time(t)
}

/// One record as a JSON object a log shipper can take.
fn json_of(r: &AuditRecord) -> serde_json::Value {
    serde_json::json!({
        "seq": r.seq,
        "time": when(r.time_unix),
        "time_unix": r.time_unix,
        "peer": r.peer,
        "key_id": r.key_id,
        "action": r.action,
        "path": r.path,
        "size": r.size,
        "sha256": r.sha256,
        "transport": r.transport,
        "outcome": r.outcome,
        "prev": r.prev.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    })
}

fn held_line(h: &Held) -> String {
    format!(
        "{}  {}  {}  {}  held {}: {}{}",
        h.id.get(..8).unwrap_or(&h.id),
        h.peer,
        human_bytes(h.size),
        escape_control(&h.path),
        when(h.held_unix),
        escape_control(&h.reason),
        if h.missing {
            "  (its file is missing: only delete applies)"
        } else {
            ""
        }
    )
}
