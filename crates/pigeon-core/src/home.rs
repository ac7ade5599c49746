//! A party's home folder: identity, trust list, config, store, storage.
//!
//! ```text
//! <home>/identity.key    private and public key, hex, mode 0600
//! <home>/peers.toml      trusted peers: name, key, permissions
//! <home>/config.toml     optional: peer, transports, parallel, bell
//! <home>/db/             the sled store (one process at a time)
//! <home>/logs/           agent logs
//! <home>/storage/        the agent's default storage root
//! ```
//!
//! The trust list is a file, not a store tree, on purpose: like SSH's
//! `authorized_keys` it can be read and edited while an agent runs (the
//! agent reads it on every handshake), which a sled tree held open by the
//! agent could not.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crypto::{Identity, PublicKey};
use crate::error::{CoreError, IoContext, Result};
use crate::policy::Permissions;

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
        let ok = !s.is_empty()
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
    /// Ring the terminal bell when a transfer finishes or fails (TUI).
    pub bell: Option<bool>,
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
        std::fs::create_dir_all(&dir).ctx(|| format!("creating home {}", dir.display()))?;
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
                let mut lines = text.lines();
                let bad = || {
                    CoreError::Config(format!("{} is damaged; move it away to make a new identity (peers must trust the new key)", path.display()))
                };
                let private =
                    hex::decode(lines.next().ok_or_else(bad)?.trim()).map_err(|_| bad())?;
                let public =
                    hex::decode(lines.next().ok_or_else(bad)?.trim()).map_err(|_| bad())?;
                Identity::from_parts(&private, &public)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Identity::generate()?;
                let text = format!("{}\n{}\n", hex::encode(id.private_bytes()), id.public());
                write_private(&path, text.as_bytes())?;
                Ok(id)
            }
            Err(e) => Err(CoreError::io(format!("reading {}", path.display()), e)),
        }
    }

    pub fn trusted(&self) -> Result<Vec<TrustedPeer>> {
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
                Ok(TrustedPeer {
                    name: e.name,
                    key: e.key.parse()?,
                    permissions: Permissions::parse(&e.allow.join(","))?,
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
                })
                .collect(),
        };
        let text = toml::to_string_pretty(&file)
            .map_err(|e| CoreError::Config(format!("writing the trust list: {e}")))?;
        let text =
            format!("# Peers this party trusts (pigeon keys trust/revoke edit this file).\n{text}");
        write_private(&self.dir.join("peers.toml"), text.as_bytes())
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

/// Write a file readable by its owner only, atomically (temp + rename).
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .ctx(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .ctx(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("renaming {}", tmp.display()))?;
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
    fn trust_list_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path().to_path_buf())).unwrap();
        let peer = TrustedPeer {
            name: PeerName::parse("laptop").unwrap(),
            key: Identity::generate().unwrap().public(),
            permissions: Permissions::parse("upload,list").unwrap(),
        };
        home.save_trusted(std::slice::from_ref(&peer)).unwrap();
        assert_eq!(home.trusted().unwrap(), vec![peer]);
        assert!(PeerName::parse("a b").is_err());
    }
}
