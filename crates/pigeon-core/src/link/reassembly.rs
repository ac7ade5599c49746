//! Frames from their fragments, in bounded memory and time.

use super::*;

/// Puts fragmented frames back together with bounded memory and time,
/// whatever arrives (fragments are not authenticated: anyone who can post
/// to the channel can send them).
///
/// Bounds, all charged before anything is kept:
/// - memory: the bytes actually received plus [`PIECE_COST`] per piece,
///   within `budget` in all (nothing is allocated for a frame's declared
///   size until it is complete); the oldest partial frame is dropped to
///   make room (its sender retransmits);
/// - pieces: at most [`MAX_PIECES`] per frame (a real sender's fragments
///   fill whole messages: a frame of 8 MiB over 4 KB messages is 2,000);
/// - time: O(log n) per fragment, amortised: the received ranges are kept
///   merged, and each range is merged away at most once.
///
/// A chunk's pieces ([`PieceKey`]) are kept across copies: a chunk sent
/// again under its sealing run is the same bytes, so what one copy brought
/// fills the gaps another left, whichever link each came by, and the
/// receiver can say what it holds ([`held`](Self::held)) for the sender to
/// send only the rest.
pub struct Reassembler {
    pub(super) budget: usize,
    pub(super) used: usize,
    pub(super) partials: HashMap<Key, Partial>,
    pub(super) order: VecDeque<Key>,
    /// The chunks with pieces held, by transfer.
    pub(super) chunks: BTreeSet<PieceKey>,
    pub(super) done: HashSet<u64>,
    pub(super) done_order: VecDeque<u64>,
    /// Ranges visited, for the tests that prove the time bound.
    pub(super) steps: u64,
}

/// What a piece costs besides its bytes (map node, vector header).
pub const PIECE_COST: usize = 64;
/// Most pieces one frame may arrive in.
pub const MAX_PIECES: usize = 4096;

/// Which frame a fragment belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Key {
    /// A frame the sending link numbered (control frames): it is never
    /// sent again under this number.
    Id(u64),
    /// A chunk's frame, the same bytes in every copy.
    Piece(PieceKey),
}

/// A chunk frame's name in its pieces: its transfer (the id's first eight
/// bytes), its sealing run and its index. Under one run a chunk is sealed
/// to the same bytes every time (the nonce rule), so pieces of two copies
/// fit together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PieceKey {
    pub transfer: u64,
    pub index: u32,
    pub run: u32,
}

impl PieceKey {
    pub fn new(transfer: &[u8; 16], run: u32, index: u32) -> PieceKey {
        PieceKey {
            transfer: transfer_tag(transfer),
            index,
            run,
        }
    }
}

/// The part of a transfer id that pieces carry.
pub fn transfer_tag(transfer: &[u8; 16]) -> u64 {
    u64::from_be_bytes(transfer[..8].try_into().expect("eight bytes"))
}

/// What the receiver holds of a chunk frame not yet complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub key: PieceKey,
    pub total: usize,
    /// Received ranges, merged and in order.
    pub ranges: Vec<(usize, usize)>,
    /// When its last piece came.
    pub touched: Instant,
}

pub(super) struct Partial {
    pub(super) total: usize,
    /// Received bytes by offset; pieces never overlap.
    pub(super) pieces: BTreeMap<usize, Vec<u8>>,
    /// The received ranges, merged: start -> end.
    pub(super) covered: BTreeMap<usize, usize>,
    pub(super) have: usize,
    pub(super) cost: usize,
    /// When its last new piece came: it expires that long after.
    pub(super) touched: Instant,
}

impl Reassembler {
    pub(super) const TIMEOUT: Duration = Duration::from_secs(600);
    pub(super) const REMEMBER_DONE: usize = 4096;

    pub fn new(budget: usize) -> Reassembler {
        Reassembler {
            budget,
            used: 0,
            partials: HashMap::new(),
            order: VecDeque::new(),
            chunks: BTreeSet::new(),
            done: HashSet::new(),
            done_order: VecDeque::new(),
            steps: 0,
        }
    }

    /// Add a fragment; returns the whole frame when this completes it.
    pub fn add(
        &mut self,
        id: u64,
        total: usize,
        offset: usize,
        part: &[u8],
    ) -> Result<Option<Vec<u8>>, Malformed> {
        if self.done.contains(&id) {
            return Ok(None);
        }
        self.add_to(Key::Id(id), total, offset, part)
    }

    /// Add a piece of a chunk frame; returns the whole frame when this
    /// completes it. A completed chunk is not remembered: a copy sent again
    /// (its acknowledgement was lost) must reach the engine again, which
    /// answers it. A piece that disagrees on the frame's size starts the
    /// frame over (pieces are not authenticated: the newest claim wins, so
    /// one forged piece cannot shut the real ones out).
    pub fn add_piece(
        &mut self,
        key: PieceKey,
        total: usize,
        offset: usize,
        part: &[u8],
    ) -> Result<Option<Vec<u8>>, Malformed> {
        if self
            .partials
            .get(&Key::Piece(key))
            .is_some_and(|p| p.total != total)
        {
            self.drop_partial(Key::Piece(key));
        }
        self.add_to(Key::Piece(key), total, offset, part)
    }

    fn add_to(
        &mut self,
        id: Key,
        total: usize,
        offset: usize,
        part: &[u8],
    ) -> Result<Option<Vec<u8>>, Malformed> {
        let end = offset.checked_add(part.len()).ok_or(Malformed)?;
        if total > MAX_FRAME || end > total {
            return Err(Malformed);
        }
        self.expire();
        let p = match self.partials.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                self.order.push_back(id);
                if let Key::Piece(k) = id {
                    self.chunks.insert(k);
                }
                e.insert(Partial {
                    total,
                    pieces: BTreeMap::new(),
                    covered: BTreeMap::new(),
                    have: 0,
                    cost: 0,
                    touched: Instant::now(),
                })
            }
        };
        if p.total != total {
            return Err(Malformed);
        }
        let gaps = cover(&mut p.covered, offset, end, &mut self.steps);
        let mut added = 0;
        for (s, e) in gaps {
            p.pieces.insert(s, part[s - offset..e - offset].to_vec());
            p.have += e - s;
            added += e - s + PIECE_COST;
        }
        if added > 0 {
            p.touched = Instant::now();
        }
        p.cost += added;
        self.used += added;
        if p.pieces.len() > MAX_PIECES {
            self.drop_partial(id);
            return Err(Malformed);
        }
        if p.have == total {
            let p = self.take(id).expect("present");
            let mut frame = Vec::with_capacity(total);
            for piece in p.pieces.into_values() {
                frame.extend_from_slice(&piece);
            }
            if let Key::Id(id) = id {
                self.done.insert(id);
                self.done_order.push_back(id);
                if self.done_order.len() > Self::REMEMBER_DONE {
                    if let Some(old) = self.done_order.pop_front() {
                        self.done.remove(&old);
                    }
                }
            }
            return Ok(Some(frame));
        }
        // Over budget: the oldest partial frames go first (this one last,
        // and once round: its id may be in `order` twice, a stale copy
        // left by an earlier drop; found by fuzzing, a loop for ever).
        let mut spared = false;
        while self.used > self.budget {
            match self.order.pop_front() {
                Some(old) if old == id && !spared && !self.order.is_empty() => {
                    spared = true;
                    self.order.push_back(old);
                }
                Some(old) if old == id => {
                    self.drop_partial(id);
                    break;
                }
                Some(old) => self.drop_partial(old),
                None => {
                    self.drop_partial(id);
                    break;
                }
            }
        }
        Ok(None)
    }

    /// Remove a partial frame. Its id stays in `order` until it reaches the
    /// front (no linear search); `order` is compacted when stale ids
    /// outnumber live ones.
    pub(super) fn take(&mut self, id: Key) -> Option<Partial> {
        let p = self.partials.remove(&id)?;
        self.used -= p.cost;
        if let Key::Piece(k) = id {
            self.chunks.remove(&k);
        }
        if self.order.len() > 2 * self.partials.len() + 64 {
            let live = &self.partials;
            self.order.retain(|o| live.contains_key(o));
        }
        Some(p)
    }

    pub(super) fn drop_partial(&mut self, id: Key) {
        self.take(id);
    }

    /// What is held of transfer `transfer`'s chunk frames that are not yet
    /// complete, and not older than the timeout.
    pub fn held(&self, transfer: &[u8; 16]) -> Vec<Held> {
        let tag = transfer_tag(transfer);
        let from = PieceKey {
            transfer: tag,
            index: 0,
            run: 0,
        };
        let now = Instant::now();
        self.chunks
            .range(from..)
            .take_while(|k| k.transfer == tag)
            .filter_map(|k| {
                let p = self.partials.get(&Key::Piece(*k))?;
                (now.duration_since(p.touched) <= Self::TIMEOUT).then(|| Held {
                    key: *k,
                    total: p.total,
                    ranges: p.covered.iter().map(|(&s, &e)| (s, e)).collect(),
                    touched: p.touched,
                })
            })
            .collect()
    }

    pub(super) fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&id) = self.order.front() {
            let stale = self
                .partials
                .get(&id)
                .is_none_or(|p| now.duration_since(p.touched) > Self::TIMEOUT);
            if !stale {
                break;
            }
            self.order.pop_front();
            self.take(id);
        }
    }

    /// Bytes held for partial frames, overheads included.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn bytes_held(&self) -> usize {
        self.used
    }

    /// Received ranges visited so far (the work the time bound is about).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

/// Add `[start, end)` to the merged ranges in `covered`; returns the parts
/// of it that were not covered before. Each range it visits is merged into
/// the new one and removed, so the work is amortised O(log n).
pub(super) fn cover(
    covered: &mut BTreeMap<usize, usize>,
    start: usize,
    end: usize,
    steps: &mut u64,
) -> Vec<(usize, usize)> {
    if start == end {
        return vec![];
    }
    let mut lo = start;
    let mut hi = end;
    // A range that starts before `start` and reaches it.
    if let Some((&s, &e)) = covered.range(..start).next_back() {
        if e >= start {
            lo = s;
            hi = hi.max(e);
        }
    }
    let mut gaps = vec![];
    let mut cursor = start;
    if lo < start {
        cursor = covered[&lo].min(end).max(start);
    }
    let touching: Vec<(usize, usize)> = covered.range(lo..=end).map(|(&s, &e)| (s, e)).collect();
    for (s, e) in touching {
        *steps += 1;
        if s > cursor && cursor < end {
            gaps.push((cursor, s.min(end)));
        }
        cursor = cursor.max(e.min(end));
        hi = hi.max(e);
        covered.remove(&s);
    }
    if cursor < end {
        gaps.push((cursor, end));
    }
    covered.insert(lo, hi);
    gaps
}
