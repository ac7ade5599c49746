//! The agent's rules: where files may go and who may do what.
//!
//! - [`RemotePath`]: a path the sender proposes, parsed so it cannot hold an
//!   absolute root, `..`, empty or dot components, control, bidi or
//!   invisible format characters, or pigeon's own `.pigeon` folder (in any
//!   case: on a case-insensitive file system `.PIGEON` is the same folder);
//!   each component is normalised to NFC, so one name is one file.
//! - [`StorageRoot`]: every file operation inside the root goes through a
//!   handle on the root folder (`cap-std`: `openat` and friends), so a
//!   symlink swapped in between a check and a use cannot lead out of it.
//! - [`Permissions`]: what a trusted peer may do.
//! - [`escape_control`]: how any name from elsewhere is shown on a terminal.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::error::{CoreError, IoContext, Result};

mod authorize;
pub mod limits;
pub mod namespace;
pub mod quarantine;
pub use authorize::{authorize, authorize_file, Found, Refusal, Request, Target};
pub use limits::{Limits, QuotaLine, Size, Usage};
pub use namespace::{Layout, Namespace, Share};

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
            if part.chars().any(is_forbidden_char) {
                return Err(bad(
                    "control, bidi, invisible or backslash characters are not allowed",
                ));
            }
            let part: String = part.nfc().collect();
            if part.len() > MAX_COMPONENT_BYTES {
                return Err(bad("a path component is longer than 255 bytes"));
            }
            if components.is_empty() && is_reserved(&part) {
                return Err(bad("'.pigeon' is reserved for the agent"));
            }
            components.push(part);
        }
        // What is kept is the normalised form, and it is parsed again
        // wherever it goes (stored, offered, put in place): it must pass
        // the same checks, or a path taken here is refused after the whole
        // file has come (found by fuzzing: `./C:x` hid its drive prefix
        // behind `./`; a name under 1024 bytes grew past it in NFC).
        let kept: usize = components.iter().map(|c| c.len() + 1).sum();
        if kept > MAX_PATH_BYTES + 1 {
            return Err(bad("longer than 1024 bytes"));
        }
        if components.first().is_some_and(|c| has_drive_prefix(c)) {
            return Err(bad(
                "absolute paths are not allowed; name a path under the agent's root",
            ));
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

    /// From components that are each already a checked component (a
    /// peer's folder before a parsed path's).
    pub(crate) fn from_checked(components: Vec<String>) -> RemotePath {
        RemotePath { components }
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

/// Whether a root-level name is pigeon's own folder, in any case or width
/// a case-insensitive file system could fold to it.
pub fn is_reserved(name: &str) -> bool {
    name.nfkc()
        .flat_map(char::to_lowercase)
        .eq(INTERNAL_DIR.chars())
}

/// Control characters (C0, DEL, C1), the backslash (a separator on other
/// systems), and characters that change or hide how a name reads: bidi
/// controls, zero-width and other invisible format characters, line and
/// paragraph separators, fillers and tags. Variation selectors stay (emoji
/// need them).
fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}'
            | '\u{17B4}' | '\u{17B5}' | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FEFF}' | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}' | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E007F}')
}

/// Show `name` safely on a terminal: control, bidi and invisible characters
/// become visible escapes (`\n`, `\r`, `\t`, `\x1b`, `\u{202e}`);
/// everything else, a backslash too, stays as it is. Borrows when there is
/// nothing to escape, which is nearly always. Idempotent: what the engine
/// escaped into a message (a peer's reason, an API's error) shows the same
/// when a front end escapes it again where it is shown. The one escape of
/// pigeon: the CLI, the TUI and the engine's log all use it for whatever a
/// peer, a channel or a disk named.
pub fn escape_control(name: &str) -> Cow<'_, str> {
    let shown = |c: char| c != '\\' && is_forbidden_char(c);
    if !name.chars().any(shown) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if let Some(short) = match c {
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            _ => None,
        } {
            out.push_str(short);
        } else if shown(c) {
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
    /// Upload programs under their own names (never given an exec bit
    /// by pigeon; without it, programs go to quarantine).
    pub exec: bool,
}

impl Default for Permissions {
    fn default() -> Self {
        Permissions {
            upload: true,
            download: true,
            list: true,
            exec: false,
        }
    }
}

impl Permissions {
    /// Parse `upload,download,list,exec` (any subset, comma-separated).
    pub fn parse(s: &str) -> Result<Permissions> {
        let mut p = Permissions {
            upload: false,
            download: false,
            list: false,
            exec: false,
        };
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "upload" => p.upload = true,
                "download" => p.download = true,
                "list" => p.list = true,
                "exec" => p.exec = true,
                other => {
                    return Err(CoreError::Config(format!(
                        "unknown permission {other:?}; use upload, download, list, exec"
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
        if self.exec {
            words.push("exec");
        }
        if words.is_empty() {
            words.push("none");
        }
        f.write_str(&words.join(","))
    }
}

/// The agent's storage root: its path (for messages and records) and a
/// handle on it that every operation inside goes through.
#[derive(Clone, Debug)]
pub struct StorageRoot {
    root: PathBuf,
    dir: std::sync::Arc<cap_std::fs::Dir>,
}

impl StorageRoot {
    pub fn open(root: &Path) -> Result<StorageRoot> {
        crate::files::create_public_dirs(root)
            .ctx(|| format!("creating storage root {}", root.display()))?;
        let root = root
            .canonicalize()
            .ctx(|| format!("resolving storage root {}", root.display()))?;
        // On Android's shared storage nothing can be private: partial and
        // quarantined uploads would be open to every app with storage
        // access (and `chmod` is refused there, so nothing would work).
        if cfg!(target_os = "android") && crate::files::keeps_no_modes(&root) {
            return Err(CoreError::Config(format!(
                "storage root {} is on shared storage (or a memory card), where every app \
                 with storage access reads what it holds, partial and quarantined uploads \
                 too; keep the root under $HOME (the default is <home>/storage) and copy \
                 files out to share them",
                root.display()
            )));
        }
        let staging = root.join(INTERNAL_DIR).join("staging");
        // Other peers' partial files: pigeon's alone.
        crate::files::create_private_dir(&staging)?;
        let dir = cap_std::fs::Dir::open_ambient_dir(&root, cap_std::ambient_authority())
            .ctx(|| format!("opening storage root {}", root.display()))?;
        Ok(StorageRoot {
            root,
            dir: std::sync::Arc::new(dir),
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Bytes free for an unprivileged writer on the root's file system,
    /// when the system says.
    pub fn free_bytes(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(&self.root).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    pub fn staging_dir(&self) -> PathBuf {
        self.root.join(INTERNAL_DIR).join("staging")
    }

    /// Where `p` lives on disk, after checking that no existing part of it is
    /// a symlink leading out of the root (for a clear refusal; the handle
    /// enforces it again at every use). Missing parts are fine (they will
    /// be created as plain folders by [`prepare_parent`](Self::prepare_parent)).
    pub fn resolve(&self, p: &RemotePath) -> Result<PathBuf> {
        let mut at = self.root.clone();
        for part in p.components() {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    // The root's handle follows only relative links that
                    // stay inside: it cannot tell where an absolute one goes.
                    if std::fs::read_link(&at).is_ok_and(|t| t.is_absolute()) {
                        return Err(CoreError::BadRemotePath {
                            path: p.to_string(),
                            reason: "it goes through an absolute symlink (only relative symlinks inside the root are followed)",
                        });
                    }
                    let target = at.canonicalize().map_err(|_| CoreError::BadRemotePath {
                        path: p.to_string(),
                        reason: "it goes through a dangling symlink",
                    })?;
                    if !target.starts_with(&self.root) {
                        return Err(escapes(p));
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                // Said here, where nothing is made yet, not only when the
                // folders are (and without the root's own path: a peer
                // reads this).
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
                    return Err(CoreError::BadRemotePath {
                        path: p.to_string(),
                        reason: "a part of it is a file, not a folder",
                    })
                }
                Err(e) => return Err(CoreError::io(format!("checking {}", at.display()), e)),
            }
        }
        Ok(self.root.join(relative(p)))
    }

    /// Create the parent folders of `p` through the root's handle (as the
    /// user's umask would make them) and return where `p` will be. The
    /// agent calls this only once an upload has passed every check.
    pub fn prepare_parent(&self, p: &RemotePath) -> Result<PathBuf> {
        let path = self.resolve(p)?;
        let parts = p.components();
        let mut at = PathBuf::new();
        for part in &parts[..parts.len().saturating_sub(1)] {
            at.push(part);
            match self.dir.create_dir(&at) {
                Ok(()) => {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::Permissions::from_mode(0o777 & !crate::files::user_umask());
                    self.dir
                        .set_permissions(&at, cap_std::fs::Permissions::from_std(mode))
                        .ctx(|| format!("creating {}", self.root.join(&at).display()))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A folder, or a symlink to one inside the root.
                    let meta = self.dir.metadata(&at).map_err(|_| escapes(p))?;
                    if !meta.is_dir() {
                        return Err(CoreError::BadRemotePath {
                            path: p.to_string(),
                            reason: "a part of it is a file, not a folder",
                        });
                    }
                }
                Err(_) => return Err(escapes(p)),
            }
        }
        Ok(path)
    }

    /// Whether `p` names something, and whether that is a folder.
    pub fn kind(&self, p: &RemotePath) -> Option<EntryKind> {
        let meta = self.dir.metadata(relative(p)).ok()?;
        Some(if meta.is_dir() {
            EntryKind::Folder
        } else {
            EntryKind::File
        })
    }

    /// Open `p` for reading, never outside the root whatever its parts are.
    pub fn open_file(&self, p: &RemotePath) -> std::io::Result<std::fs::File> {
        Ok(self.dir.open(relative(p))?.into_std())
    }

    /// Remove the file `p`, through the root's handle.
    pub fn remove_file(&self, p: &RemotePath) -> std::io::Result<()> {
        self.dir.remove_file(relative(p))
    }

    /// Open the folder `p` for listing.
    pub fn open_dir(&self, p: &RemotePath) -> std::io::Result<cap_std::fs::Dir> {
        if p.is_root() {
            return self.dir.try_clone();
        }
        self.dir.open_dir(relative(p))
    }

    /// Put the verified `partial` (a file in the staging folder) in place as
    /// `p`, through the root's handle. Without `overwrite` an existing file
    /// is never replaced, not even one that appeared a moment ago (a hard
    /// link cannot replace, a rename would). The folder is synced after.
    pub fn place(&self, partial: &Path, p: &RemotePath, overwrite: bool) -> std::io::Result<()> {
        let staged = partial
            .strip_prefix(&self.root)
            .map_err(|_| std::io::Error::other("the partial file is not in the storage root"))?;
        let target = relative(p);
        if overwrite {
            self.dir.rename(staged, &self.dir, &target)?;
        } else {
            match self.dir.hard_link(staged, &self.dir, &target) {
                Ok(()) => self.dir.remove_file(staged)?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(e),
                // File systems without hard links (FAT on a phone's card).
                Err(_) => {
                    if self.dir.symlink_metadata(&target).is_ok() {
                        return Err(std::io::ErrorKind::AlreadyExists.into());
                    }
                    self.dir.rename(staged, &self.dir, &target)?;
                }
            }
        }
        let parent = target
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        self.dir
            .open_with(parent, cap_std::fs::OpenOptions::new().read(true))?
            .sync_all()
    }
}

/// What a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Folder,
}

/// `p` relative to the root; the root itself is `.`.
fn relative(p: &RemotePath) -> PathBuf {
    if p.is_root() {
        return PathBuf::from(".");
    }
    p.components().iter().collect()
}

fn escapes(p: &RemotePath) -> CoreError {
    CoreError::BadRemotePath {
        path: p.to_string(),
        reason: "it leaves the storage root through a symlink",
    }
}

#[cfg(test)]
mod tests;
