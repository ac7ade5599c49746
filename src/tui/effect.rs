//! What the UI asks of the world, and the tasks that do it.
//!
//! Handlers never do I/O. They return [`Effect`]s; the event loop hands
//! each one to [`spawn`], which runs it in a tokio task (engine calls) or on
//! a blocking thread (disk reads) and reports back with a [`Msg`] on the
//! loop's channel. The UI stays responsive whatever the disk or the channel
//! is doing, and handlers stay pure functions of state, easy to test.

use std::path::PathBuf;

use tokio::sync::mpsc;

use pigeon_core::engine::{ClientHandle, RemoteEntry, TransferAction, UploadOptions};
use pigeon_core::view::{plural, TransferId};

use super::entries::{self, LocalEntry, RemoteItem};

/// Something the UI wants done outside itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// List a local folder for the Files pane.
    ReadDir(PathBuf),
    /// List a remote folder ("" is the root) for the Remote pane.
    ListRemote(String),
    /// Queue uploads of local files and folders into a remote folder.
    Upload {
        sources: Vec<PathBuf>,
        remote_dir: String,
    },
    /// Queue downloads of remote files, and of every file in remote
    /// folders, into a local folder.
    Download {
        items: Vec<RemoteItem>,
        folders: Vec<RemoteItem>,
        local_dir: PathBuf,
    },
    /// Pause, resume, cancel, retry or move a queued transfer.
    Act(TransferId, TransferAction),
    /// Remove a finished transfer from the list (its record and key).
    Forget(TransferId),
    /// Ring the terminal bell.
    Bell,
}

/// What comes back from a spawned effect.
#[derive(Debug)]
pub enum Msg {
    DirRead {
        dir: PathBuf,
        result: Result<Vec<LocalEntry>, String>,
    },
    RemoteListed {
        dir: String,
        result: Result<Vec<RemoteEntry>, String>,
    },
    /// This peer's use against its quotas on the agent.
    Quota(pigeon_core::policy::QuotaLine),
    /// One upload or download was queued, or refused.
    Queued {
        what: String,
        result: Result<TransferId, String>,
    },
    /// A command failed; `context` says which.
    Failed { context: String, error: String },
    /// Something worth a log line (e.g. a folder upload cut short).
    Note(String),
}

/// Run `effect` off the UI loop; its outcome arrives on `tx`. [`Effect::Bell`]
/// is the loop's own business (it owns the terminal) and is ignored here.
pub fn spawn(effect: Effect, handle: &ClientHandle, tx: &mpsc::UnboundedSender<Msg>) {
    let tx = tx.clone();
    match effect {
        Effect::ReadDir(dir) => {
            tokio::task::spawn_blocking(move || {
                let result = entries::read_dir(&dir).map_err(|e| e.to_string());
                let _ = tx.send(Msg::DirRead { dir, result });
            });
        }
        Effect::ListRemote(dir) => {
            let handle = handle.clone();
            tokio::spawn(async move {
                let result = handle.list(dir.clone()).await.map_err(|e| e.to_string());
                let listed_root = dir.is_empty() && result.is_ok();
                let _ = tx.send(Msg::RemoteListed { dir, result });
                // With each listing of the root (one more question on a
                // slow channel, not one per folder): the quota's use.
                if listed_root {
                    if let Ok(lines) = handle.quota().await {
                        if let Some(mine) = lines.into_iter().find(|l| l.who != "all peers") {
                            let _ = tx.send(Msg::Quota(mine));
                        }
                    }
                }
            });
        }
        Effect::Upload {
            sources,
            remote_dir,
        } => {
            let handle = handle.clone();
            tokio::spawn(async move { upload(handle, sources, remote_dir, tx).await });
        }
        Effect::Download {
            items,
            folders,
            local_dir,
        } => {
            let handle = handle.clone();
            tokio::spawn(async move {
                for item in items {
                    let local = local_dir.join(&item.name);
                    queue_download(&handle, &item.path, local, &tx).await;
                }
                for folder in folders {
                    download_folder(&handle, &folder, &local_dir, &tx).await;
                }
            });
        }
        Effect::Act(id, action) => {
            let handle = handle.clone();
            tokio::spawn(async move {
                if let Err(e) = handle.act(id, action).await {
                    let context = match action {
                        TransferAction::Pause => "pause",
                        TransferAction::Resume => "resume",
                        TransferAction::Cancel => "cancel",
                        TransferAction::Retry => "retry",
                        TransferAction::Overwrite => "overwrite",
                        TransferAction::Reprioritize(_) => "reprioritize",
                    };
                    let _ = tx.send(Msg::Failed {
                        context: context.to_owned(),
                        error: e.to_string(),
                    });
                }
            });
        }
        Effect::Forget(id) => {
            let handle = handle.clone();
            tokio::spawn(async move {
                if let Err(e) = handle.forget(id.to_string()).await {
                    let _ = tx.send(Msg::Failed {
                        context: "forget".to_owned(),
                        error: e.to_string(),
                    });
                }
            });
        }
        Effect::Bell => {}
    }
}

async fn queue_download(
    handle: &ClientHandle,
    remote: &str,
    local: PathBuf,
    tx: &mpsc::UnboundedSender<Msg>,
) {
    let result = handle
        .download(remote.to_string(), local)
        .await
        .map_err(|e| e.to_string());
    let what = format!("download of {remote}");
    let _ = tx.send(Msg::Queued { what, result });
}

/// Walk a remote folder (a listing per folder) and queue a download of
/// each file into `local_dir/<folder name>/…`.
async fn download_folder(
    handle: &ClientHandle,
    folder: &RemoteItem,
    local_dir: &std::path::Path,
    tx: &mpsc::UnboundedSender<Msg>,
) {
    let root = local_dir.join(&folder.name);
    let tree = match crate::remote_tree::walk(handle, &folder.path, &root).await {
        Ok(tree) => tree,
        Err(e) => {
            let _ = tx.send(Msg::Failed {
                context: format!("download of {}/", folder.path),
                error: e.to_string(),
            });
            return;
        }
    };
    if tree.capped {
        let _ = tx.send(Msg::Note(format!(
            "{}/ holds more than {}: only the first ones are queued",
            folder.path,
            plural(crate::remote_tree::MAX_FILES as u64, "file")
        )));
    }
    if tree.refused > 0 {
        let _ = tx.send(Msg::Note(format!(
            "left out {} of {}/ listed outside it or under names that cannot be files here",
            plural(tree.refused as u64, "entry"),
            folder.path
        )));
    }
    if tree.files.is_empty() {
        let _ = tx.send(Msg::Note(format!("{}/ holds no files", folder.path)));
    }
    for (entry, local) in tree.files {
        if let Some(Err(e)) = local.parent().map(std::fs::create_dir_all) {
            let _ = tx.send(Msg::Queued {
                what: format!("download of {}", entry.path),
                result: Err(format!("cannot create {}: {e}", local.display())),
            });
            continue;
        }
        queue_download(handle, &entry.path, local, tx).await;
    }
}

/// Expand folders (on a blocking thread) and queue one upload per file.
async fn upload(
    handle: ClientHandle,
    sources: Vec<PathBuf>,
    remote_dir: String,
    tx: mpsc::UnboundedSender<Msg>,
) {
    let expanded =
        tokio::task::spawn_blocking(move || crate::local_tree::expand(&sources, &remote_dir)).await;
    let (pairs, truncated) = match expanded {
        Ok(result) => result,
        Err(e) => {
            let _ = tx.send(Msg::Failed {
                context: "upload".to_owned(),
                error: e.to_string(),
            });
            return;
        }
    };
    if truncated {
        let _ = tx.send(Msg::Note(format!(
            "folder upload stopped at {}; upload the rest separately",
            plural(crate::local_tree::MAX_FILES as u64, "file")
        )));
    }
    for (local, remote) in pairs {
        let what = format!("upload of {}", local.display());
        let result = handle
            .upload(local, remote, UploadOptions::default())
            .await
            .map_err(|e| e.to_string());
        let _ = tx.send(Msg::Queued { what, result });
    }
}
