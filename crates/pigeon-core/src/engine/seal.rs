//! The sender's seal book: the one place that decides how each chunk is
//! sealed, so that no (key, nonce) ever seals two different plaintexts.
//!
//! What could make a nonce seal two plaintexts, and what stops it:
//!
//! - *A crash between a seal leaving and its record becoming durable*, then
//!   a new run deciding that chunk differently (gzip or raw, say, after its
//!   compression streak started over). Every run of a sender takes a fresh
//!   run number ([`SealBook::start`]) that is part of every nonce it seals
//!   under, and the run is durable before its first seal leaves: two runs
//!   never share a nonce, whatever either decided or read.
//! - *The source changing under an unchanged stamp* (size, mtime, inode):
//!   a new run reads new bytes, but under its own nonces. Within one run, a
//!   chunk read again is compared with the hash recorded when it was first
//!   read, and a difference stops the transfer before anything leaves.
//! - *Two preparations of one chunk in flight at once*, deciding
//!   differently: a chunk's gzip choice is fixed when it is first admitted
//!   in a run, later builds of it are planned with that choice, and a build
//!   that disagrees is refused ([`SealError::Conflict`]), never sent.
//!
//! Pure state, no I/O: the sender reads the recorded hash from the store
//! and writes the ones [`Admitted::record`] asks for.

use crate::bitmap::Bitmap;
use crate::crypto::ChunkNonce;
use crate::protocol::Gzip;

/// After this many chunks in a row that did not shrink, gzip is tried only
/// on every [`RETRY_EVERY`]th.
const RAW_STREAK_LIMIT: u32 = 8;
const RETRY_EVERY: u32 = 32;

/// What this run has sealed, and how.
#[derive(Debug)]
pub(crate) struct SealBook {
    run: u32,
    chunks: u32,
    compress: bool,
    raw_streak: u32,
    /// Chunks sealed in this run, and which of them went gzipped.
    sealed: Bitmap,
    gzipped: Bitmap,
}

/// Why a built chunk may not leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SealError {
    /// The chunk's bytes differ from those recorded for it: the source
    /// changed while it was being sent.
    SourceChanged { index: u32 },
    /// A build of the chunk disagrees with the choice this run made for it
    /// (a bug if it ever happens: refusing it is what keeps the nonce safe).
    Conflict { index: u32 },
}

/// A built chunk the book let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// The store holds no hash for this chunk yet: record it.
    pub record: bool,
}

impl SealBook {
    /// Start a run after `last_run` (the last run number made durable for
    /// this transfer). The caller must make [`run`](Self::run) durable
    /// before the first seal leaves. `None` when the transfer has used up
    /// its run numbers (four billion restarts): it must be re-keyed.
    #[cfg(test)]
    pub fn start(last_run: u32, chunks: u32, compress: bool) -> Option<SealBook> {
        Some(SealBook::for_run(
            last_run.checked_add(1)?,
            chunks,
            compress,
        ))
    }

    /// A book for `run`, a run number no other book of this transfer has
    /// had or will have (the store hands them out:
    /// [`crate::store::Store::begin_seal_run`]).
    pub fn for_run(run: u32, chunks: u32, compress: bool) -> SealBook {
        SealBook {
            run,
            chunks,
            compress,
            raw_streak: 0,
            sealed: Bitmap::new(chunks),
            gzipped: Bitmap::new(chunks),
        }
    }

    pub fn run(&self) -> u32 {
        self.run
    }

    /// The nonce chunk `index` is sealed under in this run.
    pub fn nonce(&self, index: u32) -> ChunkNonce {
        ChunkNonce {
            run: self.run,
            index,
            last: index + 1 == self.chunks,
        }
    }

    /// How to build chunk `index`: as this run first sealed it, or (new in
    /// this run) by the compression streak.
    pub fn plan(&self, index: u32) -> Gzip {
        if self.sealed.get(index) {
            return if self.gzipped.get(index) {
                Gzip::Always
            } else {
                Gzip::Never
            };
        }
        let try_it = self.compress
            && (self.raw_streak < RAW_STREAK_LIMIT || index.is_multiple_of(RETRY_EVERY));
        if try_it {
            Gzip::IfUseful
        } else {
            Gzip::Never
        }
    }

    /// May a chunk built with `planned` (its plaintext hashing to `hash`,
    /// gzipped or not) leave? `recorded` is the hash the store holds for
    /// this chunk from any run. Nothing may be sealed under this run's
    /// nonce for `index` that this does not admit.
    pub fn admit(
        &mut self,
        index: u32,
        planned: Gzip,
        hash: &[u8; 32],
        gzipped: bool,
        recorded: Option<&[u8; 32]>,
    ) -> Result<Admitted, SealError> {
        if recorded.is_some_and(|r| r != hash) {
            return Err(SealError::SourceChanged { index });
        }
        if self.sealed.get(index) {
            if self.gzipped.get(index) != gzipped {
                return Err(SealError::Conflict { index });
            }
            if recorded.is_none() {
                // Admitted before in this run, so recorded before: the hash
                // cannot be checked, and the bytes cannot be trusted.
                return Err(SealError::Conflict { index });
            }
            return Ok(Admitted { record: false });
        }
        self.sealed.set(index);
        if gzipped {
            self.gzipped.set(index);
        }
        if planned == Gzip::IfUseful {
            self.raw_streak = if gzipped { 0 } else { self.raw_streak + 1 };
        }
        Ok(Admitted {
            record: recorded.is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A stand-in for one chunk's plaintext: (content version, gzipped).
    type Plain = (u8, bool);

    /// What can happen to a sender, one step at a time.
    #[derive(Debug, Clone)]
    enum Step {
        /// Build and send chunk `index`; it compresses when `shrinks`.
        Seal { index: u32, shrinks: bool },
        /// The source's bytes at `index` change (stamp unchanged).
        Edit { index: u32 },
        /// The store flushes in the background.
        Flush,
        /// kill -9: everything not flushed is lost; a new run starts, and
        /// crashes again before its run number is durable when `early`.
        Crash { early: bool },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0u32..24, any::<bool>()).prop_map(|(index, shrinks)| Step::Seal { index, shrinks }),
            1 => (0u32..24).prop_map(|index| Step::Edit { index }),
            1 => Just(Step::Flush),
            1 => any::<bool>().prop_map(|early| Step::Crash { early }),
        ]
    }

    /// The store as a crash sees it: written and durable halves.
    #[derive(Default, Clone)]
    struct Store {
        run: u32,
        hashes: HashMap<u32, [u8; 32]>,
    }

    fn hash_of(version: u8) -> [u8; 32] {
        [version; 32]
    }

    /// Drive the book the way the sender does, through crashes, edits and
    /// background flushes; every nonce must carry one plaintext.
    fn run_steps(steps: &[Step]) -> Result<(), String> {
        const CHUNKS: u32 = 24;
        let mut durable = Store::default();
        let mut live = durable.clone();
        let mut content: HashMap<u32, u8> = HashMap::new();
        let mut wire: HashMap<ChunkNonce, Plain> = HashMap::new();
        let mut book = SealBook::start(durable.run, CHUNKS, true).ok_or("no run")?;
        live.run = book.run();
        durable.run = live.run;
        for s in steps {
            match *s {
                Step::Seal { index, shrinks } => {
                    let version = *content.get(&index).unwrap_or(&0);
                    let planned = book.plan(index);
                    let gzipped = match planned {
                        Gzip::Always => true,
                        Gzip::Never => false,
                        Gzip::IfUseful => shrinks,
                    };
                    let hash = hash_of(version);
                    match book.admit(index, planned, &hash, gzipped, live.hashes.get(&index)) {
                        Ok(a) => {
                            if a.record {
                                live.hashes.insert(index, hash);
                            }
                            let nonce = book.nonce(index);
                            let plain = (version, gzipped);
                            if let Some(before) = wire.insert(nonce, plain) {
                                if before != plain {
                                    return Err(format!(
                                        "{nonce:?} sealed {before:?} and then {plain:?}"
                                    ));
                                }
                            }
                        }
                        // The transfer stops; a later run starts afresh.
                        Err(SealError::SourceChanged { .. }) => {}
                        Err(e @ SealError::Conflict { .. }) => {
                            return Err(format!("{e:?} from the sender's own plan"))
                        }
                    }
                }
                Step::Edit { index } => {
                    *content.entry(index).or_insert(0) += 1;
                }
                Step::Flush => durable = live.clone(),
                Step::Crash { early } => {
                    live = durable.clone();
                    book = SealBook::start(live.run, CHUNKS, true).ok_or("no run")?;
                    if early {
                        // Killed before the run was durable: it sealed
                        // nothing (the sender sends nothing until then).
                        book = SealBook::start(live.run, CHUNKS, true).ok_or("no run")?;
                    }
                    live.run = book.run();
                    durable.run = live.run;
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn no_nonce_seals_two_plaintexts_across_crashes_and_edits(
            steps in proptest::collection::vec(step(), 1..120)
        ) {
            prop_assert_eq!(run_steps(&steps), Ok(()));
        }
    }

    #[test]
    fn the_crash_the_review_found_is_safe() {
        // Random chunks push the streak past its limit, so chunk 9 (text)
        // goes raw; kill -9 before its record is flushed; the next run
        // starts its streak at 0 and gzips chunk 9. Different plaintexts,
        // but under different runs' nonces.
        let mut steps: Vec<Step> = (0..9)
            .map(|index| Step::Seal {
                index,
                shrinks: false,
            })
            .collect();
        steps.push(Step::Flush);
        steps.push(Step::Seal {
            index: 9,
            shrinks: true,
        });
        steps.push(Step::Crash { early: false });
        steps.push(Step::Seal {
            index: 9,
            shrinks: true,
        });
        assert_eq!(run_steps(&steps), Ok(()));
    }

    #[test]
    fn a_resend_in_the_same_run_is_built_as_first_sent() {
        let mut book = SealBook::start(0, 4, true).unwrap();
        let planned = book.plan(1);
        assert_eq!(planned, Gzip::IfUseful);
        book.admit(1, planned, &[1; 32], true, None).unwrap();
        assert_eq!(book.plan(1), Gzip::Always);
        assert_eq!(
            book.admit(1, Gzip::IfUseful, &[1; 32], false, Some(&[1; 32])),
            Err(SealError::Conflict { index: 1 })
        );
        assert_eq!(
            book.admit(1, Gzip::Always, &[2; 32], true, Some(&[1; 32])),
            Err(SealError::SourceChanged { index: 1 })
        );
        assert_eq!(
            book.admit(1, Gzip::Always, &[1; 32], true, Some(&[1; 32])),
            Ok(Admitted { record: false })
        );
    }

    #[test]
    fn runs_never_repeat_and_run_out_cleanly() {
        let a = SealBook::start(0, 1, false).unwrap();
        let b = SealBook::start(a.run(), 1, false).unwrap();
        assert!(b.run() > a.run());
        assert_eq!(b.nonce(0).run, b.run());
        assert!(b.nonce(0).last);
        assert!(SealBook::start(u32::MAX, 1, false).is_none());
    }
}
