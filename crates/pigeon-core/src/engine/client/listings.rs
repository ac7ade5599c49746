//! Listing a remote folder, page by page.

use super::*;

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
    let rto = Rto::for_link(&node.links[0]).get();
    let mut all = vec![];
    loop {
        let request: u64 = rand::random();
        let (tx, mut rx) = mpsc::channel(4);
        lock(&hooks.lists).insert(request, tx);
        if let Some(reason) = hooks.refusal() {
            lock(&hooks.lists).remove(&request);
            return Err(CoreError::Refused(reason));
        }
        let ask = Control::List {
            request,
            dir: dir.clone(),
            offset: all.len() as u32,
        };
        let mut wait = rto;
        let reply = loop {
            if started.elapsed() > limit {
                lock(&hooks.lists).remove(&request);
                return Err(CoreError::Timeout {
                    secs: limit.as_secs(),
                    transport: node.transports_report(),
                });
            }
            node.send_control(&peer, &ask);
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(reply)) => break reply,
                _ => wait = (wait * 2).min(Duration::from_secs(20)),
            }
        };
        lock(&hooks.lists).remove(&request);
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
