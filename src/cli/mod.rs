//! The command line: [`Cli`] parsed by clap, and [`run`], which hands
//! each command to the module of its concern.
//!
//! The modules, from the bottom up (each uses only those above it in
//! this list, never one below):
//!
//! - [`args`]: every command's arguments; the help texts and manual pages.
//! - [`print`]: how results are printed, and the one JSON line.
//! - [`setup`]: transports, bandwidth limit, a client engine, the stop signal.
//! - [`owner`]: whether this process runs the home's engine or attaches to
//!   the pigeon that does.
//! - [`follow`]: following transfers to their end, with progress bars.
//! - the commands: [`transfer`] (upload, download, resume, pause, cancel,
//!   forget, clean), [`remote`] (ls, status, shares, quota), [`keys`] (keys
//!   and pairing), [`agent`] (the agent and its owner's commands),
//!   [`transports`], [`help`] (completions, man), [`screen`] (the TUI).

mod agent;
mod args;
mod follow;
mod help;
mod keys;
mod owner;
mod print;
mod remote;
mod screen;
mod setup;
mod transfer;
mod transports;

use anyhow::Result;
use pigeon_core::engine::{DownloadOptions, UploadOptions};
use pigeon_core::home::Home;
use pigeon_core::protocol::ShareOp;

pub use args::Cli;
use args::{Command, Conn};

/// Run the command `args` names (the TUI without one); `Ok(false)` when
/// it ran but did not succeed (a transfer failed, a check found a fault).
/// `init_logging` is called once the home is known, for the commands that
/// need one.
pub async fn run<G>(args: Cli, init_logging: impl FnOnce(&Home, bool, bool) -> G) -> Result<bool> {
    match &args.command {
        // Neither needs a home, nor makes one.
        Some(Command::Completions { shell }) => {
            help::completions(*shell);
            return Ok(true);
        }
        Some(Command::Man {
            subcommand,
            install,
        }) => return help::man(subcommand, install.as_deref()).map(|()| true),
        _ => {}
    }
    let home = Home::resolve(args.home.clone())?;
    let is_agent = matches!(args.command, Some(Command::Agent { .. }));
    let is_tui = args.command.is_none();
    let _guard = init_logging(&home, is_agent, is_tui);
    match args.command {
        None => screen::run_tui(home, args.tui).await.map(|()| true),
        Some(Command::Keys(k)) => keys::keys(&home, k).map(|()| true),
        Some(Command::Transports(t)) => transports::transports(&home, t).await,
        Some(Command::Agent {
            transports,
            root,
            bwlimit,
            shared,
        }) => agent::run_agent(home, transports, root, bwlimit, shared)
            .await
            .map(|()| true),
        Some(Command::Upload {
            files,
            to,
            no_compress,
            overwrite,
            no_delta,
            expires,
            conn,
        }) => {
            let options = UploadOptions {
                no_compress,
                overwrite,
                expires_after_secs: expires.map(|d| d.as_secs()),
                no_delta,
            };
            transfer::upload(home, files, to, options, conn).await
        }
        Some(Command::Download {
            remote,
            output,
            overwrite,
            no_delta,
            conn,
        }) => {
            let options = DownloadOptions {
                overwrite,
                no_delta,
            };
            transfer::download(home, remote, output, options, conn).await
        }
        Some(Command::Ls { dir, conn }) => remote::ls(home, dir, conn).await.map(|()| true),
        Some(Command::Status { json }) => remote::status(&home, json, false).await.map(|()| true),
        Some(Command::History { json }) => remote::status(&home, json, true).await.map(|()| true),
        Some(Command::Resume { id, all, conn }) => transfer::resume(home, id, all, conn).await,
        Some(Command::Cancel { id, conn }) => transfer::cancel(home, id, conn).await.map(|()| true),
        Some(Command::Pause { id }) => transfer::pause(&home, &id).await.map(|()| true),
        Some(Command::Forget { id }) => transfer::forget(&home, &id).await.map(|()| true),
        Some(Command::Clean {
            failed,
            cancelled,
            completed,
            older_than,
            dry_run,
            agent,
            root,
        }) => {
            let records_asked = failed || cancelled || completed || older_than.is_some();
            if agent || (agent::agent_running(home.dir()) && !records_asked) {
                agent::clean(&home, dry_run, root).await
            } else {
                let choice = pigeon_core::ledger::CleanChoice {
                    failed,
                    cancelled,
                    completed,
                    older_than,
                };
                transfer::clean(&home, choice, dry_run).await
            }
            .map(|()| true)
        }
        Some(Command::Pair(args)) => keys::pair(&home, args).await,
        Some(Command::Audit(args)) => agent::audit(&home, args).await,
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
            remote::client_shares(home, op, conn).await.map(|()| true)
        }
        Some(Command::Unshare { remote, with, conn }) => {
            let op = ShareOp::Remove { path: remote, with };
            remote::client_shares(home, op, conn).await.map(|()| true)
        }
        Some(Command::Shares { conn, root }) => match is_client(&home, &conn)? {
            true => remote::client_shares(home, ShareOp::List, conn)
                .await
                .map(|()| true),
            false => agent::shares(&home, conn.json, root).await.map(|()| true),
        },
        Some(Command::Quota { conn, root }) => match is_client(&home, &conn)? {
            true => remote::client_quota(home, conn).await.map(|()| true),
            false => agent::quota(&home, conn.json, root).await.map(|()| true),
        },
        Some(Command::Quarantine { command, root }) => {
            agent::quarantine(&home, command, root).await.map(|()| true)
        }
        // Answered before the home was made.
        Some(Command::Completions { .. } | Command::Man { .. }) => Ok(true),
    }
}

/// Whether a question that both sides answer is a client's, for its agent
/// (with a transport, or one in config.toml, or a pigeon running here),
/// and not the agent's home's own.
fn is_client(home: &pigeon_core::home::Home, conn: &Conn) -> anyhow::Result<bool> {
    Ok(!agent::agent_running(home.dir())
        && (!conn.transports.is_empty()
            || !home.config()?.transports.is_empty()
            || pigeon_core::socket::path(home.dir()).exists()))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// The modules of `cli` by floor, lowest first, as this module's
    /// overview lists them. A module uses only floors below its own: the
    /// commands, on the top floor, use none of each other.
    const FLOORS: &[&[&str]] = &[
        &["args"],
        &["print"],
        &["setup"],
        &["owner"],
        &["follow"],
        &[
            "transfer",
            "remote",
            "keys",
            "agent",
            "transports",
            "help",
            "screen",
        ],
    ];

    fn floor_of(module: &str) -> Option<usize> {
        FLOORS.iter().position(|floor| floor.contains(&module))
    }

    /// Each `.rs` file under `dir` (and its folders), with its code: the
    /// lines that are not comments.
    fn code_under(dir: &Path) -> Vec<(PathBuf, String)> {
        let mut files = vec![];
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(code_under(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect();
                files.push((path, code.join("\n")));
            }
        }
        files
    }

    fn src() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
    }

    /// Issue 27: `cli`, `owner` and `agent_admin` used each other; now
    /// every arrow between the modules of `cli` points down a floor.
    #[test]
    fn each_cli_module_uses_only_the_floors_below_its_own() {
        let mut upward = vec![];
        for (path, code) in code_under(&src().join("cli")) {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if name == "mod" {
                continue;
            }
            let floor = floor_of(&name).unwrap_or_else(|| panic!("{name} is on no floor"));
            for other in FLOORS.iter().flat_map(|f| f.iter()) {
                let used = code.contains(&format!("super::{other}::"))
                    || code.contains(&format!("super::{other};"))
                    || code.contains(&format!("super::{{{other}"));
                if *other != name && used && floor_of(other) >= Some(floor) {
                    upward.push(format!("{name} uses {other}"));
                }
            }
            // Only `main.rs` reaches the command line from outside it.
            assert!(!code.contains("crate::cli"), "{name} names crate::cli");
        }
        for (path, code) in code_under(&src()) {
            let inside = path.starts_with(src().join("cli")) || path.ends_with("main.rs");
            if !inside && code.contains("crate::cli") {
                upward.push(format!("{} uses crate::cli", path.display()));
            }
        }
        assert!(upward.is_empty(), "{upward:#?}");
    }

    /// Issue 27: the binary names no kind of transport; the core checks
    /// and opens each one (`transport::check`, `transport::open`).
    #[test]
    fn the_binary_matches_on_no_kind_of_transport() {
        let kinds = [
            "Local",
            "Memory",
            "Telegram",
            "Whatsapp",
            "Messenger",
            "Shipper",
        ];
        let mut named = vec![];
        for (path, code) in code_under(&src()) {
            for kind in kinds {
                if code.contains(&format!("TransportUri::{kind}")) {
                    named.push(format!("{}: TransportUri::{kind}", path.display()));
                }
            }
        }
        assert!(named.is_empty(), "{named:#?}");
    }
}
