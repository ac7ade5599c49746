//! Quotas: what one peer, and all peers together, may keep on the agent.
//!
//! A [`Limits`] is set per peer in `peers.toml` (`pigeon keys trust …
//! --quota 2G --max-file 500M`), with defaults for every peer and limits
//! for all of them together in the agent's `config.toml` (`[agent.limits]`,
//! `[agent.total]`). [`Usage`] is counted from the agent's transfer
//! records: what a peer uploaded and is still there, and its uploads still
//! open (counted whole: their bytes are promised). [`check`] decides an
//! offer before anything is allocated for it, and says the numbers when
//! it refuses.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::view::human_bytes;

/// A number of bytes, written as rclone writes sizes (`512k`, `2G`; a bare
/// number is bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(s: &str) -> Result<Size, String> {
        match crate::bwlimit::parse_size(s)? {
            Some(n) if n > 0 => Ok(Size(n)),
            _ => Err(format!(
                "{s:?}: a limit needs a size like 500M or 2G (leave it out for none)"
            )),
        }
    }
}

impl std::fmt::Display for Size {
    /// The shortest exact form: `2G`, `500M`, `1536` (what is written back).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut n = self.0;
        for unit in ["", "k", "M", "G", "T"] {
            if !n.is_multiple_of(1024) || n == 0 || unit == "T" {
                return write!(f, "{n}{unit}");
            }
            n /= 1024;
        }
        write!(f, "{n}P")
    }
}

/// Text (`"2G"`) in the config files, a plain number on the wire.
impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        if !d.is_human_readable() {
            return u64::deserialize(d).map(Size);
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(0) => Err(serde::de::Error::custom(
                "a limit of 0 would refuse everything: give a size like 500M, or leave it out for none",
            )),
            Raw::Bytes(n) => Ok(Size(n)),
            Raw::Text(t) => Size::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// Limits on what is kept; each one absent means none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes stored (finished uploads still there, and open ones whole).
    #[serde(default)]
    pub quota: Option<Size>,
    /// Files stored, counted as `quota` counts bytes.
    #[serde(default)]
    pub max_files: Option<u64>,
    /// The largest one file.
    #[serde(default)]
    pub max_file: Option<Size>,
    /// Uploads open at once.
    #[serde(default)]
    pub max_open: Option<u64>,
    /// Bytes offered in any 24 hours.
    #[serde(default)]
    pub daily: Option<Size>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// These limits, and `defaults` where these have none.
    pub fn or(&self, defaults: &Limits) -> Limits {
        Limits {
            quota: self.quota.or(defaults.quota),
            max_files: self.max_files.or(defaults.max_files),
            max_file: self.max_file.or(defaults.max_file),
            max_open: self.max_open.or(defaults.max_open),
            daily: self.daily.or(defaults.daily),
        }
    }
}

/// What is kept, counted from the agent's records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub bytes: u64,
    pub files: u64,
    pub open: u64,
    /// Bytes offered in the last 24 hours.
    pub today: u64,
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        self.bytes += other.bytes;
        self.files += other.files;
        self.open += other.open;
        self.today += other.today;
    }
}

/// One quota line as `pigeon quota` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLine {
    /// A peer's name, or `all peers`.
    pub who: String,
    pub usage: Usage,
    pub limits: Limits,
}

impl QuotaLine {
    /// `laptop: stored 1.2 GiB of 2.0 GiB · files 14 · open 1 of 16 · today 300 MiB · largest file 500 MiB`
    /// (a figure without "of" has no limit).
    pub fn describe(&self) -> String {
        let (u, l) = (&self.usage, &self.limits);
        let of_bytes = |n: u64, limit: Option<Size>| match limit {
            Some(Size(max)) => format!("{} of {}", human_bytes(n), human_bytes(max)),
            None => human_bytes(n),
        };
        let of = |n: u64, limit: Option<u64>| match limit {
            Some(max) => format!("{n} of {max}"),
            None => n.to_string(),
        };
        let largest = match l.max_file {
            Some(Size(max)) => human_bytes(max),
            None => "any".into(),
        };
        format!(
            "{}: stored {} · files {} · open {} · today {} · largest file {largest}",
            self.who,
            of_bytes(u.bytes, l.quota),
            of(u.files, l.max_files),
            of(u.open, l.max_open),
            of_bytes(u.today, l.daily),
        )
    }
}

/// Whether `peer` (using `mine` under `limits`; all peers together using
/// `all` under `total`) may start an upload of `size` bytes. The refusal
/// says which limit, the numbers, and what would make room.
pub fn check(
    peer: &str,
    size: u64,
    (mine, limits): (&Usage, &Limits),
    (all, total): (&Usage, &Limits),
) -> Result<(), String> {
    let hint_peer = format!(
        "remove some of {peer}'s files on the agent, or raise its limit there (`pigeon keys trust <KEY> --name {peer} …`, or peers.toml)"
    );
    let hint_all = "remove files on the agent, or raise [agent.total] in its config.toml";
    if let Some(Size(max)) = limits.max_file {
        if size > max {
            return Err(format!(
                "file too large: {} is above the {} a file {peer} may upload",
                human_bytes(size),
                human_bytes(max)
            ));
        }
    }
    if let Some(Size(max)) = total.max_file {
        if size > max {
            return Err(format!(
                "file too large: {} is above the {} the agent takes in one file",
                human_bytes(size),
                human_bytes(max)
            ));
        }
    }
    for (who, used, lim, hint) in [
        (peer, mine, limits, hint_peer.as_str()),
        ("all peers", all, total, hint_all),
    ] {
        if let Some(Size(max)) = lim.quota {
            if used.bytes.saturating_add(size) > max {
                return Err(format!(
                    "quota exceeded ({} of {} used by {who}, and this file is {}); {hint}",
                    human_bytes(used.bytes),
                    human_bytes(max),
                    human_bytes(size)
                ));
            }
        }
        if let Some(max) = lim.max_files {
            if used.files + 1 > max {
                return Err(format!(
                    "too many files ({} of {max} stored by {who}); {hint}",
                    used.files
                ));
            }
        }
        if let Some(max) = lim.max_open {
            if used.open + 1 > max {
                return Err(format!(
                    "{} uploads of {who} are already open (at most {max}); let them finish or cancel some",
                    used.open
                ));
            }
        }
        if let Some(Size(max)) = lim.daily {
            if used.today.saturating_add(size) > max {
                return Err(format!(
                    "daily limit reached ({} of {} offered by {who} in the last 24 hours, and this file is {}); try again later or raise `daily`",
                    human_bytes(used.today),
                    human_bytes(max),
                    human_bytes(size)
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print_back_exactly() {
        assert_eq!(Size::parse("2G").unwrap(), Size(2 << 30));
        assert_eq!(Size::parse("500M").unwrap().to_string(), "500M");
        assert_eq!(Size(1536).to_string(), "1536");
        assert_eq!(Size(3 << 40).to_string(), "3T");
        assert!(Size::parse("off").is_err());
        assert!(Size::parse("0").is_err());
        assert!(toml::from_str::<Limits>("quota = 0").is_err());
        assert!(Size::parse("2X").unwrap_err().contains("unit"));
        let l: Limits = toml::from_str("quota = \"2G\"\nmax_file = 1000\nmax_open = 3").unwrap();
        assert_eq!(l.quota, Some(Size(2 << 30)));
        assert_eq!(l.max_file, Some(Size(1000)));
        let back: Limits = toml::from_str(&toml::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
        // And through the socket's codec (no self-describing format there).
        let bytes = crate::codec::encode("limits", 1, &l).unwrap();
        assert_eq!(
            crate::codec::decode::<Limits>("limits", 1, &bytes).unwrap(),
            l
        );
    }

    #[test]
    fn each_limit_refuses_with_its_numbers_and_only_past_it() {
        let none = Limits::default();
        let used = Usage {
            bytes: 1900 << 20,
            files: 9,
            open: 2,
            today: 100 << 20,
        };
        let quota = Limits {
            quota: Some(Size(2 << 30)),
            ..none
        };
        assert!(check("laptop", 100 << 20, (&used, &quota), (&used, &none)).is_ok());
        let err = check("laptop", 200 << 20, (&used, &quota), (&used, &none)).unwrap_err();
        assert!(
            err.starts_with("quota exceeded (1.9 GiB of 2.0 GiB used by laptop"),
            "{err}"
        );
        let max_file = Limits {
            max_file: Some(Size(500 << 20)),
            ..none
        };
        let err = check("laptop", 501 << 20, (&used, &max_file), (&used, &none)).unwrap_err();
        assert!(err.contains("above the 500 MiB"), "{err}");
        let files = Limits {
            max_files: Some(9),
            ..none
        };
        assert!(check("laptop", 1, (&used, &files), (&used, &none))
            .unwrap_err()
            .contains("9 of 9"));
        let open = Limits {
            max_open: Some(2),
            ..none
        };
        assert!(check("laptop", 1, (&used, &open), (&used, &none))
            .unwrap_err()
            .contains("already open"));
        let daily = Limits {
            daily: Some(Size(150 << 20)),
            ..none
        };
        assert!(check("laptop", 60 << 20, (&used, &daily), (&used, &none))
            .unwrap_err()
            .contains("daily limit"));
        // All peers together.
        let err = check("laptop", 200 << 20, (&used, &none), (&used, &quota)).unwrap_err();
        assert!(err.contains("used by all peers"), "{err}");
        // A peer's own limit wins over the default, field by field.
        let merged = max_file.or(&quota);
        assert_eq!(merged.quota, quota.quota);
        assert_eq!(merged.max_file, max_file.max_file);
    }
}
