//! The router: every arriving frame passes through here once.
//!
//! Handshake frames go to the side's [`Hooks`]; sealed frames are opened
//! with their session (replays counted and dropped, forgeries counted as
//! corrupt) and handed to the transfer task they name, or to the hooks when
//! no task runs (a new offer, a listing, a resume after a restart). Chunks
//! go straight to their task: their seal is the transfer's own key.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{decode_sealed, lock, Node, Peer, TaskInput};
use crate::bwlimit::Rate;
use crate::crypto::{ChunkNonce, PublicKey};
use crate::link::Inbound;
use crate::protocol::{Control, Frame};
use crate::view::TransferId;

/// What differs between a client and an agent.
pub(crate) trait Hooks: Send + Sync + 'static {
    /// A Hello; returns the offers its early data carried, if they are to
    /// be taken ([`crate::protocol::Early`]), for the peer that made them.
    fn on_hello(
        &self,
        node: &Arc<Node>,
        link: usize,
        session: [u8; 16],
        from: PublicKey,
        noise: Vec<u8>,
        sender: Option<crate::transport::Address>,
    ) -> Option<(Arc<Peer>, Vec<Control>)>;
    fn on_welcome(&self, node: &Arc<Node>, link: usize, session: [u8; 16], noise: Vec<u8>);
    fn on_unknown_session(&self, node: &Arc<Node>, session: [u8; 16], from: PublicKey);
    /// A control frame no running task took.
    fn on_control(
        &self,
        node: &Arc<Node>,
        peer: Arc<Peer>,
        control: Control,
    ) -> impl Future<Output = ()> + Send;
    /// The peer asked its downloads be sent no faster than `down`, and
    /// than `on_link` on `link`, the link this came on ([`Control::Rate`]).
    /// Only an agent sends downloads.
    fn on_rate(&self, _peer: &Peer, _session: [u8; 16], _link: usize, _down: Rate, _on_link: Rate) {
    }
    /// A chunk for a transfer with no running task.
    fn on_orphan_chunk(
        &self,
        node: &Arc<Node>,
        id: TransferId,
        input: TaskInput,
    ) -> impl Future<Output = ()> + Send;
}

pub(crate) async fn route<H: Hooks>(
    node: Arc<Node>,
    hooks: Arc<H>,
    mut inbound: mpsc::Receiver<Inbound>,
) {
    let mut last_hint: Option<tokio::time::Instant> = None;
    while let Some(Inbound {
        frame,
        link,
        from: sender,
    }) = inbound.recv().await
    {
        let version = frame.first().copied();
        let frame = match Frame::decode_owned(frame) {
            Ok(f) => f,
            Err(_) => {
                if let Some(v) = version.filter(|&v| another_release(v)) {
                    node.links[link].saw_version(v);
                }
                node.record_fault(link, |s| {
                    s.corrupt.fetch_add(1, Ordering::Relaxed);
                });
                continue;
            }
        };
        match frame {
            Frame::Hello {
                session,
                from,
                noise,
            } => {
                // Early offers are taken before the frames behind the Hello
                // (their first chunks) are routed.
                if let Some((peer, offers)) =
                    hooks.on_hello(&node, link, session, PublicKey(from), noise, sender)
                {
                    for offer in offers {
                        dispatch(&node, &*hooks, peer.clone(), offer).await;
                    }
                }
            }
            Frame::Welcome { session, noise } => {
                node.heard();
                hooks.on_welcome(&node, link, session, noise)
            }
            Frame::UnknownSession { session, from } => {
                hooks.on_unknown_session(&node, session, PublicKey(from))
            }
            // For a `pigeon pair` waiting at its own inbox, not for us.
            Frame::Pair { .. } => {}
            Frame::Sealed {
                session,
                from,
                nonce,
                body,
            } => {
                let slot = lock(&node.sessions).get(&session).cloned();
                let Some(slot) = slot else {
                    // Only answer keys we trust, so this cannot be used to
                    // make us write to arbitrary inboxes.
                    if let Some(peer) = node
                        .peer_by_key_id(&from)
                        .filter(|_| hint_allowed(&mut last_hint, tokio::time::Instant::now()))
                    {
                        send_unknown_session_hint(&node, link, &peer, session);
                    }
                    continue;
                };
                // A revoked peer's sessions die with its trust.
                let Some(peer) = node
                    .peer(slot.peer.name.as_str())
                    .filter(|p| p.key == slot.peer.key)
                else {
                    continue;
                };
                match decode_sealed(&slot, nonce, &body) {
                    Ok(Some(control)) => {
                        node.heard();
                        slot.confirmed.store(true, Ordering::Relaxed);
                        // Only a frame that opened (not a replay) says where
                        // the peer is now.
                        peer.learn(link, sender.as_ref());
                        if let Some(from) = &sender {
                            node.links[link].vouch(from);
                        }
                        // Proof that the peer holds this session: make it the
                        // one replies go out in.
                        let newer = peer
                            .session
                            .borrow()
                            .as_ref()
                            .is_none_or(|cur| cur.id != slot.id && cur.created < slot.created);
                        if newer {
                            peer.session.send_replace(Some(slot.clone()));
                        }
                        if let Control::Rate { down, on_link } = control {
                            hooks.on_rate(&peer, slot.id, link, down, on_link);
                            continue;
                        }
                        dispatch(&node, &*hooks, peer, control).await
                    }
                    Ok(None) => node.record_fault(link, |s| {
                        s.duplicate.fetch_add(1, Ordering::Relaxed);
                    }),
                    Err(_) => {
                        node.record_fault(link, |s| {
                            s.corrupt.fetch_add(1, Ordering::Relaxed);
                        });
                        // Nothing has ever opened in this session: it was
                        // made from a redelivered Hello, and the peer holds
                        // other keys under its id. Say so, as if unknown.
                        if !slot.confirmed.load(Ordering::Relaxed)
                            && hint_allowed(&mut last_hint, tokio::time::Instant::now())
                        {
                            send_unknown_session_hint(&node, link, &peer, session);
                        }
                    }
                }
            }
            Frame::Chunk {
                transfer,
                run,
                index,
                last,
                body,
            } => {
                let id = TransferId(transfer);
                let at = ChunkNonce { run, index, last };
                let input = TaskInput::Chunk { at, body, link };
                match node.task_input(&id) {
                    // Not yet a sign of the peer: anyone on the channel can
                    // send a chunk frame. The task says so once it opens.
                    Some(tx) => {
                        let _ = tx.send(input).await;
                    }
                    _ => hooks.on_orphan_chunk(&node, id, input).await,
                }
            }
        }
    }
}

async fn dispatch<H: Hooks>(node: &Arc<Node>, hooks: &H, peer: Arc<Peer>, control: Control) {
    if let Some(id) = control.transfer() {
        let tx = lock(&node.tasks)
            .get(&id)
            .filter(|t| t.key == peer.key && t.is_live())
            .map(|t| t.tx.clone());
        if let Some(tx) = tx {
            if matches!(control, Control::Ack { .. } | Control::Pieces { .. }) {
                // Acknowledgements are cumulative: if the task is busy (a
                // long hash), drop this one rather than hold up the router.
                let _ = tx.try_send(TaskInput::Control(Box::new(control)));
            } else {
                let _ = tx.send(TaskInput::Control(Box::new(control))).await;
            }
            return;
        }
    }
    hooks.on_control(node, peer, control).await;
}

/// Tell `peer` we hold no usable session by this id, so it handshakes again.
fn send_unknown_session_hint(node: &Node, link: usize, peer: &Peer, session: [u8; 16]) {
    if let Ok(hint) = (Frame::UnknownSession {
        session,
        from: node.me.public().0,
    })
    .encode()
    {
        // Only where the peer is known to be on this link: the frame's
        // sender is not authenticated, and a hint is no reason to write
        // to a stranger.
        if let Some(to) = node.address(peer, link) {
            node.links[link].send_control(&to, hint, None);
        }
    }
}

/// Whether a frame's first byte names a protocol version other than ours
/// that a pigeon release has spoken or may speak (not any byte at all: a
/// damaged frame is damage, not news of an upgrade).
fn another_release(version: u8) -> bool {
    version != crate::crypto::PROTOCOL_VERSION && (1..16).contains(&version)
}

const HINT_GAP: std::time::Duration = std::time::Duration::from_millis(200);

/// At most five "unknown session" hints a second: injected frames must not
/// make us write without bound.
fn hint_allowed(last: &mut Option<tokio::time::Instant>, now: tokio::time::Instant) -> bool {
    if last.is_some_and(|t| now.duration_since(t) < HINT_GAP) {
        return false;
    }
    *last = Some(now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_frames_get_at_most_five_hints_a_second() {
        let t0 = tokio::time::Instant::now();
        let mut last = None;
        let sent = (0..100)
            .filter(|i| hint_allowed(&mut last, t0 + std::time::Duration::from_millis(10 * i)))
            .count();
        assert_eq!(sent, 5, "100 frames over a second");
    }
}
