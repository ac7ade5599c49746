//! Opening a transport from its URI: the one place that knows every kind,
//! so the engine names none of them.

use super::local::LocalSpool;
use super::memory::Memory;
use super::messenger::{self, Messenger};
use super::shipper::Shipper;
use super::telegram::{self, Telegram};
use super::whatsapp::{self, Whatsapp};
use super::{Address, Capabilities, Health, Message, Received, SendError, Transport, TransportUri};
use crate::error::{CoreError, Result};

/// Any transport pigeon has, opened. The link is generic over its
/// transport; this lets one list of links hold every kind at once (and
/// each call is one `match`, nothing boxed).
pub enum AnyTransport {
    Local(LocalSpool),
    Memory(Memory),
    Telegram(Telegram),
    Shipper(Shipper),
    Whatsapp(Whatsapp),
    Messenger(Messenger),
}

/// Who opens it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A client: a spool folder that does not exist is a typo to report.
    Client,
    /// An agent: it makes its spool folder, and its inbox is its own alone.
    Agent,
}

/// Open the transport `uri` names for the party whose address (key id on a
/// spool) is `me`.
pub fn open(uri: &TransportUri, me: &Address, side: Side) -> Result<AnyTransport> {
    let bad = |reason: String| CoreError::BadTransport {
        uri: uri.to_string(),
        reason,
    };
    Ok(match uri {
        TransportUri::Local(l) => {
            if side == Side::Client && !l.dir.is_dir() {
                return Err(bad(format!(
                    "the spool folder {} does not exist: check the path (the agent's `--transport` names the same folder, and the agent creates it when it starts)",
                    l.dir.display()
                )));
            }
            AnyTransport::Local(LocalSpool::open(
                l.clone(),
                me.clone(),
                side == Side::Agent,
            )?)
        }
        TransportUri::Memory(m) => AnyTransport::Memory(Memory::open(m.clone(), me.clone())),
        TransportUri::Telegram(t) => {
            AnyTransport::Telegram(Telegram::open(t.clone()).map_err(bad)?)
        }
        TransportUri::Shipper(t) => AnyTransport::Shipper(Shipper::open(t.clone()).map_err(bad)?),
        TransportUri::Whatsapp(t) => {
            AnyTransport::Whatsapp(Whatsapp::open(t.clone()).map_err(bad)?)
        }
        TransportUri::Messenger(t) => {
            AnyTransport::Messenger(Messenger::open(t.clone()).map_err(bad)?)
        }
    })
}

/// The profile a link on `uri` paces itself by, by name.
pub fn profile(uri: &TransportUri) -> &'static str {
    match uri {
        TransportUri::Local(l) => l.profile.name(),
        TransportUri::Memory(m) => m.0.profile.name(),
        TransportUri::Telegram(t) => match t.mode {
            telegram::Mode::Text => "telegram-text",
            telegram::Mode::Document => "telegram-doc",
        },
        TransportUri::Shipper(_) => "shipper",
        TransportUri::Whatsapp(t) => match t.meta.mode {
            whatsapp::Mode::Text => "whatsapp-text",
            whatsapp::Mode::Document => "whatsapp-doc",
        },
        TransportUri::Messenger(t) => match t.meta.mode {
            messenger::Mode::Text => "messenger-text",
            messenger::Mode::Document => "messenger-doc",
        },
    }
}

/// `each!(self, t => expr)`: `expr` on whichever transport this is.
macro_rules! each {
    ($any:expr, $t:ident => $e:expr) => {
        match $any {
            AnyTransport::Local($t) => $e,
            AnyTransport::Memory($t) => $e,
            AnyTransport::Telegram($t) => $e,
            AnyTransport::Shipper($t) => $e,
            AnyTransport::Whatsapp($t) => $e,
            AnyTransport::Messenger($t) => $e,
        }
    };
}

impl Transport for AnyTransport {
    fn capabilities(&self) -> &Capabilities {
        each!(self, t => t.capabilities())
    }

    fn limits(&self) -> tokio::sync::watch::Receiver<Capabilities> {
        each!(self, t => t.limits())
    }

    fn describe(&self) -> String {
        each!(self, t => t.describe())
    }

    async fn send(&self, to: &Address, message: Message) -> std::result::Result<(), SendError> {
        each!(self, t => t.send(to, message).await)
    }

    fn incoming(&mut self) -> tokio::sync::mpsc::Receiver<Received> {
        each!(self, t => t.incoming())
    }

    fn health(&self) -> std::sync::Arc<Health> {
        each!(self, t => t.health())
    }

    fn introduce(&self, to: &Address) {
        each!(self, t => t.introduce(to))
    }

    fn answers_whoever_writes(&self) -> bool {
        each!(self, t => t.answers_whoever_writes())
    }
}
