//! The simulator's proof of the nonce rule: while [`watch`]
//! is on, every chunk seal is recorded as (key, nonce) → SHA-256 of the
//! plaintext, across every node of the process and across their crashes
//! and restarts, and a second, different plaintext under one (key, nonce)
//! is kept as a violation for the simulator to report.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

static ON: AtomicBool = AtomicBool::new(false);

#[derive(Default)]
struct Book {
    seals: HashMap<([u8; 8], [u8; 24]), [u8; 32]>,
    /// Sealing runs begun, by key: a run begun twice could seal one nonce
    /// twice (differently, if anything it decides differs), so a second
    /// beginning is a violation even before it does.
    runs: std::collections::HashSet<([u8; 8], u32)>,
    /// Each with the name of the thread that saw it (`sim-<seed>`), so
    /// that scenarios played side by side each report their own.
    violations: Vec<(String, String)>,
}

fn book() -> std::sync::MutexGuard<'static, Book> {
    static BOOK: OnceLock<Mutex<Book>> = OnceLock::new();
    crate::task::lock(BOOK.get_or_init(Mutex::default))
}

/// Record seals from now on.
pub fn watch() {
    ON.store(true, Ordering::Relaxed);
}

/// Seals recorded so far.
pub fn seals() -> usize {
    book().seals.len()
}

/// Forget the seals recorded (between scenarios of a long soak, to
/// keep the book's memory bounded; violations stay).
pub fn clear() {
    let mut book = book();
    book.seals.clear();
    book.runs.clear();
}

/// The nonce reuses seen on the threads named `thread` (one scenario's).
pub fn violations_on(thread: &str) -> Vec<String> {
    book()
        .violations
        .iter()
        .filter(|(on, _)| on == thread)
        .map(|(_, v)| v.clone())
        .collect()
}

fn violation(what: String) {
    let on = std::thread::current()
        .name()
        .unwrap_or_default()
        .to_string();
    book().violations.push((on, what));
}

/// Seals are recorded only on the simulator's threads (its runtime names
/// them `sim-<seed>`, blocking pool included): other tests in the same
/// process seal two plaintexts under one nonce on purpose (to show the
/// seal book refuses it), and would be taken for the engine's.
fn watching() -> bool {
    ON.load(Ordering::Relaxed)
        && std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("sim-"))
}

pub(super) fn sealed(key: [u8; 8], nonce: [u8; 24], plaintext: &[u8]) {
    if !watching() {
        return;
    }
    let digest = super::sha256(plaintext);
    let before = book().seals.insert((key, nonce), digest);
    if before.is_some_and(|before| before != digest) {
        violation(format!(
            "nonce {} of key {} sealed two different plaintexts",
            hex::encode(nonce),
            hex::encode(key)
        ));
    }
}

pub(super) fn run_begun(key: [u8; 8], run: u32) {
    if !watching() {
        return;
    }
    let fresh = book().runs.insert((key, run));
    if !fresh {
        violation(format!(
            "sealing run {run} of key {} began twice",
            hex::encode(key)
        ));
    }
}
