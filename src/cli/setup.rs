//! What a command that runs an engine here needs first: its transports
//! and its bandwidth limit (from the command line, else config.toml), a
//! client engine started on them, and the signal that stops it.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use pigeon_core::bwlimit::BwLimit;
use pigeon_core::engine::client::{self, ClientConfig};
use pigeon_core::engine::ClientHandle;
use pigeon_core::home::Home;
use pigeon_core::transport::TransportUri;

use super::args::Conn;

/// Each `--transport` URI parsed; the first that is not one stops it.
pub fn parse_transports(raw: &[String]) -> Result<Vec<TransportUri>> {
    raw.iter()
        .map(|u| TransportUri::parse(u).map_err(|e| anyhow!(e)))
        .collect()
}

/// Transports from the command line, else from config.toml.
pub fn resolve_transports(home: &Home, given: &[String]) -> Result<Vec<TransportUri>> {
    if !given.is_empty() {
        return parse_transports(given);
    }
    let cfg = home.config()?;
    if cfg.transports.is_empty() {
        bail!("no transport: pass --transport local:<SPOOL_DIR> (the same one the agent uses), or set transports in {}", home.config_path().display());
    }
    parse_transports(&cfg.transports)
}

/// The bandwidth limit: `given` on the command line, else config.toml's.
/// A party limits what it sends with the UP part (one rate is both); a
/// client asks its agent to send downloads at the DOWN part. An agent asks
/// nobody: a separate DOWN rate there is refused rather than ignored.
pub fn resolve_bwlimit(home: &Home, given: Option<&str>, agent: bool) -> Result<Option<BwLimit>> {
    let config = home.config()?;
    let Some(spec) = given.map(str::to_string).or(config.bwlimit) else {
        return Ok(None);
    };
    let limit = BwLimit::parse(&spec).map_err(|e| anyhow::anyhow!("--bwlimit {spec:?}: {e}"))?;
    if !agent {
        return Ok(Some(limit));
    }
    for weekday in 0..7 {
        for minute in 0..1440 {
            let at = limit.at(weekday, minute);
            if at.down.is_some() && at.down != at.up {
                bail!("--bwlimit {spec:?}: an agent limits what it sends; a download rate is the client's to ask: give one rate here, and UP:DOWN to the client's --bwlimit (e.g. --bwlimit off:512k there)");
            }
        }
    }
    Ok(Some(limit))
}

/// A client engine here, on the transports and limits `conn` and config.toml give.
pub async fn start_client(home: &Home, conn: &Conn) -> Result<ClientHandle> {
    let transports = resolve_transports(home, &conn.transports)?;
    let bwlimit = resolve_bwlimit(home, conn.bwlimit.as_deref(), false)?;
    let cfg = home.config()?;
    let handle = client::start(ClientConfig {
        home: home.clone(),
        peer: conn.peer.clone().or(cfg.peer),
        transports,
        parallel: conn.parallel,
        run_queue: false,
        silence_limit: Duration::from_secs(conn.timeout.max(1)),
        embedded_agent: false,
        bwlimit,
    })
    .await?;
    Ok(handle)
}

/// SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
