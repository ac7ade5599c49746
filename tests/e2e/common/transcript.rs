//! What a provider's transcript shows of the chunks it carried: the
//! frames of each message, pieces put together, decoded as far as anyone
//! on the channel can (the nonce's parts and the sealed body).

use pigeon_core::protocol::Frame;
use pigeon_core::wire::{unpack, Reassembler};

/// One sealed chunk frame as it travelled.
pub struct ChunkFrame {
    pub transfer: [u8; 16],
    pub run: u32,
    pub index: u32,
    pub last: bool,
    pub body: Vec<u8>,
}

/// A reassembler large enough for any test's pieces.
pub fn transcript_reassembler() -> Reassembler {
    Reassembler::new(256 * 1024 * 1024)
}

/// The chunk frames one transcript message carries (a text message
/// decoded first, from base64 or the dense alphabet), its pieces put together in `reassembler`
/// with those of the messages before it. Anything else is skipped.
pub fn chunk_frames(message: &[u8], reassembler: &mut Reassembler) -> Vec<ChunkFrame> {
    let raw = super::untext(message).unwrap_or_else(|| message.to_vec());
    let Ok(frames) = unpack(&raw, reassembler) else {
        return vec![];
    };
    frames
        .iter()
        .filter_map(|f| match Frame::decode(f) {
            Ok(Frame::Chunk {
                transfer,
                run,
                index,
                last,
                body,
            }) => Some(ChunkFrame {
                transfer,
                run,
                index,
                last,
                body: body.to_vec(),
            }),
            _ => None,
        })
        .collect()
}
