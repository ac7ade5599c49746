//! The queue: which transfers run, what the front end asks, and the records behind the snapshots.

use super::*;

pub(super) struct Core {
    pub(super) node: Arc<Node>,
    pub(super) peer: Arc<Peer>,
    pub(super) hooks: Arc<ClientHooks>,
    pub(super) parallel: usize,
    pub(super) silence_limit: Duration,
    pub(super) records: Arc<Mutex<BTreeMap<TransferId, TransferRecord>>>,
    pub(super) running: HashSet<TransferId>,
    pub(super) eligible: HashSet<TransferId>,
    /// The download rates to ask the agent for ([`crate::engine::rate`]).
    pub(super) asked: Arc<crate::engine::rate::Asked>,
    /// Uploads back from asking the agent for their base (set by `run`).
    pub(super) based: Option<mpsc::Sender<Based>>,
}

/// An upload whose base the agent was asked for, with its answer.
pub(super) struct Based {
    local: PathBuf,
    remote: String,
    options: UploadOptions,
    base: Option<crate::store::SentVersion>,
    reply: tokio::sync::oneshot::Sender<Result<TransferId>>,
}

pub(super) type Done = (TransferRecord, Outcome);

impl Core {
    pub(super) fn load(&mut self, run_queue: bool) -> Result<()> {
        let all = self.node.store.transfers()?;
        let mut records = lock(&self.records);
        for mut rec in all {
            if rec.peer != self.peer.name.as_str() {
                continue;
            }
            if rec.status == TransferStatus::InProgress {
                rec.status = TransferStatus::Pending;
            }
            if run_queue && rec.status == TransferStatus::Pending {
                self.eligible.insert(rec.id);
            }
            let held = self.node.store.bitmap(&rec.id).ok().flatten();
            let progress = Progress::new(&rec, held.as_ref(), self.node.transports_label());
            lock(&self.node.progress).insert(rec.id, ProgressSink::new(progress));
            records.insert(rec.id, rec);
        }
        drop(records);
        self.node.touch();
        Ok(())
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<ClientCommand>) {
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(64);
        let (based_tx, mut based_rx) = mpsc::channel::<Based>(64);
        self.based = Some(based_tx);
        self.schedule(&done_tx);
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let mut silence_told = false;
        loop {
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    if let ClientCommand::Shutdown(reply) = cmd {
                        self.shutdown().await;
                        let _ = reply.send(());
                        return;
                    }
                    self.command(cmd);
                    self.schedule(&done_tx);
                }
                Some((rec, outcome)) = done_rx.recv() => {
                    self.finished(rec, outcome);
                    self.schedule(&done_tx);
                }
                Some(b) = based_rx.recv() => {
                    let made = self.new_upload_from(&b.local, &b.remote, &b.options, b.base);
                    let _ = b.reply.send(made);
                    self.schedule(&done_tx);
                }
                _ = ticker.tick() => {
                    // Transport health and the agent's silence move on
                    // their own while something waits on it.
                    if self.waiting() {
                        self.node.touch();
                        self.say_if_silent(&mut silence_told);
                    }
                }
            }
            self.node.set_waiting(self.waiting());
        }
        self.shutdown().await;
    }

    /// Say once per silence, after [`SILENCE_NOTICE`], that the agent is
    /// not answering and what happens next.
    pub(super) fn say_if_silent(&self, told: &mut bool) {
        let silent = self.node.silent_while_waiting().unwrap_or_default();
        if silent < silence_notice(&self.node) {
            *told = false;
            return;
        }
        if *told || silent >= self.silence_limit {
            return;
        }
        *told = true;
        self.node.log(
            LogLevel::Warn,
            format!(
                "no answer from the agent over {} for {} s; still trying until the --timeout of {} s (progress is kept)",
                self.node.transports_label(),
                silent.as_secs(),
                self.silence_limit.as_secs()
            ),
        );
    }

    pub(super) async fn shutdown(&mut self) {
        let ids: Vec<_> = self.running.iter().copied().collect();
        for id in &ids {
            self.node.deliver(id, TaskInput::Pause).await;
        }
        // Give tasks a moment to persist, then leave them Pending for next time.
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && ids.iter().any(|id| self.node.has_task(id)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for id in ids {
            // The task stored its progress as it stopped: keep it.
            let _ = self.node.store.update_transfer(&id, |r| {
                if matches!(
                    r.status,
                    TransferStatus::Paused | TransferStatus::InProgress
                ) {
                    r.status = TransferStatus::Pending;
                }
            });
        }
        let _ = self.node.store.flush();
        self.node.drain(Duration::from_secs(3)).await;
    }

    pub(super) fn command(&mut self, cmd: ClientCommand) {
        match cmd {
            ClientCommand::Upload {
                local,
                remote,
                options,
                reply,
            } => match (
                self.asks_base(&local, &remote, &options),
                self.based.clone(),
            ) {
                // One exchange first: what the agent holds there.
                (Some(at), Some(back)) => {
                    let (node, peer, hooks) =
                        (self.node.clone(), self.peer.clone(), self.hooks.clone());
                    let limit = self.silence_limit / 2;
                    crate::task::spawn(async move {
                        let base = base_of(node, peer, hooks, at, limit).await;
                        let based = Based {
                            local,
                            remote,
                            options,
                            base,
                            reply,
                        };
                        let _ = back.send(based).await;
                    });
                }
                _ => {
                    let _ = reply.send(self.new_upload(&local, &remote, &options));
                }
            },
            ClientCommand::Download {
                remote,
                local,
                options,
                reply,
            } => {
                let _ = reply.send(self.new_download(&remote, &local, &options));
            }
            ClientCommand::List { dir, reply } => {
                let node = self.node.clone();
                let peer = self.peer.clone();
                let hooks = self.hooks.clone();
                let limit = self.silence_limit;
                crate::task::spawn(async move {
                    let _ = reply.send(list(node, peer, hooks, dir, limit).await);
                });
            }
            ClientCommand::Quota { reply } => {
                let (node, peer, hooks) =
                    (self.node.clone(), self.peer.clone(), self.hooks.clone());
                let limit = self.silence_limit;
                crate::task::spawn(async move {
                    let _ = reply.send(quota(node, peer, hooks, limit).await);
                });
            }
            ClientCommand::Shares { op, reply } => {
                let (node, peer, hooks) =
                    (self.node.clone(), self.peer.clone(), self.hooks.clone());
                let limit = self.silence_limit;
                crate::task::spawn(async move {
                    let _ = reply.send(shares(node, peer, hooks, op, limit).await);
                });
            }
            ClientCommand::Act(id, TransferAction::Pause) => {
                if self.running.contains(&id) {
                    let node = self.node.clone();
                    crate::task::spawn(async move { node.deliver(&id, TaskInput::Pause).await });
                } else {
                    self.eligible.remove(&id);
                    if self.set_status(&id, TransferStatus::Paused, |s| !s.is_finished()) {
                        self.announce_end(&id);
                    }
                }
            }
            ClientCommand::Act(id, TransferAction::Retry)
                if self.is(&id, TransferStatus::Cancelled) =>
            {
                self.restart_cancelled(&id);
            }
            ClientCommand::Act(id, TransferAction::Overwrite) => {
                let upload = lock(&self.records)
                    .get(&id)
                    .is_some_and(|r| r.direction == Direction::Upload);
                if upload
                    && self.set_status(&id, TransferStatus::Pending, |s| {
                        s == TransferStatus::Failed
                    })
                {
                    self.update(&id, |r| {
                        r.overwrite = true;
                        r.error = None;
                    });
                    self.eligible.insert(id);
                }
            }
            ClientCommand::Act(id, TransferAction::Resume | TransferAction::Retry) => {
                if self.set_status(&id, TransferStatus::Pending, |s| {
                    matches!(
                        s,
                        TransferStatus::Paused | TransferStatus::Failed | TransferStatus::Pending
                    )
                }) {
                    self.eligible.insert(id);
                }
            }
            ClientCommand::Act(id, TransferAction::Cancel) => {
                let unfinished = lock(&self.records)
                    .get(&id)
                    .is_some_and(|r| !r.status.is_finished());
                if unfinished {
                    // Kept until the agent confirms it holds nothing of it.
                    let _ = self.node.store.put_cancel(&id, self.peer.name.as_str());
                }
                if self.running.contains(&id) {
                    let node = self.node.clone();
                    crate::task::spawn(async move { node.deliver(&id, TaskInput::Cancel).await });
                } else if self.set_status(&id, TransferStatus::Cancelled, |s| !s.is_finished()) {
                    self.eligible.remove(&id);
                    self.remove_partial_download(&id);
                    self.node
                        .send_control(&self.peer, &Control::Cancel { transfer: id });
                    let name = lock(&self.records)
                        .get(&id)
                        .map(|r| r.remote_path.clone())
                        .unwrap_or_default();
                    let _ = self.node.events.send(Event::Cancelled { id, name });
                    self.announce_end(&id);
                }
            }
            ClientCommand::CancelTelling { id, wait, reply } => {
                // Told once the agent confirms, not once it was sent.
                let confirmations = self.hooks.cancelled.subscribe();
                self.command(ClientCommand::Act(id, TransferAction::Cancel));
                let (node, peer) = (self.node.clone(), self.peer.clone());
                crate::task::spawn(async move {
                    let told = cancel_confirmed(&node, &peer, confirmations, id, wait).await;
                    let _ = reply.send(told);
                });
            }
            ClientCommand::Act(id, TransferAction::Reprioritize(delta)) => {
                self.reorder(&id, delta);
            }
            ClientCommand::ResumeMatching { prefix, reply } => {
                let _ = reply.send(self.resume_matching(prefix.as_deref()));
            }
            ClientCommand::Reports { reply } => {
                let reports = stored_reports(&self.node.store)
                    .map(|all| all.into_iter().map(|(_, report)| report).collect());
                let _ = reply.send(reports);
            }
            ClientCommand::Find { prefix, reply } => {
                let found = self.node.store.find_transfer(&prefix);
                let _ = reply.send(found.map(|rec| stored_report(&rec)));
            }
            ClientCommand::Forget { prefix, reply } => {
                let ledger = crate::ledger::Ledger::over(self.node.store.clone());
                let forgotten = ledger.forget(&prefix);
                if let Ok(rec) = &forgotten {
                    self.drop_record(&rec.id);
                }
                let _ = reply.send(forgotten.map(|rec| stored_report(&rec)));
            }
            ClientCommand::Clean {
                choice,
                dry_run,
                reply,
            } => {
                let ledger = crate::ledger::Ledger::over(self.node.store.clone());
                let cleaned = ledger.clean(&choice, dry_run);
                if let (Ok(recs), false) = (&cleaned, dry_run) {
                    for rec in recs {
                        self.drop_record(&rec.id);
                    }
                }
                let _ = reply.send(cleaned.map(|recs| recs.iter().map(stored_report).collect()));
            }
            ClientCommand::Shutdown(_) => {}
        }
    }

    /// A transfer runs or a listing waits: the agent owes an answer.
    fn waiting(&self) -> bool {
        !self.running.is_empty() || !lock(&self.hooks.lists).is_empty()
    }

    /// Forget a transfer the store no longer holds (nothing runs it).
    fn drop_record(&mut self, id: &TransferId) {
        lock(&self.records).remove(id);
        lock(&self.node.progress).remove(id);
        self.eligible.remove(id);
        self.node.touch();
    }

    pub(super) fn resume_matching(&mut self, prefix: Option<&str>) -> Result<Vec<TransferId>> {
        let candidates: Vec<TransferId> = lock(&self.records)
            .values()
            .filter(|r| {
                !matches!(
                    r.status,
                    TransferStatus::Completed | TransferStatus::Cancelled
                )
            })
            .filter(|r| {
                prefix.is_none_or(|p| r.id.to_string().starts_with(&p.to_ascii_lowercase()))
            })
            .map(|r| r.id)
            .collect();
        // All of them: those that can never succeed are left as they are,
        // each said once with what would make it go.
        let candidates = if prefix.is_none() {
            let records = lock(&self.records);
            let (go, stuck): (Vec<_>, Vec<_>) = candidates
                .into_iter()
                .map(|id| (id, records.get(&id).and_then(unresumable)))
                .partition(|(_, why)| why.is_none());
            drop(records);
            for (id, why) in stuck {
                let name = lock(&self.records)
                    .get(&id)
                    .map(|r| r.remote_path.clone())
                    .unwrap_or_default();
                self.node.log(
                    LogLevel::Warn,
                    format!(
                        "not resuming {} ({name}): {}",
                        id.short(),
                        why.unwrap_or_default()
                    ),
                );
            }
            go.into_iter().map(|(id, _)| id).collect()
        } else {
            candidates
        };
        if let Some(p) = prefix {
            match candidates.len() {
                0 => return Err(CoreError::UnknownTransfer(p.to_string())),
                1 => {}
                n => {
                    return Err(CoreError::Transfer(format!(
                        "{n} unfinished transfers start with {p:?}; give more of the id"
                    )))
                }
            }
        }
        for id in &candidates {
            self.update(id, |r| r.status = TransferStatus::Pending);
            self.eligible.insert(*id);
        }
        Ok(candidates)
    }

    /// The end of this run of a transfer no task runs (paused or cancelled
    /// while it waited its turn), as a running one's task would say it:
    /// whoever waits for it learns it is over.
    fn announce_end(&self, id: &TransferId) {
        let report = {
            let records = lock(&self.records);
            let Some(rec) = records.get(id) else {
                return;
            };
            match lock(&self.node.progress).get(id) {
                Some(p) => report_of(rec, &p.read()),
                None => stored_report(rec),
            }
        };
        let _ = self.node.events.send(Event::Finished(Box::new(report)));
    }

    fn is(&self, id: &TransferId, status: TransferStatus) -> bool {
        lock(&self.records)
            .get(id)
            .is_some_and(|r| r.status == status)
    }

    /// Retry a cancelled transfer: its key was deleted as it was
    /// cancelled (and the agent dropped what it held), so it starts over
    /// as a new transfer of the same file, in the old one's place.
    fn restart_cancelled(&mut self, id: &TransferId) {
        let Some(old) = lock(&self.records).get(id).cloned() else {
            return;
        };
        let restarted = match old.direction {
            Direction::Upload => self.new_upload(
                &old.local_path,
                &old.remote_path,
                &UploadOptions {
                    no_compress: old.no_compress,
                    overwrite: old.overwrite,
                    expires_after_secs: self.node.store.expiry_term(id),
                    no_delta: false,
                },
            ),
            Direction::Download => self.new_download(
                &old.remote_path,
                &old.local_path,
                &DownloadOptions::default(),
            ),
        };
        match restarted {
            Ok(new) => {
                self.update(&new, |r| r.priority = old.priority);
                let _ =
                    crate::ledger::Ledger::over(self.node.store.clone()).forget(&id.to_string());
                self.drop_record(id);
            }
            Err(e) => self.node.log(
                LogLevel::Warn,
                format!("cannot start {} again: {e}", old.remote_path),
            ),
        }
    }

    /// Move a transfer `delta` places in the queue (negative: sooner), by
    /// renumbering the unfinished ones in their order: one step always
    /// passes exactly one neighbour, whatever priorities were tied.
    fn reorder(&self, id: &TransferId, delta: i64) {
        let order: Vec<(i64, u64, TransferId)> = lock(&self.records)
            .values()
            .filter(|r| !r.status.is_finished())
            .map(|r| (r.priority, r.created_unix, r.id))
            .collect();
        for (other, priority) in reordered(order, id, delta) {
            self.update(&other, |r| r.priority = priority);
        }
    }

    /// A cancelled download's hidden partial file goes with it.
    pub(super) fn remove_partial_download(&self, id: &TransferId) {
        let partial = lock(&self.records)
            .get(id)
            .filter(|r| r.direction == Direction::Download)
            .and_then(|r| r.partial_path.clone());
        if let Some(path) = partial {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Apply `f` to the stored record (never the cached copy written back
    /// whole: a running task changes the record too), then show it.
    pub(super) fn update(&self, id: &TransferId, f: impl Fn(&mut TransferRecord)) -> bool {
        let mut records = lock(&self.records);
        let Some(rec) = records.get_mut(id) else {
            return false;
        };
        f(rec);
        let _ = self.node.store.update_transfer(id, &f);
        if let Some(p) = lock(&self.node.progress).get(id) {
            p.emit(ProgressEvent::Status(rec.status));
        }
        drop(records);
        self.node.touch();
        true
    }

    pub(super) fn set_status(
        &self,
        id: &TransferId,
        to: TransferStatus,
        when: impl Fn(TransferStatus) -> bool,
    ) -> bool {
        let ok = lock(&self.records).get(id).is_some_and(|r| when(r.status));
        ok && self.update(id, |r| r.status = to)
    }
}

/// Why a transfer cannot succeed if resumed as it is, if it cannot: its
/// file is gone, or the agent refused it in a way only a person can fix.
fn unresumable(rec: &TransferRecord) -> Option<String> {
    match rec.direction {
        Direction::Upload if !rec.local_path.is_file() => {
            return Some(format!(
                "its file {} is gone; forget it with `pigeon forget {}`",
                rec.local_path.display(),
                rec.id.short()
            ))
        }
        Direction::Download if rec.local_path.parent().is_some_and(|p| !p.is_dir()) => {
            return Some(format!(
                "the folder it downloads into, {}, is gone",
                rec.local_path
                    .parent()
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            ))
        }
        _ => {}
    }
    let error = rec
        .error
        .as_deref()
        .filter(|_| rec.status == TransferStatus::Failed)?;
    if error.contains(crate::engine::REPLACE_HINT) {
        return Some("the agent holds another file under its name: upload it again with --overwrite to replace it".into());
    }
    if let Some(remedy) = crate::engine::policy_remedy(error) {
        return Some(format!("{error}; {remedy}"));
    }
    if error.contains(" may not ") {
        return Some(format!("the agent does not allow it: {error}"));
    }
    None
}

/// How long the agent may be silent before it is said: 10 s, or two
/// message intervals and a little on a channel of a message per 6 s.
pub(super) fn silence_notice(node: &Node) -> Duration {
    let interval = node.links[0]
        .capabilities()
        .messages_per_minute
        .map_or(Duration::ZERO, |m| Duration::from_secs(60) / m.max(1));
    SILENCE_NOTICE.max(interval * 2 + Duration::from_secs(2))
}

/// The new priorities after moving `id` by `delta` places in `order`
/// (`(priority, created, id)` of the unfinished transfers): only the
/// transfers whose priority changes.
fn reordered(
    mut order: Vec<(i64, u64, TransferId)>,
    id: &TransferId,
    delta: i64,
) -> Vec<(TransferId, i64)> {
    order.sort();
    let Some(from) = order.iter().position(|(_, _, i)| i == id) else {
        return vec![];
    };
    let last = order.len() as i64 - 1;
    let to = (from as i64 + delta).clamp(0, last.max(0)) as usize;
    let moved = order.remove(from);
    order.insert(to, moved);
    let base = order.iter().map(|(p, _, _)| *p).min().unwrap_or(0);
    order
        .iter()
        .enumerate()
        .filter_map(|(place, (priority, _, other))| {
            let wanted = base + place as i64;
            (*priority != wanted).then_some((*other, wanted))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(order: &mut [(i64, u64, TransferId)], changes: Vec<(TransferId, i64)>) {
        for (id, p) in changes {
            if let Some(e) = order.iter_mut().find(|e| e.2 == id) {
                e.0 = p;
            }
        }
        order.sort();
    }

    #[test]
    fn one_step_passes_exactly_one_neighbour_even_with_tied_priorities() {
        let id = |n| TransferId([n; 16]);
        // Three transfers, two tied at priority 5 (created 1 and 2).
        let mut order = vec![(5, 1, id(1)), (5, 2, id(2)), (9, 0, id(3))];
        let ids = |o: &[(i64, u64, TransferId)]| o.iter().map(|e| e.2 .0[0]).collect::<Vec<_>>();
        let changes = reordered(order.clone(), &id(2), -1);
        apply(&mut order, changes);
        assert_eq!(ids(&order), [2, 1, 3]);
        let changes = reordered(order.clone(), &id(2), 1);
        apply(&mut order, changes);
        assert_eq!(ids(&order), [1, 2, 3]);
        let changes = reordered(order.clone(), &id(3), -5);
        apply(&mut order, changes);
        assert_eq!(ids(&order), [3, 1, 2], "clamped at the top");
        // At the edge nothing moves, nothing is rewritten.
        assert!(reordered(order.clone(), &id(3), -1).is_empty());
        assert!(reordered(order, &id(9), 1).is_empty(), "unknown id");
    }
}
