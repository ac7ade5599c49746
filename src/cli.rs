//! The command line: argument types (clap derive) and what each command does.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use pigeon_core::bwlimit::BwLimit;
use pigeon_core::engine::client::{self, ClientConfig};
use pigeon_core::engine::{agent, ClientHandle, DownloadOptions, TransferAction, UploadOptions};
use pigeon_core::home::{Home, PeerName, RevokedPeer, TrustedPeer};
use pigeon_core::ledger::{self, CleanChoice, Ledger};
use pigeon_core::policy::{escape_control, Permissions};
use pigeon_core::protocol::ShareOp;
use pigeon_core::transport::TransportUri;
use pigeon_core::view::{plural, Event, LogLevel, TransferId, TransferReport, TransferStatus};

use crate::owner;

/// Encrypted, resumable file transfer over messaging channels.
///
/// Without a command, opens the full-screen terminal UI.
#[derive(Parser, Debug)]
#[command(name = "pigeon", version, about, long_about = None)]
pub struct Cli {
    /// This party's home folder (config, keys, store, logs; an agent's storage).
    #[arg(long, env = "PIGEON_HOME", global = true)]
    pub home: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub tui: TuiArgs,
}

#[derive(Args, Debug, Default)]
pub struct TuiArgs {
    /// Transport to the configured agent (overrides config.toml); repeat for several.
    #[arg(long = "transport", value_name = "URI")]
    pub transports: Vec<String>,
    /// The trusted agent to drive (when several are trusted).
    #[arg(long)]
    pub peer: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show, trust, list and revoke keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check transports' credentials and reachability.
    #[command(subcommand)]
    Transports(TransportsCommand),
    /// Run the agent in the foreground until SIGINT or SIGTERM.
    Agent {
        /// Transport to serve on, e.g. local:/srv/spool or telegram:*?token_env=…; repeat for several.
        #[arg(long = "transport", value_name = "URI", required = true)]
        transports: Vec<String>,
        /// Storage root (default: <home>/storage).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Most this agent sends per second over all its transports, in
        /// rclone's syntax: 512k, 10M, or a timetable "08:00,512k 19:00,off"
        /// (overrides bwlimit in config.toml).
        #[arg(long, value_name = "RATE")]
        bwlimit: Option<String>,
        /// One namespace for every peer, as before folders per peer
        /// (default: each peer in <root>/<peer>/; also `shared` under
        /// [agent] in config.toml).
        #[arg(long)]
        shared: bool,
    },
    /// Upload files and folders to the agent and wait until it confirms
    /// each file's SHA-256.
    Upload {
        /// Files and folders to upload (folders with everything in them).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Remote file name (one file), or the remote folder (one folder, or
        /// several sources, or a trailing `/`).
        #[arg(long)]
        to: Option<String>,
        /// Do not gzip chunks, even where it would help.
        #[arg(long)]
        no_compress: bool,
        /// Replace a remote file that already exists.
        #[arg(long)]
        overwrite: bool,
        /// The agent removes the uploaded files this long after the
        /// upload: 7d, 12h, 90m.
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        expires: Option<Duration>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Download a file from the agent, or a folder with everything in it.
    Download {
        /// The file on the agent, as `pigeon ls` shows it; a folder ends
        /// with `/` (`runs/42/`).
        remote: String,
        /// Local file or folder (default: the remote file's or folder's
        /// name, here).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Replace local files that already exist (each once its download
        /// is verified).
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List a folder on the agent: name, size, SHA-256, modified.
    Ls {
        /// The folder on the agent (default: its root).
        #[arg(default_value = "")]
        dir: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// This party's transfers and their progress.
    Status {
        /// One JSON object per transfer, on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Finished transfers.
    History {
        /// One JSON object per transfer, on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Resume a paused, failed or interrupted transfer (or all of them).
    Resume {
        /// Transfer id, or a unique prefix of it (see `pigeon status`).
        id: Option<String>,
        /// Every transfer that is not finished.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Pause a transfer, keeping its progress, until `pigeon resume` (or the
    /// same upload or download again).
    Pause {
        /// Transfer id, or a unique prefix of it (see `pigeon status`).
        id: String,
    },
    /// Cancel a transfer, and tell the agent so it drops what it holds of
    /// it (an upload's partial file).
    Cancel {
        /// Transfer id, or a unique prefix of it (see `pigeon status`).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a finished (completed, failed or cancelled) transfer from this
    /// party's list, with its key and any partial file it left here.
    Forget {
        /// Transfer id, or a unique prefix of it (see `pigeon status`).
        id: String,
    },
    /// Remove finished transfers in bulk: failed and cancelled ones unless
    /// told which; `--completed` ones only when asked.
    Clean {
        /// Failed transfers.
        #[arg(long)]
        failed: bool,
        /// Cancelled transfers.
        #[arg(long)]
        cancelled: bool,
        /// Completed transfers (their files stay where they are).
        #[arg(long)]
        completed: bool,
        /// Only those that ended (or began) longer ago than this: 30d, 12h, 90m, 45s.
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: Option<Duration>,
        /// Say what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// The agent's cleanup instead ([agent.cleanup] in its config.toml:
        /// stale partial uploads, old quarantine, old records); the default
        /// on a home where an agent is running.
        #[arg(long, conflicts_with_all = ["failed", "cancelled", "completed", "older_than"])]
        agent: bool,
        #[command(flatten)]
        root: crate::agent_admin::RootArg,
    },
    /// Pair with a peer by a short code instead of exchanging keys. On the
    /// agent, `pigeon pair` prints a code (like 7-gravel-ostrich) and waits
    /// ten minutes for one try; on the client, `pigeon pair CODE` completes
    /// it. Then each trusts the other.
    Pair(PairArgs),
    /// On the agent: its audit log, every request and outcome, hash-chained
    /// (`verify` checks the chain, `export` writes JSON lines).
    Audit(crate::agent_admin::AuditArgs),
    /// Share a file or folder of yours on the agent with another of its
    /// peers, who finds it under shared/<you>/ (in `pigeon ls` and the TUI).
    Share {
        /// The file or folder on the agent, as `pigeon ls` shows it.
        remote: String,
        /// The peer to share it with, by the name the agent trusts it as.
        #[arg(long, value_name = "PEER")]
        with: String,
        /// Stop sharing after this long: 24h, 7d.
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        expires: Option<Duration>,
        /// The other peer may download, not upload or replace.
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop sharing a file or folder (with one peer, or with everyone).
    Unshare {
        /// The shared file or folder, as you named it to `pigeon share`.
        remote: String,
        /// Only with this peer (default: with every peer).
        #[arg(long, value_name = "PEER")]
        with: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// What is shared: on a client, what you share and what is shared with
    /// you; on the agent's home, every share.
    Shares {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        root: crate::agent_admin::RootArg,
    },
    /// Use against quotas: on the agent's home each peer's and all peers';
    /// on a client (with a transport, or one in config.toml) its own, as
    /// the agent counts it.
    Quota {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        root: crate::agent_admin::RootArg,
    },
    /// On the agent: uploads held in quarantine, and what to do with them.
    Quarantine {
        #[command(subcommand)]
        command: crate::agent_admin::QuarantineCommand,
        #[command(flatten)]
        root: crate::agent_admin::RootArg,
    },
    /// Print a completion script for a shell, e.g.
    /// `pigeon completions bash > ~/.local/share/bash-completion/completions/pigeon`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print a manual page (roff): pigeon's, or a subcommand's, e.g.
    /// `pigeon man | man -l -`, `pigeon man keys trust | man -l -`.
    Man {
        /// The subcommand whose page to print, e.g. `upload` or `keys trust`.
        subcommand: Vec<String>,
        /// Write every page (pigeon.1, pigeon-upload.1, …) into DIR instead,
        /// e.g. `~/.local/share/man/man1`, where `man pigeon-upload` finds them.
        #[arg(long, value_name = "DIR")]
        install: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TransportsCommand {
    /// The transports in config.toml, each checked now (as `test` does).
    List,
    /// Check one transport: its secrets are found, the service answers and
    /// accepts them (Telegram: `getMe`; WhatsApp and Messenger: the number
    /// or Page the token speaks for; Shipper: a signed ping); says exactly
    /// what is wrong. Never polls or listens, so a running pigeon on the
    /// same credentials is not disturbed.
    Test {
        /// A transport URI, e.g. telegram:@agent_bot?token_env=PIGEON_TG_TOKEN
        #[arg(value_name = "URI")]
        uri: String,
    },
}

/// `pigeon transports list` and `pigeon transports test URI`.
pub async fn transports(home: &Home, cmd: TransportsCommand) -> Result<bool> {
    match cmd {
        TransportsCommand::Test { uri } => {
            let parsed = TransportUri::parse(&uri).map_err(|e| anyhow!(e))?;
            check_transport(&parsed).await
        }
        TransportsCommand::List => {
            let cfg = home.config()?;
            if cfg.transports.is_empty() {
                println!(
                    "no transports in {}; add e.g. transports = [\"telegram:@phone_pigeon_bot?token_env=PIGEON_TG_TOKEN\"] (without any, pigeon uses the embedded local spool)",
                    home.config_path().display()
                );
                return Ok(true);
            }
            let mut all_ok = true;
            for (i, raw) in cfg.transports.iter().enumerate() {
                print!("{}. ", i + 1);
                match TransportUri::parse(raw) {
                    Ok(parsed) => all_ok &= check_transport(&parsed).await?,
                    Err(e) => {
                        println!("{e}");
                        all_ok = false;
                    }
                }
            }
            Ok(all_ok)
        }
    }
}

/// Check one transport and say how it is, on one line: true when it works.
async fn check_transport(parsed: &TransportUri) -> Result<bool> {
    match parsed {
        TransportUri::Local(l) => {
            if !l.dir.is_dir() {
                println!(
                    "{parsed}: the spool folder {} does not exist",
                    l.dir.display()
                );
                return Ok(false);
            }
            println!(
                "{parsed}: ok, the spool folder {} is there",
                l.dir.display()
            );
            Ok(true)
        }
        TransportUri::Memory(_) => {
            println!("{parsed}: an in-memory channel joins parties of one process only (the simulator's); use local:<SPOOL_DIR> between processes");
            Ok(false)
        }
        TransportUri::Telegram(t) => {
            match pigeon_core::transport::telegram::Telegram::check(t).await {
                Ok(me) => {
                    println!(
                        "{parsed}: ok, this bot is @{} (id {}); it writes to {}",
                        escape_control(me.username.as_deref().unwrap_or("?")),
                        me.id,
                        t.chat
                    );
                    Ok(true)
                }
                Err(e) => {
                    println!("{parsed}: {e}");
                    Ok(false)
                }
            }
        }
        TransportUri::Whatsapp(t) => {
            match pigeon_core::transport::whatsapp::Whatsapp::check(t).await {
                Ok(number) => {
                    println!(
                        "{parsed}: ok, the token speaks for {} ({}, id {}); it writes to {}; the webhook will listen on {}",
                        escape_control(number.display_phone_number.as_deref().unwrap_or("?")),
                        escape_control(number.verified_name.as_deref().unwrap_or("no verified name")),
                        number.id,
                        t.peer,
                        t.meta.listen
                    );
                    Ok(true)
                }
                Err(e) => {
                    println!("{parsed}: {e}");
                    Ok(false)
                }
            }
        }
        TransportUri::Messenger(t) => {
            match pigeon_core::transport::messenger::Messenger::check(t).await {
                Ok(page) => {
                    println!(
                        "{parsed}: ok, the token speaks for the Page {:?} (id {}); it writes to the person {}; the webhook will listen on {}",
                        escape_control(page.name.as_deref().unwrap_or("?")),
                        page.id,
                        t.psid,
                        t.meta.listen
                    );
                    Ok(true)
                }
                Err(e) => {
                    println!("{parsed}: {e}");
                    Ok(false)
                }
            }
        }
        TransportUri::Shipper(t) => {
            match pigeon_core::transport::shipper::Shipper::check(t).await {
                Ok(ping) => {
                    println!(
                        "{parsed}: ok, these credentials are the account {:?} ({} a minute, {} a message); it writes to {}",
                        escape_control(&ping.account),
                        plural(u64::from(ping.rate_limit), "message"),
                        pigeon_core::view::human_bytes(ping.max_message as u64),
                        t.peer
                    );
                    Ok(true)
                }
                Err(e) => {
                    println!("{parsed}: {e}");
                    Ok(false)
                }
            }
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Print this party's public key (creating the identity on first use).
    Show {
        /// Print the key's id instead: the name of this party's inbox on a
        /// local spool.
        #[arg(long)]
        id: bool,
    },
    /// Trust a peer's key.
    Trust {
        /// The peer's public key: 64 hex characters, from `pigeon keys show` there.
        key: String,
        /// A name for the peer (letters, digits, `-`, `_`, `.`).
        #[arg(long)]
        name: String,
        /// Comma-separated: upload, download, list, and exec (upload
        /// programs under their own names; without it they are held in
        /// quarantine).
        #[arg(long, default_value = "upload,download,list")]
        allow: String,
        #[command(flatten)]
        limits: LimitArgs,
        /// Where the peer is on one kind of transport, as KIND=ADDRESS
        /// (`telegram=123456789`, `whatsapp=15550001111`; `KIND=` forgets
        /// one); repeatable. A transport given `*` answers the peer there,
        /// and only there.
        #[arg(long = "address", value_name = "KIND=ADDRESS")]
        addresses: Vec<String>,
        /// Give this key a name that belonged to a revoked key, and with
        /// it, on an agent, that key's folder and the shares made by and
        /// with the name.
        #[arg(long)]
        reuse_name: bool,
    },
    /// List trusted peers (and, on stderr, the names kept for revoked keys).
    List,
    /// Stop trusting a peer; its name stays with its key (no other key
    /// inherits its folder and shares unless given it with --reuse-name).
    Revoke {
        /// The peer's name, as `pigeon keys list` shows it.
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct PairArgs {
    /// The code the agent printed (on the client); without it, make one
    /// and wait (on the agent).
    pub code: Option<String>,
    /// The name to trust the other side under (agent: default the client's
    /// own host name; client: default "agent").
    #[arg(long)]
    pub name: Option<String>,
    /// On the agent: what the client may do (upload, download, list, exec).
    #[arg(long, default_value = "upload,download,list")]
    pub allow: String,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Transport URI, the one the other side uses; repeat for several
    /// (default: config.toml's).
    #[arg(long = "transport", value_name = "URI")]
    pub transports: Vec<String>,
    /// On the client: seconds to wait for the agent's answer.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// With --name: give the other side a name that belonged to a revoked
    /// key (and with it, on an agent, that key's folder and shares).
    #[arg(long)]
    pub reuse_name: bool,
}

/// A peer's quotas on the agent (each one kept from before when not given;
/// `off` removes it).
#[derive(Args, Debug, Clone, Default)]
pub struct LimitArgs {
    /// Most bytes the peer may keep on the agent: 500M, 2G.
    #[arg(long, value_name = "SIZE")]
    pub quota: Option<String>,
    /// Largest file the peer may upload.
    #[arg(long, value_name = "SIZE")]
    pub max_file: Option<String>,
    /// Most files the peer may keep on the agent.
    #[arg(long, value_name = "N")]
    pub max_files: Option<String>,
    /// Most uploads the peer may have open at once.
    #[arg(long, value_name = "N")]
    pub max_open: Option<String>,
    /// Most bytes the peer may upload in any 24 hours.
    #[arg(long, value_name = "SIZE")]
    pub daily: Option<String>,
}

impl LimitArgs {
    /// `old` with these changes.
    fn apply(&self, mut old: pigeon_core::policy::Limits) -> Result<pigeon_core::policy::Limits> {
        use pigeon_core::policy::Size;
        fn size(flag: &str, v: &str) -> Result<Option<Size>> {
            match pigeon_core::bwlimit::parse_size(v).map_err(|e| anyhow!("--{flag} {e}"))? {
                None => Ok(None),
                Some(0) => {
                    bail!("--{flag} 0 would refuse everything: give a size, or off for no limit")
                }
                Some(n) => Ok(Some(Size(n))),
            }
        }
        fn count(flag: &str, v: &str) -> Result<Option<u64>> {
            if v.eq_ignore_ascii_case("off") {
                return Ok(None);
            }
            v.parse()
                .map(Some)
                .map_err(|_| anyhow!("--{flag} {v:?}: give a number, or off"))
        }
        if let Some(v) = &self.quota {
            old.quota = size("quota", v)?;
        }
        if let Some(v) = &self.max_file {
            old.max_file = size("max-file", v)?;
        }
        if let Some(v) = &self.daily {
            old.daily = size("daily", v)?;
        }
        if let Some(v) = &self.max_files {
            old.max_files = count("max-files", v)?;
        }
        if let Some(v) = &self.max_open {
            old.max_open = count("max-open", v)?;
        }
        Ok(old)
    }
}

/// How a client reaches its agent.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Transport URI, e.g. local:/tmp/spool?profile=telegram-text; repeat for several.
    #[arg(long = "transport", value_name = "URI")]
    pub transports: Vec<String>,
    /// The trusted agent to talk to (default: the only one).
    #[arg(long)]
    pub peer: Option<String>,
    /// One JSON object per finished transfer on stdout.
    #[arg(long)]
    pub json: bool,
    /// Transfers running at once.
    #[arg(long, default_value_t = 2)]
    pub parallel: usize,
    /// Give up after this many seconds without a word from the agent.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Most this client sends per second over all its transports, in
    /// rclone's syntax: 512k, 10M, or a timetable "08:00,512k 19:00,off"
    /// (overrides bwlimit in config.toml).
    #[arg(long, value_name = "RATE")]
    pub bwlimit: Option<String>,
}

/// `pigeon completions SHELL`: the script, on stdout.
pub fn completions(shell: clap_complete::Shell) {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "pigeon", &mut std::io::stdout());
}

/// `pigeon man [SUBCOMMAND…] [--install DIR]`: one manual page on
/// stdout, or every page written into DIR.
pub fn man(subcommand: &[String], install: Option<&std::path::Path>) -> Result<()> {
    if let Some(dir) = install {
        let pages = man_pages(dir)?;
        eprintln!(
            "wrote {} manual pages into {}; if `man pigeon` does not find them, add that folder's parent to MANPATH",
            pages,
            dir.display()
        );
        return Ok(());
    }
    man_page(subcommand, &mut std::io::stdout())
}

/// The page of `subcommand` (pigeon's own when empty), named as the
/// pages list it (`pigeon-keys-trust(1)`).
fn man_page(subcommand: &[String], out: &mut dyn std::io::Write) -> Result<()> {
    let cmd = built_command();
    let mut page = &cmd;
    for (depth, word) in subcommand.iter().enumerate() {
        page = page
            .get_subcommands()
            .find(|c| c.get_name() == word || c.get_all_aliases().any(|a| a == word))
            .ok_or_else(|| {
                let known: Vec<&str> = page.get_subcommands().map(|c| c.get_name()).collect();
                anyhow!(
                    "`pigeon {}` has no subcommand {word:?}; it has: {}",
                    subcommand[..depth].join(" "),
                    known.join(", ")
                )
            })?;
    }
    man_of(page).render(out)?;
    Ok(())
}

/// pigeon's command, built: each subcommand knows its full name
/// (pigeon-keys-trust), as its page is named.
fn built_command() -> clap::Command {
    let mut cmd = <Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// The page of `cmd`, footed with pigeon's name and version (a
/// subcommand has no version of its own).
fn man_of(cmd: &clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd.clone()).source(format!("pigeon {}", env!("CARGO_PKG_VERSION")))
}

/// Write pigeon's page and every subcommand's into `dir` (made if need
/// be); returns how many.
fn man_pages(dir: &std::path::Path) -> Result<usize> {
    fn write(cmd: &clap::Command, dir: &std::path::Path) -> Result<usize> {
        let path = dir.join(format!(
            "{}.1",
            cmd.get_display_name().unwrap_or(cmd.get_name())
        ));
        let mut page = vec![];
        man_of(cmd).render(&mut page)?;
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        let mut written = 1;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            written += write(sub, dir)?;
        }
        Ok(written)
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write(&built_command(), dir)
}

/// This machine's name, as a peer name (what the other side trusts us as
/// unless its owner says otherwise).
fn own_name() -> String {
    // Either file may be missing or unreadable (Android has no
    // /etc/hostname and may hide /proc/sys): then the fallback name.
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    peer_name_of_host(&raw)
}

/// A host name as a peer name; `localhost`, every phone's host name under
/// Android, names no machine, so it gives the fallback too.
fn peer_name_of_host(raw: &str) -> String {
    let fallback = if cfg!(target_os = "android") {
        "android"
    } else {
        "client"
    };
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    let anonymous = name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().starts_with("localhost.");
    match PeerName::parse(&name) {
        Ok(_) if !anonymous => name,
        _ => fallback.into(),
    }
}

/// Who a pairing trusts, and under what name.
struct Paired<'a> {
    /// The name the owner gave (`--name`): it replaces whoever had it;
    /// a revoked key's name only with `reuse_name`.
    requested: Option<PeerName>,
    reuse_name: bool,
    /// The name the other side suggests, else `fallback`; made unique
    /// (`laptop-2`) rather than replacing a different key or taking a
    /// revoked key's name.
    suggested: &'a str,
    fallback: &'a str,
    key: pigeon_core::crypto::PublicKey,
    permissions: Permissions,
    limits: pigeon_core::policy::Limits,
    /// Where it wrote from, pinned for a transport that names senders.
    from: pigeon_core::pair::Origin<'a>,
}

/// Refuse a peer name that differs from a trusted one only in case: on a
/// case-insensitive file system (a phone's shared storage) both would be
/// one folder of the agent's root.
fn refuse_case_twin(trusted: &[TrustedPeer], name: &PeerName) -> Result<()> {
    if let Some(twin) = trusted
        .iter()
        .find(|t| t.name != *name && t.name.as_str().eq_ignore_ascii_case(name.as_str()))
    {
        bail!(
            "{} is trusted already, and names that differ only in case share one folder on the agent on some file systems; choose another name, or `pigeon keys revoke {}` first",
            twin.name,
            twin.name
        );
    }
    Ok(())
}

/// Add a paired peer to the trust list; the name it is trusted under,
/// and why it is not the one suggested when it is not. The same key
/// paired again replaces its old entry.
fn trust_paired(home: &Home, p: Paired<'_>) -> Result<(PeerName, Option<String>)> {
    let mut all = home.trust_list()?;
    let mut revoked = home.revoked()?;
    let mut note = None;
    let name = match p.requested {
        Some(name) => name,
        None => {
            let base = PeerName::parse(p.suggested).or_else(|_| PeerName::parse(p.fallback))?;
            let name = pigeon_core::home::unique_name(&base, &p.key, &all, &revoked)?;
            if name != base {
                let whose = match pigeon_core::home::reserved_for(&revoked, base.as_str(), &p.key) {
                    Some(r) => format!(
                        "belonged to a revoked key ({}…), whose folder and shares it keeps",
                        &r.key.to_string()[..16]
                    ),
                    None => "is another key's".to_string(),
                };
                note = Some(format!(
                    "the name {base} {whose}; trusting this one as {name} (rename it with `pigeon keys trust <KEY> --name <NAME>`)"
                ));
            }
            name
        }
    };
    let reserved_changed = claim_name(&mut revoked, &name, &p.key, p.reuse_name)?;
    refuse_case_twin(
        &all.iter()
            .filter(|t| t.key != p.key)
            .cloned()
            .collect::<Vec<_>>(),
        &name,
    )?;
    all.retain(|t| t.name != name && t.key != p.key);
    let mut addresses = std::collections::BTreeMap::new();
    if let Some((kind, address)) = p.from {
        if kind != "local" && pigeon_core::home::ADDRESS_KINDS.contains(&kind) {
            addresses.insert(kind.to_string(), address.clone());
        }
    }
    all.push(TrustedPeer {
        name: name.clone(),
        key: p.key,
        permissions: p.permissions,
        addresses,
        limits: p.limits,
    });
    home.save_trusted(&all)?;
    if reserved_changed {
        home.save_revoked(&revoked)?;
    }
    Ok((name, note))
}

/// Whether `key` may have `name` as far as revoked keys go: not a revoked
/// key's name unless `reuse` says so (then it says what passes to the new
/// key). The name is kept no longer once its own key is trusted under it
/// again, or it is reused; whether `revoked` changed.
fn claim_name(
    revoked: &mut Vec<RevokedPeer>,
    name: &PeerName,
    key: &pigeon_core::crypto::PublicKey,
    reuse: bool,
) -> Result<bool> {
    if let Some(old) = pigeon_core::home::reserved_for(revoked, name.as_str(), key) {
        let old_key = &old.key.to_string()[..16];
        if !reuse {
            bail!(
                "the name {} belonged to a revoked key ({old_key}…, revoked {}); on an agent its folder ({}/ under the storage root) and the shares made by and with it are still there, and a new key does not inherit them unasked. Choose another name, or pass --reuse-name to give them to this key",
                old.name,
                format_time(old.revoked_unix),
                old.name
            );
        }
        eprintln!(
            "the name {} belonged to the revoked key {old_key}…: on an agent, its folder ({}/ under the storage root) and the shares made by and with it now pass to this key; move the folder aside first if they should not",
            old.name, old.name
        );
    }
    let before = revoked.len();
    revoked.retain(|r| {
        !(r.name.as_str().eq_ignore_ascii_case(name.as_str()) && (reuse || r.key == *key))
    });
    Ok(revoked.len() != before)
}

/// `pigeon pair`: without a code, make one and wait for the client (the
/// agent's side); with one, complete it (the client's side).
pub async fn pair(home: &Home, args: PairArgs) -> Result<bool> {
    use pigeon_core::pair::{self, Ended, PairCode};
    let transports = match args.transports.as_slice() {
        [] => home.config()?.transports,
        some => some.to_vec(),
    };
    if transports.is_empty() {
        bail!("pairing needs a transport: pass --transport URI (the one the other side uses)");
    }
    let transports = parse_transports(&transports)?;
    let me = home.identity()?.public();
    let name = args.name.as_deref().map(PeerName::parse).transpose()?;
    match args.code {
        None => {
            let permissions = Permissions::parse(&args.allow)?;
            let limits = args.limits.apply(Default::default())?;
            let code = PairCode::random();
            println!("pairing code: {code}");
            eprintln!(
                "on the client, within {}: pigeon pair {code} --transport <URI>\n(one try: a wrong code ends this and the code is burnt)",
                plural(pair::CODE_LIFETIME.as_secs() / 60, "minute")
            );
            let chosen = name.clone();
            let mut trusted_as = None;
            let ended = pair::offer(&transports, code, me, &own_name(), |intro, from| {
                let key = pigeon_core::crypto::PublicKey(intro.key);
                let (named, note) = trust_paired(
                    home,
                    Paired {
                        requested: chosen.clone(),
                        reuse_name: args.reuse_name,
                        suggested: &intro.name,
                        fallback: "client",
                        key,
                        permissions,
                        limits,
                        from,
                    },
                )
                .map_err(|e| e.to_string())?;
                if let Some(note) = note {
                    eprintln!("{note}");
                }
                trusted_as = Some(named);
                Ok(())
            })
            .await?;
            match ended {
                Ended::Paired { key, .. } => {
                    let as_name = trusted_as.map(|n| n.to_string()).unwrap_or_default();
                    eprintln!(
                        "paired: trusting {as_name} ({}) to {permissions}; a running agent takes it at the next handshake",
                        &key.to_string()[..16]
                    );
                    Ok(true)
                }
                Ended::Failed(why) => {
                    eprintln!("pigeon: pairing failed: {why}");
                    Ok(false)
                }
            }
        }
        Some(text) => {
            let code = PairCode::parse(&text)?;
            let limit = Duration::from_secs(args.timeout);
            eprintln!(
                "pairing with the agent waiting at code {}-… over {}",
                code.slot(),
                transports[0]
            );
            match pair::accept(&transports, code, me, &own_name(), limit).await? {
                Ended::Paired { key, .. } => {
                    let (name, note) = trust_paired(
                        home,
                        Paired {
                            requested: name,
                            reuse_name: args.reuse_name,
                            suggested: "agent",
                            fallback: "agent",
                            key,
                            permissions: Permissions::default(),
                            limits: Default::default(),
                            from: None,
                        },
                    )?;
                    if let Some(note) = note {
                        eprintln!("{note}");
                    }
                    eprintln!(
                        "paired: trusting {name} ({}); try `pigeon ls --transport {}`",
                        &key.to_string()[..16],
                        transports[0]
                    );
                    Ok(true)
                }
                Ended::Failed(why) => {
                    eprintln!("pigeon: pairing failed: {why}");
                    Ok(false)
                }
            }
        }
    }
}

pub fn parse_transports(raw: &[String]) -> Result<Vec<TransportUri>> {
    raw.iter()
        .map(|u| TransportUri::parse(u).map_err(|e| anyhow!(e)))
        .collect()
}

pub fn keys(home: &Home, cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Show { id: false } => {
            println!("{}", home.identity()?.public());
        }
        KeysCommand::Show { id: true } => {
            println!("{}", home.identity()?.public().id());
        }
        KeysCommand::Trust {
            key,
            name,
            allow,
            limits,
            addresses,
            reuse_name,
        } => {
            let name = PeerName::parse(&name)?;
            let key: pigeon_core::crypto::PublicKey = key.parse()?;
            let mut all = home.trust_list()?;
            let mut revoked = home.revoked()?;
            let reserved_changed = claim_name(&mut revoked, &name, &key, reuse_name)?;
            // Trusting a name again keeps the addresses and limits it had.
            let before = all.iter().find(|p| p.name == name);
            let replaced = before.map(|p| p.key).filter(|k| *k != key);
            let mut known = before.map(|p| p.addresses.clone()).unwrap_or_default();
            let limits = limits.apply(before.map(|p| p.limits).unwrap_or_default())?;
            for a in &addresses {
                let (kind, address) = a
                    .split_once('=')
                    .filter(|(k, _)| pigeon_core::home::ADDRESS_KINDS.contains(k))
                    .ok_or_else(|| {
                        anyhow!(
                            "--address {a:?}: give KIND=ADDRESS, KIND one of {}",
                            pigeon_core::home::ADDRESS_KINDS.join(", ")
                        )
                    })?;
                match address.trim() {
                    "" => known.remove(kind),
                    address => known.insert(kind.to_string(), address.to_string()),
                };
            }
            let peer = TrustedPeer {
                name,
                key,
                permissions: Permissions::parse(&allow)?,
                addresses: known,
                limits,
            };
            refuse_case_twin(&all, &peer.name)?;
            all.retain(|p| p.name != peer.name);
            let limits = match peer.limits.is_empty() {
                true => String::new(),
                false => format!(
                    ", within {}",
                    toml::to_string(&peer.limits)
                        .unwrap_or_default()
                        .trim()
                        .replace('\n', ", ")
                ),
            };
            eprintln!(
                "trusting {} ({}) to {}{limits}",
                peer.name,
                &peer.key.to_string()[..16],
                peer.permissions
            );
            if let Some(old) = replaced {
                // A new key for a trusted name: the owner's to make, and
                // said, since the folder and shares go with the name.
                eprintln!(
                    "{} was trusted with the key {}…; this key replaces it, and on an agent takes its folder and shares",
                    peer.name,
                    &old.to_string()[..16]
                );
            }
            all.push(peer);
            home.save_trusted(&all)?;
            if reserved_changed {
                home.save_revoked(&revoked)?;
            }
        }
        KeysCommand::List => {
            let (all, refused) = home.trusted_and_refused()?;
            for why in refused {
                eprintln!("{why}");
            }
            for r in home.revoked()? {
                eprintln!(
                    "revoked: {} ({}…, {}); its name is kept for that key",
                    r.name,
                    &r.key.to_string()[..16],
                    format_time(r.revoked_unix)
                );
            }
            if all.is_empty() {
                eprintln!("no trusted peers; add one with `pigeon keys trust <KEY> --name <NAME>`");
            }
            for p in all {
                let addresses: Vec<String> = p
                    .addresses
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let addresses = match addresses.as_slice() {
                    [] => "-".to_string(),
                    some => some.join(","),
                };
                println!("{}\t{}\t{}\t{addresses}", p.name, p.key, p.permissions);
            }
        }
        KeysCommand::Revoke { name } => {
            let gone = home.revoke(&name).map_err(|e| match e {
                pigeon_core::error::CoreError::UnknownPeer(_) => {
                    anyhow!("no trusted peer named {name:?}; see `pigeon keys list`")
                }
                e => anyhow!(e),
            })?;
            eprintln!(
                "revoked {name} ({}…); the name stays with that key, so no other key inherits its folder and shares on an agent (`pigeon keys trust <KEY> --name {name} --reuse-name` gives them to another deliberately)",
                &gone.key.to_string()[..16]
            );
        }
    }
    Ok(())
}

/// The bandwidth limit: `given` on the command line, else config.toml's.
/// A party limits what it sends (one rate is that limit): a separate
/// download rate (`UP:DOWN`) is refused rather than silently ignored.
pub fn resolve_bwlimit(home: &Home, given: Option<&str>) -> Result<Option<BwLimit>> {
    let config = home.config()?;
    let Some(spec) = given.map(str::to_string).or(config.bwlimit) else {
        return Ok(None);
    };
    let limit = BwLimit::parse(&spec).map_err(|e| anyhow::anyhow!("--bwlimit {spec:?}: {e}"))?;
    for weekday in 0..7 {
        for minute in 0..1440 {
            let at = limit.at(weekday, minute);
            if at.down.is_some() && at.down != at.up {
                bail!("--bwlimit {spec:?}: a party limits what it sends; a download rate is not enforced here: set --bwlimit on the agent to limit what it sends (e.g. --bwlimit 1M there)");
            }
        }
    }
    Ok(Some(limit))
}

pub async fn run_agent(
    home: Home,
    transports: Vec<String>,
    root: Option<PathBuf>,
    bwlimit: Option<String>,
    shared: bool,
) -> Result<()> {
    let transports = parse_transports(&transports)?;
    let bwlimit = resolve_bwlimit(&home, bwlimit.as_deref())?;
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

/// Transports from the command line, else from config.toml.
fn resolve_transports(home: &Home, given: &[String]) -> Result<Vec<TransportUri>> {
    if !given.is_empty() {
        return parse_transports(given);
    }
    let cfg = home.config()?;
    if cfg.transports.is_empty() {
        bail!("no transport: pass --transport local:<SPOOL_DIR> (the same one the agent uses), or set transports in {}", home.config_path().display());
    }
    parse_transports(&cfg.transports)
}

pub async fn start_client(home: &Home, conn: &Conn) -> Result<ClientHandle> {
    let transports = resolve_transports(home, &conn.transports)?;
    let bwlimit = resolve_bwlimit(home, conn.bwlimit.as_deref())?;
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

pub async fn download(
    home: Home,
    remote: String,
    output: Option<PathBuf>,
    overwrite: bool,
    conn: Conn,
) -> Result<bool> {
    let client = owner::client(&home, &conn, "pigeon download", true).await?;
    let events = client.handle.events();
    let options = DownloadOptions { overwrite };
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

/// "cannot upload x: why", without saying "cannot upload x" twice when the
/// engine's own message already does.
fn cannot(verb: &str, what: &str, e: &dyn std::fmt::Display) -> String {
    let why = e.to_string();
    let what = escape_control(what);
    if why.starts_with(&format!("cannot {verb}")) || why.contains(what.as_ref()) {
        why
    } else {
        format!("cannot {verb} {what}: {why}")
    }
}

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

/// Follow `ids` to their end on `client`'s engine, printing each as it
/// finishes, then let the engine go. If the process that held the home
/// stops meanwhile, carry on here: take the home over (or attach to the
/// command that did) and resume what was left. True when all completed.
async fn follow(
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

fn print_report(r: &TransferReport, json: bool) {
    if json {
        println!("{}", json_line(r));
        return;
    }
    let arrow = match r.direction {
        pigeon_core::view::Direction::Upload => "->",
        pigeon_core::view::Direction::Download => "<-",
    };
    let (local, remote) = (
        escape_control(&r.local_path),
        escape_control(&r.remote_path),
    );
    match r.status {
        // Nothing needed sending: the agent had it whole and verified it.
        TransferStatus::Completed
            if r.direction == pigeon_core::view::Direction::Upload
                && r.chunks_sent == 0
                && r.chunks_total > 0 =>
        {
            println!(
                "already on the agent, verified: {local} {arrow} {remote}: {} bytes, sha256 {}",
                r.size,
                r.sha256.as_deref().unwrap_or("?"),
            )
        }
        TransferStatus::Completed => println!("{}", completed_line(r, arrow)),
        TransferStatus::Paused => eprintln!(
            "pigeon: paused {local} {arrow} {remote}; `pigeon resume {}` or the same command again continues it",
            short(&r.id)
        ),
        status => eprintln!(
            "pigeon: {} {local} {arrow} {remote}: {}",
            status.as_str(),
            escape_control(r.error.as_deref().unwrap_or("no reason given"))
        ),
    }
}

/// `completed a -> b: 12 bytes, sha256 …, 1 chunk sent in 0.2s`.
fn completed_line(r: &TransferReport, arrow: &str) -> String {
    format!(
        "completed {} {arrow} {}: {} bytes, sha256 {}, {} sent{} in {:.1}s",
        escape_control(&r.local_path),
        escape_control(&r.remote_path),
        r.size,
        r.sha256.as_deref().unwrap_or("?"),
        plural(r.chunks_sent, "chunk"),
        if r.resumed { " (resumed)" } else { "" },
        r.elapsed_ms as f64 / 1000.0
    )
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
            &rep.id[..8],
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

/// Bytes a second over the last five seconds.
fn recent_rate(h: &pigeon_core::view::TransportHealth) -> u64 {
    let last: Vec<u64> = h.throughput.iter().rev().take(5).copied().collect();
    last.iter().sum::<u64>() / (last.len().max(1) as u64)
}

/// One link in `status --json`: `link` (its index) tells it from a transfer.
fn link_json(i: usize, h: &pigeon_core::view::TransportHealth) -> serde_json::Value {
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
    let (retry_in, wait) = match h.state {
        pigeon_core::view::LinkState::Open { retry_in, .. } => (Some(retry_in), None),
        pigeon_core::view::LinkState::RateLimited { wait } => (None, Some(wait)),
        _ => (None, None),
    };
    serde_json::json!({
        "link": i,
        "uri": h.uri,
        "profile": h.profile,
        "state": h.state.word(),
        "up": h.up,
        "share": h.share,
        "rtt_ms": ms(h.rtt),
        "bytes_per_sec": recent_rate(h),
        "messages_last_minute": h.messages_last_minute,
        "messages_per_minute_limit": h.messages_per_minute_limit,
        "errors": h.errors,
        "retry_after_ms": ms(h.retry_after.or(wait)),
        "probe_in_ms": ms(retry_in),
        "faults": h.faults,
        "problems": h.problems,
    })
}

fn link_line(i: usize, h: &pigeon_core::view::TransportHealth) -> String {
    let mut line = format!(
        "link {i}  {:<14} {:<12} rtt {:>7}  {:>10}/s  share {:>4}  errors {}  {}",
        h.profile,
        h.state.word(),
        h.rtt
            .map_or("-".to_string(), |d| format!("{} ms", d.as_millis())),
        pigeon_core::view::human_bytes(recent_rate(h)),
        h.share
            .map_or("-".to_string(), |s| format!("{:.0}%", s * 100.0)),
        h.errors,
        escape_control(&h.uri)
    );
    // What only the user can fix, in `pigeon transports test`'s words.
    for p in &h.problems {
        line.push_str(&format!("\n        failed: {}", escape_control(p)));
    }
    line
}

/// `30d`, `12h`, `90m`, `45s`, or plain seconds.
pub fn parse_age(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: give a number and a unit, e.g. 30d, 12h, 90m, 45s"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        other => return Err(format!("{other:?} is not a unit: use s, m, h, d or w")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// The first 8 characters of a transfer id, as `status` shows it.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

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

/// Shares one per line: who shares what with whom, on what terms.
pub fn print_shares(shares: &[pigeon_core::policy::Share], json: bool) {
    if shares.is_empty() && !json {
        eprintln!("nothing is shared");
    }
    for s in shares {
        if json {
            println!("{}", json_line(s));
            continue;
        }
        println!(
            "{}/{}  with {}  {}{}",
            s.owner,
            escape_control(&s.path),
            s.with,
            if s.read_only {
                "read-only"
            } else {
                "read-write"
            },
            s.expires_unix
                .map(|t| format!("  until {}", format_time(t)))
                .unwrap_or_default()
        );
    }
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

fn print_entries(entries: &[pigeon_core::engine::RemoteEntry], json: bool) {
    for e in entries {
        if json {
            println!("{}", json_line(e));
        } else {
            let when = format_time(e.modified_unix);
            println!(
                "{:>12}  {}  {:<64}  {}{}",
                if e.is_dir {
                    "-".to_string()
                } else {
                    e.size.to_string()
                },
                when,
                escape_control(e.sha256.as_deref().unwrap_or(if e.is_dir {
                    "(folder)"
                } else {
                    // A big file is hashed after the listing, once.
                    "(not hashed yet: ls again shortly)"
                })),
                escape_control(&e.path),
                if e.is_dir { "/" } else { "" }
            );
        }
    }
}

pub use pigeon_core::view::format_time;

/// One JSON object on one line, safe to print on a terminal: serde_json
/// escapes C0 controls only, so C1 controls and bidi overrides (which some
/// terminals act on) are escaped here as `\uXXXX`, still valid JSON.
pub fn json_line(value: &impl serde::Serialize) -> String {
    let raw = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
    };
    if !raw.chars().any(unsafe_char) {
        return raw;
    }
    let mut out = String::with_capacity(raw.len() + 16);
    for c in raw.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 32: a phone's host name is `localhost`; pairing from it
    /// suggests the fallback rather than a name that says nothing.
    #[test]
    fn a_host_named_localhost_suggests_the_fallback_name() {
        let fallback = if cfg!(target_os = "android") {
            "android"
        } else {
            "client"
        };
        assert_eq!(peer_name_of_host("laptop-3\n"), "laptop-3");
        assert_eq!(peer_name_of_host("my box"), "mybox");
        assert_eq!(peer_name_of_host("localhost\n"), fallback);
        assert_eq!(peer_name_of_host("LocalHost.localdomain"), fallback);
        assert_eq!(peer_name_of_host(""), fallback);
        assert_eq!(peer_name_of_host(".hidden"), fallback);
    }

    /// Issue 32: "1 chunks sent".
    #[test]
    fn a_completed_line_counts_one_chunk_in_the_singular() {
        let report = |chunks_sent| TransferReport {
            id: "01".repeat(16),
            direction: pigeon_core::view::Direction::Upload,
            local_path: "a.txt".into(),
            remote_path: "a.txt".into(),
            size: 12,
            sha256: Some("ab".into()),
            mime: String::new(),
            status: TransferStatus::Completed,
            chunks_total: chunks_sent,
            chunks_sent,
            chunks_retransmitted: 0,
            resumed: false,
            transport: "local".into(),
            elapsed_ms: 200,
            faults: Default::default(),
            error: None,
        };
        assert_eq!(
            completed_line(&report(1), "->"),
            "completed a.txt -> a.txt: 12 bytes, sha256 ab, 1 chunk sent in 0.2s"
        );
        assert!(completed_line(&report(3), "->").contains(", 3 chunks sent in"));
    }

    #[test]
    fn times_from_a_peer_never_panic() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(253_402_300_900), "@253402300900");
        assert_eq!(format_time(u64::MAX), format!("@{}", u64::MAX));
    }

    #[test]
    fn pairing_never_takes_another_peers_name_and_re_pairing_replaces_itself() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path().to_path_buf())).unwrap();
        let key = || pigeon_core::crypto::Identity::generate().unwrap().public();
        let (first, second) = (key(), key());
        let paired = |suggested, requested: Option<&str>, key| {
            trust_paired(
                &home,
                Paired {
                    requested: requested.map(|n| PeerName::parse(n).unwrap()),
                    reuse_name: false,
                    suggested,
                    fallback: "client",
                    key,
                    permissions: Permissions::default(),
                    limits: Default::default(),
                    from: Some(("telegram", &"4242".to_string())),
                },
            )
            .unwrap()
            .0
            .to_string()
        };
        assert_eq!(paired("laptop", None, first), "laptop");
        // Another machine that calls itself laptop too.
        assert_eq!(paired("laptop", None, second), "laptop-2");
        // The same one again: its own entry, not a third.
        assert_eq!(paired("laptop", None, second), "laptop-2");
        // A name that is no peer name falls back.
        assert_eq!(paired("bad name!", None, key()), "client");
        let all = home.trusted().unwrap();
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all
            .iter()
            .any(|p| p.name.as_str() == "laptop" && p.key == first));
        assert_eq!(
            all[0].addresses.get("telegram").map(String::as_str),
            Some("4242")
        );
        // The owner's --name replaces whoever had it.
        assert_eq!(paired("x", Some("laptop"), second), "laptop");
        let all = home.trusted().unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all.iter().all(|p| p.key != first));
    }

    #[test]
    fn a_revoked_peers_name_is_never_silently_given_to_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path().to_path_buf())).unwrap();
        let key = || pigeon_core::crypto::Identity::generate().unwrap().public();
        let (old, new) = (key(), key());
        let trust = |key: &pigeon_core::crypto::PublicKey, reuse_name| {
            keys(
                &home,
                KeysCommand::Trust {
                    key: key.to_string(),
                    name: "phone".into(),
                    allow: "upload,download,list".into(),
                    limits: Default::default(),
                    addresses: vec![],
                    reuse_name,
                },
            )
        };
        let pair = |key, requested: Option<&str>, reuse_name| {
            trust_paired(
                &home,
                Paired {
                    requested: requested.map(|n| PeerName::parse(n).unwrap()),
                    reuse_name,
                    suggested: "phone",
                    fallback: "client",
                    key,
                    permissions: Permissions::default(),
                    limits: Default::default(),
                    from: None,
                },
            )
        };
        trust(&old, false).unwrap();
        keys(
            &home,
            KeysCommand::Revoke {
                name: "phone".into(),
            },
        )
        .unwrap();
        assert!(home.trusted().unwrap().is_empty());
        // Pairing a new key that calls itself phone: another name, and why.
        let (name, note) = pair(new, None, false).unwrap();
        assert_eq!(name.as_str(), "phone-2");
        let note = note.unwrap();
        assert!(
            note.contains("the name phone belonged to a revoked key")
                && note.contains("as phone-2"),
            "{note}"
        );
        // Asked for by name, for another key: refused, with the way out.
        for refused in [
            trust(&new, false).unwrap_err().to_string(),
            pair(new, Some("phone"), false).unwrap_err().to_string(),
        ] {
            assert!(
                refused.starts_with("the name phone belonged to a revoked key")
                    && refused.contains("--reuse-name"),
                "{refused}"
            );
        }
        assert!(home
            .trusted()
            .unwrap()
            .iter()
            .all(|p| p.name.as_str() != "phone"));
        // Its own key again: its name back, kept no longer.
        trust(&old, false).unwrap();
        assert!(home.revoked().unwrap().is_empty());
        assert!(home
            .trusted()
            .unwrap()
            .iter()
            .any(|p| p.name.as_str() == "phone" && p.key == old));
        // Given deliberately to another key.
        keys(
            &home,
            KeysCommand::Revoke {
                name: "phone".into(),
            },
        )
        .unwrap();
        trust(&new, true).unwrap();
        assert!(home.revoked().unwrap().is_empty());
        assert!(home
            .trusted()
            .unwrap()
            .iter()
            .any(|p| p.name.as_str() == "phone" && p.key == new));
    }

    #[test]
    fn json_lines_escape_c1_and_bidi_and_stay_json() {
        let v = serde_json::json!({ "name": "a\u{9b}31mb\u{202e}c\u{1b}" });
        let line = json_line(&v);
        assert!(!line.contains('\u{9b}') && !line.contains('\u{202e}') && !line.contains('\u{1b}'));
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, v);
    }
}

#[cfg(test)]
mod help_tests {
    use super::{man_page, man_pages, Cli};
    use clap::CommandFactory;

    #[test]
    fn every_command_and_argument_says_what_it_is_for() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} <{id}>"));
                }
            }
            for sub in cmd.get_subcommands() {
                let here = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(here.clone());
                }
                walk(sub, &here, missing);
            }
        }
        let mut missing = vec![];
        walk(&Cli::command(), "pigeon", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn completions_and_the_man_page_cover_every_command() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = vec![];
            clap_complete::generate(shell, &mut Cli::command(), "pigeon", &mut out);
            let text = String::from_utf8(out).unwrap();
            for word in ["upload", "download", "agent", "completions", "transport"] {
                assert!(text.contains(word), "{shell:?} completion lacks {word}");
            }
        }
        let mut page = vec![];
        man_page(&[], &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains(".TH pigeon 1"), "{page}");
        assert!(page.contains("pigeon\\-upload(1)"), "{page}");
    }

    /// Every page pigeon's own page lists exists: printed by name, and
    /// written by `--install`.
    #[test]
    fn every_subcommand_has_its_manual_page() {
        let mut page = vec![];
        man_page(&["keys".into(), "trust".into()], &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains(".TH pigeon-keys-trust 1"), "{page}");
        assert!(
            page.contains("--reuse-name") || page.contains("\\-\\-reuse\\-name"),
            "{page}"
        );
        let wrong = man_page(&["keys".into(), "trus".into()], &mut vec![]).unwrap_err();
        assert!(
            wrong.to_string().contains("show, trust, list, revoke"),
            "{wrong}"
        );

        let dir = tempfile::tempdir().unwrap();
        let written = man_pages(dir.path()).unwrap();
        let mut main = vec![];
        man_page(&[], &mut main).unwrap();
        let main = String::from_utf8(main).unwrap();
        // Each page the main one refers to, as "pigeon\-NAME(1)".
        let listed: Vec<String> = main
            .split("pigeon\\-")
            .skip(1)
            .filter_map(|rest| rest.split_once("(1)"))
            .map(|(name, _)| format!("pigeon-{}.1", name.replace("\\-", "-")))
            .collect();
        assert!(listed.len() > 10, "{listed:?}");
        for name in &listed {
            assert!(dir.path().join(name).is_file(), "{name} was not written");
        }
        assert!(dir.path().join("pigeon-keys-trust.1").is_file());
        assert!(written > listed.len(), "{written} pages");
    }
}
