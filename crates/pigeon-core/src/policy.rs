//! The agent's rules: where files may go and who may do what.
//!
//! - [`RemotePath`]: a path the sender proposes, parsed so it cannot hold an
//!   absolute root, `..`, empty or dot components, control or bidi
//!   characters, or pigeon's own `.pigeon` folder.
//! - [`StorageRoot`]: resolves a [`RemotePath`] inside the root and refuses
//!   any path that would leave it through a symlink.
//! - [`Permissions`]: what a trusted peer may do.
//! - [`escape_control`]: how any name from elsewhere is shown on a terminal.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, IoContext, Result};

/// The folder inside the storage root where pigeon keeps partial uploads.
pub const INTERNAL_DIR: &str = ".pigeon";
const MAX_PATH_BYTES: usize = 1024;
const MAX_COMPONENT_BYTES: usize = 255;

/// A relative, `/`-separated path under the storage root that cannot escape it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RemotePath {
    components: Vec<String>,
}

impl RemotePath {
    /// The root folder itself (only meaningful for listings).
    pub fn root() -> RemotePath {
        RemotePath { components: vec![] }
    }

    /// Parse a path to a file or folder. `""` and `"/"`-free forms only;
    /// a leading `./` is tolerated.
    pub fn parse(raw: &str) -> Result<RemotePath> {
        let bad = |reason| CoreError::BadRemotePath {
            path: escape_control(raw).into_owned(),
            reason,
        };
        if raw.len() > MAX_PATH_BYTES {
            return Err(bad("longer than 1024 bytes"));
        }
        if raw.starts_with('/') || raw.starts_with('\\') || has_drive_prefix(raw) {
            return Err(bad(
                "absolute paths are not allowed; name a path under the agent's root",
            ));
        }
        let mut components = Vec::new();
        for part in raw.split('/') {
            match part {
                "" | "." => continue,
                ".." => return Err(bad("'..' is not allowed")),
                _ => {}
            }
            if part.len() > MAX_COMPONENT_BYTES {
                return Err(bad("a path component is longer than 255 bytes"));
            }
            if part.chars().any(is_forbidden_char) {
                return Err(bad("control, bidi or backslash characters are not allowed"));
            }
            if components.is_empty() && part == INTERNAL_DIR {
                return Err(bad("'.pigeon' is reserved for the agent"));
            }
            components.push(part.to_string());
        }
        Ok(RemotePath { components })
    }

    /// Like [`parse`](Self::parse) but the empty path is refused: a file needs a name.
    pub fn parse_file(raw: &str) -> Result<RemotePath> {
        let p = Self::parse(raw)?;
        if p.components.is_empty() {
            return Err(CoreError::BadRemotePath {
                path: escape_control(raw).into_owned(),
                reason: "a file path needs a name",
            });
        }
        Ok(p)
    }

    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    pub fn file_name(&self) -> Option<&str> {
        self.components.last().map(String::as_str)
    }

    pub fn join(&self, name: &str) -> Result<RemotePath> {
        let mut s = self.to_string();
        if !s.is_empty() {
            s.push('/');
        }
        s.push_str(name);
        RemotePath::parse(&s)
    }

    pub fn components(&self) -> &[String] {
        &self.components
    }
}

impl std::fmt::Display for RemotePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.components.join("/"))
    }
}

fn has_drive_prefix(raw: &str) -> bool {
    let b = raw.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

/// Control characters (C0, DEL, C1), bidi overrides and isolates, and the
/// backslash (a separator on other systems) are never part of a name.
fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Show `name` safely on a terminal: control and bidi characters become
/// visible escapes (`\x1b`, `\u{202e}`), everything else stays as it is.
pub fn escape_control(name: &str) -> Cow<'_, str> {
    if !name.chars().any(is_forbidden_char) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if is_forbidden_char(c) {
            if (c as u32) < 0x100 {
                let _ = write!(out, "\\x{:02x}", c as u32);
            } else {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// What a trusted peer may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    pub upload: bool,
    pub download: bool,
    pub list: bool,
}

impl Default for Permissions {
    fn default() -> Self {
        Permissions {
            upload: true,
            download: true,
            list: true,
        }
    }
}

impl Permissions {
    /// Parse `upload,download,list` (any subset, comma-separated).
    pub fn parse(s: &str) -> Result<Permissions> {
        let mut p = Permissions {
            upload: false,
            download: false,
            list: false,
        };
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "upload" => p.upload = true,
                "download" => p.download = true,
                "list" => p.list = true,
                other => {
                    return Err(CoreError::Config(format!(
                        "unknown permission {other:?}; use upload, download, list"
                    )))
                }
            }
        }
        Ok(p)
    }
}

impl std::fmt::Display for Permissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut words = vec![];
        if self.upload {
            words.push("upload");
        }
        if self.download {
            words.push("download");
        }
        if self.list {
            words.push("list");
        }
        if words.is_empty() {
            words.push("none");
        }
        f.write_str(&words.join(","))
    }
}

/// The agent's storage root, canonicalised once.
#[derive(Clone, Debug)]
pub struct StorageRoot {
    root: PathBuf,
}

impl StorageRoot {
    pub fn open(root: &Path) -> Result<StorageRoot> {
        crate::home::create_public_dirs(root)
            .ctx(|| format!("creating storage root {}", root.display()))?;
        let root = root
            .canonicalize()
            .ctx(|| format!("resolving storage root {}", root.display()))?;
        let staging = root.join(INTERNAL_DIR).join("staging");
        // Other peers' partial files: pigeon's alone.
        crate::home::create_private_dir(&staging)?;
        Ok(StorageRoot { root })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn staging_dir(&self) -> PathBuf {
        self.root.join(INTERNAL_DIR).join("staging")
    }

    /// Where `p` lives on disk, after checking that no existing part of it is
    /// a symlink leading out of the root. Missing parts are fine (they will
    /// be created as plain folders by [`prepare_parent`](Self::prepare_parent)).
    pub fn resolve(&self, p: &RemotePath) -> Result<PathBuf> {
        let mut at = self.root.clone();
        for part in p.components() {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let target = at.canonicalize().map_err(|_| CoreError::BadRemotePath {
                        path: p.to_string(),
                        reason: "it goes through a dangling symlink",
                    })?;
                    if !target.starts_with(&self.root) {
                        return Err(CoreError::BadRemotePath {
                            path: p.to_string(),
                            reason: "it leaves the storage root through a symlink",
                        });
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(CoreError::io(format!("checking {}", at.display()), e)),
            }
        }
        Ok(self.root.join(p.components().iter().collect::<PathBuf>()))
    }

    /// Create the parent folders of `p` and check again that the result is
    /// inside the root (a folder could have been swapped for a symlink).
    pub fn prepare_parent(&self, p: &RemotePath) -> Result<PathBuf> {
        let path = self.resolve(p)?;
        if let Some(parent) = path.parent() {
            crate::home::create_public_dirs(parent)
                .ctx(|| format!("creating {}", parent.display()))?;
            let real = parent
                .canonicalize()
                .ctx(|| format!("resolving {}", parent.display()))?;
            if !real.starts_with(&self.root) {
                return Err(CoreError::BadRemotePath {
                    path: p.to_string(),
                    reason: "it leaves the storage root through a symlink",
                });
            }
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        let corpus = [
            "/etc/passwd",
            "\\windows\\system32",
            "C:evil",
            "../x",
            "a/../../x",
            "a/..",
            "..",
            "a\u{0}b",
            "a\u{1b}[31mred",
            "bell\u{7}",
            "evil\u{202e}txt.exe",
            "a\\..\\b",
            ".pigeon/staging/x",
            &"x".repeat(300),
            &"a/".repeat(600),
        ];
        for raw in corpus {
            assert!(RemotePath::parse(raw).is_err(), "{raw:?} accepted");
        }
    }

    #[test]
    fn ordinary_names_are_kept() {
        for (raw, shown) in [
            ("a.txt", "a.txt"),
            ("./dir/b c.bin", "dir/b c.bin"),
            ("données/été.csv", "données/été.csv"),
            ("a//b/", "a/b"),
            ("x/.pigeon", "x/.pigeon"),
        ] {
            assert_eq!(RemotePath::parse(raw).unwrap().to_string(), shown);
        }
        assert!(RemotePath::parse("").unwrap().is_root());
        assert!(RemotePath::parse_file("").is_err());
    }

    #[test]
    fn escape_control_renders_ansi_inert() {
        assert_eq!(escape_control("plain"), "plain");
        assert_eq!(escape_control("a\u{1b}[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escape_control("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(escape_control("c\u{9b}d\r"), "c\\x9bd\\x0d");
        assert!(!escape_control("\u{1b}]0;title\u{7}").contains('\u{1b}'));
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = StorageRoot::open(&dir.path().join("root")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
        std::fs::create_dir(root.path().join("inside")).unwrap();
        std::os::unix::fs::symlink(root.path().join("inside"), root.path().join("in")).unwrap();
        let err = root
            .prepare_parent(&RemotePath::parse("out/x.txt").unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(root.resolve(&RemotePath::parse("out").unwrap()).is_err());
        root.prepare_parent(&RemotePath::parse("in/x.txt").unwrap())
            .unwrap();
        root.prepare_parent(&RemotePath::parse("new/deep/x.txt").unwrap())
            .unwrap();
    }

    #[test]
    fn permissions_parse() {
        let p = Permissions::parse("upload,list").unwrap();
        assert!(p.upload && p.list && !p.download);
        assert_eq!(p.to_string(), "upload,list");
        assert!(Permissions::parse("delete").is_err());
    }
}
