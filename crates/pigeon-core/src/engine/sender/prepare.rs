//! Chunks made ready to go: read, compressed when that helps, sealed as
//! the seal book plans, on blocking threads ahead of the link; the offer
//! and first chunks in the Hello; the whole file's hash.

use super::*;

/// Chunks prepared at once: one per core keeps a compressing sender busy.
pub(super) const PREP_DEPTH: usize = 2;

/// A built chunk frame: (frame bytes, plaintext SHA-256, gzipped).
pub(super) type Built = (Vec<u8>, [u8; 32], bool);

/// A chunk being prepared on a blocking thread.
pub(super) struct Prep {
    pub(super) index: u32,
    pub(super) retry: bool,
    pub(super) planned: Gzip,
    pub(super) job: JoinHandle<Result<Built>>,
}

/// A chunk frame built and waiting for room on a link.
pub(super) struct Ready {
    pub(super) index: u32,
    pub(super) retry: bool,
    pub(super) frame: Vec<u8>,
}

pub(crate) use crate::files::{at_path, hash_file, hash_open_file};

/// Types whose content is already compressed: gzip is not even tried.
pub(super) fn already_compressed(mime: &str) -> bool {
    mime.starts_with("image/") && mime != "image/bmp" && mime != "image/svg+xml"
        || mime.starts_with("video/")
        || mime.starts_with("audio/")
        || matches!(
            mime,
            "application/gzip"
                | "application/zip"
                | "application/x-bzip2"
                | "application/x-xz"
                | "application/zstd"
                | "application/x-7z-compressed"
                | "application/vnd.rar"
                | "application/x-rar-compressed"
                | "application/pdf"
                | "application/epub+zip"
        )
}

impl Sender {
    /// A chunk that cannot be read whole means the file shrank: say that.
    pub(super) fn explain_read_error(&self, e: CoreError) -> CoreError {
        match e {
            CoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof => {
                CoreError::Transfer(format!(
                    "{} is shorter than when the transfer started; run the command again to send it afresh",
                    self.source_name()
                ))
            }
            other => other,
        }
    }

    /// A new upload with no session yet, on a link where a round trip
    /// costs seconds: put the offer and the first chunks, filling the
    /// Hello's message, into the Hello that opens the session
    /// ([`crate::protocol::Early`]). True when a Hello took them: they are
    /// in flight and the transfer is sending; false to offer as usual.
    pub(super) async fn go_early(&mut self) -> Result<bool> {
        let new =
            self.cfg.root.is_none() && self.win.acked.count() == 0 && self.win.inflight.is_empty();
        if !new || self.peer.session.borrow().is_some() {
            return Ok(false);
        }
        let Some((link, room)) = self.node.early_room(&self.peer) else {
            return Ok(false);
        };
        let offer = self.offer();
        let mut used = offer.encode()?.len();
        let first = self.win.cursor;
        let mut chunks = vec![];
        let mut tail = None;
        while used < room {
            let Some(index) = self.next_new() else { break };
            self.win.cursor = index + 1;
            let mut prep = self.spawn_prep(index, false);
            let built = (&mut prep.job)
                .await
                .map_err(|e| CoreError::Transfer(format!("chunk worker failed: {e}")))?
                .map_err(|e| self.explain_read_error(e))?;
            let frame = self.check_prepared(&prep, built)?;
            let need = frame.len() + crate::link::WHOLE_RECORD_OVERHEAD;
            if used + need > room {
                // Larger than what is left of the Hello's message: it goes
                // in pieces, the first filling that message, if the link
                // has room for it now and no other link would carry it
                // sooner (else the ordinary way: a chunk sized for a faster
                // link would hold the transfer to this slow one's pace, as
                // a simulated seed of three links showed).
                let here = self.node.links[link].time_to_send(frame.len());
                let sooner_elsewhere = self.node.links.iter().enumerate().any(|(j, other)| {
                    j != link
                        && self.node.usable(&self.peer, j)
                        && other.time_to_send(frame.len()) < here
                });
                match self.node.links[link].try_reserve(frame.len()) {
                    Some(permit)
                        if !sooner_elsewhere && room - used >= crate::link::MIN_FRAGMENT_ROOM =>
                    {
                        tail = Some(EarlyTail {
                            link,
                            chunk: crate::link::ChunkFrame {
                                frame,
                                transfer: self.rec.id.0,
                                run: self.book.nonce(index).run,
                                index,
                                held: vec![],
                            },
                            permit,
                        });
                    }
                    _ => self.win.cursor = index,
                }
                break;
            }
            used += need;
            chunks.push((index, frame));
        }
        let whole: Vec<u32> = chunks.iter().map(|(i, _)| *i).collect();
        let tail_sent = tail.as_ref().map(|t| {
            (
                t.chunk.index,
                self.node.links[link].time_to_send(t.chunk.frame.len()),
            )
        });
        let (taken_tx, taken) = tokio::sync::oneshot::channel();
        self.peer.early.put(EarlyEntry {
            transfer: self.rec.id,
            offer,
            chunks: chunks.into_iter().map(|(_, f)| f).collect(),
            tail,
            taken: taken_tx,
        });
        match tokio::time::timeout(EARLY_WAIT, taken).await {
            Ok(Ok(())) => {}
            // No Hello took it in time (one had gone already): offer as usual.
            _ if self.peer.early.withdraw(&self.rec.id) => {
                self.win.cursor = first;
                return Ok(false);
            }
            // Taken just as the wait ran out.
            _ => {}
        }
        tracing::debug!(transfer = %self.rec.id.short(), chunks = whole.len(), tail = tail_sent.is_some(), "offer and first chunks ride in the Hello");
        for index in whole {
            self.mark_sent(index, false, link, Duration::ZERO);
        }
        if let Some((index, transmit)) = tail_sent {
            self.mark_sent(index, false, link, transmit);
        }
        self.talk.went_early();
        Ok(true)
    }

    /// A chunk being prepared or waiting for room on a link.
    pub(super) fn busy(&self, i: u32) -> bool {
        self.preps.iter().any(|p| p.index == i) || self.ready.as_ref().is_some_and(|r| r.index == i)
    }

    pub(super) fn has_work(&self) -> bool {
        let preparing = self.preps.len() + usize::from(self.ready.is_some());
        self.win.has_work(preparing, |i| self.busy(i))
    }

    /// The next chunk never sent in this run, nor being prepared.
    pub(super) fn next_new(&self) -> Option<u32> {
        self.win.next_new(|i| self.busy(i))
    }

    /// Start preparing chunks (resends first) up to [`PREP_DEPTH`] at once.
    pub(super) fn start_preps(&mut self) {
        while self.preps.len() < PREP_DEPTH && self.has_work() {
            let (index, retry) = loop {
                match self.win.resend.pop_front() {
                    Some(i) if self.win.acked.get(i) => continue,
                    Some(i) => break (i, true),
                    None => match self.next_new() {
                        Some(i) => {
                            self.win.cursor = i + 1;
                            break (i, false);
                        }
                        None => return,
                    },
                }
            };
            let prep = self.spawn_prep(index, retry);
            self.preps.push_back(prep);
        }
    }

    /// Hand the prepared frame to the link, in the room reserved for it.
    /// Send the prepared chunk on `link`, in the room `permit` holds there
    /// (none: a small transfer's, ahead of bulk data).
    pub(super) fn send_ready(
        &mut self,
        link: usize,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let Some(Ready {
            index,
            retry,
            frame,
        }) = self.ready.take()
        else {
            return;
        };
        if self.win.acked.get(index) {
            // Acknowledged while it waited (a resend the original beat).
            return;
        }
        let held = self.held_of(index, frame.len());
        let sending = frame.len() - held.iter().map(|(s, e)| e - s).sum::<usize>();
        let chunk = crate::link::ChunkFrame {
            frame,
            transfer: self.rec.id.0,
            run: self.book.nonce(index).run,
            index,
            held,
        };
        self.node.send_data(link, &self.peer, chunk, permit);
        let transmit = self.node.links[link].time_to_send(sending);
        self.mark_sent(index, retry, link, transmit);
    }

    /// What the receiver said it holds of chunk `index`'s frame (of
    /// `len` bytes, sealed in this run), for only the rest to go.
    fn held_of(&self, index: u32, len: usize) -> Vec<(usize, usize)> {
        match self.held.get(&index) {
            Some((total, ranges)) if *total == len => ranges.clone(),
            _ => vec![],
        }
    }

    /// Chunk `index` was handed to `link`, which takes `transmit` to send
    /// it: time it, and show it.
    pub(super) fn mark_sent(&mut self, index: u32, retry: bool, link: usize, transmit: Duration) {
        self.win
            .sent_over(index, link, retry, Instant::now(), rand::random(), transmit);
        self.progress
            .emit(ProgressEvent::Sent { index, retry, link });
        if retry {
            self.rec.faults.retransmitted += 1;
            self.node.record_fault(link, |s| {
                s.retransmitted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
        self.node.touch();
    }

    /// Read, hash, maybe compress, and seal chunk `index` on a blocking
    /// thread, as the seal book plans it.
    pub(super) fn spawn_prep(&self, index: u32, retry: bool) -> Prep {
        let m = &self.rec.manifest;
        let offset = m.offset(index);
        let len = m.chunk_len(index);
        let at = self.book.nonce(index);
        let planned = self.book.plan(index);
        let squeeze = crate::protocol::Squeeze {
            plan: planned,
            level: self.gzip_level,
        };
        let file = self.file.clone();
        let cipher = self.cipher.clone();
        let transfer = self.rec.id.0;
        let job = tokio::task::spawn_blocking(move || {
            ChunkBody::frame(
                &cipher,
                &transfer,
                at,
                len,
                squeeze,
                |buf| file.read_exact_at(buf, offset),
                |_| {},
            )
        });
        Prep {
            index,
            retry,
            planned,
            job,
        }
    }

    /// Let a prepared chunk go only if the seal book admits it: the same
    /// bytes as recorded, built as this run first built it.
    pub(super) fn check_prepared(
        &mut self,
        prep: &Prep,
        (frame, hash, compressed): Built,
    ) -> Result<Vec<u8>> {
        let index = prep.index;
        let recorded = self.node.store.chunk_hash(&self.rec.id, index)?;
        match self
            .book
            .admit(index, prep.planned, &hash, compressed, recorded.as_ref())
        {
            Ok(admitted) => {
                if admitted.record {
                    self.node.store.put_chunk_hash(&self.rec.id, index, &hash)?;
                }
                Ok(frame)
            }
            Err(SealError::SourceChanged { index }) => Err(CoreError::Transfer(format!(
                "{} changed while it was being sent (chunk {index} differs); run the command again to send it afresh",
                self.source_name()
            ))),
            Err(SealError::Conflict { index }) => Err(CoreError::Transfer(format!(
                "internal error: chunk {index} was built two ways in one run; nothing was sent (please report this)"
            ))),
        }
    }

    pub(super) async fn whole_file_hash(&mut self) -> Result<[u8; 32]> {
        let job = match self.hash_job.take() {
            Some(job) => job,
            None => {
                let file = self.file.clone();
                let size = self.rec.manifest.size;
                let path = self.rec.local_path.clone();
                tokio::task::spawn_blocking(move || {
                    hash_open_file(&file, size).map_err(|e| at_path(e, &path))
                })
            }
        };
        let hash = job
            .await
            .map_err(|e| CoreError::Transfer(format!("hashing failed: {e}")))??;
        // The file must still be the one the chunks came from.
        let meta = self
            .file
            .metadata()
            .map_err(|e| CoreError::io(format!("checking {}", self.source_name()), e))?;
        // (A delta's chunks come from the delta, made from the file as it
        // was: the file may change since without changing what is sent.)
        if let Some(stamp) = self
            .rec
            .source
            .filter(|_| self.rec.manifest.delta.is_none())
        {
            if SourceStamp::of(&meta) != stamp {
                return Err(CoreError::Transfer(format!(
                    "{} changed while it was being sent; run the command again to send it afresh",
                    self.source_name()
                )));
            }
        }
        Ok(hash)
    }
}
