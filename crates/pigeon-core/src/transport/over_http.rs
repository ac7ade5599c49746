//! The one [`Transport`] over an HTTP API: [`HttpTransport`], generic over
//! the platform's [`Api`].
//!
//! Telegram, WhatsApp, Messenger and Shipper differ in their URLs, bodies,
//! authentication, error envelopes and in how what arrives is fetched (a
//! long poll, a webhook). They are the same in everything the link sees:
//! a message is admitted by the channel's limits, goes to the one
//! correspondent (or, on `*`, to whoever wrote), and fails as a
//! [`SendError`]; what arrives is handed on through one bounded queue; the
//! health is shared with the task that receives. That sameness lives here
//! once; each platform's module writes only its [`Api`] (how one message
//! is sent) and its receiving task, which `HttpTransport::start` starts.
//!
//! ```text
//!   link ──send──▶ HttpTransport<A> ── admit, recipient ──▶ A::send ──▶ provider
//!   link ◀─incoming── mpsc ◀── receiving task (poll / webhook) ◀────── provider
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::http::CallError;
use super::{
    Address, Capabilities, Correspondents, Health, Message, Received, SendError, Transport,
};

/// What a platform tells [`HttpTransport`]: how one message goes out.
pub trait Api: Send + Sync + 'static {
    /// The URI the transport was opened with, shown by
    /// [`Transport::describe`].
    type Uri: std::fmt::Display + Send + Sync + 'static;

    /// Send `message`, admitted already, to `to` (the address the
    /// [`Correspondents`] chose): the provider's answer as the link sees
    /// it (a refused message comes back inside the error where it may be
    /// sent again).
    fn send(
        &self,
        to: &Address,
        message: Message,
    ) -> impl Future<Output = Result<(), SendError>> + Send;

    /// Whether `message` may go now. By default: within `caps`, the limits
    /// the URI gives. A platform whose server tells its limits at run time
    /// (Shipper) judges by what it learned instead.
    fn admit(
        &self,
        caps: &Capabilities,
        message: Message,
    ) -> impl Future<Output = Result<Message, SendError>> + Send {
        let admitted = caps.admit(&message).map(|()| message);
        async move { admitted }
    }

    /// The limits as they change at run time, for a platform that learns
    /// them ([`Transport::limits`]); `None`: the URI's, for ever.
    fn limits(&self) -> Option<watch::Receiver<Capabilities>> {
        None
    }
}

/// An open link on a platform's HTTP API.
pub struct HttpTransport<A: Api> {
    uri: A::Uri,
    caps: Capabilities,
    api: Arc<A>,
    inbox: Option<mpsc::Receiver<Received>>,
    health: Arc<Health>,
    correspondents: Arc<Correspondents>,
    /// Where its webhook listens, on a platform that has one.
    webhook: Option<SocketAddr>,
}

/// How many received messages wait for the link before the receiving
/// task waits too.
const INBOX: usize = 16;

impl<A: Api> HttpTransport<A> {
    /// A transport sending through `api` to `peer` (the URI's address;
    /// `*` answers whoever writes), its receiving task started:
    /// `receive` is given the correspondents and the inbox's sending end,
    /// and returns the task (a poll loop, or the hand-on of a webhook's
    /// payloads).
    pub(crate) fn start<F>(
        uri: A::Uri,
        caps: Capabilities,
        peer: &str,
        api: A,
        health: Arc<Health>,
        receive: impl FnOnce(&Arc<A>, Arc<Correspondents>, mpsc::Sender<Received>) -> F,
    ) -> HttpTransport<A>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let api = Arc::new(api);
        let (tx, rx) = mpsc::channel(INBOX);
        let correspondents = Arc::new(Correspondents::new(peer));
        crate::task::spawn(receive(&api, correspondents.clone(), tx));
        HttpTransport {
            uri,
            caps,
            api,
            inbox: Some(rx),
            health,
            correspondents,
            webhook: None,
        }
    }

    /// The same, noting where its webhook listens.
    pub(crate) fn with_webhook(mut self, at: SocketAddr) -> HttpTransport<A> {
        self.webhook = Some(at);
        self
    }

    /// Where the webhook listens (the port, when `listen` asked for 0);
    /// `None` on a platform that polls.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook
    }
}

impl<A: Api> Transport for HttpTransport<A> {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn limits(&self) -> watch::Receiver<Capabilities> {
        self.api
            .limits()
            .unwrap_or_else(|| watch::channel(self.caps.clone()).1)
    }

    fn describe(&self) -> String {
        self.uri.to_string()
    }

    async fn send(&self, to: &Address, message: Message) -> Result<(), SendError> {
        let message = self.api.admit(&self.caps, message).await?;
        let to = self.correspondents.recipient(to)?;
        self.api.send(&to, message).await
    }

    fn incoming(&mut self) -> mpsc::Receiver<Received> {
        self.inbox.take().unwrap_or_else(|| mpsc::channel(1).1)
    }

    fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    fn introduce(&self, to: &Address) {
        self.correspondents.introduce(to);
    }

    fn answers_whoever_writes(&self) -> bool {
        self.correspondents.is_any()
    }
}

/// The pace of a poll loop after failed polls: a rate limit's wait as
/// asked, half a minute after a refusal only the user can fix (said as the
/// transport's `receive` problem), and from 1 s doubling to 30 s, with up
/// to a quarter more at random, after failures worth trying again.
#[derive(Debug)]
pub(crate) struct PollBackoff {
    next: Duration,
}

/// The first wait after a failure worth trying again.
const POLL_BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait after failures worth trying again, and the wait after
/// a permanent one.
const POLL_BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Default for PollBackoff {
    fn default() -> PollBackoff {
        PollBackoff {
            next: POLL_BACKOFF_FIRST,
        }
    }
}

impl PollBackoff {
    /// A poll was answered: the receive side works.
    pub fn answered(&mut self, health: &Health) {
        self.next = POLL_BACKOFF_FIRST;
        health.clear("receive");
    }

    /// A poll failed with `e`: how long to wait before the next.
    pub fn failed(&mut self, e: CallError, health: &Health) -> Duration {
        match e {
            CallError::RateLimited(d) => d,
            CallError::Permanent(m) => {
                health.problem("receive", m);
                POLL_BACKOFF_MAX
            }
            CallError::Transient(m) => {
                let backoff = self.next;
                tracing::warn!("{m}; polling again in {backoff:?}");
                let jitter = backoff.mul_f64(rand::random::<f64>() * 0.25);
                self.next = (backoff * 2).min(POLL_BACKOFF_MAX);
                backoff + jitter
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A platform that takes every message and remembers where it went.
    struct Taken(std::sync::Mutex<Vec<(Address, Message)>>);

    impl Api for Taken {
        type Uri = &'static str;

        async fn send(&self, to: &Address, message: Message) -> Result<(), SendError> {
            crate::task::lock(&self.0).push((to.clone(), message));
            Ok(())
        }
    }

    fn taken(peer: &str) -> HttpTransport<Taken> {
        let caps = Capabilities {
            max_message: 100,
            ..super::super::Profile::TelegramText.capabilities()
        };
        HttpTransport::start(
            "stub:",
            caps,
            peer,
            Taken(std::sync::Mutex::default()),
            Arc::default(),
            |_, _, tx| async move { drop(tx) },
        )
    }

    fn sent(t: &HttpTransport<Taken>) -> Vec<(Address, Message)> {
        crate::task::lock(&t.api.0).clone()
    }

    /// Issue 27: what all four platforms shared is written once, and
    /// holds for each: the limit before the provider, the one peer, `*`
    /// answering only who wrote or was introduced.
    #[tokio::test]
    async fn a_send_is_admitted_then_addressed_before_the_platform_sees_it() {
        let fixed = taken("@peer");
        let big = Message::Text("x".repeat(101));
        assert!(matches!(
            fixed.send(&"any".into(), big).await,
            Err(SendError::TooLarge {
                size: 101,
                limit: 100
            })
        ));
        fixed
            .send(&"any".into(), Message::Text("hi".into()))
            .await
            .unwrap();
        assert_eq!(
            sent(&fixed),
            vec![("@peer".into(), Message::Text("hi".into()))]
        );
        assert!(!fixed.answers_whoever_writes());
        assert_eq!(fixed.limits().borrow().max_message, 100);
        assert_eq!(fixed.describe(), "stub:");

        let any = taken("*");
        assert!(any.answers_whoever_writes());
        let refused = any.send(&"7".into(), Message::Text("hi".into())).await;
        assert!(
            matches!(&refused, Err(SendError::Failed(m)) if m.contains("has not written")),
            "{refused:?}"
        );
        assert!(sent(&any).is_empty(), "nothing reached the platform");
        any.introduce(&"7".into());
        any.send(&"7".into(), Message::Text("hi".into()))
            .await
            .unwrap();
        assert_eq!(sent(&any), vec![("7".into(), Message::Text("hi".into()))]);
    }

    #[tokio::test]
    async fn the_inbox_is_handed_over_once() {
        let mut t = taken("@peer");
        let _first = t.incoming();
        assert!(
            t.incoming().recv().await.is_none(),
            "a second call gets a closed channel"
        );
    }

    #[test]
    fn failed_polls_wait_longer_each_time_until_one_is_answered() {
        let health = Health::default();
        let mut pace = PollBackoff::default();
        let waits: Vec<Duration> = (0..7)
            .map(|_| pace.failed(CallError::Transient("down".into()), &health))
            .collect();
        for (wait, floor) in waits.iter().zip([1, 2, 4, 8, 16, 30, 30]) {
            let floor = Duration::from_secs(floor);
            assert!(*wait >= floor && *wait <= floor.mul_f64(1.25), "{waits:?}");
        }
        // A refusal for good is said, and waited out for half a minute.
        let wait = pace.failed(CallError::Permanent("bad token".into()), &health);
        assert_eq!(wait, POLL_BACKOFF_MAX);
        assert_eq!(health.problems(), vec!["bad token".to_string()]);
        // A rate limit's wait is the provider's.
        let asked = Duration::from_secs(7);
        assert_eq!(pace.failed(CallError::RateLimited(asked), &health), asked);
        pace.answered(&health);
        assert!(health.problems().is_empty());
        let wait = pace.failed(CallError::Transient("down".into()), &health);
        assert!(wait < Duration::from_secs(2), "{wait:?}");
    }
}
