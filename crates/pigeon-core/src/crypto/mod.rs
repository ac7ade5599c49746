//! Keys, sessions and chunk sealing. Pure functions over bytes: no I/O, no clock.
//!
//! - [`Identity`]: a party's static X25519 key pair; [`PublicKey`] prints as
//!   one line of 64 hex characters and names the party's inbox ([`KeyId`]).
//! - [`Initiator`] / [`respond`]: a Noise `KK` handshake (one round trip; both
//!   sides already trust each other's static key), giving a [`Session`] that
//!   seals control frames with an explicit counter nonce and rejects replays
//!   with a sliding [`ReplayWindow`], because channels reorder messages.
//! - [`ChunkCipher`]: XChaCha20-Poly1305 per transfer, STREAM-style nonces
//!   (random prefix ++ chunk index ++ last flag) and associated data binding
//!   protocol version, transfer id and manifest hash, so a chunk cannot be
//!   moved to another position, another transfer, or turned into the last one.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{CoreError, Result};

/// The Noise protocol this version speaks.
const NOISE_PARAMS: &str = "Noise_KK_25519_ChaChaPoly_SHA256";
/// Largest Noise transport message (the spec's 65535) minus its tag.
pub const MAX_SEALED_PLAINTEXT: usize = 65535 - 16;
/// Frames and control messages. 2: chunk nonces carry the sealing run;
/// 3: a manifest may name a delta's base ([`crate::protocol::DeltaOf`]),
/// and a refusal may say the base changed.
pub const PROTOCOL_VERSION: u8 = 3;
/// What a chunk's associated data says of the seal's shape: unchanged
/// since the sealing run came (2), so a transfer begun before an upgrade
/// of both sides resumes after it.
const SEAL_VERSION: u8 = 2;

/// A party's public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The party's address on a shared channel: 8 bytes of its key's SHA-256.
    pub fn id(&self) -> KeyId {
        let digest = Sha256::digest(self.0);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", &hex::encode(self.0)[..16])
    }
}

impl std::str::FromStr for PublicKey {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        let trimmed = s.trim();
        let bytes = hex::decode(trimmed).map_err(|_| CoreError::BadKey(trimmed.to_string()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CoreError::BadKey(trimmed.to_string()))?;
        Ok(PublicKey(key))
    }
}

/// Short name of a public key, used as its inbox on a shared channel.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct KeyId(pub [u8; 8]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A static key pair. The private half never leaves this struct but to be
/// written to the identity file (mode 0600) by `home`; it is wiped from
/// memory when the identity is dropped, and the type is not `Clone`, so
/// there is one copy per process.
pub struct Identity {
    private: Zeroizing<[u8; 32]>,
    public: PublicKey,
}

impl Identity {
    pub fn generate() -> Result<Identity> {
        let builder = snow::Builder::new(noise_params());
        let mut pair = builder
            .generate_keypair()
            .map_err(|e| CoreError::Crypto(format!("key generation: {e}")))?;
        let id = Identity::from_parts(&pair.private, &pair.public);
        pair.private.zeroize();
        id
    }

    pub fn from_parts(private: &[u8], public: &[u8]) -> Result<Identity> {
        let private: Zeroizing<[u8; 32]> = Zeroizing::new(
            private
                .try_into()
                .map_err(|_| CoreError::Crypto("private key is not 32 bytes".into()))?,
        );
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| CoreError::Crypto("public key is not 32 bytes".into()))?;
        Ok(Identity {
            private,
            public: PublicKey(public),
        })
    }

    pub fn public(&self) -> PublicKey {
        self.public
    }

    pub fn private_bytes(&self) -> &[u8; 32] {
        &self.private
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

fn noise_params() -> snow::params::NoiseParams {
    NOISE_PARAMS
        .parse()
        .expect("NOISE_PARAMS is a valid, constant pattern string")
}

/// The prologue binds the session id, so a handshake cannot be replayed
/// under another session's name.
fn prologue(session_id: &[u8; 16]) -> Vec<u8> {
    let mut p = b"pigeon-session-v1".to_vec();
    p.extend_from_slice(session_id);
    p
}

/// The first half of a handshake, waiting for the responder's answer.
pub struct Initiator {
    state: snow::HandshakeState,
}

impl Initiator {
    /// Start a handshake; returns the state and the first message to send.
    ///
    /// `early` rides in that message (Noise's first payload, sealed under
    /// the `es` and `ss` secrets): only the holder of `peer`'s key can read
    /// it and only ours can have made it, but unlike everything sealed in
    /// the session it is not forward secret against a later theft of
    /// `peer`'s static key, and a recording of it can be replayed. See
    /// [`crate::protocol::Early`] for what may go there and how replays
    /// are refused.
    pub fn start(
        me: &Identity,
        peer: &PublicKey,
        session_id: &[u8; 16],
        early: &[u8],
    ) -> Result<(Initiator, Vec<u8>)> {
        let prologue = prologue(session_id);
        let mut state = snow::Builder::new(noise_params())
            .local_private_key(&me.private[..])
            .remote_public_key(&peer.0)
            .prologue(&prologue)
            .build_initiator()
            .map_err(noise_err)?;
        if early.len() > MAX_EARLY {
            return Err(CoreError::Encode {
                what: "early data",
                reason: format!("{} bytes, more than {MAX_EARLY}", early.len()),
            });
        }
        let mut msg = vec![0u8; 256 + early.len()];
        let n = state.write_message(early, &mut msg).map_err(noise_err)?;
        msg.truncate(n);
        Ok((Initiator { state }, msg))
    }

    /// Read the responder's answer and finish.
    pub fn finish(mut self, reply: &[u8]) -> Result<Session> {
        let mut buf = vec![0u8; reply.len()];
        self.state
            .read_message(reply, &mut buf)
            .map_err(noise_err)?;
        Session::from_handshake(self.state)
    }
}

/// Most bytes of early data a first handshake message carries.
pub const MAX_EARLY: usize = 16 * 1024;

/// Answer a first handshake message from `peer`. Fails unless it was made
/// by the holder of `peer`'s private key for `session_id`. Returns the
/// session, the answer, and the early data the message carried (empty if
/// none; see [`Initiator::start`] for what it is worth).
pub fn respond(
    me: &Identity,
    peer: &PublicKey,
    session_id: &[u8; 16],
    first: &[u8],
) -> Result<(Session, Vec<u8>, Vec<u8>)> {
    let prologue = prologue(session_id);
    let mut state = snow::Builder::new(noise_params())
        .local_private_key(&me.private[..])
        .remote_public_key(&peer.0)
        .prologue(&prologue)
        .build_responder()
        .map_err(noise_err)?;
    let mut early = vec![0u8; first.len()];
    let len = state.read_message(first, &mut early).map_err(noise_err)?;
    early.truncate(len);
    let mut msg = vec![0u8; 256];
    let n = state.write_message(&[], &mut msg).map_err(noise_err)?;
    msg.truncate(n);
    Ok((Session::from_handshake(state)?, msg, early))
}

fn noise_err(e: snow::Error) -> CoreError {
    CoreError::Crypto(format!("noise: {e}"))
}

/// An established session: seals and opens control frames.
pub struct Session {
    transport: snow::StatelessTransportState,
    next_nonce: u64,
    replay: ReplayWindow,
}

impl Session {
    fn from_handshake(state: snow::HandshakeState) -> Result<Session> {
        Ok(Session {
            transport: state.into_stateless_transport_mode().map_err(noise_err)?,
            next_nonce: 0,
            replay: ReplayWindow::default(),
        })
    }

    /// Seal `plaintext`; returns the nonce to send alongside the ciphertext.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<(u64, Vec<u8>)> {
        if plaintext.len() > MAX_SEALED_PLAINTEXT {
            return Err(CoreError::Encode {
                what: "control frame",
                reason: format!(
                    "{} bytes, more than {MAX_SEALED_PLAINTEXT}",
                    plaintext.len()
                ),
            });
        }
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        let mut out = vec![0u8; plaintext.len() + 16];
        let n = self
            .transport
            .write_message(nonce, plaintext, &mut out)
            .map_err(noise_err)?;
        out.truncate(n);
        Ok((nonce, out))
    }

    /// Open a sealed frame. A nonce seen before (or too old to tell) is a
    /// replay and is refused with `Ok(None)`; a forgery is an error.
    pub fn open(&mut self, nonce: u64, ciphertext: &[u8]) -> Result<Option<Vec<u8>>> {
        if !self.replay.is_fresh(nonce) {
            return Ok(None);
        }
        let mut out = vec![0u8; ciphertext.len()];
        let n = self
            .transport
            .read_message(nonce, ciphertext, &mut out)
            .map_err(noise_err)?;
        out.truncate(n);
        // Only an authentic frame moves the window, so forgeries cannot
        // push genuine frames out of it.
        self.replay.mark(nonce);
        Ok(Some(out))
    }
}

/// A sliding window of the last [`ReplayWindow::SIZE`] nonces seen.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    /// One past the highest nonce seen.
    top: u64,
    bits: [u64; 16],
}

impl ReplayWindow {
    pub const SIZE: u64 = 1024;

    pub fn is_fresh(&self, n: u64) -> bool {
        if n >= self.top {
            return true;
        }
        if self.top - n > Self::SIZE {
            return false;
        }
        !self.bit(n)
    }

    pub fn mark(&mut self, n: u64) {
        if n >= self.top {
            // Clear the slots the window slides over.
            let shift = (n + 1 - self.top).min(Self::SIZE);
            for k in 0..shift {
                self.set_bit(self.top + k, false);
            }
            self.top = n + 1;
        }
        self.set_bit(n, true);
    }

    fn bit(&self, n: u64) -> bool {
        let slot = (n % Self::SIZE) as usize;
        self.bits[slot / 64] & (1 << (slot % 64)) != 0
    }

    fn set_bit(&mut self, n: u64, on: bool) {
        let slot = (n % Self::SIZE) as usize;
        if on {
            self.bits[slot / 64] |= 1 << (slot % 64);
        } else {
            self.bits[slot / 64] &= !(1 << (slot % 64));
        }
    }
}

/// Length of the random part of a chunk nonce; the sealing run (4), the
/// index (4) and the last flag (1) fill the rest of XChaCha20's 24 bytes.
pub const NONCE_PREFIX_LEN: usize = 15;
pub const TAG_LEN: usize = 16;

/// The secret of one transfer: its key and nonce prefix. Wiped from memory
/// when dropped; never printed.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct TransferSecret {
    pub key: [u8; 32],
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl TransferSecret {
    pub fn random() -> TransferSecret {
        TransferSecret {
            key: rand::random(),
            nonce_prefix: rand::random(),
        }
    }
}

impl std::fmt::Debug for TransferSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransferSecret(..)")
    }
}

/// Where a chunk seal sits in its transfer's nonce space.
///
/// Why a sealing run is part of the nonce: a sender decides each chunk's
/// plaintext (its bytes as read, gzipped or not) when it seals it, and a
/// crash can come between that seal leaving on the wire and any record of
/// it becoming durable. Making every decision durable first would cost a
/// flush per chunk; deriving the nonce from the plaintext (SIV) would cost
/// a keyed hash of every chunk and 16 more bytes per frame. Instead each
/// run of a sender (each process that picks the transfer up) takes a fresh
/// run number, flushed once before its first seal, so two runs never share
/// a nonce whatever either of them read or decided; within one run the
/// sender holds its decisions in memory ([`crate::engine`]'s seal book). On
/// the wire this costs one byte per chunk frame for the first 250 runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkNonce {
    pub run: u32,
    pub index: u32,
    pub last: bool,
}

/// Seals and opens the chunks of one transfer.
pub struct ChunkCipher {
    aead: XChaCha20Poly1305,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    aad: Vec<u8>,
    /// Names the key to the simulator's seal watch, never the key itself.
    #[cfg(any(test, feature = "sim"))]
    fingerprint: [u8; 8],
}

impl ChunkCipher {
    /// `manifest_hash` binds the chunks to the file they were cut from.
    pub fn new(secret: &TransferSecret, transfer_id: &[u8; 16], manifest_hash: &[u8; 32]) -> Self {
        let mut aad = b"pigeon-chunk".to_vec();
        aad.push(SEAL_VERSION);
        aad.extend_from_slice(transfer_id);
        aad.extend_from_slice(manifest_hash);
        ChunkCipher {
            aead: XChaCha20Poly1305::new((&secret.key).into()),
            nonce_prefix: secret.nonce_prefix,
            aad,
            #[cfg(any(test, feature = "sim"))]
            fingerprint: {
                let mut f = [0u8; 8];
                f.copy_from_slice(&sha256(&[&secret.key[..], b"fingerprint"].concat())[..8]);
                f
            },
        }
    }

    fn nonce(&self, at: ChunkNonce) -> XNonce {
        let mut n = [0u8; 24];
        n[..NONCE_PREFIX_LEN].copy_from_slice(&self.nonce_prefix);
        n[NONCE_PREFIX_LEN..NONCE_PREFIX_LEN + 4].copy_from_slice(&at.run.to_be_bytes());
        n[NONCE_PREFIX_LEN + 4..NONCE_PREFIX_LEN + 8].copy_from_slice(&at.index.to_be_bytes());
        n[23] = u8::from(at.last);
        n.into()
    }

    /// [`seal_in_place`](Self::seal_in_place) into a new buffer (tag appended).
    pub fn seal(&self, at: ChunkNonce, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        out.extend_from_slice(plaintext);
        let tag = self.seal_in_place(at, &mut out)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// A sender begins sealing run `run` under this key (the simulator
    /// checks that no run begins twice).
    pub fn begin_run(&self, run: u32) {
        #[cfg(any(test, feature = "sim"))]
        seal_watch::run_begun(self.fingerprint, run);
        #[cfg(not(any(test, feature = "sim")))]
        let _ = run;
    }

    /// Seal `buf` where it lies; returns the tag to append.
    pub fn seal_in_place(&self, at: ChunkNonce, buf: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        #[cfg(any(test, feature = "sim"))]
        seal_watch::sealed(self.fingerprint, self.nonce(at).into(), buf);
        self.aead
            .encrypt_in_place_detached(&self.nonce(at), &self.aad, buf)
            .map(Into::into)
            .map_err(|_| CoreError::Crypto("chunk sealing failed".into()))
    }

    /// Open `buf` (ciphertext followed by its tag) where it lies; on success
    /// the first `buf.len() - TAG_LEN` bytes are the plaintext.
    pub fn open_in_place(&self, at: ChunkNonce, buf: &mut [u8]) -> Result<usize> {
        let index = at.index;
        let Some(split) = buf.len().checked_sub(TAG_LEN) else {
            return Err(CoreError::Crypto(format!(
                "chunk {index} is shorter than a tag"
            )));
        };
        let (data, tag) = buf.split_at_mut(split);
        let tag = chacha20poly1305::Tag::clone_from_slice(tag);
        self.aead
            .decrypt_in_place_detached(&self.nonce(at), &self.aad, data, &tag)
            .map_err(|_| CoreError::Crypto(format!("chunk {index} did not authenticate")))?;
        Ok(split)
    }

    /// [`open_in_place`](Self::open_in_place) on a copy.
    pub fn open(&self, at: ChunkNonce, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let mut buf = ciphertext.to_vec();
        let n = self.open_in_place(at, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(any(test, feature = "sim"))]
pub mod seal_watch;

#[cfg(test)]
mod tests;
