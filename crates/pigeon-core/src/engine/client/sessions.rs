//! The client's side of sessions: the handshake it keeps up, and what the router hands it.

use super::handshake::HandshakeTimer;
use super::*;

pub(super) struct ClientHooks {
    pub(super) agent: PublicKey,
    pub(super) peer: Arc<Peer>,
    pub(super) pending: Mutex<HashMap<[u8; 16], Initiator>>,
    pub(super) need_session: Notify,
    /// The pending handshake failed: the connector starts another.
    pub(super) restart_handshake: Notify,
    pub(super) lists: Mutex<HashMap<u64, mpsc::Sender<Control>>>,
    /// The agent's last "not trusted", and when it came: a transfer or a
    /// listing that starts a moment after it (its answer raced the
    /// registration) fails at once too instead of waiting out its silence.
    pub(super) refused: Mutex<Option<(Instant, String)>>,
    /// Cancels the agent confirmed, for whoever waits on one.
    pub(super) cancelled: tokio::sync::broadcast::Sender<TransferId>,
}

/// How long an agent's refusal of our key answers for new work without
/// asking again: long enough to cover a start racing the answer, short
/// enough that a key trusted meanwhile is tried afresh.
const REFUSAL_HOLDS: Duration = Duration::from_secs(10);

impl Hooks for ClientHooks {
    fn on_hello(
        &self,
        _: &Arc<Node>,
        _: usize,
        _: [u8; 16],
        _: PublicKey,
        _: Vec<u8>,
        _: Option<crate::transport::Address>,
    ) -> Option<(Arc<Peer>, Vec<Control>)> {
        None
    }

    fn on_welcome(&self, node: &Arc<Node>, link: usize, session: [u8; 16], noise: Vec<u8>) {
        let Some(init) = lock(&self.pending).remove(&session) else {
            // An answer to a handshake we finished long ago. The same answer
            // again is a duplicate; another one means the agent answered a
            // redelivered Hello with new keys (it restarted and lost ours):
            // our session is dead there, so make a new one at once.
            let current = self.peer.session.borrow().clone();
            if current.is_some_and(|c| c.id == session && c.answer != crate::crypto::sha256(&noise))
            {
                tracing::info!(
                    "the agent answered our handshake anew (it restarted?); handshaking again"
                );
                self.need_session.notify_one();
            }
            return;
        };
        let sess = match init.finish(&noise) {
            Ok(s) => s,
            Err(e) => {
                // Altered in transit, most likely. This handshake's state is
                // spent: start a fresh one rather than wait for a copy.
                tracing::debug!("handshake answer did not authenticate ({e}); handshaking again");
                node.record_fault(link, |s| {
                    s.corrupt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                });
                self.restart_handshake.notify_one();
                return;
            }
        };
        let slot = Arc::new(SessionSlot::new(
            session,
            self.peer.clone(),
            link,
            sess,
            &noise,
        ));
        node.add_session(slot.clone());
        let _ = node.store.replace_sessions(&SessionRecord {
            id: session,
            peer: self.peer.name.to_string(),
            transport: node.links[link].describe().to_string(),
            token: token(&session),
            status: SessionStatus::Active,
            created_unix: now_unix(),
            expires_unix: now_unix() + 24 * 3600,
        });
        tracing::debug!(session = %token(&session), "session established");
        self.peer.session.send_replace(Some(slot));
        node.touch();
    }

    fn on_unknown_session(&self, _: &Arc<Node>, session: [u8; 16], from: PublicKey) {
        let current = self.peer.session.borrow().as_ref().map(|s| s.id);
        if from == self.agent && current == Some(session) {
            self.need_session.notify_one();
        }
    }

    async fn on_control(&self, node: &Arc<Node>, peer: Arc<Peer>, control: Control) {
        if !matches!(control, Control::NotTrusted) {
            // Anything else sealed by the agent: it trusts us now.
            *lock(&self.refused) = None;
        }
        let request = match &control {
            Control::NotTrusted => return self.not_trusted(node, &peer),
            Control::Listing { request, .. }
            | Control::ListRefused { request, .. }
            | Control::Quota { request, .. }
            | Control::Shares { request, .. }
            | Control::BaseIs { request, .. } => *request,
            Control::Cancelled { transfer } => {
                // Only the agent the transfer was with can confirm it.
                if !node
                    .store
                    .forget_cancel(transfer, peer.name.as_str())
                    .unwrap_or(false)
                {
                    return;
                }
                let _ = self.cancelled.send(*transfer);
                return;
            }
            // Our Done for a finished download was lost: say it again, or
            // the agent never learns the file arrived.
            Control::Finish { transfer, .. } => {
                if let Ok(Some(rec)) = node.store.transfer(transfer) {
                    if let (TransferStatus::Completed, Some(sha256)) = (rec.status, rec.sha256) {
                        node.send_control(
                            &peer,
                            &Control::Done {
                                transfer: *transfer,
                                sha256,
                                faults: rec.faults,
                            },
                        );
                    }
                }
                return;
            }
            _ => return,
        };
        let tx = lock(&self.lists).get(&request).cloned();
        if let Some(tx) = tx {
            let _ = tx.try_send(control);
        }
    }

    async fn on_orphan_chunk(&self, _: &Arc<Node>, _: TransferId, _: TaskInput) {}
}

impl ClientHooks {
    /// The agent said, in a session only it could have opened, that it does
    /// not trust our key: every transfer and listing waiting on it fails
    /// now, with what to run on the agent.
    pub(super) fn not_trusted(&self, node: &Node, peer: &Peer) {
        let me = node.me.public();
        let reason = format!(
            "it does not trust this key (id {}): on the agent run `pigeon keys trust {me} --name <NAME>`",
            me.id()
        );
        *lock(&self.refused) = Some((Instant::now(), reason.clone()));
        let tasks: Vec<_> = lock(&node.tasks)
            .iter()
            .filter(|(_, t)| t.key == peer.key)
            .map(|(id, t)| (*id, t.tx.clone()))
            .collect();
        // Whatever waits on the agent fails saying it; said here only when
        // nothing does, so it is said once.
        if tasks.is_empty() && lock(&self.lists).is_empty() {
            node.log(LogLevel::Error, format!("the agent refused: {reason}"));
        }
        for (transfer, tx) in tasks {
            let _ = tx.try_send(TaskInput::Control(Box::new(Control::Refuse {
                transfer,
                code: RefuseCode::Permission,
                reason: reason.clone(),
            })));
        }
        for (request, tx) in lock(&self.lists).iter() {
            let _ = tx.try_send(Control::ListRefused {
                request: *request,
                reason: reason.clone(),
            });
        }
    }

    /// The agent's refusal of our key, if it came in the last few seconds.
    /// Call it only once the work asking is registered (a task, a listing):
    /// an older refusal is not trusted to hold (the key may be trusted by
    /// now), so the agent is asked again with a new handshake, and its
    /// answer, whichever it is, finds the work waiting for it instead of a
    /// session the agent has forgotten.
    pub(super) fn refusal(&self) -> Option<String> {
        let mut refused = lock(&self.refused);
        match refused.as_ref() {
            Some((at, reason)) if at.elapsed() < REFUSAL_HOLDS => Some(reason.clone()),
            Some(_) => {
                *refused = None;
                self.need_session.notify_one();
                None
            }
            None => None,
        }
    }
}

/// Keep a session with the agent: handshake, and again when told it is gone.
pub(super) async fn connect(node: Arc<Node>, peer: Arc<Peer>, hooks: Arc<ClientHooks>) {
    let floor = Rto::for_link(&node.links[0], None).get();
    loop {
        let sid = random_session_id();
        // On a slow link the first uploads' offers ride in the Hello, and
        // their first chunks right behind it in the same message.
        let mut early = match node.early_room(&peer) {
            Some(_) => peer.early.take(EARLY_WAIT).await,
            None => vec![],
        };
        let payload = match early.as_slice() {
            [] => vec![],
            entries => Early {
                made_unix: now_unix(),
                offers: entries.iter().map(|e| e.offer.clone()).collect(),
            }
            .encode()
            .unwrap_or_default(),
        };
        let mut behind: Vec<Vec<u8>> = early
            .iter_mut()
            .flat_map(|e| std::mem::take(&mut e.chunks))
            .collect();
        let mut tails: Vec<_> = early.iter_mut().filter_map(|e| e.tail.take()).collect();
        if !early.is_empty() {
            tracing::debug!(
                offers = early.len(),
                chunks = behind.len(),
                "early data rides in the Hello"
            );
        }
        for entry in early {
            let _ = entry.taken.send(());
        }
        let (init, first) = match Initiator::start(&node.me, &peer.key, &sid, &payload) {
            Ok(x) => x,
            Err(e) => {
                node.log(LogLevel::Error, format!("cannot start a handshake: {e}"));
                return;
            }
        };
        lock(&hooks.pending).insert(sid, init);
        let Ok(hello) = (Frame::Hello {
            session: sid,
            from: node.me.public().0,
            noise: first,
        })
        .encode() else {
            return;
        };
        let mut sessions = peer.session.subscribe();
        let mut timer = HandshakeTimer::new(floor, tokio::time::Instant::now());
        let mut last_on: Option<usize> = None;
        let established = 'handshake: loop {
            // Unanswered: the link it went on may swallow one way.
            if let Some(i) = last_on {
                node.judge(&peer, i, |link, to| link.answer_lost(to));
            }
            let Some((index, link, to)) = node.control_link(&peer, 0) else {
                node.log(
                    LogLevel::Error,
                    format!(
                        "no transport reaches {}: give its address for each (pigeon peers)",
                        peer.name
                    ),
                );
                tokio::time::sleep(timer.sent()).await;
                continue;
            };
            last_on = Some(index);
            link.send_control(&to, hello.clone(), None);
            // Once: later copies of the chunks are their senders' to time.
            for chunk in behind.drain(..) {
                link.send_control(&to, chunk, None);
            }
            for tail in tails.drain(..) {
                node.send_data(tail.link, &peer, tail.chunk, Some(tail.permit));
            }
            let deadline = tokio::time::sleep(timer.sent());
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    changed = sessions.changed() => {
                        if changed.is_err() { return; }
                        if sessions.borrow().as_ref().is_some_and(|s| s.id == sid) {
                            break 'handshake true;
                        }
                    }
                    () = hooks.restart_handshake.notified() => break 'handshake false,
                    () = &mut deadline => {
                        timer.timed_out();
                        continue 'handshake;
                    }
                }
            }
        };
        lock(&hooks.pending).clear();
        if !established {
            continue;
        }
        // A first measure of the round trip, so the first transfer's
        // timers need not start from a guess.
        if let Some(rtt) = timer.round_trip(tokio::time::Instant::now()) {
            if let Some(slot) = peer.session.borrow().as_ref() {
                node.judge(&peer, slot.link, |link, to| link.record_rtt(to, rtt));
            }
        }
        hooks.need_session.notified().await;
        tracing::info!("the agent lost our session (it restarted?); handshaking again");
        // Hints are unauthenticated: at most one new handshake a second,
        // but no wait at all when the last one is older than that.
        tokio::time::sleep(timer.restart_after(tokio::time::Instant::now())).await;
    }
}
