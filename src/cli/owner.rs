//! Which process runs a home's engine: this one, or the one that already
//! holds the home, reached through its control socket
//! ([`pigeon_core::socket`]).
//!
//! Every command that needs the engine calls [`client`]: it attaches to
//! the owner when there is one and otherwise becomes the owner, serving
//! the socket in turn. An owner whose own work is done keeps serving the
//! commands attached to it ([`Client::close`]) and only then lets go.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use pigeon_core::engine::ClientHandle;
use pigeon_core::error::CoreError;
use pigeon_core::home::Home;
use pigeon_core::policy::escape_control;
use pigeon_core::socket::{self, OwnerInfo, Served};

use super::args::Conn;
use super::setup::{parse_transports, shutdown_signal, start_client};

/// How long a command waits for a home whose store is held by a process
/// that is not (yet) serving its socket: an owner starting up binds it
/// within milliseconds of opening the store.
/// (Longer than an owner takes to let go as it stops: up to 6 s while its
/// transfers store their progress.)
const OWNER_STARTING: Duration = Duration::from_secs(10);

/// A client engine and how this process came by it.
pub struct Client {
    pub handle: ClientHandle,
    /// Set when this process owns the home and serves it.
    served: Option<Served>,
    /// Set when another process does.
    pub owner: Option<OwnerInfo>,
}

impl Client {
    /// Done with the engine. An owner first serves the commands still
    /// attached to it (a Ctrl-C cuts that short: they take over).
    pub async fn close(mut self) {
        if let Some(served) = self.served.as_mut() {
            let others = served.clients();
            if others > 0 {
                eprintln!(
                    "pigeon: serving {} on this home through this process until they are done (Ctrl-C hands their transfers over, progress kept)",
                    pigeon_core::view::plural(others as u64, "other pigeon command")
                );
                tokio::select! {
                    () = served.idle() => {}
                    () = shutdown_signal() => {}
                }
            }
        }
        self.close_now().await;
    }

    /// Done at once (after a Ctrl-C): attached commands take over.
    pub async fn close_now(mut self) {
        // No new command attaches to an engine that is stopping.
        drop(self.served.take());
        self.handle.shutdown().await;
    }
}

/// The engine for a command: the home owner's, or a new one here that
/// then serves the home. `follow`: transfers this command starts stop
/// (progress kept) if it goes away before they end.
pub async fn client(home: &Home, conn: &Conn, command: &str, follow: bool) -> Result<Client> {
    let deadline = Instant::now() + OWNER_STARTING;
    loop {
        if let Some(attached) = socket::attach(home.dir(), follow).await? {
            check_same_way(conn, &attached.owner)?;
            return Ok(Client {
                handle: attached.handle,
                served: None,
                owner: Some(attached.owner),
            });
        }
        match start_client(home, conn).await {
            Ok(handle) => {
                let served = serve(home, &handle, command).await;
                return Ok(Client {
                    handle,
                    served,
                    owner: None,
                });
            }
            Err(e) if store_locked(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) if store_locked(&e) => bail!(
                "{e}\nno pigeon answers on {}: if `pigeon agent` runs on this home, client commands need a home of their own (--home DIR or PIGEON_HOME)",
                socket::path(home.dir()).display()
            ),
            Err(e) => return Err(e),
        }
    }
}

/// The home owner's engine if a process holds the home, else None (the
/// caller works on the store itself).
pub async fn attached(home: &Home) -> Result<Option<socket::Attached>> {
    Ok(socket::attach(home.dir(), false).await?)
}

/// Serve the engine we just started to the other commands on this home.
/// Without the socket pigeon still works, only alone: said, not fatal.
pub async fn serve(home: &Home, handle: &ClientHandle, command: &str) -> Option<Served> {
    let info = owner_info(handle, command).await;
    match socket::serve(home.dir(), handle.clone(), info) {
        Ok(served) => Some(served),
        Err(e) => {
            eprintln!(
                "pigeon: other pigeon commands cannot use this home while this one runs: {e}"
            );
            None
        }
    }
}

async fn owner_info(handle: &ClientHandle, command: &str) -> OwnerInfo {
    let mut snapshots = handle.snapshot();
    // The first snapshot follows the engine's start at once.
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        snapshots.wait_for(|s| s.version > 0),
    )
    .await;
    let snapshot = snapshots.borrow().clone();
    OwnerInfo {
        pid: std::process::id(),
        command: command.to_string(),
        peer: snapshot.peer.clone(),
        transports: snapshot.transports.iter().map(|t| t.uri.clone()).collect(),
        embedded_agent: snapshot.embedded_agent,
    }
}

fn store_locked(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<CoreError>(),
        Some(CoreError::StoreLocked { .. })
    )
}

/// An attached command runs on the owner's engine: its peer and
/// transports. One that names others would silently get these: refused.
fn check_same_way(conn: &Conn, owner: &OwnerInfo) -> Result<()> {
    let held_by = || {
        format!(
            "this home is held by a pigeon process ({}) talking to {} over {}",
            owner.describe(),
            escape_control(&owner.peer),
            escape_control(&owner.transports.join(", "))
        )
    };
    if let Some(peer) = &conn.peer {
        if !owner.peer.is_empty() && *peer != owner.peer {
            bail!(
                "{}, not {}: wait for it to finish, or use another --home",
                held_by(),
                escape_control(peer)
            );
        }
    }
    if !conn.transports.is_empty() {
        let mut wanted: Vec<String> = parse_transports(&conn.transports)?
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut held = owner.transports.clone();
        wanted.sort();
        held.sort();
        if wanted != held {
            bail!(
                "{}, not {}: leave out --transport to use those, wait for it to finish, or use another --home",
                held_by(),
                escape_control(&wanted.join(", "))
            );
        }
    }
    Ok(())
}

/// The way to the agent a command that takes over from a stopped owner
/// uses: its own if it named one, else the owner's.
pub fn takeover_conn(conn: &Conn, owner: Option<&OwnerInfo>) -> Conn {
    let mut conn = conn.clone();
    if let Some(owner) = owner {
        if conn.transports.is_empty() && !owner.transports.is_empty() {
            conn.transports = owner.transports.clone();
        }
        if conn.peer.is_none() && !owner.peer.is_empty() {
            conn.peer = Some(owner.peer.clone());
        }
    }
    conn
}
