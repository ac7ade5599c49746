//! `pigeon-core`: moving files over channels that were never meant to carry
//! them. Encrypted end to end, chunked to each channel's limits, resumable
//! after a kill at any moment. No UI here: front ends drive the engine
//! through [`engine::ClientHandle`] and draw from [`view`] snapshots.
//!
//! Layers, top down (DESIGN.md section 2), each using only the ones below:
//!
//! - [`engine`]: transfers as state machines, the queue, sessions, and the
//!   agent's request handling;
//! - [`protocol`]: frames, manifests, control messages, chunk bodies;
//! - [`crypto`]: identities, the Noise KK session, chunk sealing;
//! - [`link`]: frames into messages (packing, fragments, base64, pacing);
//! - [`transport`]: channels that move messages (the local spool);
//! - [`store`]: sled, behind one module; [`codec`]: bincode behind one module;
//! - [`policy`]: remote paths, the storage root, permissions;
//! - [`home`]: a party's folder: identity, trust list, config.
//!
//! Beside them, [`socket`]: the home's control socket, through which every
//! other command on a home drives the engine of the process that holds it.
//!
//! A client and an agent on one machine, through a spool folder:
//!
//! ```no_run
//! # async fn demo() -> pigeon_core::error::Result<()> {
//! use pigeon_core::{engine, home::Home, transport::TransportUri};
//! let uri = TransportUri::parse("local:/tmp/spool?profile=telegram-text")?;
//! let client = engine::client::start(engine::client::ClientConfig {
//!     home: Home::resolve(Some("/tmp/client-home".into()))?,
//!     peer: None,
//!     transports: vec![uri],
//!     parallel: 2,
//!     run_queue: false,
//!     silence_limit: std::time::Duration::from_secs(120),
//!     embedded_agent: false,
//!     bwlimit: None,
//! })
//! .await?;
//! let id = client.upload("data.csv".into(), "data.csv".into(), Default::default()).await?;
//! # let _ = id; Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod alphabet;
pub mod bitmap;
pub mod bwlimit;
pub(crate) mod codec;
pub mod crypto;
pub mod delta;
pub mod engine;
pub mod error;
pub mod files;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod home;
pub mod ledger;
pub(crate) mod link;
pub mod pair;
pub mod policy;
pub mod protocol;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod socket;
pub(crate) mod store;
pub mod task;
pub mod transport;

/// What the provider carries, read as the provider could if it knew the
/// format: the frames in a channel's messages (the end-to-end tests check
/// the wire with it: one ciphertext per nonce, nothing in the clear). Not
/// an API for anything else.
#[doc(hidden)]
pub mod wire {
    pub use crate::link::{unpack, Reassembler};
}
pub mod view;
