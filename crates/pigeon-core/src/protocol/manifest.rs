//! The file a transfer moves: its manifest, chunk counts, and what a receiver holds.

use super::*;

/// Everything the receiver must know before the first chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub size: u64,
    pub chunk_size: u32,
    pub mime: String,
    pub modified_unix: u64,
    pub mode: u32,
    /// The chunks carry a delta against a file the receiver holds, not
    /// the file itself: what they rebuild, and from what. Part of the
    /// manifest, so every chunk is bound to the base it applies to.
    pub delta: Option<DeltaOf>,
}

/// What a delta transfer rebuilds ([`Manifest::delta`]): the chunks carry
/// instructions ([`crate::delta`]) that turn the receiver's copy whose
/// SHA-256 is `base_sha256` into a file of `size` bytes whose SHA-256 is
/// `sha256`. The receiver checks the base before it accepts, and the
/// rebuilt file before it keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaOf {
    pub base_sha256: [u8; 32],
    pub size: u64,
    pub sha256: [u8; 32],
}

impl Manifest {
    /// A manifest for tests: `name`, `size` bytes in chunks of `chunk_size`.
    #[cfg(test)]
    pub(crate) fn sample(name: &str, size: u64, chunk_size: u32) -> Manifest {
        Manifest {
            name: name.into(),
            size,
            chunk_size,
            mime: String::new(),
            modified_unix: 0,
            mode: 0o644,
            delta: None,
        }
    }

    /// The size of the file the transfer leaves at its destination: the
    /// rebuilt file's for a delta, else what the chunks carry.
    pub fn file_size(&self) -> u64 {
        self.delta.map_or(self.size, |d| d.size)
    }

    pub fn chunk_count(&self) -> u32 {
        chunk_count(self.size, self.chunk_size)
    }

    /// Plaintext length of chunk `index`.
    pub fn chunk_len(&self, index: u32) -> usize {
        let start = u64::from(index) * u64::from(self.chunk_size);
        (self.size.saturating_sub(start)).min(u64::from(self.chunk_size)) as usize
    }

    pub fn offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.chunk_size)
    }

    /// Refuse shapes no sender of ours makes, before anything is allocated
    /// for them (a chunk map costs a byte per chunk).
    pub fn check(&self) -> std::result::Result<(), String> {
        const MIN_CHUNK: u32 = 64;
        const MAX_CHUNK: u32 = 16 * 1024 * 1024;
        const MAX_CHUNKS: u64 = 1 << 26;
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&self.chunk_size) {
            return Err(format!("chunk size {} is out of range", self.chunk_size));
        }
        // What a delta rebuilds: at most what its chunks could carry
        // (2^26 chunks of 16 MiB), so no few bytes claim a petabyte.
        if let Some(d) = self.delta {
            if d.size > MAX_CHUNKS * u64::from(MAX_CHUNK) {
                return Err(format!(
                    "a delta rebuilding {} bytes is out of range",
                    d.size
                ));
            }
        }
        let chunks = self.size.div_ceil(u64::from(self.chunk_size)).max(1);
        if chunks > MAX_CHUNKS {
            return Err(format!(
                "{} bytes in chunks of {} is more than {MAX_CHUNKS} chunks",
                self.size, self.chunk_size
            ));
        }
        Ok(())
    }

    /// Names one keying of a transfer: its secret and this manifest.
    pub fn epoch(&self, secret: &TransferSecret) -> Result<[u8; 8]> {
        let mut material = secret.key.to_vec();
        material.extend_from_slice(&secret.nonce_prefix);
        material.extend_from_slice(&self.hash()?);
        let digest = crypto::sha256(&material);
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&digest[..8]);
        Ok(epoch)
    }

    /// Bound into every chunk's associated data. A manifest without a
    /// delta hashes as it did before deltas (version 1, the same fields in
    /// the same order), so a transfer begun before an upgrade resumes.
    pub fn hash(&self) -> Result<[u8; 32]> {
        let encoded = match self.delta {
            None => codec::encode(
                "manifest",
                1,
                &(
                    &self.name,
                    self.size,
                    self.chunk_size,
                    &self.mime,
                    self.modified_unix,
                    self.mode,
                ),
            )?,
            Some(_) => codec::encode("manifest", 2, self)?,
        };
        Ok(crypto::sha256(&encoded))
    }
}

/// Chunks in a file of `size` bytes. An empty file still has one (empty)
/// chunk, so every transfer has a last chunk to authenticate its end.
pub fn chunk_count(size: u64, chunk_size: u32) -> u32 {
    let cs = u64::from(chunk_size.max(1));
    (size.div_ceil(cs)).max(1) as u32
}

/// Which chunks a receiver holds: all below `base`, plus `ranges`
/// (start inclusive, end exclusive) above it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckState {
    pub base: u32,
    pub ranges: Vec<(u32, u32)>,
}

impl AckState {
    /// Most ranges one acknowledgement carries, lowest first; the rest wait
    /// for the next one.
    pub const MAX_RANGES: usize = 256;

    pub fn from_bitmap(bits: &Bitmap) -> AckState {
        let base = bits.first_clear().unwrap_or(bits.len());
        let ranges = bits
            .set_ranges_from(base)
            .take(Self::MAX_RANGES)
            .collect::<Vec<_>>();
        AckState { base, ranges }
    }

    /// The same claim in a shape that is cheap to use, whatever a peer
    /// sent: ranges within `base..len`, sorted, merged and non-empty.
    /// O(r log r) for r ranges (a control frame holds a few thousand at most).
    pub fn normalized(&self, len: u32) -> AckState {
        let base = self.base.min(len);
        let mut ranges: Vec<(u32, u32)> = self
            .ranges
            .iter()
            .map(|&(s, e)| (s.max(base), e.min(len)))
            .filter(|&(s, e)| s < e)
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        AckState {
            base,
            ranges: merged,
        }
    }

    /// Whether `index` is named. O(log r) on a [`normalized`](Self::normalized) state.
    pub fn contains(&self, index: u32) -> bool {
        if index < self.base {
            return true;
        }
        let after = self.ranges.partition_point(|&(s, _)| s <= index);
        after > 0 && index < self.ranges[after - 1].1
    }

    /// Every index this state names, in order.
    pub fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.base).chain(self.ranges.iter().flat_map(|&(s, e)| s..e))
    }
}
