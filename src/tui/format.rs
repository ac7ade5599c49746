//! Short human forms of sizes, rates, durations and transport names, sized
//! for table columns.

use std::time::Duration;

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

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

/// The schemes of transport URIs ([`abbreviate_uris`] shortens them).
const TRANSPORT_SCHEMES: [&str; 6] = [
    "local",
    "telegram",
    "shipper",
    "whatsapp",
    "messenger",
    "mem",
];

/// `s` with each transport URI in it shortened to its label
/// (`local:/tmp/spool?profile=telegram-text` becomes `telegram-text`,
/// `telegram:@bot?token_env=T` becomes `telegram`): in a line that must be
/// shortened, which link is meant says as much as its whole address.
pub fn abbreviate_uris(s: &str) -> std::borrow::Cow<'_, str> {
    let is_uri = |word: &str| {
        word.split_once(':')
            .is_some_and(|(scheme, rest)| TRANSPORT_SCHEMES.contains(&scheme) && !rest.is_empty())
    };
    let shorten = |word: &str| -> Option<String> {
        let start = word.len() - word.trim_start_matches(['(', '"', '\'']).len();
        let core = word[start..].trim_end_matches([',', ';', ':', ')', '.', '"', '\'']);
        let end = start + core.len();
        is_uri(core).then(|| {
            format!(
                "{}{}{}",
                &word[..start],
                transport_label(core),
                &word[end..]
            )
        })
    };
    if !s.split(' ').any(|w| shorten(w).is_some()) {
        return std::borrow::Cow::Borrowed(s);
    }
    let words: Vec<String> = s
        .split(' ')
        .map(|w| shorten(w).unwrap_or_else(|| w.to_owned()))
        .collect();
    std::borrow::Cow::Owned(words.join(" "))
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

/// Cut `s` to at most `width` columns by taking out its middle: the
/// start says what failed, the end what to do about it, and both stay.
/// For a name (a path); prose goes through [`fit_words`], which cuts no word.
pub fn elide_middle(s: &str, width: usize) -> std::borrow::Cow<'_, str> {
    let total = s.width();
    if total <= width {
        return std::borrow::Cow::Borrowed(s);
    }
    if width < 3 {
        return truncate(s, width);
    }
    // A little more of the end: that is where the remedy usually is.
    let head_room = (width - 1) * 2 / 5;
    let tail_room = width - 1 - head_room;
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > head_room {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    let mut tail: Vec<char> = Vec::new();
    let mut used = 0;
    for c in s.chars().rev() {
        let w = c.width().unwrap_or(0);
        if used + w > tail_room {
            break;
        }
        used += w;
        tail.push(c);
    }
    out.extend(tail.into_iter().rev());
    std::borrow::Cow::Owned(out)
}

/// Fit prose into `width` columns without cutting a word: whole words
/// are taken out of the middle and `…` stands for them, so the start (what
/// happened) and the last clause that fits (what to do: after a `;`, `:`
/// or `,`, or in parentheses) stay. Only a single word longer than the
/// room is cut, as no shortening by words can help it. Written by hand:
/// textwrap and ratatui wrap, neither shortens.
pub fn fit_words(s: &str, width: usize) -> std::borrow::Cow<'_, str> {
    if s.width() <= width {
        return std::borrow::Cow::Borrowed(s);
    }
    let words: Vec<&str> = s.split(' ').filter(|w| !w.is_empty()).collect();
    // Each word counts one space with it; the text is then one column
    // wider than that count with " … " between head and tail.
    let room = width.saturating_sub(1);
    let cost = |word: &str| word.width() + 1;
    let mut used = 0;
    let mut head = 0;
    // The start, in about two fifths of the room.
    while head < words.len() && used + cost(words[head]) <= room * 2 / 5 {
        used += cost(words[head]);
        head += 1;
    }
    // The longest last clause that fits beside it.
    let clause_start =
        |i: usize| words[i].starts_with('(') || words[i - 1].ends_with([';', ':', ',']);
    let mut tail_start = words.len();
    let mut tail_cost = 0;
    let mut best = None;
    while tail_start > head.max(1) {
        tail_start -= 1;
        tail_cost += cost(words[tail_start]);
        if used + tail_cost > room {
            break;
        }
        if clause_start(tail_start) {
            best = Some((tail_start, tail_cost));
        }
    }
    let tail = best.map_or(words.len(), |(start, cost)| {
        used += cost;
        start
    });
    // More of the start with what is left.
    while head < tail && used + cost(words[head]) <= room {
        used += cost(words[head]);
        head += 1;
    }
    if head == 0 && tail == words.len() {
        return elide_middle(s, width);
    }
    let head = words[..head].join(" ");
    let tail = words[tail..].join(" ");
    let out = match (head.is_empty(), tail.is_empty()) {
        (true, _) => format!("… {tail}"),
        (_, true) => format!("{head} …"),
        _ => format!("{head} … {tail}"),
    };
    std::borrow::Cow::Owned(out)
}

/// The first words of `s` that fit `width` columns, then `…`: for a
/// reason shown beside a place that has it whole (the log), where what
/// happened matters more than the remedy that does not fit anyway.
pub fn first_words(s: &str, width: usize) -> std::borrow::Cow<'_, str> {
    if s.width() <= width {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::new();
    for word in s.split(' ').filter(|w| !w.is_empty()) {
        let sep = usize::from(!out.is_empty());
        // Room for the word and " …" after it.
        if out.width() + sep + word.width() + 2 > width {
            break;
        }
        if sep == 1 {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.is_empty() {
        return truncate(s, width);
    }
    out.push_str(" …");
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

    /// Issue 32: notices at 80 columns lost the ends of words
    /// ("no answer from the agent for 14s; st").
    #[test]
    fn fit_words_takes_whole_words_out_of_the_middle_and_cuts_none() {
        let s = "no answer from the agent for 14s; still asking (R asks again)";
        assert_eq!(fit_words(s, 80), s);
        let words: Vec<&str> = s.split(' ').collect();
        for width in 10..s.len() {
            let fitted = fit_words(s, width);
            assert!(fitted.width() <= width, "{fitted:?} is wider than {width}");
            for shown in fitted.split(' ').filter(|w| *w != "…") {
                assert!(
                    words.contains(&shown),
                    "{shown:?} is a cut word in {fitted:?}"
                );
            }
        }
        assert_eq!(fit_words(s, 36), "no answer from the … (R asks again)");
        assert_eq!(fit_words(s, 28), "no answer … (R asks again)");
        // Without a clause that fits, the start alone.
        let long = "no answer from the agent over telegram-text for 14 s; still trying until the --timeout of 600 s (progress is kept)";
        assert_eq!(fit_words(long, 28), "no answer from the agent …");
        assert_eq!(first_words(s, 30), "no answer from the agent for …");
        // A word longer than the room is the only one ever cut.
        assert_eq!(fit_words("/a/very/long/path/indeed", 10), "/a/…indeed");
    }

    #[test]
    fn transport_uris_shorten_to_their_labels_and_other_words_stay() {
        assert_eq!(
            abbreviate_uris("no answer over local:/tmp/s?profile=telegram-text for 14 s"),
            "no answer over telegram-text for 14 s"
        );
        assert_eq!(
            abbreviate_uris("transport failed: telegram:@bot?token_env=T: refused (see local:/x)"),
            "transport failed: telegram: refused (see local)"
        );
        let plain = "cannot read notes: 10:30 is not a size";
        assert_eq!(abbreviate_uris(plain), plain);
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
