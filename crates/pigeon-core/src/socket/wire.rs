//! The messages of the control socket, and their frames.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{OwnerInfo, FRAME_LIMIT};
use crate::codec;
use crate::engine::{DownloadOptions, RemoteEntry, TransferAction, UploadOptions};
use crate::error::{CoreError, Result};
use crate::ledger::CleanChoice;
use crate::view::{EngineSnapshot, Event, TransferId, TransferReport};

const VERSION: u8 = 1;

/// From a command to the owner.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum ToOwner {
    /// First, once. `follow`: pause what this client started if it goes
    /// away before the transfers end.
    Hello {
        protocol: u32,
        follow: bool,
    },
    Ask {
        seq: u64,
        ask: Ask,
    },
}

/// What a command asks of the owner's engine: [`crate::engine::ClientCommand`]
/// without its reply channels. Local paths are absolute.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Ask {
    Upload {
        local: PathBuf,
        remote: String,
        options: UploadOptions,
    },
    Download {
        remote: String,
        local: PathBuf,
        options: DownloadOptions,
    },
    List {
        dir: String,
    },
    Act {
        id: TransferId,
        action: TransferAction,
    },
    CancelTelling {
        id: TransferId,
        wait: Duration,
    },
    ResumeMatching {
        prefix: Option<String>,
    },
    Reports,
    Find {
        prefix: String,
    },
    Forget {
        prefix: String,
    },
    Clean {
        choice: CleanChoice,
        dry_run: bool,
    },
    // New variants go last: an owner of the same protocol may be older.
    Quota,
    Shares {
        op: crate::protocol::ShareOp,
    },
}

/// What an [`Ask`] got.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Answer {
    Id(TransferId),
    Ids(Vec<TransferId>),
    Entries(Vec<RemoteEntry>),
    Told(bool),
    Reports(Vec<TransferReport>),
    Report(Box<TransferReport>),
    Done,
    Quota(Vec<crate::policy::QuotaLine>),
    Shares(crate::engine::handle::SharesAnswer),
}

/// From the owner to a command.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum FromOwner {
    Hello(OwnerInfo),
    /// The owner will not serve this client, and why.
    Refused(String),
    Answer {
        seq: u64,
        result: std::result::Result<Answer, String>,
    },
    Snapshot(Box<EngineSnapshot>),
    Event(Box<Event>),
}

pub(super) async fn write<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, value: &T) -> Result<()> {
    let body = codec::encode("socket frame", VERSION, value)?;
    if body.len() > FRAME_LIMIT {
        return Err(CoreError::Encode {
            what: "socket frame",
            reason: format!("{} bytes, above the {FRAME_LIMIT} limit", body.len()),
        });
    }
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)
        .await
        .map_err(|e| CoreError::io("writing to the control socket", e))?;
    w.flush()
        .await
        .map_err(|e| CoreError::io("writing to the control socket", e))
}

/// The next frame, or None when the other side closed between frames.
pub(super) async fn read<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(CoreError::io("reading the control socket", e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > FRAME_LIMIT {
        return Err(CoreError::Decode {
            what: "socket frame",
            reason: format!("{len} bytes announced, above the {FRAME_LIMIT} limit"),
        });
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)
        .await
        .map_err(|e| CoreError::io("reading the control socket", e))?;
    codec::decode("socket frame", VERSION, &body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_refuse_oversized_and_garbage() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let ask = ToOwner::Ask {
            seq: 7,
            ask: Ask::Find {
                prefix: "ab12".into(),
            },
        };
        write(&mut a, &ask).await.unwrap();
        let back: ToOwner = read(&mut b).await.unwrap().unwrap();
        assert!(
            matches!(back, ToOwner::Ask { seq: 7, ask: Ask::Find { prefix } } if prefix == "ab12")
        );

        // A hostile length is refused before anything is allocated.
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = read::<_, ToOwner>(&mut b).await.unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");

        // Bytes that are not a frame are an error, not a panic.
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0, 0, 0, 3, 9, 9, 9]).await.unwrap();
        assert!(read::<_, ToOwner>(&mut b).await.is_err());

        // A clean close between frames is the end, not an error.
        drop(a);
        assert!(read::<_, ToOwner>(&mut b).await.unwrap().is_none());
    }
}
