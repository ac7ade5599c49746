//! Whom this party trusts: `pigeon keys` (show, trust, list, revoke) and
//! `pigeon pair`, which trusts the other side after a short code. Both
//! keep a revoked key's name from passing to another key unasked, and a
//! name from having a twin that differs only in case.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use pigeon_core::home::{Home, PeerName, RevokedPeer, TrustedPeer};
use pigeon_core::policy::Permissions;
use pigeon_core::view::plural;

use super::args::{KeysCommand, LimitArgs, PairArgs};
use super::print::format_time;
use super::setup::parse_transports;

/// `pigeon keys show|trust|list|revoke`.
pub fn keys(home: &Home, cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Show { id: false } => {
            println!("{}", home.identity()?.public());
        }
        KeysCommand::Show { id: true } => {
            println!("{}", home.identity()?.public().id());
        }
        KeysCommand::Trust {
            key,
            name,
            allow,
            limits,
            addresses,
            reuse_name,
        } => {
            let name = PeerName::parse(&name)?;
            let key: pigeon_core::crypto::PublicKey = key.parse()?;
            let mut all = home.trust_list()?;
            let mut revoked = home.revoked()?;
            let reserved_changed = claim_name(&mut revoked, &name, &key, reuse_name)?;
            // Trusting a name again keeps the addresses and limits it had.
            let before = all.iter().find(|p| p.name == name);
            let replaced = before.map(|p| p.key).filter(|k| *k != key);
            let mut known = before.map(|p| p.addresses.clone()).unwrap_or_default();
            let limits = limits.apply(before.map(|p| p.limits).unwrap_or_default())?;
            for a in &addresses {
                let (kind, address) = a
                    .split_once('=')
                    .filter(|(k, _)| pigeon_core::home::ADDRESS_KINDS.contains(k))
                    .ok_or_else(|| {
                        anyhow!(
                            "--address {a:?}: give KIND=ADDRESS, KIND one of {}",
                            pigeon_core::home::ADDRESS_KINDS.join(", ")
                        )
                    })?;
                match address.trim() {
                    "" => known.remove(kind),
                    address => known.insert(kind.to_string(), address.to_string()),
                };
            }
            let peer = TrustedPeer {
                name,
                key,
                permissions: Permissions::parse(&allow)?,
                addresses: known,
                limits,
            };
            refuse_case_twin(&all, &peer.name)?;
            all.retain(|p| p.name != peer.name);
            let limits = match peer.limits.is_empty() {
                true => String::new(),
                false => format!(
                    ", within {}",
                    toml::to_string(&peer.limits)
                        .unwrap_or_default()
                        .trim()
                        .replace('\n', ", ")
                ),
            };
            eprintln!(
                "trusting {} ({}) to {}{limits}",
                peer.name,
                &peer.key.to_string()[..16],
                peer.permissions
            );
            if let Some(old) = replaced {
                // A new key for a trusted name: the owner's to make, and
                // said, since the folder and shares go with the name.
                eprintln!(
                    "{} was trusted with the key {}…; this key replaces it, and on an agent takes its folder and shares",
                    peer.name,
                    &old.to_string()[..16]
                );
            }
            all.push(peer);
            home.save_trusted(&all)?;
            if reserved_changed {
                home.save_revoked(&revoked)?;
            }
        }
        KeysCommand::List => {
            let (all, refused) = home.trusted_and_refused()?;
            for why in refused {
                eprintln!("{why}");
            }
            for r in home.revoked()? {
                eprintln!(
                    "revoked: {} ({}…, {}); its name is kept for that key",
                    r.name,
                    &r.key.to_string()[..16],
                    format_time(r.revoked_unix)
                );
            }
            if all.is_empty() {
                eprintln!("no trusted peers; add one with `pigeon keys trust <KEY> --name <NAME>`");
            }
            for p in all {
                let addresses: Vec<String> = p
                    .addresses
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let addresses = match addresses.as_slice() {
                    [] => "-".to_string(),
                    some => some.join(","),
                };
                println!("{}\t{}\t{}\t{addresses}", p.name, p.key, p.permissions);
            }
        }
        KeysCommand::Revoke { name } => {
            let gone = home.revoke(&name).map_err(|e| match e {
                pigeon_core::error::CoreError::UnknownPeer(_) => {
                    anyhow!("no trusted peer named {name:?}; see `pigeon keys list`")
                }
                e => anyhow!(e),
            })?;
            eprintln!(
                "revoked {name} ({}…); the name stays with that key, so no other key inherits its folder and shares on an agent (`pigeon keys trust <KEY> --name {name} --reuse-name` gives them to another deliberately)",
                &gone.key.to_string()[..16]
            );
        }
    }
    Ok(())
}

/// `pigeon pair`: without a code, make one and wait for the client (the
/// agent's side); with one, complete it (the client's side).
pub async fn pair(home: &Home, args: PairArgs) -> Result<bool> {
    use pigeon_core::pair::{self, Ended, PairCode};
    let transports = match args.transports.as_slice() {
        [] => home.config()?.transports,
        some => some.to_vec(),
    };
    if transports.is_empty() {
        bail!("pairing needs a transport: pass --transport URI (the one the other side uses)");
    }
    let transports = parse_transports(&transports)?;
    let me = home.identity()?.public();
    let name = args.name.as_deref().map(PeerName::parse).transpose()?;
    match args.code {
        None => {
            let permissions = Permissions::parse(&args.allow)?;
            let limits = args.limits.apply(Default::default())?;
            let code = PairCode::random();
            println!("pairing code: {code}");
            eprintln!(
                "on the client, within {}: pigeon pair {code} --transport <URI>\n(one try: a wrong code ends this and the code is burnt)",
                plural(pair::CODE_LIFETIME.as_secs() / 60, "minute")
            );
            let chosen = name.clone();
            let mut trusted_as = None;
            let ended = pair::offer(&transports, code, me, &own_name(), |intro, from| {
                let key = pigeon_core::crypto::PublicKey(intro.key);
                let (named, note) = trust_paired(
                    home,
                    Paired {
                        requested: chosen.clone(),
                        reuse_name: args.reuse_name,
                        suggested: &intro.name,
                        fallback: "client",
                        key,
                        permissions,
                        limits,
                        from,
                    },
                )
                .map_err(|e| e.to_string())?;
                if let Some(note) = note {
                    eprintln!("{note}");
                }
                trusted_as = Some(named);
                Ok(())
            })
            .await?;
            match ended {
                Ended::Paired { key, .. } => {
                    let as_name = trusted_as.map(|n| n.to_string()).unwrap_or_default();
                    eprintln!(
                        "paired: trusting {as_name} ({}) to {permissions}; a running agent takes it at the next handshake",
                        &key.to_string()[..16]
                    );
                    Ok(true)
                }
                Ended::Failed(why) => {
                    eprintln!("pigeon: pairing failed: {why}");
                    Ok(false)
                }
            }
        }
        Some(text) => {
            let code = PairCode::parse(&text)?;
            let limit = Duration::from_secs(args.timeout);
            eprintln!(
                "pairing with the agent waiting at code {}-… over {}",
                code.slot(),
                transports[0]
            );
            match pair::accept(&transports, code, me, &own_name(), limit).await? {
                Ended::Paired { key, .. } => {
                    let (name, note) = trust_paired(
                        home,
                        Paired {
                            requested: name,
                            reuse_name: args.reuse_name,
                            suggested: "agent",
                            fallback: "agent",
                            key,
                            permissions: Permissions::default(),
                            limits: Default::default(),
                            from: None,
                        },
                    )?;
                    if let Some(note) = note {
                        eprintln!("{note}");
                    }
                    eprintln!(
                        "paired: trusting {name} ({}); try `pigeon ls --transport {}`",
                        &key.to_string()[..16],
                        transports[0]
                    );
                    Ok(true)
                }
                Ended::Failed(why) => {
                    eprintln!("pigeon: pairing failed: {why}");
                    Ok(false)
                }
            }
        }
    }
}

/// Who a pairing trusts, and under what name.
struct Paired<'a> {
    /// The name the owner gave (`--name`): it replaces whoever had it;
    /// a revoked key's name only with `reuse_name`.
    requested: Option<PeerName>,
    reuse_name: bool,
    /// The name the other side suggests, else `fallback`; made unique
    /// (`laptop-2`) rather than replacing a different key or taking a
    /// revoked key's name.
    suggested: &'a str,
    fallback: &'a str,
    key: pigeon_core::crypto::PublicKey,
    permissions: Permissions,
    limits: pigeon_core::policy::Limits,
    /// Where it wrote from, pinned for a transport that names senders.
    from: pigeon_core::pair::Origin<'a>,
}

/// Add a paired peer to the trust list; the name it is trusted under,
/// and why it is not the one suggested when it is not. The same key
/// paired again replaces its old entry.
fn trust_paired(home: &Home, p: Paired<'_>) -> Result<(PeerName, Option<String>)> {
    let mut all = home.trust_list()?;
    let mut revoked = home.revoked()?;
    let mut note = None;
    let name = match p.requested {
        Some(name) => name,
        None => {
            let base = PeerName::parse(p.suggested).or_else(|_| PeerName::parse(p.fallback))?;
            let name = pigeon_core::home::unique_name(&base, &p.key, &all, &revoked)?;
            if name != base {
                let whose = match pigeon_core::home::reserved_for(&revoked, base.as_str(), &p.key) {
                    Some(r) => format!(
                        "belonged to a revoked key ({}…), whose folder and shares it keeps",
                        &r.key.to_string()[..16]
                    ),
                    None => "is another key's".to_string(),
                };
                note = Some(format!(
                    "the name {base} {whose}; trusting this one as {name} (rename it with `pigeon keys trust <KEY> --name <NAME>`)"
                ));
            }
            name
        }
    };
    let reserved_changed = claim_name(&mut revoked, &name, &p.key, p.reuse_name)?;
    refuse_case_twin(
        &all.iter()
            .filter(|t| t.key != p.key)
            .cloned()
            .collect::<Vec<_>>(),
        &name,
    )?;
    all.retain(|t| t.name != name && t.key != p.key);
    let mut addresses = std::collections::BTreeMap::new();
    if let Some((kind, address)) = p.from {
        if kind != "local" && pigeon_core::home::ADDRESS_KINDS.contains(&kind) {
            addresses.insert(kind.to_string(), address.clone());
        }
    }
    all.push(TrustedPeer {
        name: name.clone(),
        key: p.key,
        permissions: p.permissions,
        addresses,
        limits: p.limits,
    });
    home.save_trusted(&all)?;
    if reserved_changed {
        home.save_revoked(&revoked)?;
    }
    Ok((name, note))
}

/// Whether `key` may have `name` as far as revoked keys go: not a revoked
/// key's name unless `reuse` says so (then it says what passes to the new
/// key). The name is kept no longer once its own key is trusted under it
/// again, or it is reused; whether `revoked` changed.
fn claim_name(
    revoked: &mut Vec<RevokedPeer>,
    name: &PeerName,
    key: &pigeon_core::crypto::PublicKey,
    reuse: bool,
) -> Result<bool> {
    if let Some(old) = pigeon_core::home::reserved_for(revoked, name.as_str(), key) {
        let old_key = &old.key.to_string()[..16];
        if !reuse {
            bail!(
                "the name {} belonged to a revoked key ({old_key}…, revoked {}); on an agent its folder ({}/ under the storage root) and the shares made by and with it are still there, and a new key does not inherit them unasked. Choose another name, or pass --reuse-name to give them to this key",
                old.name,
                format_time(old.revoked_unix),
                old.name
            );
        }
        eprintln!(
            "the name {} belonged to the revoked key {old_key}…: on an agent, its folder ({}/ under the storage root) and the shares made by and with it now pass to this key; move the folder aside first if they should not",
            old.name, old.name
        );
    }
    let before = revoked.len();
    revoked.retain(|r| {
        !(r.name.as_str().eq_ignore_ascii_case(name.as_str()) && (reuse || r.key == *key))
    });
    Ok(revoked.len() != before)
}

/// Refuse a peer name that differs from a trusted one only in case: on a
/// case-insensitive file system (a phone's shared storage) both would be
/// one folder of the agent's root.
fn refuse_case_twin(trusted: &[TrustedPeer], name: &PeerName) -> Result<()> {
    if let Some(twin) = trusted
        .iter()
        .find(|t| t.name != *name && t.name.as_str().eq_ignore_ascii_case(name.as_str()))
    {
        bail!(
            "{} is trusted already, and names that differ only in case share one folder on the agent on some file systems; choose another name, or `pigeon keys revoke {}` first",
            twin.name,
            twin.name
        );
    }
    Ok(())
}

/// This machine's name, as a peer name (what the other side trusts us as
/// unless its owner says otherwise).
fn own_name() -> String {
    // Either file may be missing or unreadable (Android has no
    // /etc/hostname and may hide /proc/sys): then the fallback name.
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    peer_name_of_host(&raw)
}

/// A host name as a peer name; `localhost`, every phone's host name under
/// Android, names no machine, so it gives the fallback too.
fn peer_name_of_host(raw: &str) -> String {
    let fallback = if cfg!(target_os = "android") {
        "android"
    } else {
        "client"
    };
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    let anonymous = name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().starts_with("localhost.");
    match PeerName::parse(&name) {
        Ok(_) if !anonymous => name,
        _ => fallback.into(),
    }
}

impl LimitArgs {
    /// `old` with these changes.
    fn apply(&self, mut old: pigeon_core::policy::Limits) -> Result<pigeon_core::policy::Limits> {
        use pigeon_core::policy::Size;
        fn size(flag: &str, v: &str) -> Result<Option<Size>> {
            match pigeon_core::bwlimit::parse_size(v).map_err(|e| anyhow!("--{flag} {e}"))? {
                None => Ok(None),
                Some(0) => {
                    bail!("--{flag} 0 would refuse everything: give a size, or off for no limit")
                }
                Some(n) => Ok(Some(Size(n))),
            }
        }
        fn count(flag: &str, v: &str) -> Result<Option<u64>> {
            if v.eq_ignore_ascii_case("off") {
                return Ok(None);
            }
            v.parse()
                .map(Some)
                .map_err(|_| anyhow!("--{flag} {v:?}: give a number, or off"))
        }
        if let Some(v) = &self.quota {
            old.quota = size("quota", v)?;
        }
        if let Some(v) = &self.max_file {
            old.max_file = size("max-file", v)?;
        }
        if let Some(v) = &self.daily {
            old.daily = size("daily", v)?;
        }
        if let Some(v) = &self.max_files {
            old.max_files = count("max-files", v)?;
        }
        if let Some(v) = &self.max_open {
            old.max_open = count("max-open", v)?;
        }
        Ok(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 32: a phone's host name is `localhost`; pairing from it
    /// suggests the fallback rather than a name that says nothing.
    #[test]
    fn a_host_named_localhost_suggests_the_fallback_name() {
        let fallback = if cfg!(target_os = "android") {
            "android"
        } else {
            "client"
        };
        assert_eq!(peer_name_of_host("laptop-3\n"), "laptop-3");
        assert_eq!(peer_name_of_host("my box"), "mybox");
        assert_eq!(peer_name_of_host("localhost\n"), fallback);
        assert_eq!(peer_name_of_host("LocalHost.localdomain"), fallback);
        assert_eq!(peer_name_of_host(""), fallback);
        assert_eq!(peer_name_of_host(".hidden"), fallback);
    }

    #[test]
    fn pairing_never_takes_another_peers_name_and_re_pairing_replaces_itself() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path().to_path_buf())).unwrap();
        let key = || pigeon_core::crypto::Identity::generate().unwrap().public();
        let (first, second) = (key(), key());
        let paired = |suggested, requested: Option<&str>, key| {
            trust_paired(
                &home,
                Paired {
                    requested: requested.map(|n| PeerName::parse(n).unwrap()),
                    reuse_name: false,
                    suggested,
                    fallback: "client",
                    key,
                    permissions: Permissions::default(),
                    limits: Default::default(),
                    from: Some(("telegram", &"4242".to_string())),
                },
            )
            .unwrap()
            .0
            .to_string()
        };
        assert_eq!(paired("laptop", None, first), "laptop");
        // Another machine that calls itself laptop too.
        assert_eq!(paired("laptop", None, second), "laptop-2");
        // The same one again: its own entry, not a third.
        assert_eq!(paired("laptop", None, second), "laptop-2");
        // A name that is no peer name falls back.
        assert_eq!(paired("bad name!", None, key()), "client");
        let all = home.trusted().unwrap();
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all
            .iter()
            .any(|p| p.name.as_str() == "laptop" && p.key == first));
        assert_eq!(
            all[0].addresses.get("telegram").map(String::as_str),
            Some("4242")
        );
        // The owner's --name replaces whoever had it.
        assert_eq!(paired("x", Some("laptop"), second), "laptop");
        let all = home.trusted().unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all.iter().all(|p| p.key != first));
    }

    #[test]
    fn a_revoked_peers_name_is_never_silently_given_to_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path().to_path_buf())).unwrap();
        let key = || pigeon_core::crypto::Identity::generate().unwrap().public();
        let (old, new) = (key(), key());
        let trust = |key: &pigeon_core::crypto::PublicKey, reuse_name| {
            keys(
                &home,
                KeysCommand::Trust {
                    key: key.to_string(),
                    name: "phone".into(),
                    allow: "upload,download,list".into(),
                    limits: Default::default(),
                    addresses: vec![],
                    reuse_name,
                },
            )
        };
        let pair = |key, requested: Option<&str>, reuse_name| {
            trust_paired(
                &home,
                Paired {
                    requested: requested.map(|n| PeerName::parse(n).unwrap()),
                    reuse_name,
                    suggested: "phone",
                    fallback: "client",
                    key,
                    permissions: Permissions::default(),
                    limits: Default::default(),
                    from: None,
                },
            )
        };
        trust(&old, false).unwrap();
        keys(
            &home,
            KeysCommand::Revoke {
                name: "phone".into(),
            },
        )
        .unwrap();
        assert!(home.trusted().unwrap().is_empty());
        // Pairing a new key that calls itself phone: another name, and why.
        let (name, note) = pair(new, None, false).unwrap();
        assert_eq!(name.as_str(), "phone-2");
        let note = note.unwrap();
        assert!(
            note.contains("the name phone belonged to a revoked key")
                && note.contains("as phone-2"),
            "{note}"
        );
        // Asked for by name, for another key: refused, with the way out.
        for refused in [
            trust(&new, false).unwrap_err().to_string(),
            pair(new, Some("phone"), false).unwrap_err().to_string(),
        ] {
            assert!(
                refused.starts_with("the name phone belonged to a revoked key")
                    && refused.contains("--reuse-name"),
                "{refused}"
            );
        }
        assert!(home
            .trusted()
            .unwrap()
            .iter()
            .all(|p| p.name.as_str() != "phone"));
        // Its own key again: its name back, kept no longer.
        trust(&old, false).unwrap();
        assert!(home.revoked().unwrap().is_empty());
        assert!(home
            .trusted()
            .unwrap()
            .iter()
            .any(|p| p.name.as_str() == "phone" && p.key == old));
        // Given deliberately to another key.
        keys(
            &home,
            KeysCommand::Revoke {
                name: "phone".into(),
            },
        )
        .unwrap();
        trust(&new, true).unwrap();
        assert!(home.revoked().unwrap().is_empty());
        assert!(home
            .trusted()
            .unwrap()
            .iter()
            .any(|p| p.name.as_str() == "phone" && p.key == new));
    }
}
