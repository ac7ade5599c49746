//! Deltas as the engine makes and keeps them (issue 31), for a client's
//! uploads and an agent's downloads alike: the file read once for its hash
//! and its signature, and the delta written to the transfer's delta file
//! and synced before the transfer is recorded, so before its first seal
//! (the nonce rule: every run seals the same bytes).

use std::io::{BufWriter, Read, Write};

use sha2::{Digest, Sha256};

use crate::delta::{Signature, SignatureParams, Travels};
use crate::error::{CoreError, Result};
use crate::protocol::DeltaOf;
use crate::store::Store;
use crate::view::TransferId;

/// A delta is worth sending only if it is at most this share of the file
/// (its literal bytes compress like the file's own).
const WORTH_IT: f64 = 0.9;

/// Reads an open file from `at` by `read_at`, leaving its position to
/// whoever else reads it (a sender reads its chunks at offsets).
pub(crate) struct ReadFrom<'a> {
    pub file: &'a std::fs::File,
    pub at: u64,
}

impl Read for ReadFrom<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Hashes what passes through it.
pub(crate) struct Hashing<R> {
    pub inner: R,
    pub hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The first `size` bytes of `file`: their SHA-256 and the signature a
/// later delta against them needs (fine: it stays with this side), in one
/// read.
pub(crate) fn hash_and_sign(file: &std::fs::File, size: u64) -> Result<([u8; 32], Vec<u8>)> {
    hash_and_sign_with(file, size, SignatureParams::for_file(size, Travels::No))
}

/// [`hash_and_sign`] with the signature's shape given.
pub(crate) fn hash_and_sign_with(
    file: &std::fs::File,
    size: u64,
    params: SignatureParams,
) -> Result<([u8; 32], Vec<u8>)> {
    let mut reader = Hashing {
        inner: std::io::BufReader::with_capacity(1 << 20, ReadFrom { file, at: 0 }.take(size)),
        hasher: Sha256::new(),
    };
    let sig = Signature::of(&mut reader, params)
        .map_err(|e| CoreError::io("reading the file for its signature".to_string(), e))?;
    if sig.base_len() != size {
        return Err(CoreError::Transfer(
            "the file is shorter than when the transfer started; run the command again".into(),
        ));
    }
    Ok((reader.hasher.finalize().into(), sig.encode()))
}

/// Run `f`, which reads a file whole, without holding up the other tasks
/// of a runtime with several threads (on a single-threaded one, the
/// simulator's, there are none to hold up).
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A delta made: the manifest's [`DeltaOf`] and the delta's length.
pub(crate) struct Made {
    pub of: DeltaOf,
    pub len: u64,
}

/// The delta of the first `len` bytes of `file` against `sig` (the
/// signature of the copy the other side holds, whose SHA-256 is
/// `base_sha256`), written to transfer `id`'s delta file and synced. None
/// when a delta would not pay: nothing is left behind then.
pub(crate) fn write_delta(
    store: &Store,
    id: &TransferId,
    file: &std::fs::File,
    len: u64,
    sig: &Signature,
    base_sha256: [u8; 32],
) -> Result<Option<Made>> {
    let mut reader = Hashing {
        inner: std::io::BufReader::with_capacity(1 << 20, ReadFrom { file, at: 0 }.take(len)),
        hasher: Sha256::new(),
    };
    let made = keep_delta(store, id, len, |out| {
        crate::delta::diff(sig, &mut reader, len, out)
    })?;
    Ok(made.map(|delta_len| Made {
        of: DeltaOf {
            base_sha256,
            size: len,
            sha256: reader.hasher.finalize().into(),
        },
        len: delta_len,
    }))
}

/// Write transfer `id`'s delta with `make` (for a file of `len` bytes),
/// and keep it, synced, if it pays: its length; None (and nothing left
/// behind) when it would be most of the file.
fn keep_delta(
    store: &Store,
    id: &TransferId,
    len: u64,
    make: impl FnOnce(&mut BufWriter<&std::fs::File>) -> std::io::Result<crate::delta::DeltaStats>,
) -> Result<Option<u64>> {
    let out = store.create_delta_file(id)?;
    let mut writer = BufWriter::with_capacity(1 << 20, &out);
    let made = make(&mut writer).and_then(|stats| writer.flush().map(|()| stats));
    drop(writer);
    let stats = match made {
        Ok(stats) => stats,
        Err(e) => {
            store.forget_transfer_files(id);
            return Err(CoreError::io(
                "making a delta (is the disk full, or did the file change?)".to_string(),
                e,
            ));
        }
    };
    if stats.delta_len as f64 > len as f64 * WORTH_IT {
        store.forget_transfer_files(id);
        return Ok(None);
    }
    out.sync_all()
        .map_err(|e| CoreError::io("syncing the delta (is the disk full?)".to_string(), e))?;
    Ok(Some(stats.delta_len))
}

/// The delta of the program in `file` (`len` bytes) against the copy at
/// `old` of the version the other side holds (SHA-256 `base_sha256`),
/// made with both in memory ([`crate::delta::binary`]), written to
/// transfer `id`'s delta file and synced. None when either is too large
/// or a delta would not pay.
pub(crate) fn write_binary_delta(
    store: &Store,
    id: &TransferId,
    old: &std::path::Path,
    file: &std::fs::File,
    len: u64,
    base_sha256: [u8; 32],
) -> Result<Option<Made>> {
    use crate::delta::binary;
    let old_len = std::fs::metadata(old).map(|m| m.len()).unwrap_or(u64::MAX);
    if len > binary::MAX_LEN || old_len > binary::MAX_LEN {
        return Ok(None);
    }
    let old =
        std::fs::read(old).map_err(|e| CoreError::io(format!("reading {}", old.display()), e))?;
    if <[u8; 32]>::from(Sha256::digest(&old)) != base_sha256 {
        return Ok(None);
    }
    let mut new = Vec::with_capacity(len as usize);
    ReadFrom { file, at: 0 }
        .take(len)
        .read_to_end(&mut new)
        .map_err(|e| CoreError::io("reading the file".to_string(), e))?;
    if new.len() as u64 != len {
        return Err(CoreError::Transfer(
            "the file changed while its delta was made; run the command again".into(),
        ));
    }
    let made = keep_delta(store, id, len, |out| binary::diff(&old, &new, out))?;
    Ok(made.map(|delta_len| Made {
        of: DeltaOf {
            base_sha256,
            size: len,
            sha256: Sha256::digest(&new).into(),
        },
        len: delta_len,
    }))
}

/// Whether the file at `path` is a program (by its first bytes).
pub(crate) fn is_program(path: &std::path::Path) -> bool {
    let mut head = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .is_ok_and(|n| crate::delta::binary::is_program(&head[..n]))
}

/// The most a travelling signature takes, whatever the links: 2,048 blocks.
const TRAVEL_MAX: usize = 24 * 1024;
/// The least: about 170 blocks, still enough for a log that grew.
const TRAVEL_MIN: usize = 2 * 1024;

/// The shape of a signature of a file of `len` bytes that travels to or
/// from `peer`: at most half a message of the smallest link between them
/// (a fetch repeats it), within [`TRAVEL_MIN`]..[`TRAVEL_MAX`] bytes.
pub(crate) fn travelling_params(
    node: &super::Node,
    peer: &super::Peer,
    len: u64,
) -> SignatureParams {
    use crate::delta::{MAX_BLOCK, STRONG_TRAVELS, TRAVEL_MIN_BLOCK};
    let room = node
        .links_to(peer)
        .iter()
        .map(|l| crate::link::message_payload(&l.capabilities()) / 2)
        .min()
        .unwrap_or(TRAVEL_MAX)
        .clamp(TRAVEL_MIN, TRAVEL_MAX);
    let blocks = (room / (4 + usize::from(STRONG_TRAVELS))).max(1) as u64;
    SignatureParams {
        block_size: u32::try_from(len.div_ceil(blocks).div_ceil(64) * 64)
            .unwrap_or(MAX_BLOCK)
            .clamp(TRAVEL_MIN_BLOCK, MAX_BLOCK),
        strong_len: STRONG_TRAVELS,
    }
}

/// Whether a travelling signature has the shape this pigeon gives one
/// ([`travelling_params`]): at least 170 blocks, unless they are of the
/// smallest size.
pub(crate) fn travels_as_made(sig: &Signature) -> bool {
    use crate::delta::TRAVEL_MIN_BLOCK;
    let most_blocks = (TRAVEL_MIN / (4 + usize::from(crate::delta::STRONG_TRAVELS))) as u64;
    let largest =
        (sig.base_len().div_ceil(most_blocks).div_ceil(64) * 64).max(u64::from(TRAVEL_MIN_BLOCK));
    u64::from(sig.block_size()) <= largest
}
