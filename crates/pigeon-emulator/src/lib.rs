//! Local emulators of the HTTP APIs pigeon's transports speak, written
//! from the platforms' public documentation, for tests and for rehearsing
//! a setup before pointing pigeon at the real service.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use pigeon_emulator::telegram::{BotSpec, Emulator};
//! let bots = [BotSpec { token: "1:client".into(), username: "client_bot".into() }];
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! Emulator::new(&bots).serve(listener).await
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod telegram;
