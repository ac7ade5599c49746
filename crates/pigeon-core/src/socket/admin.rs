//! The agent's socket, `<home>/agent.sock`: a running agent holds its
//! home's store, so what its owner asks (`pigeon audit`, `quota`,
//! `quarantine`, `clean` on the agent's home) goes to it here, one
//! question and one answer per connection. With no agent running the
//! same question is answered from the store directly ([`ask`]).
//!
//! The same locks as the control socket: mode 0600, the peer's uid
//! checked, frames bounded, the protocol version said first.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;

use super::server::{bind, same_user, Served};
use super::{wire, PROTOCOL};
use crate::engine::agent::admin::{Admin, AdminAnswer, AdminAsk};
use crate::error::{CoreError, Result};
use crate::home::Home;
use crate::view::TransferId;

/// The agent's socket in `home`.
pub fn path(home: &Path) -> PathBuf {
    home.join("agent.sock")
}

/// How long a question may take (a release hashes the held file).
const ANSWER_WITHIN: Duration = Duration::from_secs(600);

/// Serve `admin` on the agent's socket; `busy` says which transfers run.
pub fn serve(
    home: &Path,
    admin: Arc<Admin>,
    busy: Arc<dyn Fn(&TransferId) -> bool + Send + Sync>,
) -> Result<Served> {
    let path = path(home);
    let (listener, inode) = bind(&path)?;
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let (admin, busy) = (admin.clone(), busy.clone());
            tokio::spawn(async move {
                if let Err(e) = answer_one(stream, admin, busy).await {
                    tracing::debug!("agent socket client: {e}");
                }
            });
        }
    });
    Ok(Served::new(path, inode, accept))
}

async fn answer_one(
    stream: UnixStream,
    admin: Arc<Admin>,
    busy: Arc<dyn Fn(&TransferId) -> bool + Send + Sync>,
) -> Result<()> {
    same_user(&stream)?;
    let (mut rd, mut wr) = stream.into_split();
    let Some((protocol, ask)) = wire::read::<_, (u32, AdminAsk)>(&mut rd).await? else {
        return Ok(());
    };
    let answer: std::result::Result<AdminAnswer, String> = if protocol != PROTOCOL {
        Err(format!(
            "the running agent speaks control protocol {PROTOCOL} and this pigeon {protocol}: use the same pigeon"
        ))
    } else {
        tokio::task::spawn_blocking(move || admin.answer(ask, &*busy))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
    };
    wire::write(&mut wr, &answer).await
}

/// Ask the agent of `home` (running, over its socket; else from the
/// store, which this then holds for the moment it takes). `root`: the
/// storage root when no agent runs (default `<home>/storage`).
pub async fn ask(home: &Home, root: Option<&Path>, ask: AdminAsk) -> Result<AdminAnswer> {
    let sock = path(home.dir());
    if let Ok(stream) = UnixStream::connect(&sock).await {
        let (mut rd, mut wr) = stream.into_split();
        wire::write(&mut wr, &(PROTOCOL, ask)).await?;
        let answer = tokio::time::timeout(
            ANSWER_WITHIN,
            wire::read::<_, std::result::Result<AdminAnswer, String>>(&mut rd),
        )
        .await
        .map_err(|_| CoreError::Transfer("the running agent did not answer".into()))??;
        return match answer {
            Some(Ok(a)) => Ok(a),
            Some(Err(why)) => Err(CoreError::Refused(why)),
            None => Err(CoreError::Transfer(
                "the running agent closed its socket without an answer (it is stopping?)".into(),
            )),
        };
    }
    let store = match crate::store::Store::open(&home.store_dir()) {
        Err(CoreError::StoreLocked { .. }) => {
            return Err(CoreError::Config(format!(
                "another pigeon holds this home and it is not an agent that answers on {}: run this on the agent's home (--home), or when it stops",
                sock.display()
            )))
        }
        other => other?,
    };
    let root = root.map_or_else(|| home.storage_dir(), Path::to_path_buf);
    let admin = Admin {
        home: home.clone(),
        store,
        root: crate::policy::StorageRoot::open(&root)?,
        settings: home.config()?.agent,
    };
    tokio::task::spawn_blocking(move || admin.answer(ask, &|_| false))
        .await
        .map_err(|e| CoreError::Transfer(e.to_string()))?
}
