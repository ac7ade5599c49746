//! Every command's arguments, as clap derives them: [`Cli`] and its
//! [`Command`]s, with the argument groups several share ([`Conn`], how a
//! client reaches its agent; [`RootArg`], where an agent keeps its files;
//! [`LimitArgs`], a peer's quotas). What the help texts and manual pages
//! say is written here, and only here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
        /// (overrides bwlimit in config.toml). A client's download rate is
        /// the client's to ask (its --bwlimit UP:DOWN); this agent keeps to
        /// it, and to this limit besides.
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
        /// Replace a remote file that already exists. Where the agent
        /// holds a version this client sent, only the differences travel.
        #[arg(long)]
        overwrite: bool,
        /// Send whole files, never only the differences from the version
        /// the agent holds.
        #[arg(long)]
        no_delta: bool,
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
        /// is verified). Only the differences from them travel.
        #[arg(long)]
        overwrite: bool,
        /// Download whole files, never only the differences from the
        /// local ones.
        #[arg(long)]
        no_delta: bool,
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
        root: RootArg,
    },
    /// Pair with a peer by a short code instead of exchanging keys. On the
    /// agent, `pigeon pair` prints a code (like 7-gravel-ostrich) and waits
    /// ten minutes for one try; on the client, `pigeon pair CODE` completes
    /// it. Then each trusts the other.
    Pair(PairArgs),
    /// On the agent: its audit log, every request and outcome, hash-chained
    /// (`verify` checks the chain, `export` writes JSON lines).
    Audit(AuditArgs),
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
        root: RootArg,
    },
    /// Use against quotas: on the agent's home each peer's and all peers';
    /// on a client (with a transport, or one in config.toml) its own, as
    /// the agent counts it.
    Quota {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        root: RootArg,
    },
    /// On the agent: uploads held in quarantine, and what to do with them.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
        #[command(flatten)]
        root: RootArg,
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
    /// Most this client sends per second over all its transports, and
    /// asks the agent to send it downloads at, in rclone's syntax: 512k
    /// (both ways), UP:DOWN for separate rates (off:512k limits downloads
    /// only, 1M:off uploads only), or a timetable "08:00,512k 19:00,off"
    /// (overrides bwlimit in config.toml).
    #[arg(long, value_name = "RATE")]
    pub bwlimit: Option<String>,
}

/// Where the agent keeps its files when it is not running to say.
#[derive(Args, Debug, Clone, Default)]
pub struct RootArg {
    /// The agent's storage root, when no agent is running on this home
    /// (default: <home>/storage; a running agent knows its own).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub action: Option<AuditCommand>,
    #[command(flatten)]
    pub filter: AuditFilter,
    /// One JSON object per record, on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub root: RootArg,
}

#[derive(Args, Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only records newer than this: 1d, 12h, 90m.
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub since: Option<Duration>,
    /// Only this peer's records (`untrusted` for refused keys).
    #[arg(long)]
    pub peer: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the whole hash chain; name the first record that breaks it.
    Verify,
    /// Write the log as JSON lines (for a log shipper), to a file or stdout.
    Export {
        /// The file to write (default: stdout).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        filter: AuditFilter,
    },
}

#[derive(Subcommand, Debug)]
pub enum QuarantineCommand {
    /// What the quarantine holds: id, peer, size, where it was to go, why.
    List {
        /// One JSON object per held file.
        #[arg(long)]
        json: bool,
    },
    /// Everything about one held file.
    Show {
        /// The held file's id, or a unique prefix of it (see `list`).
        id: String,
    },
    /// Put a held file where it was to go (checked against its SHA-256
    /// first; never made executable).
    Release {
        /// The held file's id, or a unique prefix of it (see `list`).
        id: String,
        /// Replace a file that is there now.
        #[arg(long)]
        overwrite: bool,
    },
    /// Remove a held file for good.
    Delete {
        /// The held file's id, or a unique prefix of it (see `list`).
        id: String,
    },
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
