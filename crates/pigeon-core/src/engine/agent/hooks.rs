//! What the router hands the agent: handshakes, control frames, orphan chunks; and the transfer tasks it starts.

use super::*;

impl Hooks for AgentHooks {
    fn on_hello(
        &self,
        node: &Arc<Node>,
        link: usize,
        session: [u8; 16],
        from: PublicKey,
        noise: Vec<u8>,
        sender: Option<crate::transport::Address>,
    ) -> Option<(Arc<Peer>, Vec<Control>)> {
        self.reload_trust(node);
        let Some(peer) = lock(&node.peers).values().find(|p| p.key == from).cloned() else {
            // Anyone can send these, from as many keys as they like: the
            // first of a minute is logged and audited at once, the rest of
            // that minute in one record when it ends.
            let now = tokio::time::Instant::now();
            let due = lock(&self.refused).refuse(from, now);
            for (peer, outcome) in due {
                tracing::warn!(peer = %peer, "{outcome}");
                audit(node, &peer, "handshake", "", &outcome, None);
            }
            if lock(&self.refused).may_answer(from, now) {
                answer_untrusted(node, link, session, from, &noise, sender);
            }
            return None;
        };
        // The answer goes where the trust list pins the peer, else where the
        // Hello came from (not learned: a Hello can be replayed; only an
        // opened sealed frame moves replies).
        let Some(reply_to) = peer
            .pinned_on(link)
            .or_else(|| sender.clone())
            .or_else(|| node.address(&peer, link))
        else {
            // A link that answers whoever writes, and no sender named:
            // nowhere to answer (a transport always names one).
            return None;
        };
        let again = {
            let mut w = lock(&self.welcomes);
            match w.get_mut(&session) {
                Some((welcome, sent)) => {
                    let due = sent.elapsed() >= WELCOME_AGAIN;
                    if due {
                        *sent = tokio::time::Instant::now();
                    }
                    Some(due.then(|| welcome.clone()))
                }
                None => None,
            }
        };
        if let Some(welcome) = again {
            // Asked again: the Welcome sent may have vanished on a link
            // that swallows our direction. Charge the link the Hello came
            // on, and answer on the best link not in doubt.
            node.links[link].answer_lost(&reply_to);
            if let Some(welcome) = welcome {
                let (out, to) = match node.control_link(&peer, link) {
                    Some((index, out, to)) if index != link => (out, to),
                    _ => (&node.links[link], reply_to),
                };
                out.send_control(&to, welcome, None);
            }
            return None;
        }
        // A session by this id exists but its answer was forgotten: never
        // replace it (the live client holds its keys).
        if lock(&node.sessions).contains_key(&session) {
            return None;
        }
        let (sess, reply, early) = match respond(&node.me, &peer.key, &session, &noise) {
            Ok(x) => x,
            Err(e) => {
                node.record_fault(link, |s| {
                    s.corrupt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                });
                tracing::debug!("bad handshake: {e}");
                return None;
            }
        };
        let Ok(welcome) = (Frame::Welcome {
            session,
            noise: reply.clone(),
        })
        .encode() else {
            return None;
        };
        let slot = Arc::new(SessionSlot::new(session, peer.clone(), link, sess, &reply));
        node.add_session(slot.clone());
        {
            let mut w = lock(&self.welcomes);
            // Bounded: the one answered longest ago goes first.
            if w.len() >= 1024 {
                if let Some(oldest) = w.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k) {
                    w.remove(&oldest);
                }
            }
            w.insert(session, (welcome.clone(), tokio::time::Instant::now()));
        }
        let _ = node.store.replace_sessions(&SessionRecord {
            id: session,
            peer: peer.name.to_string(),
            transport: node.links[link].describe().to_string(),
            token: token(&session),
            status: SessionStatus::Active,
            created_unix: now_unix(),
            expires_unix: now_unix() + 24 * 3600,
        });
        audit(node, peer.name.as_str(), "session", "", "opened", None);
        tracing::info!(peer = %peer.name, session = %token(&session), "session opened");
        node.links[link].send_control(&reply_to, welcome, None);
        // Not current yet: a recorded Hello replayed by the provider would
        // authenticate too. The session becomes the peer's current one when
        // a sealed frame arrives in it, which only the real client can make,
        // or when its early data is fresh and new ([`EarlyGate`]).
        let mut offers = self.take_early(&peer, session, &early)?;
        // Early data is for new uploads: an offer of a transfer this agent
        // already knows could be a recording replayed after a restart (the
        // gate's memory is gone), and would start a cancelled upload over.
        // The genuine client offers again, sealed, once the session is up.
        offers.retain(|o| {
            o.transfer()
                .is_some_and(|id| matches!(node.store.transfer(&id), Ok(None)))
        });
        peer.learn(link, sender.as_ref());
        peer.session.send_replace(Some(slot));
        Some((peer, offers))
    }

    fn on_welcome(&self, _: &Arc<Node>, _: usize, _: [u8; 16], _: Vec<u8>) {}

    fn on_rate(
        &self,
        peer: &Peer,
        session: [u8; 16],
        link: usize,
        down: crate::bwlimit::Rate,
        on_link: crate::bwlimit::Rate,
    ) {
        let now = tokio::time::Instant::now();
        let gate = self.rates.of(peer.name.as_str());
        gate.set(session, link, down, on_link, now);
        tracing::debug!(peer = %peer.name, link, ?down, ?on_link, "download rate asked");
    }

    fn on_unknown_session(&self, _: &Arc<Node>, _: [u8; 16], _: PublicKey) {}

    async fn on_control(&self, node: &Arc<Node>, peer: Arc<Peer>, control: Control) {
        match control {
            c @ Control::Offer { .. } => self.on_offer(node, peer, c).await,
            Control::Fetch {
                transfer,
                path,
                base,
            } => self.on_fetch(node, peer, transfer, path, base).await,
            Control::List {
                request,
                dir,
                offset,
            } => self.on_list(node, peer, request, dir, offset).await,
            Control::QuotaAsk { request } => self.on_quota(node, &peer, request),
            Control::BaseAsk { request, path } => {
                self.on_base_ask(node, &peer, request, path).await
            }
            Control::ShareAsk { request, op } => self.on_share(node, &peer, request, op),
            Control::Cancel { transfer } => self.on_cancel(node, &peer, transfer),
            Control::Finish { transfer, .. } => {
                let Ok(Some(rec)) = node.store.transfer(&transfer) else {
                    return;
                };
                if rec.peer != peer.name.as_str() {
                    return;
                }
                match (rec.status, rec.sha256) {
                    // Asked again: the Done sent may have vanished.
                    (TransferStatus::Completed, Some(_)) => say_done_again(node, &peer, &rec),
                    (s, _) if !s.is_finished() && rec.role == Role::Receiver => {
                        if let Err(refusal) = self.recheck(node, &rec) {
                            return self.refuse_stopped(node, &rec, refusal);
                        }
                        spawn_receiver(
                            node.clone(),
                            peer,
                            rec,
                            Some(TaskInput::Control(Box::new(control))),
                            self,
                        );
                    }
                    _ => {
                        // Held: its refusal was lost; say it again.
                        if let Some(reason) = super::policy::held_refusal(&rec) {
                            let again = Control::Refuse {
                                transfer,
                                code: RefuseCode::Quarantined,
                                reason,
                            };
                            node.send_control(&peer, &again);
                        }
                    }
                }
            }
            Control::Abort { transfer, reason } => {
                // The client gave up an upload whose task had stopped here.
                let Ok(Some(mut rec)) = node.store.transfer(&transfer) else {
                    return;
                };
                if rec.peer != peer.name.as_str()
                    || rec.role != Role::Receiver
                    || rec.status.is_finished()
                {
                    return;
                }
                if let Some(p) = &rec.partial_path {
                    let _ = std::fs::remove_file(p);
                }
                let _ = node.store.clear_chunks(&transfer);
                let outcome = Outcome::Failed(format!(
                    "the sender stopped: {}",
                    crate::policy::escape_control(&reason)
                ));
                conclude(node, &mut rec, &outcome, "upload");
            }
            Control::Accept { transfer, .. } | Control::Ack { transfer, .. } => {
                // A client answering a download whose task stopped: resume it.
                let Ok(Some(rec)) = node.store.transfer(&transfer) else {
                    return;
                };
                if rec.peer == peer.name.as_str()
                    && rec.role == Role::Sender
                    && !rec.status.is_finished()
                {
                    if let Err(refusal) = self.recheck(node, &rec) {
                        return self.refuse_stopped(node, &rec, refusal);
                    }
                    let _ = spawn_sender(node.clone(), peer, rec, false, self);
                }
            }
            _ => {}
        }
    }

    async fn on_orphan_chunk(&self, node: &Arc<Node>, id: TransferId, input: TaskInput) {
        let Ok(Some(rec)) = node.store.transfer(&id) else {
            return;
        };
        if rec.role != Role::Receiver || rec.status.is_finished() {
            return;
        }
        // Anyone on the channel can send a chunk frame naming a transfer:
        // only one that opens under the transfer's key starts its task
        // again.
        if !opens_under_key(&rec, &input).await {
            return;
        }
        // As it is now: the transfer may have ended while the chunk opened.
        let Ok(Some(rec)) = node.store.transfer(&id) else {
            return;
        };
        if rec.status.is_finished() || node.has_task(&id) {
            return;
        }
        let peer = match self.recheck(node, &rec) {
            Ok(peer) => peer,
            Err(refusal) => return self.refuse_stopped(node, &rec, refusal),
        };
        spawn_receiver(node.clone(), peer, rec, Some(input), self);
    }
}

/// Does the chunk in `input` open under `rec`'s key (the AEAD tag only:
/// nothing is decompressed or written)?
async fn opens_under_key(rec: &TransferRecord, input: &TaskInput) -> bool {
    let (TaskInput::Chunk { at, body, .. }, Some(secret)) = (input, &rec.secret) else {
        return false;
    };
    let Ok(manifest_hash) = rec.manifest.hash() else {
        return false;
    };
    let cipher = crate::crypto::ChunkCipher::new(secret, &rec.id.0, &manifest_hash);
    let (at, mut body) = (*at, body.clone());
    tokio::task::spawn_blocking(move || cipher.open_in_place(at, &mut body).is_ok())
        .await
        .unwrap_or(false)
}

/// Tell the holder of an untrusted key that it is not trusted, so its
/// client can say so at once: finish the handshake its Hello began (which
/// fails unless the Hello was made with that key's private half), seal one
/// [`Control::NotTrusted`] in it, and forget the session. Nothing in the
/// Hello's early data is looked at.
pub(super) fn answer_untrusted(
    node: &Node,
    link: usize,
    session: [u8; 16],
    from: PublicKey,
    noise: &[u8],
    sender: Option<crate::transport::Address>,
) {
    let Ok((mut sess, reply, _)) = respond(&node.me, &from, &session, noise) else {
        return;
    };
    let frames = Frame::Welcome {
        session,
        noise: reply,
    }
    .encode()
    .and_then(|welcome| {
        let (nonce, body) = sess.seal(&Control::NotTrusted.encode()?)?;
        let sealed = Frame::Sealed {
            session,
            from: node.my_id.0,
            nonce,
            body,
        }
        .encode()?;
        Ok([welcome, sealed])
    });
    if let Ok(frames) = frames {
        let to = sender.unwrap_or_else(|| from.id().to_string());
        for frame in frames {
            node.links[link].send_control(&to, frame, None);
        }
    }
}

pub(super) fn spawn_receiver(
    node: Arc<Node>,
    peer: Arc<Peer>,
    rec: TransferRecord,
    first: Option<TaskInput>,
    hooks: &AgentHooks,
) {
    if node.has_task(&rec.id) {
        return;
    }
    let held = node.store.bitmap(&rec.id).ok().flatten();
    let progress = ProgressSink::new(Progress::new(&rec, held.as_ref(), rec.transport.clone()));
    let cfg = ReceiverConfig {
        initiator: false,
        silence_limit: IDLE_LIMIT,
        fail_on_silence: false,
        root: Some(hooks.root.clone()),
        audit: true,
        quarantine: Some(hooks.settings.quarantine.clone()),
        authority: Some(hooks.authority(&node)),
        asked: None,
    };
    let id = rec.id;
    let receiver = match Receiver::new(node.clone(), peer.clone(), rec, cfg, progress) {
        Ok(r) => r,
        Err(e) => {
            node.log(
                LogLevel::Error,
                format!("cannot resume transfer {}: {e}", id.short()),
            );
            return;
        }
    };
    let inbox = node.register_task(id, &peer);
    if let Some(first) = first {
        if let Some(tx) = node.task_input(&id) {
            let _ = tx.try_send(first);
        }
    }
    crate::task::spawn(async move {
        let (mut rec, outcome) = receiver.run(inbox).await;
        // Its end stored first: a chunk still arriving finds it ended.
        conclude(&node, &mut rec, &outcome, "upload");
        node.unregister_task(&rec.id);
    });
}

/// Serve a download; an error says why it cannot start (for the client).
pub(super) fn spawn_sender(
    node: Arc<Node>,
    peer: Arc<Peer>,
    rec: TransferRecord,
    restarted: bool,
    agent: &AgentHooks,
) -> std::result::Result<(), String> {
    if node.has_task(&rec.id) {
        // Already sending: a repeated fetch means "offer again".
        let id = rec.id;
        let node2 = node.clone();
        crate::task::spawn(async move {
            node2
                .deliver(
                    &id,
                    TaskInput::Control(Box::new(Control::Fetch {
                        transfer: id,
                        path: String::new(),
                        base: None,
                    })),
                )
                .await;
        });
        return Ok(());
    }
    let progress = ProgressSink::new(Progress::new(&rec, None, rec.transport.clone()));
    let cfg = SenderConfig {
        silence_limit: IDLE_LIMIT,
        fail_on_silence: false,
        restarted,
        root: Some(agent.root.clone()),
        rate: Some(agent.rates.of(peer.name.as_str())),
    };
    let id = rec.id;
    let sender = match Sender::new(node.clone(), peer.clone(), rec, cfg, progress) {
        Ok(s) => s,
        Err(e) => {
            node.log(
                LogLevel::Error,
                format!("cannot serve transfer {}: {e}", id.short()),
            );
            return Err(format!("the agent cannot read the file: {e}"));
        }
    };
    let inbox = node.register_task(id, &peer);
    crate::task::spawn(async move {
        let (mut rec, outcome) = sender.run(inbox).await;
        conclude(&node, &mut rec, &outcome, "download");
        node.unregister_task(&rec.id);
    });
    Ok(())
}

pub(super) fn conclude(node: &Node, rec: &mut TransferRecord, outcome: &Outcome, action: &str) {
    *rec = store_outcome(&node.store, rec, outcome, |_| {});
    let _ = node.store.flush();
    crate::engine::forget_key_if_ended(node, rec);
    let (outcome_text, sha) = match outcome {
        Outcome::Completed(sha) => ("completed".to_string(), Some(*sha)),
        Outcome::Failed(e) | Outcome::WholeFile(e) => (format!("failed: {e}"), None),
        Outcome::Cancelled => ("cancelled".to_string(), None),
        Outcome::Paused | Outcome::Stopped => return,
    };
    // A completed upload was audited with its completion, before its Done.
    let audited = action == "upload" && sha.is_some();
    let rec_copy = rec.clone();
    let entry = AuditRecord {
        sha256: sha.or(rec_copy.sha256).as_ref().map(sha_hex),
        size: Some(rec_copy.manifest.size),
        key_id: node.peer(&rec_copy.peer).map(|p| p.key.id().to_string()),
        transport: rec_copy.transport.clone(),
        ..AuditRecord::new(&rec_copy.peer, action, &rec_copy.remote_path, &outcome_text)
    };
    if !audited {
        let _ = node.store.audit(entry);
    }
    node.log(
        if sha.is_some() {
            LogLevel::Info
        } else {
            LogLevel::Warn
        },
        format!(
            "{action} of {} by {}: {outcome_text}",
            rec.remote_path, rec.peer
        ),
    );
}
