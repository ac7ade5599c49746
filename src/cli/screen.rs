//! `pigeon` with no command: the TUI, on the configured agent, or
//! attached to the pigeon that holds the home, or on the embedded local
//! default (an agent in this process serving `<home>/storage` over a
//! spool in `<home>/spool`, so a newcomer can move files at once).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use pigeon_core::engine::agent;
use pigeon_core::engine::client::{self, ClientConfig};
use pigeon_core::home::{Home, PeerName, TrustedPeer};
use pigeon_core::policy::Permissions;
use pigeon_core::transport::TransportUri;

use super::args::TuiArgs;
use super::owner;
use super::setup::{parse_transports, resolve_bwlimit};
use crate::tui;

/// The TUI: on the configured agent, or on the embedded local default.
pub async fn run_tui(home: Home, args: TuiArgs) -> Result<()> {
    let config = home.config()?;
    let options = |embedded_agent: bool, attached_to: Option<String>| tui::TuiOptions {
        home: home.dir().to_path_buf(),
        keymap_path: home.keymap_path(),
        start_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        embedded_agent,
        bell: config.bell.unwrap_or(true),
        mouse: config.mouse.unwrap_or(true),
        attached_to,
    };
    // Another pigeon holds the home: a second screen on its engine.
    if let Some(owner) = owner::attached(&home).await? {
        let options = options(owner.owner.embedded_agent, Some(owner.owner.describe()));
        let result = tui::run(owner.handle.clone(), options).await;
        owner.handle.shutdown().await;
        return result;
    }
    let configured = !args.transports.is_empty() || !config.transports.is_empty();
    let (transports, peer, embedded) = if configured {
        let raw = if args.transports.is_empty() {
            config.transports.clone()
        } else {
            args.transports.clone()
        };
        (
            parse_transports(&raw)?,
            args.peer.or(config.peer.clone()),
            None,
        )
    } else {
        let (uri, agent_task) = start_embedded_agent(&home).await?;
        (vec![uri], Some("local-agent".to_string()), Some(agent_task))
    };
    let handle = client::start(ClientConfig {
        home: home.clone(),
        peer,
        transports,
        parallel: config.parallel.unwrap_or(2),
        run_queue: true,
        silence_limit: Duration::from_secs(3600 * 24),
        embedded_agent: embedded.is_some(),
        bwlimit: resolve_bwlimit(&home, None, false)?,
    })
    .await?;
    let served = owner::serve(&home, &handle, "the TUI").await;
    let result = tui::run(handle.clone(), options(embedded.is_some(), None)).await;
    // Commands attached to this engine take the home over as it goes.
    drop(served);
    handle.shutdown().await;
    if let Some(stop) = embedded {
        let _ = stop.send(());
    }
    result
}

/// Start an agent inside this process with its own home under ours, and
/// make the two trust each other. Returns the spool URI and a stop switch.
async fn start_embedded_agent(
    home: &Home,
) -> Result<(TransportUri, tokio::sync::oneshot::Sender<()>)> {
    let agent_home = Home::resolve(Some(home.dir().join("local-agent")))?;
    let me = home.identity()?;
    let agent_key = agent_home.identity()?.public();
    let name = PeerName::parse("local-agent")?;
    let mut mine = home.trust_list()?;
    if !mine.iter().any(|p| p.key == agent_key) {
        mine.retain(|p| p.name != name);
        mine.push(TrustedPeer {
            name: name.clone(),
            key: agent_key,
            permissions: Permissions::default(),
            addresses: Default::default(),
            limits: Default::default(),
        });
        home.save_trusted(&mine)?;
    }
    let client_name = PeerName::parse("local-client")?;
    agent_home.save_trusted(&[TrustedPeer {
        name: client_name,
        key: me.public(),
        // The same user on the same machine: programs are theirs to deploy.
        permissions: Permissions {
            exec: true,
            ..Permissions::default()
        },
        addresses: Default::default(),
        limits: Default::default(),
    }])?;
    let spool = home.dir().join("spool");
    // Made here, not by the agent task: the client opens it at once.
    pigeon_core::home::create_public_dirs(&spool)
        .with_context(|| format!("creating {}", spool.display()))?;
    let uri = TransportUri::parse(&format!("local:{}", spool.display()))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = agent::AgentConfig {
        // Its policy is its own home's (`<home>/local-agent/config.toml`);
        // with one peer, its storage is that peer's alone: one namespace.
        settings: {
            let mut settings = agent_home.config()?.agent;
            settings.shared.get_or_insert(true);
            settings
        },
        home: agent_home,
        root: home.storage_dir(),
        transports: vec![uri.clone()],
        bwlimit: None,
    };
    tokio::spawn(async move {
        if let Err(e) = agent::run(cfg, async {
            let _ = stop_rx.await;
        })
        .await
        {
            tracing::error!("embedded agent stopped: {e}");
        }
    });
    Ok((uri, stop_tx))
}
