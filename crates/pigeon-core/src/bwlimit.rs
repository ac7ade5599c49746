//! Bandwidth limits written in rclone's `--bwlimit` syntax: one rate, separate upload and
//! download rates, or a daily or weekly timetable of rates.
//!
//! The links enforce it ([`crate::link::Limiter`]).

use std::fmt;
use std::str::FromStr;

/// One direction's limit in bytes per second; `None` means unlimited ("off").
pub type Rate = Option<u64>; // bytes per second

/// The upload and download limits in force at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The upload limit.
    pub up: Rate,
    /// The download limit.
    pub down: Rate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    day: Option<u8>,
    minute: u16,
    limit: Limit,
}

impl Entry {
    /// Minutes since Monday 00:00 for a weekday entry, or since 00:00 for a daily entry.
    fn key(&self) -> u32 {
        self.day.map_or(0, |d| u32::from(d) * 1440) + u32::from(self.minute)
    }
}

/// A parsed bandwidth limit: a timetable of at least one entry, each of which sets the limit
/// from its time onwards. Either every entry is daily (no weekday) or every entry has a weekday.
/// A single rate is stored as one daily entry at 00:00.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BwLimit {
    /// Entries sorted by (weekday option, minute of day); never empty.
    entries: Vec<Entry>,
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const UNITS: &str = "B, K, M, G, T or P";
const EMPTY: &str = "empty bandwidth limit: give a rate like 10M, up:down like 10M:1M, off, \
                     or a timetable like \"08:00,512k 18:00,off\"";

impl BwLimit {
    /// Parses a limit spec: a rate like `10M`, `up:down` like `10M:100k`, or a timetable of
    /// space-separated `[Ddd-]HH:MM,RATE` entries. A daily entry in a table that also has weekday
    /// entries applies to all seven days, except at a day and time that a weekday entry names.
    pub fn parse(spec: &str) -> Result<BwLimit, String> {
        let tokens: Vec<&str> = spec.split_whitespace().collect();
        if tokens.is_empty() {
            return Err(EMPTY.into());
        }
        if tokens.len() == 1 && !tokens[0].contains(',') {
            let (day, minute, limit) = (None, 0, parse_limit(tokens[0])?);
            let entries = vec![Entry { day, minute, limit }];
            return Ok(BwLimit { entries });
        }
        let mut raw: Vec<Entry> = Vec::new();
        for tok in tokens {
            let e = parse_entry(tok)?;
            if raw.iter().any(|r| r.day == e.day && r.minute == e.minute) {
                let when = fmt_time(e.day, e.minute);
                return Err(format!("{tok:?}: duplicate time {when}"));
            }
            raw.push(e);
        }
        let mut entries = raw.clone();
        if raw.iter().any(|e| e.day.is_some()) {
            // Weekday entries come first, so the stable sort and dedup below keep them.
            entries.retain(|e| e.day.is_some());
            for e in raw.iter().filter(|e| e.day.is_none()) {
                entries.extend((0..7).map(|d| Entry { day: Some(d), ..*e }));
            }
        }
        entries.sort_by_key(Entry::key);
        entries.dedup_by_key(|e| e.key());
        Ok(BwLimit { entries })
    }

    /// The limit in force at a local time given as (weekday 0=Monday..6=Sunday, minute of day 0..1439).
    /// This is the latest entry at or before that time; before the first entry, the last entry
    /// of the day (daily table) or of the week (weekly table) is in force. A weekday above 6 is
    /// taken modulo 7, and a minute above 1439 counts as 1439.
    pub fn at(&self, weekday: u8, minute: u16) -> Limit {
        let last = self.entries[self.entries.len() - 1];
        let day = last.day.map_or(0, |_| u32::from(weekday % 7));
        let target = day * 1440 + u32::from(minute.min(1439));
        let found = self.entries.iter().rev().find(|e| e.key() <= target);
        found.unwrap_or(&last).limit
    }

    /// True when some entry limits the download direction (what a client
    /// asks its agent to send it at, [`crate::protocol::Control::Rate`]).
    pub fn limits_down(&self) -> bool {
        self.entries.iter().any(|e| e.limit.down.is_some())
    }

    /// True when no entry limits anything.
    pub fn is_off(&self) -> bool {
        let off = |e: &Entry| e.limit.up.is_none() && e.limit.down.is_none();
        self.entries.iter().all(off)
    }
}

impl fmt::Display for BwLimit {
    /// Writes the limit in a form that `parse` reads back to an equal value: a lone daily entry
    /// at 00:00 is written as just its rate, and a weekly table lists every entry with its weekday.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.entries[0];
        if self.entries.len() == 1 && first.day.is_none() && first.minute == 0 {
            return write!(f, "{}", first.limit);
        }
        for (i, e) in self.entries.iter().enumerate() {
            let sep = if i > 0 { " " } else { "" };
            write!(f, "{sep}{},{}", fmt_time(e.day, e.minute), e.limit)?;
        }
        Ok(())
    }
}

impl FromStr for BwLimit {
    type Err = String;

    /// Same as [`BwLimit::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BwLimit::parse(s)
    }
}

impl fmt::Display for Limit {
    /// Writes one rate when both directions agree, else `up:down`. Each rate is `off` or a whole
    /// number with the largest unit (B, K, M, G, T or P) that divides it exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.up == self.down {
            write!(f, "{}", fmt_rate(self.up))
        } else {
            write!(f, "{}:{}", fmt_rate(self.up), fmt_rate(self.down))
        }
    }
}

fn fmt_rate(rate: Rate) -> String {
    let Some(b) = rate else { return "off".into() };
    let k = (b.trailing_zeros() / 10).min(5);
    format!("{}{}", b >> (10 * k), &"BKMGTP"[k as usize..][..1])
}

fn fmt_time(day: Option<u8>, minute: u16) -> String {
    let prefix = day.map_or(String::new(), |d| format!("{}-", DAYS[usize::from(d)]));
    format!("{prefix}{:02}:{:02}", minute / 60, minute % 60)
}

/// Parses one timetable entry `[Ddd-]HH:MM,RATE`; the hour may have one digit.
fn parse_entry(tok: &str) -> Result<Entry, String> {
    let syntax = || format!("{tok:?}: timetable entries look like HH:MM,RATE or Mon-HH:MM,RATE");
    let (when, rate) = tok.split_once(',').ok_or_else(syntax)?;
    let (day, time) = match when.split_once('-') {
        None => (None, when),
        Some((d, t)) => {
            let i = DAYS.iter().position(|n| n.eq_ignore_ascii_case(d));
            let err = || format!("{tok:?}: unknown weekday {d:?} (use Mon, Tue, ... or Sun)");
            (Some(i.ok_or_else(err)? as u8), t)
        }
    };
    let bad = || format!("{tok:?}: time {time:?} is not HH:MM");
    let num = |s: &str, lens: &[usize]| {
        let ok = lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| s.parse::<u16>().ok()).flatten()
    };
    let (h, m) = time.split_once(':').ok_or_else(bad)?;
    let h = num(h, &[1, 2]).ok_or_else(bad)?;
    let m = num(m, &[2]).ok_or_else(bad)?;
    if h > 23 {
        return Err(format!("{tok:?}: hour {h} is not 0-23"));
    }
    if m > 59 {
        return Err(format!("{tok:?}: minute {m} is not 0-59"));
    }
    let limit = parse_limit(rate).map_err(|e| format!("in {tok:?}: {e}"))?;
    let (day, minute) = (day, h * 60 + m);
    Ok(Entry { day, minute, limit })
}

/// Parses `RATE` (both directions) or `UP:DOWN`.
fn parse_limit(s: &str) -> Result<Limit, String> {
    let (up, down) = s.split_once(':').unwrap_or((s, s));
    if down.contains(':') {
        return Err(format!("{s:?}: give one rate, or up:down like 10M:1M"));
    }
    let (up, down) = (parse_rate(up)?, parse_rate(down)?);
    Ok(Limit { up, down })
}

/// Parses one rate: `off`, or a decimal number with an optional unit (none means K).
fn parse_rate(s: &str) -> Result<Rate, String> {
    parse_amount(s, 10)
}

/// Parses a size in the same syntax (`512k`, `2G`, `1.5M`, `off` for no
/// limit), where a bare number is bytes: quotas and file size limits.
pub fn parse_size(s: &str) -> Result<Option<u64>, String> {
    parse_amount(s.trim(), 0).map_err(|e| e.replace("a rate", "a size").replace("rate ", "size "))
}

/// A decimal number with an optional binary unit; `default_shift` is the
/// unit of a bare number (10: K, 0: bytes).
fn parse_amount(s: &str, default_shift: usize) -> Result<Rate, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    if s.to_ascii_lowercase().ends_with("/s") {
        let msg = "a rate is a size like 512k or 10M, or off (no \"/s\")";
        return Err(format!("{s:?}: {msg}"));
    }
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'));
    let (num, unit) = s.split_at(split.unwrap_or(s.len()));
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        let msg = "a rate is a number with an optional unit, like 512k or 10M, or off";
        return Err(format!("{s:?}: {msg}"));
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" => default_shift,
        u if u.len() == 1 && "bkmgtp".contains(u) => 10 * "bkmgtp".find(u).unwrap_or(0),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use {UNITS})")),
    };
    let frac = &frac[..frac.len().min(18)];
    let too_big = || format!("{s:?}: rate is too large");
    let digits: u128 = format!("{int}{frac}").parse().map_err(|_| too_big())?;
    let den = 10u128.pow(frac.len() as u32);
    let scaled = digits.checked_mul(1u128 << shift).ok_or_else(too_big)?;
    let bytes = scaled / den + u128::from(scaled % den * 2 >= den);
    let bytes = u64::try_from(bytes).map_err(|_| too_big())?;
    if bytes == 0 && digits != 0 {
        let msg = "rate rounds to 0 bytes/s (use off for unlimited)";
        return Err(format!("{s:?}: {msg}"));
    }
    Ok((bytes != 0).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> BwLimit {
        BwLimit::parse(s).unwrap_or_else(|e| panic!("{s:?} failed: {e}"))
    }

    /// The rate of a spec that sets the same rate both ways.
    fn one(s: &str) -> Rate {
        let l = parse(s).at(0, 0);
        assert_eq!(l.up, l.down, "{s:?}");
        l.up
    }

    /// Calls `f(left, right)`, both trimmed, for each `left => right` case in `table`; cases are
    /// separated by newlines or semicolons, and blank ones are skipped.
    fn table(table: &str, mut f: impl FnMut(&str, &str)) {
        for case in table.split(['\n', ';']).filter(|c| !c.trim().is_empty()) {
            let (left, right) = case.split_once("=>").expect("a => case");
            f(left.trim(), right.trim());
        }
    }

    /// Checks each `spec => bytes` case of `cases` against [`one`].
    fn rates(cases: &str) {
        table(cases, |spec, want| {
            assert_eq!(one(spec), want.parse().ok(), "{spec:?}")
        });
    }

    /// Checks each whitespace-separated `Ddd-HH:MM=LIMIT` case against the parsed `spec`.
    fn check(spec: &str, cases: &str) {
        let b = parse(spec);
        for case in cases.split_whitespace() {
            let (when, want) = case.split_once('=').unwrap();
            let day = DAYS.iter().position(|d| when.starts_with(d)).unwrap();
            let (h, m): (u16, u16) = (when[4..6].parse().unwrap(), when[7..].parse().unwrap());
            let got = b.at(day as u8, h * 60 + m).to_string();
            assert_eq!(got, want, "{spec:?} at {when}");
        }
    }

    #[test]
    fn units() {
        for (i, unit) in ["b", "k", "m", "g", "t", "p"].iter().enumerate() {
            let upper = unit.to_uppercase();
            assert_eq!(one(&format!("3{unit}")), Some(3 << (10 * i)), "{unit}");
            assert_eq!(one(&format!("5{upper}")), Some(5 << (10 * i)), "{upper}");
        }
        let cases = "1.5M => 1572864; .5k => 512; 1.4B => 1; 0.5B => 1; 2.5g => 2684354560
                     16777215T => 18446742974197923840";
        rates(cases);
    }

    #[test]
    fn bare_number_is_kib() {
        rates("100 => 102400; 10 => 10240; 1.5 => 1536; 0.5 => 512; 007 => 7168");
    }

    #[test]
    fn off_and_zero() {
        for s in "off OFF Off 0 0k 0.0M 000 off:off 0:0 00:00,off".split(' ') {
            assert!(parse(s).is_off(), "{s:?}");
            assert_eq!(one(s), None, "{s:?}");
        }
        for s in ["1k", "off:1k", "08:00,off 12:00,1k", "Sun-23:59,1B:off"] {
            assert!(!parse(s).is_off(), "{s:?}");
        }
    }

    #[test]
    fn up_down() {
        let l = parse("10M:100k").at(2, 600);
        assert_eq!((l.up, l.down), (Some(10 << 20), Some(100 << 10)));
        check("off:1M", "Mon-00:00=off:1M");
        check("1M:0", "Sun-23:59=1M:off");
        check(
            "08:00,1M:off 20:00,off:2M",
            "Mon-09:00=1M:off Mon-01:00=off:2M",
        );
    }

    #[test]
    fn daily_timetable() {
        // Before 08:00 the 23:00 entry of the day before is in force.
        let spec = "08:00,512k 12:00,10M  13:00,512k 18:00,30M 23:00,off";
        check(
            spec,
            "Mon-00:00=off Thu-07:59=off Thu-08:00=512K Sun-12:30=10M",
        );
        check(
            spec,
            "Tue-13:00=512K Tue-17:59=512K Tue-18:00=30M Tue-23:59=off",
        );
        check("18:00,1M 06:00,2M", "Fri-05:00=1M Fri-06:00=2M");
    }

    #[test]
    fn weekly_timetable() {
        // Before Mon-08:00 the Sat-10:00 entry of the week before is in force.
        let spec = "Mon-08:00,1M fri-18:00,off SAT-10:00,2M";
        check(spec, "Mon-07:59=2M Mon-08:00=1M Wed-12:00=1M Fri-18:00=off");
        check(spec, "Sat-09:00=off Sat-10:00=2M Sun-23:59=2M");
    }

    #[test]
    fn mixed_daily_and_weekday() {
        // Daily entries apply on every day, but Sat-08:00 replaces the daily 08:00 on Saturday.
        let spec = "08:00,1M 18:00,off Sat-08:00,10M";
        check(
            spec,
            "Mon-00:00=off Mon-08:00=1M Sat-08:00=10M Sat-18:00=off Sun-12:00=1M",
        );
        let b = parse(spec);
        assert_eq!(b.entries.len(), 14);
        assert!(b
            .to_string()
            .contains("Fri-18:00,off Sat-08:00,10M Sat-18:00,off"));
    }

    #[test]
    fn display_round_trip() {
        let mixed = parse("08:00,1M 18:00,off Sat-08:00,10M").to_string();
        let cases = "512k => 512K; 1.5M => 1536K; 10M:100k => 10M:100K; 0 => off; 1000 => 1000K
                     1025B => 1025B; off:3P => off:3P; 00:00,1g => 1G
                     8:00,512k  23:00,off => 08:00,512K 23:00,off
                     mon-08:00,1M:off Sun-23:59,2G => Mon-08:00,1M:off Sun-23:59,2G";
        table(&format!("{cases}\n{mixed} => {mixed}"), |spec, shown| {
            let b = parse(spec);
            assert_eq!(b.to_string(), shown, "{spec:?}");
            assert_eq!(shown.parse::<BwLimit>().unwrap(), b, "{spec:?}");
        });
    }

    #[test]
    fn errors() {
        let cases = r#"
            25:00,1M => "25:00,1M": hour 25 is not 0-23
            08:60,1M => "08:60,1M": minute 60 is not 0-59
            8h,1M => "8h,1M": time "8h" is not HH:MM
            12M/s => "12M/s": a rate is a size like 512k or 10M, or off (no "/s")
            08:00,12m/S => in "08:00,12m/S": "12m/S": a rate is a size
            10X => "10X": unknown unit "X" (use B, K, M, G, T or P)
            10M:10KiB => "10KiB": unknown unit "KiB"
            => empty bandwidth limit
            08:00,1M 8:00,2M => "8:00,2M": duplicate time 08:00
            Mon-08:00,1M mon-08:00,2M => "mon-08:00,2M": duplicate time Mon-08:00
            Xyz-08:00,1M => unknown weekday "Xyz"
            999999999999999999999999999999999999999999 => "9999999999999999999999999
            16777216T => "16777216T": rate is too large
            1M 08:00,2M => "1M": timetable entries look like HH:MM,RATE
            1:2:3 => "1:2:3": give one rate, or up:down
            k => "k": a rate is a number
            1.2.3M => "1.2.3M": a rate is a number
            -1 => "-1": a rate is a number
            0.1B => "0.1B": rate rounds to 0 bytes/s"#;
        table(cases, |spec, want| {
            let e = BwLimit::parse(spec).unwrap_err();
            assert!(e.contains(want), "{spec:?} gave {e:?}");
        });
        assert!(BwLimit::parse(" \t ").unwrap_err().contains("empty"));
    }
}
