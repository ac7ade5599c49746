//! [`ClientHandle`]: how a front end drives a running client engine.
//!
//! The handle is cheap to clone. Every method sends a typed
//! [`ClientCommand`] over an `mpsc` channel and, where there is an answer,
//! waits for it on a `oneshot`. Progress comes back through
//! [`ClientHandle::snapshot`] (a `watch` of the latest [`EngineSnapshot`]) and
//! [`ClientHandle::events`] (a `broadcast` of [`Event`]s).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::error::{CoreError, Result};
use crate::ledger::CleanChoice;
pub use crate::protocol::RemoteEntry;
use crate::view::{EngineSnapshot, Event, TransferId, TransferReport};

/// Options of one upload.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct UploadOptions {
    /// Skip gzip even where it would help.
    pub no_compress: bool,
    /// Replace an existing remote file with different content.
    pub overwrite: bool,
    /// The agent removes the file this long after it takes the upload.
    #[serde(default)]
    pub expires_after_secs: Option<u64>,
    /// Send the whole file even where the agent holds a version this
    /// client sent (`--no-delta`).
    #[serde(default)]
    pub no_delta: bool,
}

/// What the agent did about shares, and this peer's shares now.
pub type SharesAnswer = (String, Vec<crate::policy::Share>);

/// Options of one download.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct DownloadOptions {
    /// Replace a local file that already exists (once the download is
    /// verified; until then the old file stays as it was). Only the
    /// differences from it travel.
    pub overwrite: bool,
    /// Download the whole file even where a version of it is here
    /// (`--no-delta`).
    #[serde(default)]
    pub no_delta: bool,
}

/// The words an upload's failure ends with when the agent holds another
/// file under its name; a front end that can ask instead looks for them.
pub const REPLACE_HINT: &str = "upload with --overwrite to replace it";

/// What to do about a failure no retry can fix, for the agent's policy
/// refusals (quarantine, quotas): said instead of "try again" by `resume
/// --all` and the TUI. `None` for everything else.
pub fn policy_remedy(error: &str) -> Option<&'static str> {
    if error.contains(crate::policy::quarantine::HELD) {
        Some("the agent's owner decides: `pigeon quarantine` there")
    } else if ["quota exceeded", "file too large", "too many files"]
        .iter()
        .any(|w| error.contains(w))
    {
        Some("make room on the agent (`pigeon quota` shows the use), or ask for a larger quota")
    } else {
        None
    }
}

/// What can be done to one queued transfer: the one vocabulary of the
/// command line, the TUI's keys and the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TransferAction {
    Pause,
    Resume,
    Cancel,
    /// Start a failed or cancelled transfer again (resuming what it has).
    Retry,
    /// Start a failed upload again, replacing the agent's file of that
    /// name (the answer to [`REPLACE_HINT`]).
    Overwrite,
    /// Move in the queue: negative runs sooner.
    Reprioritize(i64),
}

/// What a front end can ask of the engine.
#[derive(Debug)]
pub enum ClientCommand {
    Upload {
        local: PathBuf,
        remote: String,
        options: UploadOptions,
        reply: oneshot::Sender<Result<TransferId>>,
    },
    Download {
        remote: String,
        local: PathBuf,
        options: DownloadOptions,
        reply: oneshot::Sender<Result<TransferId>>,
    },
    List {
        dir: String,
        reply: oneshot::Sender<Result<Vec<RemoteEntry>>>,
    },
    /// This peer's use of its quotas on the agent.
    Quota {
        reply: oneshot::Sender<Result<Vec<crate::policy::QuotaLine>>>,
    },
    /// Share, stop sharing, or list shares.
    Shares {
        op: crate::protocol::ShareOp,
        reply: oneshot::Sender<Result<SharesAnswer>>,
    },
    /// Pause, resume, cancel, retry or move one transfer.
    Act(TransferId, TransferAction),
    /// Cancel, and answer whether the agent was told (within `wait`), so
    /// it drops what it holds of the transfer (an upload's partial file).
    CancelTelling {
        id: TransferId,
        wait: std::time::Duration,
        reply: oneshot::Sender<bool>,
    },
    /// Resume the unfinished transfer whose id starts with `prefix`, or
    /// every unfinished one (`prefix` None); replies with their ids.
    ResumeMatching {
        prefix: Option<String>,
        reply: oneshot::Sender<Result<Vec<TransferId>>>,
    },
    /// Every transfer of this home, oldest first (`status`, `history`).
    Reports {
        reply: oneshot::Sender<Result<Vec<TransferReport>>>,
    },
    /// The transfer whose id is or starts with `prefix`.
    Find {
        prefix: String,
        reply: oneshot::Sender<Result<TransferReport>>,
    },
    /// Remove one finished transfer (`pigeon forget`).
    Forget {
        prefix: String,
        reply: oneshot::Sender<Result<TransferReport>>,
    },
    /// Remove the finished transfers `choice` names (`pigeon clean`), or
    /// only name them (`dry_run`).
    Clean {
        choice: CleanChoice,
        dry_run: bool,
        reply: oneshot::Sender<Result<Vec<TransferReport>>>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// A handle on a running client engine.
#[derive(Clone)]
pub struct ClientHandle {
    pub(crate) commands: mpsc::Sender<ClientCommand>,
    pub(crate) snapshot: watch::Receiver<Arc<EngineSnapshot>>,
    pub(crate) events: broadcast::Sender<Event>,
}

impl ClientHandle {
    /// The latest snapshot; `changed().await` on it wakes on each publish.
    pub fn snapshot(&self) -> watch::Receiver<Arc<EngineSnapshot>> {
        self.snapshot.clone()
    }

    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Queue an upload of `local` to `remote` (a path under the agent's root).
    pub async fn upload(
        &self,
        local: PathBuf,
        remote: String,
        options: UploadOptions,
    ) -> Result<TransferId> {
        self.ask(|reply| ClientCommand::Upload {
            local,
            remote,
            options,
            reply,
        })
        .await?
    }

    /// Queue a download of `remote` into the local file `local`.
    pub async fn download(&self, remote: String, local: PathBuf) -> Result<TransferId> {
        self.download_with(remote, local, DownloadOptions::default())
            .await
    }

    /// Queue a download with `options`.
    pub async fn download_with(
        &self,
        remote: String,
        local: PathBuf,
        options: DownloadOptions,
    ) -> Result<TransferId> {
        self.ask(|reply| ClientCommand::Download {
            remote,
            local,
            options,
            reply,
        })
        .await?
    }

    /// List a remote folder ("" is the root).
    pub async fn list(&self, dir: String) -> Result<Vec<RemoteEntry>> {
        self.ask(|reply| ClientCommand::List { dir, reply }).await?
    }

    /// This peer's use of its quotas on the agent, and all peers' together.
    pub async fn quota(&self) -> Result<Vec<crate::policy::QuotaLine>> {
        self.ask(|reply| ClientCommand::Quota { reply }).await?
    }

    /// Share, stop sharing, or list what is shared: what the agent did,
    /// and this peer's shares now (made, and made with it).
    pub async fn shares(&self, op: crate::protocol::ShareOp) -> Result<SharesAnswer> {
        self.ask(|reply| ClientCommand::Shares { op, reply })
            .await?
    }

    /// Do `action` to transfer `id`.
    pub async fn act(&self, id: TransferId, action: TransferAction) -> Result<()> {
        self.tell(ClientCommand::Act(id, action)).await
    }

    pub async fn pause(&self, id: TransferId) -> Result<()> {
        self.act(id, TransferAction::Pause).await
    }

    pub async fn resume(&self, id: TransferId) -> Result<()> {
        self.act(id, TransferAction::Resume).await
    }

    pub async fn cancel(&self, id: TransferId) -> Result<()> {
        self.act(id, TransferAction::Cancel).await
    }

    /// Cancel `id` and tell the agent, waiting up to `wait` for a session
    /// with it; true when it was told.
    pub async fn cancel_telling(&self, id: TransferId, wait: std::time::Duration) -> Result<bool> {
        self.ask(|reply| ClientCommand::CancelTelling { id, wait, reply })
            .await
    }

    pub async fn retry(&self, id: TransferId) -> Result<()> {
        self.act(id, TransferAction::Retry).await
    }

    pub async fn reprioritize(&self, id: TransferId, delta: i64) -> Result<()> {
        self.act(id, TransferAction::Reprioritize(delta)).await
    }

    /// Resume by id prefix (as `pigeon resume ID`), or all unfinished
    /// transfers (`pigeon resume --all`).
    pub async fn resume_matching(
        &self,
        prefix: Option<String>,
        all: bool,
    ) -> Result<Vec<TransferId>> {
        let prefix = if all { None } else { prefix };
        self.ask(|reply| ClientCommand::ResumeMatching { prefix, reply })
            .await?
    }

    /// Every transfer of this home, oldest first.
    pub async fn reports(&self) -> Result<Vec<TransferReport>> {
        self.ask(|reply| ClientCommand::Reports { reply }).await?
    }

    /// The transfer whose id is or starts with `prefix`.
    pub async fn find(&self, prefix: String) -> Result<TransferReport> {
        self.ask(|reply| ClientCommand::Find { prefix, reply })
            .await?
    }

    /// Remove one finished transfer: its record, key and chunk state.
    pub async fn forget(&self, prefix: String) -> Result<TransferReport> {
        self.ask(|reply| ClientCommand::Forget { prefix, reply })
            .await?
    }

    /// Remove (or with `dry_run` only name) the finished transfers `choice` names.
    pub async fn clean(&self, choice: CleanChoice, dry_run: bool) -> Result<Vec<TransferReport>> {
        self.ask(|reply| ClientCommand::Clean {
            choice,
            dry_run,
            reply,
        })
        .await?
    }

    /// Stop every transfer (they stay queued in the store) and the engine.
    pub async fn shutdown(&self) {
        let _ = self.ask(ClientCommand::Shutdown).await;
    }

    /// Send without waiting: for commands from a UI thread that must not block.
    pub fn try_tell(&self, command: ClientCommand) -> Result<()> {
        self.commands
            .try_send(command)
            .map_err(|_| CoreError::EngineStopped)
    }

    async fn tell(&self, command: ClientCommand) -> Result<()> {
        self.commands
            .send(command)
            .await
            .map_err(|_| CoreError::EngineStopped)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> ClientCommand) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tell(make(tx)).await?;
        rx.await.map_err(|_| CoreError::EngineStopped)
    }
}
