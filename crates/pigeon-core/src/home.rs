//! A party's home folder: identity, trust list, config, store, storage.
//!
//! ```text
//! <home>/identity.key    private and public key, hex, mode 0600
//! <home>/peers.toml      trusted peers: name, key, permissions
//! <home>/revoked.toml    revoked peers' names, each kept for its key
//! <home>/config.toml     optional: peer, transports, parallel, bell
//! <home>/db/             the sled store (one process at a time)
//! <home>/logs/           agent logs
//! <home>/storage/        the agent's default storage root
//! ```
//!
//! Everything in a home is private to its owner, whatever the umask: the
//! home and its folders are 0700, its files 0600 ([`restrict_umask`] makes
//! that the process's default, and the files pigeon writes itself are
//! created so), and a private key that others can read is refused, as ssh
//! refuses one. What pigeon writes for the user outside the home (received
//! files, their folders, spool messages) keeps the user's own umask
//! ([`create_public_dirs`], [`public_file_mode`]).
//!
//! The trust list is a file, not a store tree, on purpose: like SSH's
//! `authorized_keys` it can be read and edited while an agent runs (the
//! agent reads it on every handshake), which a sled tree held open by the
//! agent could not.
//!
//! A revoked peer's name stays with its key ([`Home::revoke`],
//! `revoked.toml`): on the agent the name is a folder (`<root>/<name>/`)
//! and the shares made by and with it, and a new key given the name would
//! inherit them all. Pairing picks another name ([`unique_name`]) and
//! `pigeon keys trust` refuses one unless told to reuse it. The revoked
//! are kept in a file of their own rather than marked in `peers.toml`, so
//! that whatever reads the trust list (an older pigeon, a script, a hand
//! edit) can never take a revoked key for a trusted one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crypto::{Identity, PublicKey};
use crate::error::{CoreError, IoContext, Result};
use crate::policy::{Limits, Permissions};

pub use crate::files::{create_private_dir, create_public_dirs, public_file_mode, restrict_umask};
pub(crate) use crate::files::{sync_dir, write_private};

#[derive(Clone, Debug)]
pub struct Home {
    dir: PathBuf,
}

/// A peer's name: letters, digits, `-`, `_`, `.`; 1 to 64 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PeerName(String);

impl PeerName {
    pub fn parse(s: &str) -> Result<PeerName> {
        // Also a folder's name on the agent (`<root>/<peer>/`): never `.`,
        // `..` or hidden.
        let ok = !s.is_empty()
            && !s.starts_with('.')
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if ok {
            Ok(PeerName(s.to_string()))
        } else {
            Err(CoreError::BadPeerName(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PeerName {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self> {
        PeerName::parse(&s)
    }
}

impl From<PeerName> for String {
    fn from(p: PeerName) -> String {
        p.0
    }
}

impl std::fmt::Display for PeerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedPeer {
    pub name: PeerName,
    pub key: PublicKey,
    pub permissions: Permissions,
    /// Where the peer is, per kind of transport (`telegram = "123456"`):
    /// replies go there, and only there, on a transport that answers
    /// whoever writes (`*`), even before the peer has written.
    pub addresses: std::collections::BTreeMap<String, String>,
    /// This peer's own quotas (the agent's `[agent.limits]` fill the rest).
    pub limits: Limits,
}

/// The kinds of transport a peer can have an address on.
pub const ADDRESS_KINDS: [&str; 5] = ["local", "telegram", "whatsapp", "messenger", "shipper"];

/// A peer whose trust was revoked: its name stays reserved for its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedPeer {
    pub name: PeerName,
    pub key: PublicKey,
    /// When, in Unix seconds.
    pub revoked_unix: u64,
}

/// The revoked peer that `name` (in any case: on some file systems names
/// that differ only in case are one folder) still belongs to, when that
/// is another key than `key`.
pub fn reserved_for<'a>(
    revoked: &'a [RevokedPeer],
    name: &str,
    key: &PublicKey,
) -> Option<&'a RevokedPeer> {
    revoked
        .iter()
        .find(|r| r.name.as_str().eq_ignore_ascii_case(name) && r.key != *key)
}

/// The first of `base`, `base-2`, `base-3`… that is no other key's: not a
/// trusted peer's with another key, not a revoked key's (in any case).
pub fn unique_name(
    base: &PeerName,
    key: &PublicKey,
    trusted: &[TrustedPeer],
    revoked: &[RevokedPeer],
) -> Result<PeerName> {
    let free = |n: &str| {
        trusted
            .iter()
            .all(|t| !t.name.as_str().eq_ignore_ascii_case(n) || t.key == *key)
            && reserved_for(revoked, n, key).is_none()
    };
    (1..=trusted.len() + revoked.len() + 1)
        .map(|i| match i {
            1 => base.to_string(),
            // A suffix that would pass 64 characters shortens the base.
            i => {
                let suffix = format!("-{i}");
                let keep = base.as_str().len().min(64 - suffix.len());
                format!("{}{suffix}", &base.as_str()[..keep])
            }
        })
        .find(|n| free(n))
        .map_or_else(
            || Err(CoreError::BadPeerName(base.to_string())),
            |n| PeerName::parse(&n),
        )
}

#[derive(Serialize, Deserialize, Default)]
struct TrustFile {
    #[serde(default)]
    peer: Vec<TrustEntry>,
}

#[derive(Serialize, Deserialize)]
struct TrustEntry {
    name: PeerName,
    key: String,
    allow: Vec<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    addresses: std::collections::BTreeMap<String, String>,
    #[serde(flatten)]
    limits: Limits,
}

#[derive(Serialize, Deserialize, Default)]
struct RevokedFile {
    #[serde(default)]
    revoked: Vec<RevokedEntry>,
}

#[derive(Serialize, Deserialize)]
struct RevokedEntry {
    name: PeerName,
    key: String,
    #[serde(default)]
    revoked_unix: u64,
}

/// `<home>/config.toml`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The trusted peer (agent) a client drives.
    pub peer: Option<String>,
    /// Transport URIs, as for `--transport`.
    #[serde(default)]
    pub transports: Vec<String>,
    /// Transfers running at once.
    pub parallel: Option<usize>,
    /// What this party sends, over all its links, in rclone's `--bwlimit`
    /// syntax (`512k`, `10M`, or a timetable `"08:00,512k 19:00,off"`).
    pub bwlimit: Option<String>,
    /// Ring the terminal bell when a transfer finishes or fails (TUI).
    pub bell: Option<bool>,
    /// Take clicks and the wheel in the TUI (default true; false leaves
    /// the mouse to the terminal's own selection).
    pub mouse: Option<bool>,
    /// Let a new upload's offer and first chunk ride in the handshake on
    /// slow links (default true). Early data is not forward secret against
    /// a later theft of the agent's key (README, "Security model"); false
    /// keeps every byte of every transfer inside the session.
    pub early_data: Option<bool>,
    /// The agent's policy: quotas, quarantine, cleanup.
    #[serde(default)]
    pub agent: AgentSettings,
}

/// `[agent]` in `config.toml`: what an agent enforces beside the trust list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSettings {
    /// One namespace for every peer (`true`), or a folder each (`false`);
    /// unset, a new root gets folders and a root that holds files from
    /// before keeps one namespace ([`crate::policy::namespace::layout_of`]).
    pub shared: Option<bool>,
    /// Every peer's limits, where its entry in `peers.toml` sets none.
    pub limits: Limits,
    /// All peers together.
    pub total: Limits,
    pub quarantine: crate::policy::quarantine::Rules,
    pub cleanup: Cleanup,
}

/// `[agent.cleanup]`: how long what is left behind is kept, in days.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cleanup {
    /// Partial uploads with no progress.
    pub partials_days: u64,
    /// Files held in quarantine.
    pub quarantine_days: u64,
    /// Records of finished transfers (0: kept for ever).
    pub records_days: u64,
}

impl Default for Cleanup {
    fn default() -> Self {
        Cleanup {
            partials_days: 7,
            quarantine_days: 30,
            records_days: 0,
        }
    }
}

impl Home {
    /// `explicit` (from `--home` or `PIGEON_HOME`), else the platform's data dir.
    pub fn resolve(explicit: Option<PathBuf>) -> Result<Home> {
        let dir = match explicit {
            Some(d) => d,
            None => directories::ProjectDirs::from("dev", "pigeon", "pigeon")
                .map(|p| p.data_dir().to_path_buf())
                .ok_or_else(|| {
                    CoreError::Config("no home directory found; pass --home DIR".into())
                })?,
        };
        create_private_dir(&dir)?;
        let dir = dir
            .canonicalize()
            .ctx(|| format!("resolving home {}", dir.display()))?;
        Ok(Home { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("db")
    }

    pub fn storage_dir(&self) -> PathBuf {
        self.dir.join("storage")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    pub fn keymap_path(&self) -> PathBuf {
        self.dir.join("keymap.toml")
    }

    /// This party's identity, created on first use.
    pub fn identity(&self) -> Result<Identity> {
        let path = self.dir.join("identity.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let text = zeroize::Zeroizing::new(text);
                refuse_if_readable_by_others(&path)?;
                let mut lines = text.lines();
                let bad = || {
                    CoreError::Config(format!("{} is damaged; move it away to make a new identity (peers must trust the new key)", path.display()))
                };
                let private = zeroize::Zeroizing::new(
                    hex::decode(lines.next().ok_or_else(bad)?.trim()).map_err(|_| bad())?,
                );
                let public =
                    hex::decode(lines.next().ok_or_else(bad)?.trim()).map_err(|_| bad())?;
                Identity::from_parts(&private, &public)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Identity::generate()?;
                let text = zeroize::Zeroizing::new(format!(
                    "{}\n{}\n",
                    hex::encode(id.private_bytes()),
                    id.public()
                ));
                write_private(&path, text.as_bytes())?;
                Ok(id)
            }
            Err(e) => Err(CoreError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// The peers this party trusts: the trust list, less any entry under a
    /// name that belongs to another, revoked key (a hand edit: `pigeon keys
    /// trust --reuse-name` is how a name passes to a new key). What the
    /// engine uses.
    pub fn trusted(&self) -> Result<Vec<TrustedPeer>> {
        self.trusted_and_refused().map(|(trusted, _)| trusted)
    }

    /// [`trusted`](Self::trusted), and why each entry left out is.
    pub fn trusted_and_refused(&self) -> Result<(Vec<TrustedPeer>, Vec<String>)> {
        let revoked = self.revoked()?;
        let mut refused = vec![];
        let mut all = self.trust_list()?;
        all.retain(|t| match reserved_for(&revoked, t.name.as_str(), &t.key) {
            None => true,
            Some(r) => {
                refused.push(format!(
                    "peers.toml trusts {} with the key {}…, but the name belonged to the revoked key {}…: not trusted until `pigeon keys trust {} --name {} --reuse-name` gives it the name (and the revoked key's folder and shares)",
                    t.name,
                    &t.key.to_string()[..16],
                    &r.key.to_string()[..16],
                    t.key,
                    t.name
                ));
                false
            }
        });
        Ok((all, refused))
    }

    /// `peers.toml` as it is, every entry (for editing it).
    pub fn trust_list(&self) -> Result<Vec<TrustedPeer>> {
        let path = self.dir.join("peers.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(CoreError::io(format!("reading {}", path.display()), e)),
        };
        let file: TrustFile = toml::from_str(&text)
            .map_err(|e| CoreError::Config(format!("{}: {e}", path.display())))?;
        file.peer
            .into_iter()
            .map(|e| {
                if let Some(kind) = e.addresses.keys().find(|k| !ADDRESS_KINDS.contains(&k.as_str())) {
                    return Err(CoreError::Config(format!(
                        "{}: peer {:?} has an address on {kind:?}, which is not a kind of transport (one of {})",
                        path.display(),
                        e.name.as_str(),
                        ADDRESS_KINDS.join(", ")
                    )));
                }
                Ok(TrustedPeer {
                    name: e.name,
                    key: e.key.parse()?,
                    permissions: Permissions::parse(&e.allow.join(","))?,
                    addresses: e.addresses,
                    limits: e.limits,
                })
            })
            .collect()
    }

    pub fn save_trusted(&self, peers: &[TrustedPeer]) -> Result<()> {
        let file = TrustFile {
            peer: peers
                .iter()
                .map(|p| TrustEntry {
                    name: p.name.clone(),
                    key: p.key.to_string(),
                    allow: p
                        .permissions
                        .to_string()
                        .split(',')
                        .filter(|w| *w != "none")
                        .map(String::from)
                        .collect(),
                    addresses: p.addresses.clone(),
                    limits: p.limits,
                })
                .collect(),
        };
        let text = toml::to_string_pretty(&file)
            .map_err(|e| CoreError::Config(format!("writing the trust list: {e}")))?;
        let text =
            format!("# Peers this party trusts (pigeon keys trust/revoke edit this file).\n{text}");
        write_private(&self.dir.join("peers.toml"), text.as_bytes())
    }

    /// The revoked peers whose names are kept (`revoked.toml`).
    pub fn revoked(&self) -> Result<Vec<RevokedPeer>> {
        let path = self.dir.join("revoked.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(CoreError::io(format!("reading {}", path.display()), e)),
        };
        let file: RevokedFile = toml::from_str(&text)
            .map_err(|e| CoreError::Config(format!("{}: {e}", path.display())))?;
        file.revoked
            .into_iter()
            .map(|e| {
                Ok(RevokedPeer {
                    name: e.name,
                    key: e.key.parse()?,
                    revoked_unix: e.revoked_unix,
                })
            })
            .collect()
    }

    pub fn save_revoked(&self, revoked: &[RevokedPeer]) -> Result<()> {
        let file = RevokedFile {
            revoked: revoked
                .iter()
                .map(|r| RevokedEntry {
                    name: r.name.clone(),
                    key: r.key.to_string(),
                    revoked_unix: r.revoked_unix,
                })
                .collect(),
        };
        let text = toml::to_string_pretty(&file)
            .map_err(|e| CoreError::Config(format!("writing the revoked names: {e}")))?;
        let text = format!(
            "# Revoked peers: each name stays with its key, so that no other key\n# inherits its folder and shares (`pigeon keys revoke` adds one;\n# `pigeon keys trust KEY --name NAME --reuse-name` gives a name to a new key).\n{text}"
        );
        write_private(&self.dir.join("revoked.toml"), text.as_bytes())
    }

    /// Stop trusting the peer `name`, and keep its name for its key.
    pub fn revoke(&self, name: &str) -> Result<RevokedPeer> {
        let mut all = self.trust_list()?;
        let at = all
            .iter()
            .position(|p| p.name.as_str() == name)
            .ok_or_else(|| CoreError::UnknownPeer(name.to_string()))?;
        let gone = all.remove(at);
        let kept = RevokedPeer {
            name: gone.name,
            key: gone.key,
            revoked_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let mut revoked = self.revoked()?;
        revoked.retain(|r| !(r.name == kept.name && r.key == kept.key));
        revoked.push(kept.clone());
        // The name reserved first: a crash between the two writes leaves
        // the peer trusted still, never its name free while its files stay.
        self.save_revoked(&revoked)?;
        self.save_trusted(&all)?;
        Ok(kept)
    }

    pub fn config(&self) -> Result<Config> {
        let path = self.config_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| CoreError::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(CoreError::io(format!("reading {}", path.display()), e)),
        }
    }
}

/// Refuse a private key file others can read or write, as ssh does.
fn refuse_if_readable_by_others(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .ctx(|| format!("checking {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(CoreError::Config(format!(
            "{} is accessible by others (mode {:04o}); the private key must be readable by you alone: run `chmod 600 {}` (and if others could read it, make a new identity)",
            path.display(),
            mode & 0o7777,
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path().to_path_buf())).unwrap();
        let a = home.identity().unwrap();
        let b = home.identity().unwrap();
        assert_eq!(a.public(), b.public());
        let mode = std::fs::metadata(dir.path().join("identity.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_private_key_readable_by_others_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path().to_path_buf())).unwrap();
        home.identity().unwrap();
        let key = dir.path().join("identity.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = home.identity().unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(err.contains("0644"), "{err}");
    }

    #[test]
    fn a_leftover_temporary_file_never_lends_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path().to_path_buf())).unwrap();
        let tmp = dir.path().join("identity.key.tmp");
        std::fs::write(&tmp, "junk").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        home.identity().unwrap();
        let mode = std::fs::metadata(dir.path().join("identity.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        home.identity().unwrap();
    }

    #[test]
    fn a_new_home_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new-home");
        Home::resolve(Some(path.clone())).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn the_example_agent_config_parses_with_every_setting() {
        let text = include_str!("../../../assets/agent-config.toml");
        let cfg: Config = toml::from_str(text).expect("assets/agent-config.toml parses");
        let a = cfg.agent;
        assert_eq!(a.limits.quota, Some(crate::policy::Size(20 << 30)));
        assert_eq!(a.limits.max_open, Some(16));
        assert_eq!(a.total.quota, Some(crate::policy::Size(100 << 30)));
        assert_eq!(a.quarantine, crate::policy::quarantine::Rules::default());
        assert_eq!(a.cleanup, Cleanup::default());
        // A misspelt setting is an error, not silently ignored.
        assert!(toml::from_str::<Config>("[agent.cleanup]\npartial_days = 3\n").is_err());
    }

    fn peer(name: &str, key: PublicKey) -> TrustedPeer {
        TrustedPeer {
            name: PeerName::parse(name).unwrap(),
            key,
            permissions: Permissions::default(),
            addresses: Default::default(),
            limits: Default::default(),
        }
    }

    #[test]
    fn a_revoked_peer_is_never_trusted_and_its_name_stays_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path().to_path_buf())).unwrap();
        let key = || Identity::generate().unwrap().public();
        let (old, new, other) = (key(), key(), key());
        home.save_trusted(&[peer("phone", old), peer("laptop", other)])
            .unwrap();
        let gone = home.revoke("phone").unwrap();
        assert_eq!((gone.name.as_str(), gone.key), ("phone", old));
        assert!(matches!(
            home.revoke("phone"),
            Err(CoreError::UnknownPeer(_))
        ));
        // Gone from the trust list itself: whatever reads peers.toml
        // cannot take the revoked key for a trusted one.
        let peers = std::fs::read_to_string(dir.path().join("peers.toml")).unwrap();
        assert!(!peers.contains(&old.to_string()), "{peers}");
        assert_eq!(home.trusted().unwrap(), vec![peer("laptop", other)]);
        assert_eq!(home.revoked().unwrap(), vec![gone]);
        // Another key never gets the name, in any case; its own key does.
        let revoked = home.revoked().unwrap();
        let trusted = home.trusted().unwrap();
        let base = PeerName::parse("phone").unwrap();
        assert!(reserved_for(&revoked, "PHONE", &new).is_some());
        assert!(reserved_for(&revoked, "phone", &old).is_none());
        let named = |k| unique_name(&base, &k, &trusted, &revoked).unwrap();
        assert_eq!(named(new).as_str(), "phone-2");
        assert_eq!(named(old).as_str(), "phone");
        let laptop = PeerName::parse("laptop").unwrap();
        assert_eq!(
            unique_name(&laptop, &new, &trusted, &revoked)
                .unwrap()
                .as_str(),
            "laptop-2"
        );
        // A hand edit giving the name to another key is not trusted either.
        home.save_trusted(&[peer("laptop", other), peer("Phone", new)])
            .unwrap();
        let (trusted, refused) = home.trusted_and_refused().unwrap();
        assert_eq!(trusted, vec![peer("laptop", other)]);
        assert!(
            refused.len() == 1 && refused[0].contains("--reuse-name"),
            "{refused:?}"
        );
        assert_eq!(home.trust_list().unwrap().len(), 2);
    }

    #[test]
    fn a_long_name_made_unique_stays_a_name() {
        let base = PeerName::parse(&"a".repeat(64)).unwrap();
        let (k1, k2) = (
            Identity::generate().unwrap().public(),
            Identity::generate().unwrap().public(),
        );
        let named = unique_name(&base, &k2, &[peer(base.as_str(), k1)], &[]).unwrap();
        assert_eq!(named.as_str(), format!("{}-2", "a".repeat(62)));
    }

    #[test]
    fn trust_list_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path().to_path_buf())).unwrap();
        let peer = TrustedPeer {
            name: PeerName::parse("laptop").unwrap(),
            key: Identity::generate().unwrap().public(),
            permissions: Permissions::parse("upload,list").unwrap(),
            addresses: [("telegram".to_string(), "123456789".to_string())].into(),
            limits: Limits {
                quota: Some(crate::policy::Size(2 << 30)),
                ..Limits::default()
            },
        };
        home.save_trusted(std::slice::from_ref(&peer)).unwrap();
        assert_eq!(home.trusted().unwrap(), vec![peer]);
        assert!(PeerName::parse("a b").is_err());
    }
}
