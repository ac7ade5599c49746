//! The HTTP layer every platform transport shares: one client (rustls with
//! the `webpki-roots` certificates, because the platform verifier panics on
//! Android without a JVM, i.e. under Termux), one place for timeouts, and
//! the reading of providers' "slow down" answers.

use std::time::Duration;

/// Time to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a request that is not a long poll.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The shared client. Requests set their own total timeout: a long poll's
/// must exceed its poll time.
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("pigeon/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot set up HTTPS: {e}"))
}

/// A client that follows no redirects, for URLs a message names (a
/// redirect could point anywhere, the machine's own network included).
pub fn client_no_redirects() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pigeon/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot set up HTTPS: {e}"))
}

/// An HTTP error as a user may see it: never with the URL (a bot token is
/// part of Telegram's URLs).
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    if e.is_timeout() {
        "the request timed out".to_string()
    } else if e.is_connect() {
        // reqwest says only "error sending request"; the cause (refused,
        // no such host, a TLS failure) is what the user acts on.
        let cause = innermost(&e).to_string();
        if refused(&e) {
            format!("cannot connect: {cause}; is the address (host and port) right, and is the service running?")
        } else {
            format!("cannot connect: {cause}")
        }
    } else {
        e.to_string()
    }
}

/// Nothing listens at the address: the connection was refused. Met from
/// the start, it is a wrong host or port ([`super::Health::unreachable`]).
pub fn refused(e: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The last error in `e`'s chain of sources: the one that says what failed.
fn innermost<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    let mut at = e;
    while let Some(next) = at.source() {
        at = next;
    }
    at
}

/// The longest wait a provider may ask for: a hostile one must not park a
/// link for ever (or overflow its clock).
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// A wait of `secs` a provider asked for, capped at [`MAX_WAIT`].
pub fn provider_wait(secs: u64) -> Duration {
    Duration::from_secs(secs).min(MAX_WAIT)
}

/// `Retry-After` in seconds (the HTTP-date form is not used by the APIs
/// pigeon speaks), capped at [`MAX_WAIT`].
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(provider_wait(secs))
}

/// Largest answer to an API call (JSON), bytes.
pub const MAX_ANSWER: usize = 8 * 1024 * 1024;

/// Read a response's body, refusing one over `limit` bytes (by its
/// Content-Length at once, else as it streams in): a hostile server must
/// not fill memory.
pub async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(format!("the answer is over {limit} bytes; refused"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > limit {
            return Err(format!("the answer is over {limit} bytes; refused"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A call that reached no provider (`label` names it: "telegram
/// getUpdates"), said, and noted as `health`'s problem while the provider
/// has never answered ([`super::Health::unreachable`]). Still worth
/// trying again: the provider may be starting. The second half is whether
/// it was noted.
pub fn unanswered(label: &str, e: reqwest::Error, health: &super::Health) -> (String, bool) {
    let refused = refused(&e);
    let m = format!("{label}: {}", describe(e));
    let noted = refused && health.unreachable(m.clone());
    (m, noted)
}

/// What a provider answered: its status, the wait its `Retry-After` asks
/// for, and its body.
pub struct Answer {
    pub status: reqwest::StatusCode,
    pub header_wait: Option<Duration>,
    pub body: Vec<u8>,
}

/// Read `response` to a call (`label` names it), its body capped at
/// `limit` bytes; `health` learns that the provider answers. What the
/// answer means is the platform's to say.
pub async fn answer(
    label: &str,
    response: reqwest::Response,
    health: &super::Health,
    limit: usize,
) -> Result<Answer, CallError> {
    health.answered();
    let status = response.status();
    let header_wait = retry_after(response.headers());
    let body = read_capped(response, limit)
        .await
        .map_err(|e| CallError::Transient(format!("{label}: {e}")))?;
    Ok(Answer {
        status,
        header_wait,
        body,
    })
}

/// What a failed call to a provider means for the caller.
#[derive(Debug)]
pub enum CallError {
    /// Slow down: nothing before this much time has passed.
    RateLimited(Duration),
    /// Will not work until the user changes something (a token, a chat,
    /// a setting): said to them, with what to do.
    Permanent(String),
    /// Worth trying again (a timeout, a 5xx).
    Transient(String),
}

impl CallError {
    pub fn message(self) -> String {
        match self {
            CallError::RateLimited(d) => format!("rate limited for {d:?}"),
            CallError::Permanent(m) | CallError::Transient(m) => m,
        }
    }

    /// The link's view of a send that failed this way (a rate-limited
    /// message comes back to be sent again).
    pub fn into_send_error(self, message: super::Message) -> super::SendError {
        match self {
            CallError::RateLimited(retry_after) => super::SendError::RateLimited {
                retry_after,
                message,
            },
            CallError::Permanent(m) => super::SendError::Permanent(m),
            CallError::Transient(m) => super::SendError::Failed(m),
        }
    }
}

/// A secret named in a transport URI: where it is, never what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(std::path::PathBuf),
}

impl SecretSource {
    /// Read the secret (trimmed). The error says where it looked, never
    /// what it found.
    pub fn load(&self) -> Result<zeroize::Zeroizing<String>, String> {
        let value = match self {
            SecretSource::Env(var) => std::env::var(var).map_err(|_| {
                format!("the environment variable {var} is not set (it should hold the secret)")
            })?,
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?,
        };
        let value = zeroize::Zeroizing::new(value);
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(format!("{self} is empty"));
        }
        Ok(zeroize::Zeroizing::new(trimmed.to_string()))
    }
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Env(var) => write!(f, "the environment variable {var}"),
            SecretSource::File(path) => write!(f, "the file {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_ignores_the_rest() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn a_missing_secret_says_where_it_looked() {
        let err = SecretSource::Env("PIGEON_TEST_NO_SUCH_VAR".into())
            .load()
            .unwrap_err();
        assert!(err.contains("PIGEON_TEST_NO_SUCH_VAR"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  123:abc\n").unwrap();
        assert_eq!(*SecretSource::File(file).load().unwrap(), "123:abc");
    }
}
