//! `pigeon`: the binary. Starts the runtime, sets up logging, hands the
//! command line to [`cli::run`] (which runs a command, the agent, or the
//! TUI), and turns what it returns into the exit code.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod cli;
mod local_tree;
mod progress;
mod remote_tree;
mod tui;

use std::process::ExitCode;

use clap::Parser;
use pigeon_core::home::Home;

use crate::cli::Cli;

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
    match runtime.block_on(cli::run(args, init_logging)) {
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
