//! What travels between the parties: [`Frame`]s, and inside sealed frames,
//! [`Control`] messages. Pure data and pure functions.
//!
//! A transfer is a [`Manifest`] plus `chunk_count` chunks of `chunk_size`
//! bytes (the last one shorter). A chunk travels as [`Frame::Chunk`], its
//! body sealed with the transfer's [`ChunkCipher`]; inside the seal is a
//! [`ChunkBody`]: a flag byte (gzip or raw), the SHA-256 of the plaintext,
//! and the data. Everything else (offers, acknowledgements, the final hash,
//! listings) is a [`Control`] sealed in the Noise session.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::bitmap::Bitmap;
use crate::codec;
use crate::crypto::{self, ChunkCipher, ChunkNonce, TransferSecret, PROTOCOL_VERSION};
use crate::error::{CoreError, Result};
use crate::view::{FaultCounters, TransferId};

/// Bytes a [`Frame::Chunk`] adds around its data, at most: frame version and
/// tag (2), transfer id (16), run and index varints (5 + 5), last flag (1),
/// body length varint (5), chunk body flags (1) and hash (32), AEAD tag (16).
pub const CHUNK_FRAME_OVERHEAD: usize = 2 + 16 + 5 + 5 + 1 + 5 + 1 + 32 + crypto::TAG_LEN;

/// A frame: the unit the link carries (packed into and split across messages).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// First handshake message, from the client.
    Hello {
        session: [u8; 16],
        from: [u8; 32],
        #[serde(with = "serde_bytes")]
        noise: Vec<u8>,
    },
    /// Second handshake message, from the agent.
    Welcome {
        session: [u8; 16],
        #[serde(with = "serde_bytes")]
        noise: Vec<u8>,
    },
    /// A [`Control`] sealed in the session.
    Sealed {
        session: [u8; 16],
        /// Sender's key id, so an unknown session can be answered.
        from: [u8; 8],
        nonce: u64,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// One chunk of a transfer, sealed with the transfer's key under the
    /// nonce ([`ChunkNonce`]) its `run`, `index` and `last` name.
    Chunk {
        transfer: [u8; 16],
        run: u32,
        index: u32,
        last: bool,
        // Bytes, not a sequence of u8: one copy instead of a loop.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// "I have no session by that id; handshake again." Unauthenticated: at
    /// worst it makes the client handshake once more (rate limited).
    UnknownSession { session: [u8; 16], from: [u8; 32] },
    /// A pairing message ([`crate::pair`]): between parties that trust
    /// nothing of each other yet, so nothing but a pairing reads it.
    Pair {
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
}

impl Frame {
    pub fn encode(&self) -> Result<Vec<u8>> {
        codec::encode("frame", PROTOCOL_VERSION, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Frame> {
        codec::decode("frame", PROTOCOL_VERSION, bytes)
    }

    /// [`decode`](Self::decode), but a chunk frame keeps `bytes` as its
    /// body (the header is cut off in place): no copy of a megabyte.
    pub fn decode_owned(mut bytes: Vec<u8>) -> Result<Frame> {
        if let Some((transfer, at, head)) = parse_chunk_head(&bytes) {
            bytes.drain(..head);
            return Ok(Frame::Chunk {
                transfer,
                run: at.run,
                index: at.index,
                last: at.last,
                body: bytes,
            });
        }
        Frame::decode(&bytes)
    }
}

mod chunk;
mod control;
mod manifest;

pub use chunk::*;
pub use control::*;
pub use manifest::*;

#[cfg(test)]
mod tests;
