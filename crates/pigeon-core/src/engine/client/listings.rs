//! Listing a remote folder, page by page; asking the agent's quota.

use super::*;

/// Ask the agent how much of this peer's quota is used.
pub(super) async fn quota(
    node: Arc<Node>,
    peer: Arc<Peer>,
    hooks: Arc<ClientHooks>,
    limit: Duration,
) -> Result<Vec<crate::policy::QuotaLine>> {
    match ask(&node, &peer, &hooks, limit, |request| Control::QuotaAsk {
        request,
    })
    .await?
    {
        Control::Quota { lines, .. } => Ok(lines),
        Control::ListRefused { reason, .. } => Err(CoreError::Refused(reason)),
        _ => Err(CoreError::Transfer(
            "the agent answered something else".into(),
        )),
    }
}

/// Ask the agent to share, stop sharing, or list shares.
pub(super) async fn shares(
    node: Arc<Node>,
    peer: Arc<Peer>,
    hooks: Arc<ClientHooks>,
    op: crate::protocol::ShareOp,
    limit: Duration,
) -> Result<(String, Vec<crate::policy::Share>)> {
    match ask(&node, &peer, &hooks, limit, |request| Control::ShareAsk {
        request,
        op: op.clone(),
    })
    .await?
    {
        Control::Shares { result, .. } => result.map_err(CoreError::Refused),
        Control::ListRefused { reason, .. } => Err(CoreError::Refused(reason)),
        _ => Err(CoreError::Transfer(
            "the agent answered something else".into(),
        )),
    }
}

/// What the agent holds at `path` for this peer, as a delta's base (one
/// exchange, for an upload of a file this client did not send there); None
/// when nothing, or no answer within `limit`.
pub(super) async fn base_of(
    node: Arc<Node>,
    peer: Arc<Peer>,
    hooks: Arc<ClientHooks>,
    path: String,
    limit: Duration,
) -> Option<crate::store::SentVersion> {
    let asked = path.clone();
    let reply = ask(&node, &peer, &hooks, limit, move |request| {
        Control::BaseAsk {
            request,
            path: asked.clone(),
        }
    })
    .await
    .ok()?;
    let Control::BaseIs {
        base: Some(base), ..
    } = reply
    else {
        return None;
    };
    let size = crate::delta::Signature::decode(&base.signature)
        .ok()?
        .base_len();
    Some(crate::store::SentVersion {
        peer: peer.name.as_str().to_string(),
        remote_path: path,
        sha256: base.sha256,
        size,
        signature: base.signature,
    })
}

/// Send what `ask` makes (under a fresh request number) until the agent
/// answers it, asking again with backoff when an answer is lost.
async fn ask(
    node: &Node,
    peer: &Peer,
    hooks: &ClientHooks,
    limit: Duration,
    ask: impl Fn(u64) -> Control,
) -> Result<Control> {
    let started = Instant::now();
    let request: u64 = rand::random();
    let (tx, mut rx) = mpsc::channel(4);
    lock(&hooks.lists).insert(request, tx);
    if let Some(reason) = hooks.refusal() {
        lock(&hooks.lists).remove(&request);
        return Err(CoreError::Refused(reason));
    }
    let message = ask(request);
    let mut wait = node.control_rto(peer).get();
    let mut unreachable = node.unreachable.subscribe();
    let mut sessions = peer.session.subscribe();
    let reply = loop {
        if started.elapsed() > limit {
            lock(&hooks.lists).remove(&request);
            return Err(CoreError::Timeout {
                secs: limit.as_secs(),
                transport: node.transports_report(),
            });
        }
        if let Some(why) = crate::engine::no_way_to_peer(&unreachable, true) {
            lock(&hooks.lists).remove(&request);
            return Err(CoreError::NoWorkingTransport(why));
        }
        sessions.borrow_and_update();
        let sent = node.send_control(peer, &message);
        tokio::select! {
            got = tokio::time::timeout(wait, rx.recv()) => match got {
                Ok(Some(reply)) => break reply,
                _ if sent => wait = (wait * 2).min(Duration::from_secs(20)),
                _ => {}
            },
            // No session yet: ask the moment there is one, not a timeout
            // later (a whole round trip's guess: 10 s on a channel of a
            // message a second, a minute on one of a message every six).
            _ = sessions.changed(), if !sent => {}
            // Looked at at the top of the loop (and asked again: cheap).
            _ = unreachable.changed() => {}
        }
    };
    lock(&hooks.lists).remove(&request);
    Ok(reply)
}

/// List a remote folder, page by page, asking again when an answer is lost.
pub(super) async fn list(
    node: Arc<Node>,
    peer: Arc<Peer>,
    hooks: Arc<ClientHooks>,
    dir: String,
    limit: Duration,
) -> Result<Vec<RemoteEntry>> {
    RemotePath::parse(&dir)?;
    let started = Instant::now();
    let mut all: Vec<RemoteEntry> = vec![];
    loop {
        let offset = all.len() as u32;
        let left = limit.saturating_sub(started.elapsed());
        let reply = ask(&node, &peer, &hooks, left, |request| Control::List {
            request,
            dir: dir.clone(),
            offset,
        })
        .await?;
        match reply {
            Control::Listing { entries, more, .. } => {
                all.extend(entries);
                if !more {
                    return Ok(all);
                }
            }
            Control::ListRefused { reason, .. } => return Err(CoreError::Refused(reason)),
            _ => {}
        }
    }
}
