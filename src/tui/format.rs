//! Short human forms of sizes, rates, durations and transport names, sized
//! for table columns.

use std::time::Duration;

/// `1023 B`, `1.5 KiB`, `12 MiB`, `3.2 GiB`: at most 8 characters.
pub fn bytes(n: u64) -> String {
    pigeon_core::view::human_bytes(n)
}

/// A rate in bytes per second: `1.5 KiB/s`.
pub fn rate(bytes_per_second: f64) -> String {
    let clamped = if bytes_per_second.is_finite() && bytes_per_second > 0.0 {
        bytes_per_second.round() as u64
    } else {
        0
    };
    format!("{}/s", bytes(clamped))
}

/// `45s`, `3m05s`, `2h07m`, `3d04h`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3_599 => format!("{}m{:02}s", s / 60, s % 60),
        3_600..=86_399 => format!("{}h{:02}m", s / 3_600, (s % 3_600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3_600),
    }
}

/// A time as RFC 3339 in UTC, seconds precision; raw seconds if absurd.
pub fn unix_time(unix: u64) -> String {
    std::time::UNIX_EPOCH
        .checked_add(Duration::from_secs(unix))
        .filter(|_| unix < 253_402_300_800)
        .map_or_else(
            || format!("@{unix}"),
            |t| humantime::format_rfc3339_seconds(t).to_string(),
        )
}

/// Milliseconds below ten seconds, else the short duration form.
pub fn rtt(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{} ms", d.as_millis())
    } else {
        duration(d)
    }
}

/// A short label for a transport URI: its `profile=` when it has one, else
/// its scheme (`local:/tmp/spool?profile=telegram-text` -> `telegram-text`).
pub fn transport_label(uri: &str) -> &str {
    if let Some(query) = uri.split_once('?').map(|(_, q)| q) {
        if let Some(profile) = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("profile="))
        {
            return profile;
        }
    }
    uri.split_once(':').map_or(uri, |(scheme, _)| scheme)
}

/// Cut `s` to at most `width` characters, ending in `…` when cut.
pub fn truncate(s: &str, width: usize) -> std::borrow::Cow<'_, str> {
    if s.chars().count() <= width {
        return std::borrow::Cow::Borrowed(s);
    }
    if width == 0 {
        return std::borrow::Cow::Borrowed("");
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    std::borrow::Cow::Owned(out)
}

/// Cut `s` to at most `width` characters by taking out its middle: the
/// start says what failed, the end what to do about it, and both stay.
pub fn elide_middle(s: &str, width: usize) -> std::borrow::Cow<'_, str> {
    let count = s.chars().count();
    if count <= width {
        return std::borrow::Cow::Borrowed(s);
    }
    if width < 3 {
        return truncate(s, width);
    }
    // A little more of the end: that is where the remedy usually is.
    let head = (width - 1) * 2 / 5;
    let tail = width - 1 - head;
    let mut out: String = s.chars().take(head).collect();
    out.push('…');
    out.extend(s.chars().skip(count - tail));
    std::borrow::Cow::Owned(out)
}

/// Keep the end of `s` (the interesting part of a path), starting with `…`.
pub fn truncate_start(s: &str, width: usize) -> std::borrow::Cow<'_, str> {
    let count = s.chars().count();
    if count <= width {
        return std::borrow::Cow::Borrowed(s);
    }
    if width == 0 {
        return std::borrow::Cow::Borrowed("");
    }
    let skip = count - (width - 1);
    let mut out = String::from("…");
    out.extend(s.chars().skip(skip));
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_pick_a_unit_and_stay_short() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(100 * 1024 * 1024), "100 MiB");
        assert_eq!(bytes(u64::MAX), "16384 PiB");
    }

    #[test]
    fn elide_middle_keeps_both_ends() {
        let s = "cannot upload a.bin: already exists; upload with --overwrite";
        assert_eq!(elide_middle(s, 100), s);
        let cut = elide_middle(s, 30);
        assert_eq!(cut.chars().count(), 30);
        assert!(cut.starts_with("cannot up"), "{cut}");
        assert!(cut.ends_with("with --overwrite"), "{cut}");
        assert_eq!(elide_middle("abcdef", 2), "a…");
        assert_eq!(elide_middle("ab", 0), "");
    }

    #[test]
    fn rate_ignores_nonsense() {
        assert_eq!(rate(f64::NAN), "0 B/s");
        assert_eq!(rate(-3.0), "0 B/s");
        assert_eq!(rate(2048.0), "2.0 KiB/s");
    }

    #[test]
    fn durations_use_two_units_at_most() {
        assert_eq!(duration(Duration::from_secs(45)), "45s");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration(Duration::from_secs(7_620)), "2h07m");
        assert_eq!(duration(Duration::from_secs(273_600)), "3d04h");
    }

    #[test]
    fn transport_label_prefers_the_profile() {
        assert_eq!(
            transport_label("local:/tmp/spool?profile=telegram-text"),
            "telegram-text"
        );
        assert_eq!(
            transport_label("local:/tmp/spool?x=1&profile=shipper"),
            "shipper"
        );
        assert_eq!(transport_label("telegram:bot123"), "telegram");
        assert_eq!(transport_label("plain"), "plain");
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate_start("/home/me/projects", 8), "…rojects");
    }
}
