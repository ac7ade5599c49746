//! The local spool: a folder that behaves like a hostile messaging channel.
//!
//! Layout: `<spool>/<address>/` is one party's inbox; each message is one
//! file, written under a temporary name and renamed into place, so a reader
//! never sees half a message. Names sort in the order they were delivered.
//!
//! The sending side plays the provider: it refuses messages over the
//! profile's limit and, when asked, loses, duplicates, delays, reorders and
//! corrupts them (seeded, so a failing run can be replayed). With
//! `transcript=1` it also appends every message it delivers to
//! `<spool>/transcript/<from>.log`, which is what a provider would see: the
//! tests scan it for plaintext.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::mpsc;

use super::{Address, Capabilities, Faults, Message, Profile, Received, SendError, Transport};
use crate::error::CoreError;

/// A parsed `local:` URI.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalUri {
    pub dir: PathBuf,
    pub profile: Profile,
    pub faults: Faults,
    pub bytes_per_min: Option<u64>,
    pub msgs_per_min: Option<u32>,
    pub transcript: bool,
    /// What this one link may send (`bwlimit=`, set by [`TransportUri::parse`](super::TransportUri::parse)).
    pub bwlimit: Option<crate::bwlimit::BwLimit>,
    /// Message slots left free of bulk data (`reserve=N/M`, set by
    /// [`TransportUri::parse`](super::TransportUri::parse)).
    pub reserve: Option<crate::link::Reserve>,
    /// The text alphabet asked for (`alphabet=`, set by [`TransportUri::parse`](super::TransportUri::parse)).
    pub alphabet: Option<crate::alphabet::Alphabet>,
}

impl LocalUri {
    pub fn parse(rest: &str) -> Result<LocalUri, String> {
        let (dir, query) = match rest.split_once('?') {
            Some((d, q)) => (d, q),
            None => (rest, ""),
        };
        if dir.is_empty() {
            return Err("local: needs a spool folder, e.g. local:/tmp/pigeon-spool".into());
        }
        let mut uri = LocalUri {
            dir: PathBuf::from(dir),
            profile: Profile::Unlimited,
            faults: Faults::default(),
            bytes_per_min: None,
            msgs_per_min: None,
            transcript: false,
            bwlimit: None,
            reserve: None,
            alphabet: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not key=value"))?;
            let prob = || -> Result<f64, String> {
                let p: f64 = value
                    .parse()
                    .map_err(|_| format!("{key}={value:?} is not a number"))?;
                if !(0.0..=1.0).contains(&p) {
                    return Err(format!(
                        "{key}={value} is not a probability between 0 and 1"
                    ));
                }
                Ok(p)
            };
            let int = || -> Result<u64, String> {
                value
                    .parse()
                    .map_err(|_| format!("{key}={value:?} is not a whole number"))
            };
            match key {
                "profile" => {
                    uri.profile = Profile::parse(value).ok_or_else(|| {
                        let names: Vec<_> = Profile::ALL.iter().map(|p| p.name()).collect();
                        format!("unknown profile {value:?}; known: {}", names.join(", "))
                    })?
                }
                "loss" => uri.faults.loss = prob()?,
                "dup" => uri.faults.dup = prob()?,
                "reorder" => uri.faults.reorder = prob()?,
                "corrupt" => uri.faults.corrupt = prob()?,
                "delay_ms" => uri.faults.delay = Duration::from_millis(int()?),
                "seed" => uri.faults.seed = Some(int()?),
                "bytes_per_min" => uri.bytes_per_min = Some(int()?.max(1)),
                "msgs_per_min" => {
                    uri.msgs_per_min = Some(int()?.clamp(1, u64::from(u32::MAX)) as u32)
                }
                "transcript" => uri.transcript = value == "1" || value == "true",
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        Ok(uri)
    }

    pub fn capabilities(&self) -> Capabilities {
        let mut caps = self.profile.capabilities();
        if self.bytes_per_min.is_some() {
            caps.bytes_per_minute = self.bytes_per_min;
        }
        if self.msgs_per_min.is_some() {
            caps.messages_per_minute = self.msgs_per_min;
        }
        caps.alphabet = self.alphabet.unwrap_or_default();
        caps
    }
}

impl std::fmt::Display for LocalUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "local:{}", self.dir.display())?;
        let mut q = vec![format!("profile={}", self.profile.name())];
        let fl = &self.faults;
        for (k, v) in [
            ("loss", fl.loss),
            ("dup", fl.dup),
            ("reorder", fl.reorder),
            ("corrupt", fl.corrupt),
        ] {
            if v > 0.0 {
                q.push(format!("{k}={v}"));
            }
        }
        if !fl.delay.is_zero() {
            q.push(format!("delay_ms={}", fl.delay.as_millis()));
        }
        if let Some(s) = fl.seed {
            q.push(format!("seed={s}"));
        }
        if let Some(b) = self.bytes_per_min {
            q.push(format!("bytes_per_min={b}"));
        }
        if let Some(m) = self.msgs_per_min {
            q.push(format!("msgs_per_min={m}"));
        }
        if self.transcript {
            q.push("transcript=1".into());
        }
        write!(f, "?{}", q.join("&"))
    }
}

/// Orders messages delivered by this process; combined with the clock so
/// several processes writing one inbox still interleave sensibly.
static DELIVERY_SEQ: AtomicU64 = AtomicU64::new(0);

/// The spool transport of one party.
pub struct LocalSpool {
    uri: LocalUri,
    caps: Capabilities,
    rng: Mutex<StdRng>,
    inbox: Option<mpsc::Receiver<Received>>,
    transcript: Option<Arc<std::sync::Mutex<std::fs::File>>>,
    health: Arc<super::Health>,
    /// Held while this party reads its inbox alone ([`LocalSpool::open`]).
    _inbox_lock: Option<std::fs::File>,
}

impl LocalSpool {
    /// Open the spool as party `me`, creating its inbox, and start reading it.
    ///
    /// `alone`: refuse if another process holds the inbox (an agent: two
    /// agents with one identity on one spool would each take half of every
    /// transfer). The hold is a lock the system drops with the process,
    /// so one killed leaves nothing stale.
    pub fn open(uri: LocalUri, me: Address, alone: bool) -> crate::error::Result<LocalSpool> {
        let opening = |e| CoreError::io(format!("opening spool {}", uri.dir.display()), e);
        let inbox_dir = uri.dir.join(&me);
        // The spool is shared with the other party: the user's own umask
        // decides who else may use it, not pigeon's private one.
        crate::home::create_public_dirs(&inbox_dir).map_err(opening)?;
        let inbox_lock = if alone {
            match lock_inbox(&inbox_dir).map_err(opening)? {
                Ok(file) => Some(file),
                Err(holder) => {
                    return Err(CoreError::BadTransport {
                        uri: uri.to_string(),
                        reason: format!(
                            "another process with this identity is already reading {} ({holder}): stop it first; two readers of one inbox would split every transfer between them",
                            inbox_dir.display()
                        ),
                    })
                }
            }
        } else {
            None
        };
        let caps = uri.capabilities();
        let transcript = if uri.transcript {
            let dir = uri.dir.join("transcript");
            crate::home::create_public_dirs(&dir).map_err(opening)?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{me}.log")))
                .map_err(opening)?;
            Some(Arc::new(std::sync::Mutex::new(file)))
        } else {
            None
        };
        // Hold few messages in memory: a few MB whatever the profile.
        let depth = (4 * 1024 * 1024 / caps.payload_bytes().max(1)).clamp(2, 64);
        let (tx, rx) = mpsc::channel(depth);
        crate::task::spawn(read_inbox(inbox_dir, tx));
        let rng = match uri.faults.seed {
            // Each party gets its own stream from one seed.
            Some(seed) => StdRng::seed_from_u64(seed ^ fxhash(&me)),
            None => StdRng::from_entropy(),
        };
        Ok(LocalSpool {
            uri,
            caps,
            rng: Mutex::new(rng),
            inbox: Some(rx),
            transcript,
            health: Arc::default(),
            _inbox_lock: inbox_lock,
        })
    }

    fn deliver_later(&self, to: &Address, bytes: Vec<u8>, delay: Duration) {
        let dir = self.uri.dir.join(to);
        let transcript = self.transcript.clone();
        crate::task::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ =
                tokio::task::spawn_blocking(move || deliver(&dir, &bytes, transcript.as_deref()))
                    .await;
        });
    }
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Write one message into an inbox: temp name, then rename.
fn deliver(
    inbox: &Path,
    bytes: &[u8],
    transcript: Option<&std::sync::Mutex<std::fs::File>>,
) -> std::io::Result<()> {
    crate::home::create_public_dirs(inbox)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let seq = DELIVERY_SEQ.fetch_add(1, Ordering::Relaxed);
    let name = format!("{now:020}-{:08x}-{seq:010}.msg", std::process::id());
    let tmp = inbox.join(format!(".tmp-{name}"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        crate::files::set_public_mode(&f, &tmp)?;
        f.write_all(bytes)?;
    }
    std::fs::rename(&tmp, inbox.join(&name))?;
    if let Some(t) = transcript {
        if let Ok(mut f) = t.lock() {
            let line = format!("{now} {}\n", hex::encode(bytes));
            let _ = f.write_all(line.as_bytes());
        }
    }
    Ok(())
}

/// Poll the inbox folder, oldest first, handing messages to `tx` and
/// deleting each file once read. Backs off to 25 ms when idle (a
/// readdir of an empty folder 40 times a second costs next to nothing).
async fn read_inbox(dir: PathBuf, tx: mpsc::Sender<Received>) {
    let mut idle = Duration::from_millis(2);
    loop {
        let listing = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || list_messages(&dir)).await
        };
        let names = listing.ok().and_then(Result::ok).unwrap_or_default();
        if names.is_empty() {
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(idle).await;
            idle = (idle * 2).min(Duration::from_millis(25));
            continue;
        }
        idle = Duration::from_millis(2);
        for name in names {
            let Ok(permit) = tx.reserve().await else {
                return;
            };
            let path = dir.join(&name);
            let read = tokio::task::spawn_blocking(move || {
                let bytes = std::fs::read(&path);
                let _ = std::fs::remove_file(&path);
                bytes
            })
            .await;
            let Ok(Ok(bytes)) = read else { continue };
            // The bytes as the sender wrote them: a spool is one channel
            // whatever profile each side paces itself by, and the link
            // tells base64 from raw (a client on `shipper` and an agent on
            // `telegram-text` meet).
            permit.send(Received {
                from: None,
                message: Message::Binary(bytes),
            });
        }
    }
}

fn list_messages(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".msg") && !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names)
}

/// Take `<inbox>/.reader` for this process; `Ok(Err(holder))` when
/// another process holds it.
fn lock_inbox(inbox: &Path) -> std::io::Result<Result<std::fs::File, String>> {
    use std::io::{Read, Seek};
    let path = inbox.join(".reader");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Ok(Err(match holder.trim() {
            "" => "another process".to_string(),
            pid => format!("pid {pid}"),
        }));
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    Ok(Ok(file))
}

impl Transport for LocalSpool {
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
        let mut bytes = message.into_bytes();
        let fate = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            self.uri
                .faults
                .draw(&mut *rng, &mut bytes, self.caps.text_only)
        };
        let Some(fate) = fate else {
            return Ok(());
        };
        if let Some(after) = fate.copy_after {
            self.deliver_later(to, bytes.clone(), after);
        }
        if !fate.delay.is_zero() {
            self.deliver_later(to, bytes, fate.delay);
            return Ok(());
        }
        let dir = self.uri.dir.join(to);
        let transcript = self.transcript.clone();
        tokio::task::spawn_blocking(move || deliver(&dir, &bytes, transcript.as_deref()))
            .await
            .map_err(|e| SendError::Failed(e.to_string()))?
            .map_err(|e| SendError::Failed(format!("writing to the spool: {e}")))?;
        Ok(())
    }

    fn incoming(&mut self) -> mpsc::Receiver<Received> {
        self.inbox.take().unwrap_or_else(|| mpsc::channel(1).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(dir: &Path, query: &str, me: &str) -> LocalSpool {
        let uri = LocalUri::parse(&format!("{}?{query}", dir.display())).unwrap();
        LocalSpool::open(uri, me.to_string(), false).unwrap()
    }

    #[tokio::test]
    async fn messages_arrive_in_order_without_faults() {
        let dir = tempfile::tempdir().unwrap();
        let a = spool(dir.path(), "", "a");
        let mut b = spool(dir.path(), "", "b").incoming();
        for i in 0..20u8 {
            a.send(&"b".to_string(), Message::Binary(vec![i; 10]))
                .await
                .unwrap();
        }
        for i in 0..20u8 {
            assert_eq!(
                b.recv().await.unwrap().message,
                Message::Binary(vec![i; 10])
            );
        }
    }

    #[tokio::test]
    async fn oversized_messages_are_refused_like_a_provider_would() {
        let dir = tempfile::tempdir().unwrap();
        let a = spool(dir.path(), "profile=telegram-text", "a");
        let err = a
            .send(&"b".to_string(), Message::Text("x".repeat(4097)))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            SendError::TooLarge {
                size: 4097,
                limit: 4096
            }
        ));
        a.send(&"b".to_string(), Message::Text("x".repeat(4096)))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn loss_and_duplication_happen_at_the_asked_rate() {
        let dir = tempfile::tempdir().unwrap();
        let a = spool(dir.path(), "loss=0.3&dup=0.2&seed=1", "a");
        let n = 400;
        for i in 0..n {
            a.send(&"b".to_string(), Message::Binary(vec![(i % 256) as u8]))
                .await
                .unwrap();
        }
        // Duplicates arrive a little later, as a provider's would.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let files = list_messages(&dir.path().join("b")).unwrap().len() as f64;
        // Expected 0.7 * 1.2 * 400 = 336.
        assert!((280.0..390.0).contains(&files), "{files}");
    }
}
