//! How the commands print what they found: a transfer as it finishes, a
//! link's health, a listing, a share; and the one JSON line every
//! `--json` prints. Whatever the other side named is escaped before it
//! reaches the terminal.

use std::time::Duration;

use pigeon_core::policy::escape_control;
use pigeon_core::view::{plural, TransferReport, TransferStatus};

/// A finished transfer: completed on stdout, anything else on stderr.
pub fn print_report(r: &TransferReport, json: bool) {
    if json {
        println!("{}", json_line(r));
        return;
    }
    let arrow = match r.direction {
        pigeon_core::view::Direction::Upload => "->",
        pigeon_core::view::Direction::Download => "<-",
    };
    let (local, remote) = (
        escape_control(&r.local_path),
        escape_control(&r.remote_path),
    );
    match r.status {
        // Nothing needed sending: the agent had it whole and verified it.
        TransferStatus::Completed
            if r.direction == pigeon_core::view::Direction::Upload
                && r.chunks_sent == 0
                && r.chunks_total > 0 =>
        {
            println!(
                "already on the agent, verified: {local} {arrow} {remote}: {} bytes, sha256 {}",
                r.size,
                r.sha256.as_deref().unwrap_or("?"),
            )
        }
        TransferStatus::Completed => println!("{}", completed_line(r, arrow)),
        TransferStatus::Paused => eprintln!(
            "pigeon: paused {local} {arrow} {remote}; `pigeon resume {}` or the same command again continues it",
            short(&r.id)
        ),
        status => eprintln!(
            "pigeon: {} {local} {arrow} {remote}: {}",
            status.as_str(),
            escape_control(r.error.as_deref().unwrap_or("no reason given"))
        ),
    }
}

/// `completed a -> b: 12 bytes, sha256 …, 1 chunk sent in 0.2s`.
pub fn completed_line(r: &TransferReport, arrow: &str) -> String {
    format!(
        "completed {} {arrow} {}: {} bytes{}, sha256 {}, {} sent{} in {:.1}s",
        escape_control(&r.local_path),
        escape_control(&r.remote_path),
        r.size,
        match r.delta {
            Some(d) => format!(
                " (delta: {} of {})",
                pigeon_core::view::human_bytes(d),
                pigeon_core::view::human_bytes(r.size)
            ),
            None => String::new(),
        },
        r.sha256.as_deref().unwrap_or("?"),
        plural(r.chunks_sent, "chunk"),
        if r.resumed { " (resumed)" } else { "" },
        r.elapsed_ms as f64 / 1000.0
    )
}

/// One link in `status --json`: `link` (its index) tells it from a transfer.
pub fn link_json(i: usize, h: &pigeon_core::view::TransportHealth) -> serde_json::Value {
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
    let (retry_in, wait) = match h.state {
        pigeon_core::view::LinkState::Open { retry_in, .. } => (Some(retry_in), None),
        pigeon_core::view::LinkState::RateLimited { wait } => (None, Some(wait)),
        _ => (None, None),
    };
    serde_json::json!({
        "link": i,
        "uri": h.uri,
        "profile": h.profile,
        "state": h.state.word(),
        "up": h.up,
        "share": h.share,
        "rtt_ms": ms(h.rtt),
        "bytes_per_sec": recent_rate(h),
        "messages_last_minute": h.messages_last_minute,
        "messages_per_minute_limit": h.messages_per_minute_limit,
        "errors": h.errors,
        "retry_after_ms": ms(h.retry_after.or(wait)),
        "probe_in_ms": ms(retry_in),
        "faults": h.faults,
        "problems": h.problems,
        "notes": h.notes,
    })
}

/// One link in `status`: its profile, state, round trip, rate, share,
/// errors, the chunks it lost.
pub fn link_line(i: usize, h: &pigeon_core::view::TransportHealth) -> String {
    let mut line = format!(
        "link {i}  {:<14} {:<12} rtt {:>7}  {:>10}/s  share {:>4}  errors {}  lost {}  {}",
        h.profile,
        h.state.word(),
        h.rtt
            .map_or("-".to_string(), |d| format!("{} ms", d.as_millis())),
        pigeon_core::view::human_bytes(recent_rate(h)),
        h.share
            .map_or("-".to_string(), |s| format!("{:.0}%", s * 100.0)),
        h.errors,
        h.faults.lost,
        escape_control(&h.uri)
    );
    // What only the user can fix, in `pigeon transports test`'s words.
    for p in &h.problems {
        line.push_str(&format!("\n        failed: {}", escape_control(p)));
    }
    // What the link changed by itself (it sends base64: issue 29).
    for n in &h.notes {
        line.push_str(&format!("\n        note: {}", escape_control(n)));
    }
    line
}

/// Bytes a second over the last five seconds.
fn recent_rate(h: &pigeon_core::view::TransportHealth) -> u64 {
    let last: Vec<u64> = h.throughput.iter().rev().take(5).copied().collect();
    last.iter().sum::<u64>() / (last.len().max(1) as u64)
}

/// A remote listing, one entry per line (or JSON line).
pub fn print_entries(entries: &[pigeon_core::engine::RemoteEntry], json: bool) {
    for e in entries {
        if json {
            println!("{}", json_line(e));
        } else {
            let when = format_time(e.modified_unix);
            println!(
                "{:>12}  {}  {:<64}  {}{}",
                if e.is_dir {
                    "-".to_string()
                } else {
                    e.size.to_string()
                },
                when,
                escape_control(e.sha256.as_deref().unwrap_or(if e.is_dir {
                    "(folder)"
                } else {
                    // A big file is hashed after the listing, once.
                    "(not hashed yet: ls again shortly)"
                })),
                escape_control(&e.path),
                if e.is_dir { "/" } else { "" }
            );
        }
    }
}

/// Shares one per line: who shares what with whom, on what terms.
pub fn print_shares(shares: &[pigeon_core::policy::Share], json: bool) {
    if shares.is_empty() && !json {
        eprintln!("nothing is shared");
    }
    for s in shares {
        if json {
            println!("{}", json_line(s));
            continue;
        }
        println!(
            "{}/{}  with {}  {}{}",
            s.owner,
            escape_control(&s.path),
            s.with,
            if s.read_only {
                "read-only"
            } else {
                "read-write"
            },
            s.expires_unix
                .map(|t| format!("  until {}", format_time(t)))
                .unwrap_or_default()
        );
    }
}

pub use pigeon_core::view::format_time;

/// One JSON object on one line, safe to print on a terminal: serde_json
/// escapes C0 controls only, so C1 controls and bidi overrides (which some
/// terminals act on) are escaped here as `\uXXXX`, still valid JSON.
pub fn json_line(value: &impl serde::Serialize) -> String {
    let raw = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
    };
    if !raw.chars().any(unsafe_char) {
        return raw;
    }
    let mut out = String::with_capacity(raw.len() + 16);
    for c in raw.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The first 8 characters of a transfer id, as `status` shows it.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// "cannot upload x: why", without saying "cannot upload x" twice when the
/// engine's own message already does.
pub fn cannot(verb: &str, what: &str, e: &dyn std::fmt::Display) -> String {
    let why = e.to_string();
    let what = escape_control(what);
    if why.starts_with(&format!("cannot {verb}")) || why.contains(what.as_ref()) {
        why
    } else {
        format!("cannot {verb} {what}: {why}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 32: "1 chunks sent".
    #[test]
    fn a_completed_line_counts_one_chunk_in_the_singular() {
        let report = |chunks_sent| TransferReport {
            id: "01".repeat(16),
            direction: pigeon_core::view::Direction::Upload,
            local_path: "a.txt".into(),
            remote_path: "a.txt".into(),
            size: 12,
            sha256: Some("ab".into()),
            mime: String::new(),
            status: TransferStatus::Completed,
            chunks_total: chunks_sent,
            chunks_sent,
            chunks_retransmitted: 0,
            resumed: false,
            transport: "local".into(),
            elapsed_ms: 200,
            faults: Default::default(),
            error: None,
            delta: None,
        };
        assert_eq!(
            completed_line(&report(1), "->"),
            "completed a.txt -> a.txt: 12 bytes, sha256 ab, 1 chunk sent in 0.2s"
        );
        // Issue 31: what a delta sent, against the file's size.
        let delta = TransferReport {
            size: 50_000_000,
            delta: Some(1_100_000),
            ..report(3)
        };
        assert_eq!(
            completed_line(&delta, "->"),
            "completed a.txt -> a.txt: 50000000 bytes (delta: 1.0 MiB of 48 MiB), sha256 ab, 3 chunks sent in 0.2s"
        );
        assert!(completed_line(&report(3), "->").contains(", 3 chunks sent in"));
    }

    #[test]
    fn times_from_a_peer_never_panic() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(253_402_300_900), "@253402300900");
        assert_eq!(format_time(u64::MAX), format!("@{}", u64::MAX));
    }

    #[test]
    fn json_lines_escape_c1_and_bidi_and_stay_json() {
        let v = serde_json::json!({ "name": "a\u{9b}31mb\u{202e}c\u{1b}" });
        let line = json_line(&v);
        assert!(!line.contains('\u{9b}') && !line.contains('\u{202e}') && !line.contains('\u{1b}'));
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, v);
    }
}
