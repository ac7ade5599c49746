//! An in-memory channel, for the simulator: `mem:<NET>?profile=..&loss=..`.
//!
//! Every party that opens `mem:<NET>` in this process shares one [`Net`]:
//! an inbox per address, and the provider's faults (the spool's loss,
//! duplication, reordering, corruption and delay, seeded) plus what only a
//! test can do to a live channel: [`Net::partition`] (everything sent is
//! lost), [`Net::fail_sends`] (every send errors, as a spool made
//! unwritable would), [`Net::stall`] (sends hang, as a provider's
//! request would) and [`Net::blackhole`] (messages to one party vanish
//! without an error: a channel that swallows one direction). Messages for a party that is not reading (crashed and
//! not yet restarted) wait for it, as a messaging platform keeps them.
//!
//! Time is tokio's, so a simulated hour on a paused clock takes no time.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::local::LocalUri;
use super::{Address, Capabilities, Message, Received, SendError, Transport};
use crate::task::lock;

/// A parsed `mem:` URI: the spool's options, with the net's name for a
/// folder.
#[derive(Clone, Debug, PartialEq)]
pub struct MemUri(pub LocalUri);

impl MemUri {
    pub fn parse(rest: &str) -> Result<MemUri, String> {
        LocalUri::parse(rest).map(MemUri)
    }

    pub fn net(&self) -> String {
        self.0.dir.display().to_string()
    }
}

impl std::fmt::Display for MemUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let local = self.0.to_string();
        write!(f, "mem:{}", local.strip_prefix("local:").unwrap_or(&local))
    }
}

/// What a net did, by kind: the simulator's report.
#[derive(Debug, Default)]
pub struct NetCounts {
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub lost: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
    pub corrupted: AtomicU64,
    /// Lost to a partition or refused by a failing net.
    pub cut: AtomicU64,
}

/// One shared channel.
#[derive(Default)]
pub struct Net {
    inboxes: Mutex<HashMap<Address, Inbox>>,
    partitioned: AtomicBool,
    failing: AtomicBool,
    calm: AtomicBool,
    stalled_until: Mutex<Option<Instant>>,
    blackhole: Mutex<Option<Address>>,
    pub counts: NetCounts,
}

#[derive(Default)]
struct Inbox {
    reader: Option<mpsc::UnboundedSender<Received>>,
    /// Arrived while nobody was reading.
    waiting: VecDeque<Vec<u8>>,
}

/// The net called `name` in this process, made on first use.
pub fn net(name: &str) -> Arc<Net> {
    static NETS: OnceLock<Mutex<HashMap<String, Arc<Net>>>> = OnceLock::new();
    lock(NETS.get_or_init(Mutex::default))
        .entry(name.to_string())
        .or_default()
        .clone()
}

impl Net {
    /// Lose everything sent while `on`.
    pub fn partition(&self, on: bool) {
        self.partitioned.store(on, Ordering::Relaxed);
    }

    /// Fail every send while `on`.
    pub fn fail_sends(&self, on: bool) {
        self.failing.store(on, Ordering::Relaxed);
    }

    /// No more probabilistic faults while `on`: the provider behaves.
    pub fn calm(&self, on: bool) {
        self.calm.store(on, Ordering::Relaxed);
    }

    /// Swallow every message to `to` (none: deliver again), the sender
    /// told it went.
    pub fn blackhole(&self, to: Option<Address>) {
        *lock(&self.blackhole) = to;
    }

    /// Hold every send until `until`.
    pub fn stall(&self, until: Instant) {
        *lock(&self.stalled_until) = Some(until);
    }

    fn deliver(&self, to: &Address, bytes: Vec<u8>) {
        self.counts.delivered.fetch_add(1, Ordering::Relaxed);
        let mut inboxes = lock(&self.inboxes);
        let inbox = inboxes.entry(to.clone()).or_default();
        let message = Received {
            from: None,
            message: Message::Binary(bytes),
        };
        if let Some(reader) = &inbox.reader {
            match reader.send(message) {
                Ok(()) => {}
                Err(back) => {
                    inbox.reader = None;
                    if let Message::Binary(b) = back.0.message {
                        inbox.waiting.push_back(b);
                    }
                }
            }
        } else if let Message::Binary(b) = message.message {
            inbox.waiting.push_back(b);
        }
    }

    /// Read `me`'s inbox from now on (a restarted party takes over).
    fn read(&self, me: &Address) -> mpsc::UnboundedReceiver<Received> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inboxes = lock(&self.inboxes);
        let inbox = inboxes.entry(me.clone()).or_default();
        for bytes in inbox.waiting.drain(..) {
            let _ = tx.send(Received {
                from: None,
                message: Message::Binary(bytes),
            });
        }
        inbox.reader = Some(tx);
        rx
    }
}

/// One party's end of a net.
pub struct Memory {
    uri: MemUri,
    caps: Capabilities,
    net: Arc<Net>,
    rng: Mutex<StdRng>,
    inbox: Option<mpsc::Receiver<Received>>,
    health: Arc<super::Health>,
}

impl Memory {
    pub fn open(uri: MemUri, me: Address) -> Memory {
        let net = net(&uri.net());
        let caps = uri.0.capabilities();
        let rng = match uri.0.faults.seed {
            // The seed as given: the simulator gives each party its own,
            // so a seed replays the same faults whatever the keys.
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        // The link reads a bounded channel; the net's own queue is not.
        let mut unbounded = net.read(&me);
        let (tx, rx) = mpsc::channel(64);
        crate::task::spawn(async move {
            // Ends when the party stops reading, so the net keeps what
            // arrives next for whoever reads this inbox after it.
            loop {
                tokio::select! {
                    m = unbounded.recv() => match m {
                        Some(m) => if tx.send(m).await.is_err() { return },
                        None => return,
                    },
                    () = tx.closed() => return,
                }
            }
        });
        Memory {
            uri,
            caps,
            net,
            rng: Mutex::new(rng),
            inbox: Some(rx),
            health: Arc::default(),
        }
    }

    fn deliver_later(&self, to: &Address, bytes: Vec<u8>, delay: Duration) {
        let net = self.net.clone();
        let to = to.clone();
        crate::task::spawn(async move {
            tokio::time::sleep(delay).await;
            net.deliver(&to, bytes);
        });
    }
}

impl Transport for Memory {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn describe(&self) -> String {
        self.uri.to_string()
    }

    fn health(&self) -> Arc<super::Health> {
        self.health.clone()
    }

    async fn send(&self, to: &Address, message: Message) -> Result<(), SendError> {
        self.caps.admit(&message)?;
        let stall = *lock(&self.net.stalled_until);
        if let Some(until) = stall {
            tokio::time::sleep_until(until).await;
        }
        let counts = &self.net.counts;
        counts.sent.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(%to, size = message.len(), "mem: a message leaves");
        if self.net.failing.load(Ordering::Relaxed) {
            counts.cut.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::Failed(
                "the simulated channel refuses sends".into(),
            ));
        }
        if self.net.partitioned.load(Ordering::Relaxed)
            || lock(&self.net.blackhole).as_ref() == Some(to)
        {
            counts.cut.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let mut bytes = message.into_bytes();
        let fate = if self.net.calm.load(Ordering::Relaxed) {
            self.net.deliver(to, bytes);
            return Ok(());
        } else {
            let mut rng = lock(&self.rng);
            self.uri
                .0
                .faults
                .draw(&mut *rng, &mut bytes, self.caps.text_only)
        };
        let Some(fate) = fate else {
            counts.lost.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        for (happened, counter) in [
            (fate.corrupted, &counts.corrupted),
            (fate.reordered, &counts.reordered),
            (fate.copy_after.is_some(), &counts.duplicated),
        ] {
            if happened {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(after) = fate.copy_after {
            self.deliver_later(to, bytes.clone(), after);
        }
        if fate.delay.is_zero() {
            self.net.deliver(to, bytes);
        } else {
            self.deliver_later(to, bytes, fate.delay);
        }
        Ok(())
    }

    fn incoming(&mut self) -> mpsc::Receiver<Received> {
        self.inbox.take().unwrap_or_else(|| mpsc::channel(1).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(net: &str, query: &str, me: &str) -> Memory {
        Memory::open(MemUri::parse(&format!("{net}?{query}")).unwrap(), me.into())
    }

    #[tokio::test(start_paused = true)]
    async fn a_blackhole_swallows_one_direction_without_an_error() {
        let mut a = open("blackhole", "", "a");
        let mut b = open("blackhole", "", "b");
        let mut a_in = a.incoming();
        let mut b_in = b.incoming();
        let net = net("blackhole");
        net.blackhole(Some("b".into()));
        a.send(&"b".into(), Message::Binary(vec![1])).await.unwrap();
        b.send(&"a".into(), Message::Binary(vec![2])).await.unwrap();
        assert_eq!(a_in.recv().await.unwrap().message, Message::Binary(vec![2]));
        net.blackhole(None);
        a.send(&"b".into(), Message::Binary(vec![3])).await.unwrap();
        // The message sent into the hole never comes.
        assert_eq!(b_in.recv().await.unwrap().message, Message::Binary(vec![3]));
        assert_eq!(net.counts.cut.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn messages_wait_for_a_party_that_is_not_reading() {
        let a = open("wait-for-reader", "", "a");
        let b = open("wait-for-reader", "", "b");
        drop(b);
        tokio::task::yield_now().await;
        for i in 0..3u8 {
            a.send(&"b".into(), Message::Binary(vec![i])).await.unwrap();
        }
        let mut b = open("wait-for-reader", "", "b").incoming();
        for i in 0..3u8 {
            assert_eq!(b.recv().await.unwrap().message, Message::Binary(vec![i]));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn partitions_lose_and_failing_nets_refuse() {
        let a = open("cut", "", "a");
        let mut b = open("cut", "", "b").incoming();
        let n = net("cut");
        n.partition(true);
        a.send(&"b".into(), Message::Binary(vec![1])).await.unwrap();
        n.partition(false);
        n.fail_sends(true);
        assert!(a.send(&"b".into(), Message::Binary(vec![2])).await.is_err());
        n.fail_sends(false);
        a.send(&"b".into(), Message::Binary(vec![3])).await.unwrap();
        assert_eq!(b.recv().await.unwrap().message, Message::Binary(vec![3]));
        assert_eq!(n.counts.cut.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_net_holds_sends_until_it_recovers() {
        let a = open("stall", "", "a");
        let t0 = Instant::now();
        net("stall").stall(t0 + Duration::from_secs(30));
        a.send(&"b".into(), Message::Binary(vec![1])).await.unwrap();
        assert!(t0.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_seed_gives_the_same_faults() {
        let run = |name: &'static str| async move {
            let a = open(name, "loss=0.3&dup=0.3&corrupt=0.3&seed=9", "a");
            let mut b = open(name, "", "b").incoming();
            for i in 0..200u8 {
                a.send(&"b".into(), Message::Binary(vec![i; 8]))
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut got = vec![];
            while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), b.recv()).await {
                got.push(m.message);
            }
            got
        };
        let first = run("seeded-1").await;
        assert!(first.len() > 100 && first.len() < 220, "{}", first.len());
        assert_eq!(first, run("seeded-2").await);
    }
}
