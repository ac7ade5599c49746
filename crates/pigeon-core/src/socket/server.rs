//! The owner's side: serve the home's engine to the other commands.

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::wire::{self, Answer, Ask, FromOwner, ToOwner};
use super::{OwnerInfo, PROTOCOL};
use crate::engine::ClientHandle;
use crate::error::{CoreError, Result};
use crate::view::{TransferId, TransferStatus};

/// Snapshots go to each client at most this often.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(100);

/// A client must say hello within this.
const HELLO_WITHIN: Duration = Duration::from_secs(5);

/// The socket being served. Dropping it stops serving and removes the
/// socket file (if it is still ours).
pub struct Served {
    path: PathBuf,
    inode: u64,
    clients: watch::Receiver<usize>,
    accept: JoinHandle<()>,
}

impl Served {
    /// A socket served by `accept` (which counts no clients).
    pub(super) fn new(path: PathBuf, inode: u64, accept: JoinHandle<()>) -> Served {
        let (_, clients) = watch::channel(0usize);
        Served {
            path,
            inode,
            clients,
            accept,
        }
    }

    /// Commands attached right now.
    pub fn clients(&self) -> usize {
        *self.clients.borrow()
    }

    /// Wait until no command is attached.
    pub async fn idle(&mut self) {
        let _ = self.clients.wait_for(|n| *n == 0).await;
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.accept.abort();
        // Another owner may have bound the path since (we were killed,
        // it took over): leave its socket alone.
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Serve `handle` on `<home>/pigeon.sock`. Call only while holding the
/// home's store: a socket file already there is then a dead owner's.
pub fn serve(home: &Path, handle: ClientHandle, info: OwnerInfo) -> Result<Served> {
    let path = super::path(home);
    let (listener, inode) = bind(&path)?;
    let (count_tx, clients) = watch::channel(0usize);
    let count = Arc::new(count_tx);
    let info = Arc::new(info);
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors, say: try again shortly.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let (handle, info, count) = (handle.clone(), info.clone(), count.clone());
            tokio::spawn(async move {
                if let Err(e) = connection(stream, handle, &info, &count).await {
                    tracing::debug!("control socket client: {e}");
                }
            });
        }
    });
    Ok(Served {
        path,
        inode,
        clients,
        accept,
    })
}

/// Listen on the socket `path` (a stale one there is replaced: call only
/// while holding what the socket serves), mode 0600; and its inode, to
/// remove only our own when done. The socket is made under a temporary
/// name beside it, given its mode, then renamed into place: `path` never
/// shows a socket with the umask's mode, even for an instant (a test
/// looking at once saw 0700 on a loaded machine).
pub(super) fn bind(path: &Path) -> Result<(UnixListener, u64)> {
    let io = |e| CoreError::io(format!("serving {}", path.display()), e);
    // As short as the final name: a socket's path has a small limit.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temp = path.with_file_name(format!(".s{}.{n}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let listener = std::os::unix::net::UnixListener::bind(&temp).map_err(io)?;
    let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temp);
        return Err(io(e));
    }
    let inode = std::fs::symlink_metadata(path).map_err(io)?.ino();
    listener.set_nonblocking(true).map_err(io)?;
    let listener = UnixListener::from_std(listener).map_err(io)?;
    Ok((listener, inode))
}

/// Only our own user may use a socket of ours (its mode already keeps
/// others out; this is the second lock).
pub(super) fn same_user(stream: &UnixStream) -> Result<()> {
    let cred = stream
        .peer_cred()
        .map_err(|e| CoreError::io("reading a control client's credentials", e))?;
    if cred.uid() != rustix::process::getuid().as_raw() {
        return Err(CoreError::Transfer(format!(
            "refused a control client of uid {}",
            cred.uid()
        )));
    }
    Ok(())
}

/// One attached command, counted while it is.
struct Counted(Arc<watch::Sender<usize>>);

impl Counted {
    fn new(count: &Arc<watch::Sender<usize>>) -> Counted {
        count.send_modify(|n| *n += 1);
        Counted(count.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The transfers a following client started, and whether it has gone.
#[derive(Default)]
struct Followed {
    gone: bool,
    ids: HashSet<TransferId>,
}

async fn connection(
    stream: UnixStream,
    handle: ClientHandle,
    info: &OwnerInfo,
    count: &Arc<watch::Sender<usize>>,
) -> Result<()> {
    same_user(&stream)?;
    let _counted = Counted::new(count);
    let (mut rd, mut wr) = stream.into_split();
    let follow = match tokio::time::timeout(HELLO_WITHIN, wire::read(&mut rd)).await {
        Ok(Ok(Some(ToOwner::Hello { protocol, follow }))) if protocol == PROTOCOL => follow,
        Ok(Ok(Some(ToOwner::Hello { protocol, .. }))) => {
            let why = format!(
                "the pigeon holding this home ({}) speaks control protocol {PROTOCOL} and this one {protocol}: use the same pigeon, or wait for it to finish",
                info.describe()
            );
            return wire::write(&mut wr, &FromOwner::Refused(why)).await;
        }
        _ => return Ok(()),
    };
    // Subscribed before the first question is read: no event of a transfer
    // this client starts can be missed.
    let mut events = handle.events();
    let mut snapshots = handle.snapshot();
    wire::write(&mut wr, &FromOwner::Hello(info.clone())).await?;

    let (out, mut outgoing) = mpsc::channel::<FromOwner>(64);
    let writer = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            if wire::write(&mut wr, &message).await.is_err() {
                return;
            }
        }
    });
    let snapshot_out = out.clone();
    let forward_snapshots = tokio::spawn(async move {
        snapshots.mark_changed();
        while snapshots.changed().await.is_ok() {
            let snapshot = (**snapshots.borrow_and_update()).clone();
            if snapshot_out
                .send(FromOwner::Snapshot(Box::new(snapshot)))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(SNAPSHOT_EVERY).await;
        }
    });
    let event_out = out.clone();
    let forward_events = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if event_out.send(FromOwner::Event(Box::new(e))).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });

    let followed = Arc::new(Mutex::new(Followed::default()));
    while let Ok(Some(message)) = wire::read::<_, ToOwner>(&mut rd).await {
        let ToOwner::Ask { seq, ask } = message else {
            continue;
        };
        // Acts are quick and their order matters (pause, then resume):
        // done in turn; questions that wait on the agent run beside.
        if matches!(ask, Ask::Act { .. }) {
            let (result, _) = answer(&handle, ask).await;
            let _ = out.send(FromOwner::Answer { seq, result }).await;
            continue;
        }
        let (handle, out, followed) = (handle.clone(), out.clone(), followed.clone());
        tokio::spawn(async move {
            // What already ran or waited its turn before this client asked
            // is someone else's: never paused when this client goes. (From
            // the engine's records, which every earlier command has reached;
            // a snapshot may be a moment behind.)
            let starts = matches!(
                ask,
                Ask::Upload { .. } | Ask::Download { .. } | Ask::ResumeMatching { .. }
            );
            let others: HashSet<TransferId> = match starts {
                true => handle
                    .reports()
                    .await
                    .unwrap_or_default()
                    .iter()
                    .filter(|r| {
                        matches!(
                            r.status,
                            TransferStatus::InProgress | TransferStatus::Pending
                        )
                    })
                    .filter_map(|r| r.id.parse().ok())
                    .collect(),
                false => HashSet::new(),
            };
            let (result, mut started) = answer(&handle, ask).await;
            started.retain(|id| !others.contains(id));
            if follow && !started.is_empty() {
                let gone = {
                    let mut f = lock(&followed);
                    f.ids.extend(started.iter().copied());
                    f.gone
                };
                if gone {
                    pause_all(&handle, started).await;
                }
            }
            let _ = out.send(FromOwner::Answer { seq, result }).await;
        });
    }
    forward_snapshots.abort();
    forward_events.abort();
    drop(out);
    let left = {
        let mut f = lock(&followed);
        f.gone = true;
        std::mem::take(&mut f.ids)
    };
    // Finished ones are left as they are; the others stop, progress kept.
    pause_all(&handle, left.into_iter().collect()).await;
    let _ = writer.await;
    Ok(())
}

async fn pause_all(handle: &ClientHandle, ids: Vec<TransferId>) {
    for id in ids {
        let _ = handle.pause(id).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Do what a client asked; also the transfers it started.
async fn answer(
    handle: &ClientHandle,
    ask: Ask,
) -> (std::result::Result<Answer, String>, Vec<TransferId>) {
    let mut started = vec![];
    let result = match ask {
        Ask::Upload {
            local,
            remote,
            options,
        } => handle.upload(local, remote, options).await.map(|id| {
            started.push(id);
            Answer::Id(id)
        }),
        Ask::Download {
            remote,
            local,
            options,
        } => handle
            .download_with(remote, local, options)
            .await
            .map(|id| {
                started.push(id);
                Answer::Id(id)
            }),
        Ask::ResumeMatching { prefix } => {
            let all = prefix.is_none();
            handle.resume_matching(prefix, all).await.map(|ids| {
                started.extend(ids.iter().copied());
                Answer::Ids(ids)
            })
        }
        Ask::List { dir } => handle.list(dir).await.map(Answer::Entries),
        Ask::Quota => handle.quota().await.map(Answer::Quota),
        Ask::Shares { op } => handle.shares(op).await.map(Answer::Shares),
        Ask::Act { id, action } => handle.act(id, action).await.map(|()| Answer::Done),
        Ask::CancelTelling { id, wait } => handle.cancel_telling(id, wait).await.map(Answer::Told),
        Ask::Reports => handle.reports().await.map(Answer::Reports),
        Ask::Find { prefix } => handle
            .find(prefix)
            .await
            .map(|r| Answer::Report(Box::new(r))),
        Ask::Forget { prefix } => handle
            .forget(prefix)
            .await
            .map(|r| Answer::Report(Box::new(r))),
        Ask::Clean { choice, dry_run } => handle.clean(choice, dry_run).await.map(Answer::Reports),
    };
    (result.map_err(|e| e.to_string()), started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_appears_with_its_mode_replaces_a_stale_one_and_leaves_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pigeon.sock");
        // A stale socket: bound once, its listener gone.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let (listener, inode) = bind(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.ino(), inode);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("pigeon.sock")]);
        // And it is the one listening.
        let _client = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (_, _) = listener.accept().await.unwrap();
    }
}
