//! The one error type of `pigeon-core`.
//!
//! Each variant says what happened in words a user can act on; the binary
//! prints them as they are, on one line.

use std::path::PathBuf;

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("the store in {path} is in use by another pigeon process{holder}; stop it or use another --home")]
    StoreLocked {
        path: PathBuf,
        /// Who holds it, as " (pid N, pigeon agent)", or empty if unknown.
        holder: String,
    },

    #[error("store error: {0}")]
    Store(String),

    #[error("cannot decode {what}: {reason}")]
    Decode { what: &'static str, reason: String },

    #[error("cannot encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },

    #[error("authentication failed: {0} (wrong key, or the message was altered in transit)")]
    Crypto(String),

    #[error("invalid remote path {path:?}: {reason}")]
    BadRemotePath { path: String, reason: &'static str },

    #[error("invalid transport {uri:?}: {reason}")]
    BadTransport { uri: String, reason: String },

    #[error(
        "invalid key {0:?}: a pigeon key is 64 hex characters, as printed by `pigeon keys show`"
    )]
    BadKey(String),

    #[error(
        "invalid peer name {0:?}: use letters, digits, '-', '_' or '.' (not first), at most 64"
    )]
    BadPeerName(String),

    #[error("no trusted peer named {0:?}; see `pigeon keys list`")]
    UnknownPeer(String),

    #[error("{0}")]
    PeerChoice(String),

    #[error("the agent refused: {0}")]
    Refused(String),

    #[error("no answer from the peer after {secs} s over {transport}; is `pigeon agent` running on the same transport, and does it trust this key?")]
    Timeout { secs: u64, transport: String },

    /// Every transport failed in a way only the user can fix (a wrong
    /// token, a port nothing listens on): each as `pigeon transports test`
    /// says it, and what to do.
    #[error("{0}")]
    NoWorkingTransport(String),

    #[error("integrity check failed: {0}")]
    Integrity(String),

    #[error("{0}")]
    Transfer(String),

    #[error("no transfer {0}; see `pigeon status`")]
    UnknownTransfer(String),

    #[error("the engine has stopped")]
    EngineStopped,

    #[error("{0}")]
    Config(String),
}

impl CoreError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CoreError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<sled::Error> for CoreError {
    fn from(e: sled::Error) -> Self {
        CoreError::Store(e.to_string())
    }
}

/// `.ctx("opening x")` on io results, so every io error says what it was doing.
pub trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| CoreError::io(context(), e))
    }
}
