//! Early data: a new upload's offer and first chunks in the handshake's
//! first message ([`crate::protocol::Early`]).
//!
//! Client side, an [`EarlyBox`] per peer: a sender whose transfer is new
//! puts its offer and first chunk frames in; the connector, about to send
//! a Hello on a slow link, waits up to [`EARLY_WAIT`] for them, takes what
//! fits, and tells each sender so. A sender whose entry was not taken in
//! time takes it back and offers the ordinary way.
//!
//! Agent side, an [`EarlyGate`]: early data is taken only while fresh by
//! the agent's clock and only once per session id, so a provider replaying
//! a recorded Hello changes nothing.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit};

use crate::protocol::{Control, Early};
use crate::view::TransferId;

/// How long a connector on a slow link waits for a sender's early data
/// before sending its Hello without: nothing next to a message that costs
/// seconds, and enough for a sender to record its run and seal a chunk.
pub(crate) const EARLY_WAIT: Duration = Duration::from_millis(500);

/// Links whose messages are at least this far apart take early data: there
/// a handshake's round trip costs more than starting at once is worth.
pub(crate) const EARLY_MIN_INTERVAL: Duration = Duration::from_secs(2);

/// Room a Hello takes besides its early data: frame and record headers,
/// session id, key, Noise's ephemeral key and two tags.
pub(crate) const HELLO_OVERHEAD: usize = 256;

/// One sender's early data, waiting for a Hello.
pub(crate) struct EarlyEntry {
    pub transfer: TransferId,
    pub offer: Control,
    /// Chunk frames, in order; they follow the Hello in its message.
    pub chunks: Vec<Vec<u8>>,
    /// The next chunk, when it is larger than what is left of the Hello's
    /// message (a chunk sized for a larger link, or a large file's first on
    /// a text channel): it goes as pieces, the first filling that message,
    /// in the room reserved for it on link `link`.
    pub tail: Option<EarlyTail>,
    /// Told when a Hello took this entry.
    pub taken: oneshot::Sender<()>,
}

/// A chunk that starts in the Hello's message and goes on in the next.
pub(crate) struct EarlyTail {
    pub link: usize,
    pub chunk: crate::link::ChunkFrame,
    pub permit: OwnedSemaphorePermit,
}

/// What senders have put in for the next Hello.
#[derive(Default)]
pub(crate) struct EarlyBox {
    entries: std::sync::Mutex<Vec<EarlyEntry>>,
    put: Notify,
}

impl EarlyBox {
    pub fn put(&self, entry: EarlyEntry) {
        super::lock(&self.entries).push(entry);
        self.put.notify_one();
    }

    /// Take `transfer`'s entry back if no Hello took it: true if it was
    /// still here.
    pub fn withdraw(&self, transfer: &TransferId) -> bool {
        let mut entries = super::lock(&self.entries);
        let before = entries.len();
        entries.retain(|e| &e.transfer != transfer);
        entries.len() != before
    }

    /// Wait up to `wait` for early data, then take the entries whose offers
    /// fit one Hello (the rest stay, and their senders take them back).
    pub async fn take(&self, wait: Duration) -> Vec<EarlyEntry> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if !super::lock(&self.entries).is_empty() {
                break;
            }
            tokio::select! {
                () = self.put.notified() => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let mut entries = super::lock(&self.entries);
        let mut taken = vec![];
        let mut offers = 0usize;
        while let Some(first) = entries.first() {
            let size = first.offer.encode().map_or(usize::MAX, |b| b.len());
            if offers.saturating_add(size) > crate::crypto::MAX_EARLY / 2 {
                break;
            }
            offers += size;
            taken.push(entries.remove(0));
        }
        taken
    }
}

/// The agent's memory of the early data it took.
#[derive(Default)]
pub(crate) struct EarlyGate {
    /// Session ids whose early data was taken, with its `made_unix`: kept
    /// until that falls out of the window, when staleness refuses a replay.
    seen: HashMap<[u8; 16], u64>,
}

/// Sessions whose early data one agent remembers at once; when full, early
/// data is refused (the offers come again sealed) rather than forgotten.
const MAX_REMEMBERED: usize = 4096;

impl EarlyGate {
    /// May early data made at `made_unix` in `session` be taken now?
    pub fn admit(
        &mut self,
        session: [u8; 16],
        early: &Early,
        now_unix: u64,
    ) -> std::result::Result<(), &'static str> {
        let window = Early::WINDOW_SECS;
        if early.made_unix.saturating_add(window) < now_unix
            || early.made_unix > now_unix.saturating_add(window)
        {
            return Err(
                "its clock is more than 10 minutes from ours (stale, replayed, or a clock to set)",
            );
        }
        self.seen
            .retain(|_, made| made.saturating_add(window) >= now_unix);
        if self.seen.contains_key(&session) {
            return Err("already taken once in this session (replayed)");
        }
        if self.seen.len() >= MAX_REMEMBERED {
            return Err("too many sessions opened in the last 10 minutes");
        }
        self.seen.insert(session, early.made_unix);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn early(made_unix: u64) -> Early {
        Early {
            made_unix,
            offers: vec![],
        }
    }

    #[test]
    fn early_data_is_taken_once_and_only_while_fresh() {
        let mut gate = EarlyGate::default();
        let now = 1_800_000_000;
        assert!(gate.admit([1; 16], &early(now - 5), now).is_ok());
        // The same Hello again, at once or nine minutes later: refused.
        assert!(gate.admit([1; 16], &early(now - 5), now).is_err());
        assert!(gate.admit([1; 16], &early(now - 5), now + 540).is_err());
        // Eleven minutes later it is stale, whatever the gate forgot.
        assert!(gate.admit([1; 16], &early(now - 5), now + 660).is_err());
        assert!(gate.admit([2; 16], &early(now + 700), now).is_err());
        assert!(gate.admit([3; 16], &early(now + 60), now).is_ok());
    }

    #[test]
    fn a_full_gate_refuses_rather_than_forgets() {
        let mut gate = EarlyGate::default();
        let now = 1_800_000_000;
        for i in 0..MAX_REMEMBERED as u32 {
            let mut id = [0; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            gate.admit(id, &early(now), now).unwrap();
        }
        assert!(gate.admit([0xff; 16], &early(now), now).is_err());
        // Once the window has moved on, room again.
        assert!(gate.admit([0xff; 16], &early(now + 601), now + 601).is_ok());
        assert!(
            gate.admit([0; 16], &early(now), now + 601).is_err(),
            "replay of the first is stale"
        );
    }
}
