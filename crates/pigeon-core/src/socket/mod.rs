//! One home, many commands: the control socket `<home>/pigeon.sock`.
//!
//! The pigeon process that owns a home's store (an upload, a download, the
//! TUI) also serves this Unix socket, and every other `pigeon` command on
//! the home becomes a thin client of that process's engine: [`attach`]
//! returns a [`ClientHandle`] whose commands travel over the socket and
//! whose snapshots and events come back over it, so a front end cannot
//! tell an attached engine from its own. [`serve`] is the owner's side.
//!
//! Why an owner that serves rather than a daemon started on demand: nothing
//! outlives the commands a user ran (no background process to find and
//! stop), the first command's output and exit code are its own, and a
//! killed owner is replaced by whichever command comes next (sled's lock
//! dies with the process; a socket nobody listens on is stale and removed
//! by the next owner).
//!
//! What the socket refuses:
//!
//! - any other user: the file is mode 0600 and every connection's peer
//!   credentials are checked against our own uid;
//! - a pigeon of another protocol version: said at once, nothing sent;
//! - frames above [`FRAME_LIMIT`] or that do not decode: the connection
//!   is dropped, the engine does not notice.
//!
//! A client that follows its transfers (`pigeon upload`, `download`,
//! `resume`) and goes away before they end (Ctrl-C, a kill) leaves them
//! paused with their progress kept, as they would be had it run them
//! itself; the TUI attaches without following (its queue is the queue).
//!
//! The wire: each frame is a big-endian `u32` length and a value encoded
//! by [`crate::codec`] (version byte and bincode).

pub mod admin;
mod client;
mod server;
mod wire;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use client::{attach, Attached};
pub use server::{serve, Served};

/// The socket of a home.
pub fn path(home: &Path) -> PathBuf {
    home.join("pigeon.sock")
}

/// Most bytes one frame may hold (a snapshot with the chunk maps of
/// several large transfers stays well below).
pub const FRAME_LIMIT: usize = 64 * 1024 * 1024;

/// Bumped whenever a message changes shape.
pub const PROTOCOL: u32 = 1;

/// Who holds the home, as the owner tells each client.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OwnerInfo {
    pub pid: u32,
    /// What it runs: `upload`, `download`, `the TUI`, …
    pub command: String,
    /// The agent its engine talks to, as the trust list names it.
    pub peer: String,
    /// Its transports' URIs.
    pub transports: Vec<String>,
    /// The agent runs inside that process (the TUI's local default).
    pub embedded_agent: bool,
}

impl OwnerInfo {
    /// `pid 1234, pigeon upload`
    pub fn describe(&self) -> String {
        format!("pid {}, {}", self.pid, self.command)
    }
}
