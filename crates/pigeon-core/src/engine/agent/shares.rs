//! Sharing between peers: a peer shares a file or folder of its own with
//! another trusted peer, who then finds it under `shared/<owner>/` (see
//! [`crate::policy::namespace`]). Every share and unshare is audited.

use super::*;
use crate::policy::namespace::MAX_SHARES_PER_PEER;
use crate::protocol::ShareOp;

impl AgentHooks {
    pub(super) fn on_share(&self, node: &Arc<Node>, peer: &Peer, request: u64, op: ShareOp) {
        let result = self.share(node, peer, op);
        let result = result.and_then(|done| {
            let now = now_unix();
            let mine: Vec<Share> = node
                .store
                .shares()
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|s| {
                    s.is_live(now)
                        && (s.owner == peer.name.as_str() || s.with == peer.name.as_str())
                })
                .collect();
            Ok((done, mine))
        });
        node.send_control(peer, &Control::Shares { request, result });
    }

    fn share(&self, node: &Node, peer: &Peer, op: ShareOp) -> std::result::Result<String, String> {
        let me = peer.name.as_str();
        if self.layout == Layout::Shared && op != ShareOp::List {
            return Err("this agent keeps one namespace for all its peers (`shared = true` under [agent]): every peer sees every file already".into());
        }
        match op {
            ShareOp::List => Ok(String::new()),
            ShareOp::Add {
                path,
                with,
                read_only,
                expires_after_secs,
            } => {
                let refuse = |reason: String| {
                    audit(
                        node,
                        me,
                        "share",
                        &path,
                        &format!("refused: {reason}"),
                        None,
                    );
                    Err(reason)
                };
                let shown = match RemotePath::parse_file(&path) {
                    Ok(p) => p,
                    Err(e) => return refuse(e.to_string()),
                };
                if shown.components().first().map(String::as_str) == Some(SHARED_DIR) {
                    return refuse(format!(
                        "{shown} is another peer's, shared with you; only your own files can be shared"
                    ));
                }
                if with == me {
                    return refuse("a peer cannot share with itself".into());
                }
                if node.peer(&with).is_none() {
                    return refuse(format!(
                        "this agent trusts no peer named {with:?}; its owner adds one with `pigeon keys trust` or `pigeon pair`"
                    ));
                }
                if expires_after_secs == Some(0) {
                    return refuse("a share that expires at once is no share; give --expires a time above zero".into());
                }
                let expires_unix = expires_after_secs.map(|s| now_unix().saturating_add(s));
                let at = match self.namespace(peer, &[]).place(&shown) {
                    Ok(crate::policy::namespace::Place::Real { at, .. }) => at,
                    _ => return refuse(format!("{shown} is not yours to share")),
                };
                if self.root.kind(&at).is_none() {
                    return refuse(format!("{shown} does not exist on the agent"));
                }
                let all = node.store.shares().map_err(|e| e.to_string())?;
                let share = Share {
                    owner: me.to_string(),
                    path: shown.to_string(),
                    with: with.clone(),
                    read_only,
                    made_unix: now_unix(),
                    expires_unix,
                };
                let made = all
                    .iter()
                    .filter(|s| s.owner == me && s.key() != share.key())
                    .count();
                if made >= MAX_SHARES_PER_PEER {
                    return refuse(format!(
                        "{me} has {made} shares, the most one peer may have; `pigeon unshare` some first"
                    ));
                }
                node.store.put_share(&share).map_err(|e| e.to_string())?;
                let terms = describe(&share);
                audit(
                    node,
                    me,
                    "share",
                    &at.to_string(),
                    &format!("ok: {terms}"),
                    None,
                );
                node.log(LogLevel::Info, format!("{me} shares {shown} {terms}"));
                Ok(format!(
                    "shared {shown} {terms}; {with} sees it at {}",
                    share.seen_at()
                ))
            }
            ShareOp::Remove { path, with } => {
                let shown = RemotePath::parse_file(&path).map_err(|e| e.to_string())?;
                let gone: Vec<Share> = node
                    .store
                    .shares()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|s| {
                        s.owner == me
                            && s.path == shown.to_string()
                            && with.as_ref().is_none_or(|w| &s.with == w)
                    })
                    .collect();
                if gone.is_empty() {
                    let reason = match &with {
                        Some(w) => format!("{shown} is not shared with {w}"),
                        None => format!("{shown} is not shared with anyone"),
                    };
                    audit(
                        node,
                        me,
                        "unshare",
                        &path,
                        &format!("refused: {reason}"),
                        None,
                    );
                    return Err(format!("{reason}; `pigeon shares` lists what is"));
                }
                let mut names = vec![];
                for s in &gone {
                    node.store.delete_share(s).map_err(|e| e.to_string())?;
                    audit(
                        node,
                        me,
                        "unshare",
                        &format!("{me}/{}", s.path),
                        &format!("ok: no longer shared with {}", s.with),
                        None,
                    );
                    names.push(s.with.clone());
                }
                Ok(format!(
                    "{shown} is no longer shared with {}",
                    names.join(", ")
                ))
            }
        }
    }
}

/// "with bob, read-only, until <time>".
fn describe(s: &Share) -> String {
    let mut out = format!("with {}", s.with);
    if s.read_only {
        out.push_str(", read-only");
    }
    if let Some(t) = s.expires_unix {
        out.push_str(&format!(", until {}", crate::view::format_time(t)));
    }
    out
}
