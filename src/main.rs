//! `pigeon`: the binary. Parses the command line, sets up logging, and
//! hands over to the CLI commands (`cli`), the agent, or the TUI (`tui`).
//!
//! With no command and nothing configured, the TUI runs on the embedded
//! local default: an agent in this process, serving `<home>/storage` over
//! a spool in `<home>/spool`, so a newcomer can move files at once.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod agent_admin;
mod cli;
mod local_tree;
mod owner;
mod progress;
mod remote_tree;
mod tui;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use pigeon_core::engine::client::{self, ClientConfig};
use pigeon_core::engine::{agent, UploadOptions};
use pigeon_core::home::{Home, PeerName, TrustedPeer};
use pigeon_core::policy::Permissions;
use pigeon_core::protocol::ShareOp;
use pigeon_core::transport::TransportUri;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    // Before anything is created: the home's files are private whatever
    // the user's umask.
    pigeon_core::home::restrict_umask();
    let args = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pigeon: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // `pigeon audit | head`: the reader had enough; not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Errors can quote the other side (an agent's refusal): escaped.
            let text = format!("{e:#}");
            eprintln!("pigeon: {}", pigeon_core::policy::escape_control(&text));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Cli) -> Result<bool> {
    match &args.command {
        // Neither needs a home, nor makes one.
        Some(Command::Completions { shell }) => {
            cli::completions(*shell);
            return Ok(true);
        }
        Some(Command::Man {
            subcommand,
            install,
        }) => return cli::man(subcommand, install.as_deref()).map(|()| true),
        _ => {}
    }
    let home = Home::resolve(args.home.clone())?;
    let is_agent = matches!(args.command, Some(Command::Agent { .. }));
    let is_tui = args.command.is_none();
    let _guard = init_logging(&home, is_agent, is_tui);
    match args.command {
        None => run_tui(home, args.tui).await.map(|()| true),
        Some(Command::Keys(k)) => cli::keys(&home, k).map(|()| true),
        Some(Command::Transports(t)) => cli::transports(&home, t).await,
        Some(Command::Agent {
            transports,
            root,
            bwlimit,
            shared,
        }) => cli::run_agent(home, transports, root, bwlimit, shared)
            .await
            .map(|()| true),
        Some(Command::Upload {
            files,
            to,
            no_compress,
            overwrite,
            expires,
            conn,
        }) => {
            let options = UploadOptions {
                no_compress,
                overwrite,
                expires_after_secs: expires.map(|d| d.as_secs()),
            };
            cli::upload(home, files, to, options, conn).await
        }
        Some(Command::Download {
            remote,
            output,
            overwrite,
            conn,
        }) => cli::download(home, remote, output, overwrite, conn).await,
        Some(Command::Ls { dir, conn }) => cli::ls(home, dir, conn).await.map(|()| true),
        Some(Command::Status { json }) => cli::status(&home, json, false).await.map(|()| true),
        Some(Command::History { json }) => cli::status(&home, json, true).await.map(|()| true),
        Some(Command::Resume { id, all, conn }) => cli::resume(home, id, all, conn).await,
        Some(Command::Cancel { id, conn }) => cli::cancel(home, id, conn).await.map(|()| true),
        Some(Command::Pause { id }) => cli::pause(&home, &id).await.map(|()| true),
        Some(Command::Forget { id }) => cli::forget(&home, &id).await.map(|()| true),
        Some(Command::Clean {
            failed,
            cancelled,
            completed,
            older_than,
            dry_run,
            agent,
            root,
        }) if agent
            || (agent_admin::agent_running(home.dir())
                && !(failed || cancelled || completed || older_than.is_some())) =>
        {
            agent_admin::clean(&home, dry_run, root)
                .await
                .map(|()| true)
        }
        Some(Command::Clean {
            failed,
            cancelled,
            completed,
            older_than,
            dry_run,
            ..
        }) => cli::clean(
            &home,
            pigeon_core::ledger::CleanChoice {
                failed,
                cancelled,
                completed,
                older_than,
            },
            dry_run,
        )
        .await
        .map(|()| true),
        Some(Command::Pair(args)) => cli::pair(&home, args).await,
        Some(Command::Audit(args)) => agent_admin::audit(&home, args).await,
        Some(Command::Share {
            remote,
            with,
            expires,
            read_only,
            conn,
        }) => {
            let op = ShareOp::Add {
                path: remote,
                with,
                read_only,
                expires_after_secs: expires.map(|d| d.as_secs()),
            };
            cli::client_shares(home, op, conn).await.map(|()| true)
        }
        Some(Command::Unshare { remote, with, conn }) => {
            let op = ShareOp::Remove { path: remote, with };
            cli::client_shares(home, op, conn).await.map(|()| true)
        }
        Some(Command::Shares { conn, root }) => match is_client(&home, &conn)? {
            true => cli::client_shares(home, ShareOp::List, conn)
                .await
                .map(|()| true),
            false => agent_admin::shares(&home, conn.json, root)
                .await
                .map(|()| true),
        },
        Some(Command::Quota { conn, root }) => match is_client(&home, &conn)? {
            true => cli::client_quota(home, conn).await.map(|()| true),
            false => agent_admin::quota(&home, conn.json, root)
                .await
                .map(|()| true),
        },
        Some(Command::Quarantine { command, root }) => {
            agent_admin::quarantine(&home, command, root)
                .await
                .map(|()| true)
        }
        // Answered before the home was made.
        Some(Command::Completions { .. } | Command::Man { .. }) => Ok(true),
    }
}

/// Logs: an agent to stderr and `<home>/logs/agent.log`; the TUI to
/// `<home>/logs/pigeon.log` only (stderr belongs to the screen); other
/// commands print warnings to stderr. `RUST_LOG` overrides the level.
fn init_logging(
    home: &Home,
    agent: bool,
    tui: bool,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let (level, to_stderr, file) = match (agent, tui) {
        (true, _) => ("info", true, Some("agent.log")),
        (false, true) => ("info", false, Some("pigeon.log")),
        (false, false) => ("error", true, None),
    };
    let (file_layer, guard) = match file {
        Some(name) => {
            let _ = std::fs::create_dir_all(home.log_dir());
            let (writer, guard) = tracing_appender::non_blocking(tracing_appender::rolling::never(
                home.log_dir(),
                name,
            ));
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(writer);
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)))
        .with(to_stderr.then(|| {
            tracing_subscriber::fmt::layer()
                .with_ansi(colours_on_stderr())
                .with_writer(std::io::stderr)
        }))
        .with(file_layer)
        .init();
    guard
}

/// Colours only for a person at a terminal, and never with `NO_COLOR`
/// (no-color.org): a log piped to a file gets plain text.
fn colours_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The TUI: on the configured agent, or on the embedded local default.
async fn run_tui(home: Home, args: cli::TuiArgs) -> Result<()> {
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
            cli::parse_transports(&raw)?,
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
        bwlimit: cli::resolve_bwlimit(&home, None)?,
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

/// Whether a question that both sides answer is a client's, for its agent
/// (with a transport, or one in config.toml, or a pigeon running here),
/// and not the agent's home's own.
fn is_client(home: &pigeon_core::home::Home, conn: &cli::Conn) -> anyhow::Result<bool> {
    Ok(!agent_admin::agent_running(home.dir())
        && (!conn.transports.is_empty()
            || !home.config()?.transports.is_empty()
            || pigeon_core::socket::path(home.dir()).exists()))
}
