//! The end-to-end suite: the real `pigeon` binary, each party in its own
//! temporary home, over the local spool, the platform emulators and a real
//! terminal. One test binary with a module per area, so the suite links
//! once instead of once per file (`cargo test --test e2e NAME` runs a part).
//!
//! Helpers every module shares are in [`common`]; a module's own doc says
//! which issue and which property its tests prove.

mod common;

mod cli;
mod delta;
mod hostile;
mod integrity;
mod limits;
mod messenger;
mod multilink;
mod nonce;
mod one_home;
mod permanent;
mod policy;
mod resume;
mod roundtrip;
mod security;
mod share;
mod shipper;
mod smoke_telegram_test_api;
mod soak_processes;
mod telegram;
mod tui;
mod tui_agent;
mod whatsapp;
