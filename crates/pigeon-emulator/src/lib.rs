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

mod common;
pub mod graph;
pub mod messenger;
pub mod person;
pub mod shipper;
pub mod telegram;
pub mod webhook;
pub mod whatsapp;

pub use common::Faults;

/// Serve `router` on a free port of 127.0.0.1 from a thread of its own
/// (its own runtime, so a caller's runtime or none at all both work), for
/// as long as the process lives. Returns the base URL, `http://127.0.0.1:PORT`.
pub fn serve_in_background(router: axum::Router) -> std::io::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("emulator".into())
        .spawn(move || {
            runtime.block_on(async move {
                if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                    let _ = axum::serve(listener, router).await;
                }
            })
        })?;
    Ok(url)
}
