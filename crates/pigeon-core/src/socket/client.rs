//! A command's side: the owner's engine as a [`ClientHandle`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::wire::{self, Answer, Ask, FromOwner, ToOwner};
use super::{OwnerInfo, PROTOCOL};
use crate::engine::{ClientCommand, ClientHandle};
use crate::error::{CoreError, Result};
use crate::view::EngineSnapshot;

/// How long an owner may take to greet.
const GREETING_WITHIN: Duration = Duration::from_secs(10);

/// The engine of the process that holds a home.
pub struct Attached {
    /// Shutting it down detaches; the owner goes on.
    pub handle: ClientHandle,
    pub owner: OwnerInfo,
}

/// Attach to the process serving `<home>/pigeon.sock`; None when none
/// does (no socket, or a dead owner's). `follow`: transfers this handle
/// starts are paused if it goes away before they end.
pub async fn attach(home: &Path, follow: bool) -> Result<Option<Attached>> {
    let path = super::path(home);
    let stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        // Not ours to use: said, since it will not work any other way.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(CoreError::io(
                format!("connecting to {}", path.display()),
                e,
            ))
        }
        // No socket, a dead owner's, or a path too long for a socket (the
        // owner could not serve it either): no owner to attach to.
        Err(_) => return Ok(None),
    };
    let (mut rd, mut wr) = stream.into_split();
    let hello = ToOwner::Hello {
        protocol: PROTOCOL,
        follow,
    };
    if wire::write(&mut wr, &hello).await.is_err() {
        // It closed as we came: it is stopping.
        return Ok(None);
    }
    let owner = match tokio::time::timeout(GREETING_WITHIN, wire::read(&mut rd)).await {
        Ok(Ok(Some(FromOwner::Hello(owner)))) => owner,
        Ok(Ok(Some(FromOwner::Refused(why)))) => return Err(CoreError::Transfer(why)),
        Ok(Ok(Some(_))) => {
            return Err(CoreError::Transfer(format!(
                "the pigeon process on {} did not greet as pigeon does",
                path.display()
            )))
        }
        // Gone between connect and greeting: as if it had not been there.
        Ok(Ok(None) | Err(_)) => return Ok(None),
        Err(_) => {
            return Err(CoreError::Transfer(format!(
                "the pigeon process holding this home does not answer on {} within {} s; if it is stuck, stop it",
                path.display(),
                GREETING_WITHIN.as_secs()
            )))
        }
    };
    let (from_tx, from_rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Ok(Some(message)) = wire::read::<_, FromOwner>(&mut rd).await {
            if from_tx.send(message).await.is_err() {
                return;
            }
        }
    });
    let (commands, commands_rx) = mpsc::channel(256);
    let (snapshot_tx, snapshot) = watch::channel(Arc::new(EngineSnapshot::default()));
    let events = broadcast::channel(1024).0;
    tokio::spawn(proxy(commands_rx, wr, from_rx, snapshot_tx, events.clone()));
    Ok(Some(Attached {
        handle: ClientHandle {
            commands,
            snapshot,
            events,
        },
        owner,
    }))
}

/// Carry commands to the owner and its answers, snapshots and events back,
/// until either side goes. Then every question waiting fails with
/// [`CoreError::EngineStopped`] and the snapshot channel closes.
async fn proxy(
    mut commands: mpsc::Receiver<ClientCommand>,
    mut wr: OwnedWriteHalf,
    mut from: mpsc::Receiver<FromOwner>,
    snapshot: watch::Sender<Arc<EngineSnapshot>>,
    events: broadcast::Sender<crate::view::Event>,
) {
    let mut waiting: HashMap<u64, Reply> = HashMap::new();
    let mut seq = 0u64;
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { break };
                if let ClientCommand::Shutdown(done) = command {
                    let _ = wr.shutdown().await;
                    let _ = done.send(());
                    return;
                }
                let Some((ask, reply)) = split(command) else { continue };
                seq += 1;
                waiting.insert(seq, reply);
                if wire::write(&mut wr, &ToOwner::Ask { seq, ask }).await.is_err() {
                    break;
                }
            }
            message = from.recv() => match message {
                None => break,
                Some(FromOwner::Answer { seq, result }) => {
                    if let Some(reply) = waiting.remove(&seq) {
                        reply.give(result);
                    }
                }
                Some(FromOwner::Snapshot(s)) => {
                    let _ = snapshot.send(Arc::new(*s));
                }
                Some(FromOwner::Event(e)) => {
                    let _ = events.send(*e);
                }
                Some(FromOwner::Hello(_) | FromOwner::Refused(_)) => {}
            }
        }
    }
}

/// Where an answer goes.
enum Reply {
    Id(oneshot::Sender<Result<crate::view::TransferId>>),
    Ids(oneshot::Sender<Result<Vec<crate::view::TransferId>>>),
    Entries(oneshot::Sender<Result<Vec<crate::engine::RemoteEntry>>>),
    Quota(oneshot::Sender<Result<Vec<crate::policy::QuotaLine>>>),
    Shares(oneshot::Sender<Result<crate::engine::handle::SharesAnswer>>),
    Told(oneshot::Sender<bool>),
    Reports(oneshot::Sender<Result<Vec<crate::view::TransferReport>>>),
    Report(oneshot::Sender<Result<crate::view::TransferReport>>),
    Nobody,
}

impl Reply {
    fn give(self, result: std::result::Result<Answer, String>) {
        fn pass<T>(
            to: oneshot::Sender<Result<T>>,
            result: std::result::Result<Answer, String>,
            pick: impl FnOnce(Answer) -> Option<T>,
        ) {
            let value = match result {
                Ok(answer) => pick(answer).ok_or_else(|| {
                    CoreError::Transfer(
                        "the pigeon process holding this home answered another question".into(),
                    )
                }),
                // The owner's message, as the engine would have said it here.
                Err(message) => Err(CoreError::Transfer(message)),
            };
            let _ = to.send(value);
        }
        match self {
            Reply::Id(to) => pass(to, result, |a| match a {
                Answer::Id(id) => Some(id),
                _ => None,
            }),
            Reply::Ids(to) => pass(to, result, |a| match a {
                Answer::Ids(ids) => Some(ids),
                _ => None,
            }),
            Reply::Entries(to) => pass(to, result, |a| match a {
                Answer::Entries(e) => Some(e),
                _ => None,
            }),
            Reply::Quota(to) => pass(to, result, |a| match a {
                Answer::Quota(q) => Some(q),
                _ => None,
            }),
            Reply::Shares(to) => pass(to, result, |a| match a {
                Answer::Shares(s) => Some(s),
                _ => None,
            }),
            Reply::Reports(to) => pass(to, result, |a| match a {
                Answer::Reports(r) => Some(r),
                _ => None,
            }),
            Reply::Report(to) => pass(to, result, |a| match a {
                Answer::Report(r) => Some(*r),
                _ => None,
            }),
            Reply::Told(to) => {
                let _ = to.send(matches!(result, Ok(Answer::Told(true))));
            }
            Reply::Nobody => {}
        }
    }
}

/// A local path as the owner must see it: absolute (its working folder is
/// not ours); an empty download target is our working folder. None when
/// ours is gone (a relative path would name a file in the owner's).
fn ours(path: PathBuf) -> Option<PathBuf> {
    let path = if path.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        path
    };
    std::path::absolute(&path).ok().filter(|p| p.is_absolute())
}

fn no_working_folder() -> CoreError {
    CoreError::Transfer(
        "this command's working folder is gone: give an absolute path, or cd somewhere that exists"
            .into(),
    )
}

/// A command as a question and where its answer goes.
fn split(command: ClientCommand) -> Option<(Ask, Reply)> {
    Some(match command {
        ClientCommand::Upload {
            local,
            remote,
            options,
            reply,
        } => {
            let Some(local) = ours(local) else {
                let _ = reply.send(Err(no_working_folder()));
                return None;
            };
            (
                Ask::Upload {
                    local,
                    remote,
                    options,
                },
                Reply::Id(reply),
            )
        }
        ClientCommand::Download {
            remote,
            local,
            options,
            reply,
        } => {
            let Some(local) = ours(local) else {
                let _ = reply.send(Err(no_working_folder()));
                return None;
            };
            (
                Ask::Download {
                    remote,
                    local,
                    options,
                },
                Reply::Id(reply),
            )
        }
        ClientCommand::List { dir, reply } => (Ask::List { dir }, Reply::Entries(reply)),
        ClientCommand::Quota { reply } => (Ask::Quota, Reply::Quota(reply)),
        ClientCommand::Shares { op, reply } => (Ask::Shares { op }, Reply::Shares(reply)),
        ClientCommand::Act(id, action) => (Ask::Act { id, action }, Reply::Nobody),
        ClientCommand::CancelTelling { id, wait, reply } => {
            (Ask::CancelTelling { id, wait }, Reply::Told(reply))
        }
        ClientCommand::ResumeMatching { prefix, reply } => {
            (Ask::ResumeMatching { prefix }, Reply::Ids(reply))
        }
        ClientCommand::Reports { reply } => (Ask::Reports, Reply::Reports(reply)),
        ClientCommand::Find { prefix, reply } => (Ask::Find { prefix }, Reply::Report(reply)),
        ClientCommand::Forget { prefix, reply } => (Ask::Forget { prefix }, Reply::Report(reply)),
        ClientCommand::Clean {
            choice,
            dry_run,
            reply,
        } => (Ask::Clean { choice, dry_run }, Reply::Reports(reply)),
        ClientCommand::Shutdown(_) => return None,
    })
}
