//! Files and folders as pigeon makes them: private (its home, its keys,
//! what it keeps for itself) or the user's (what it receives, under the
//! umask the user started it with), and durable (written, synced, renamed,
//! the folder synced). At the bottom of the layers: the home, the policy,
//! the transports and the engine all make files.

use std::path::{Path, PathBuf};

use crate::error::{CoreError, IoContext, Result};

/// Write a file readable by its owner only, durably and atomically: a
/// fresh temporary file (a leftover one, whatever its mode, is removed
/// first, so its mode is never inherited), fsync, rename over `path`,
/// fsync of the folder so the rename itself survives a crash.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(CoreError::io(format!("removing {}", tmp.display()), e)),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .ctx(|| format!("writing {}", tmp.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|_| f.write_all(bytes))
        .and_then(|_| f.sync_all())
        .ctx(|| format!("writing {} (is the disk full?)", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("renaming {}", tmp.display()))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir).ctx(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

/// fsync a folder, so the names created, renamed or removed in it survive
/// a crash.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Create `dir` (and its parents) for pigeon's own use, mode 0700. A folder
/// that already exists, is this user's and is not a shared sticky folder
/// (like `/tmp`) is tightened to 0700 too.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .ctx(|| format!("creating {}", dir.display()))?;
    let meta = std::fs::metadata(dir).ctx(|| format!("checking {}", dir.display()))?;
    let mode = meta.permissions().mode();
    let sticky = mode & 0o1000 != 0;
    if mode & 0o077 != 0 && !sticky && meta.uid() == rustix::process::getuid().as_raw() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .ctx(|| format!("making {} private", dir.display()))?;
    }
    Ok(())
}

/// The umask the user started pigeon with (what [`restrict_umask`] replaced).
static USER_UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Make 0077 the process's umask, so every file and folder created for
/// pigeon's own use (by sled and the log appender too) is private whatever
/// the user's umask; remember the user's for what pigeon writes for them.
/// Call once, first thing in `main`.
pub fn restrict_umask() {
    use rustix::fs::Mode;
    let old = rustix::process::umask(Mode::from_raw_mode(0o077));
    let _ = USER_UMASK.set(old.as_raw_mode() as u32);
}

/// The user's umask (0022 when [`restrict_umask`] was never called).
pub(crate) fn user_umask() -> u32 {
    USER_UMASK.get().copied().unwrap_or(0o022)
}

/// The mode of a file pigeon writes for the user (a received file, a spool
/// message): read and write as the user's umask allows, never executable.
pub fn public_file_mode() -> u32 {
    0o666 & !user_umask()
}

/// Create `dir` and its missing parents as the user's umask would have.
pub fn create_public_dirs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut missing = vec![];
    let mut at = dir;
    while !at.as_os_str().is_empty() && !at.exists() {
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        let mode = std::fs::Permissions::from_mode(0o777 & !user_umask());
        best_effort_on_modeless(d, std::fs::set_permissions(d, mode))?;
    }
    Ok(())
}

/// Give a file pigeon wrote for the user (a received file, a spool
/// message) its [`public_file_mode`], through its open handle.
pub(crate) fn set_public_mode(file: &std::fs::File, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::Permissions::from_mode(public_file_mode());
    best_effort_on_modeless(path, file.set_permissions(mode))
}

/// Give the file at `path` its [`public_file_mode`].
pub(crate) fn set_public_mode_at(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::Permissions::from_mode(public_file_mode());
    best_effort_on_modeless(path, std::fs::set_permissions(path, mode))
}

/// Whether `path` is on a file system that keeps no Unix modes: Android's
/// shared storage (FUSE since Android 11, sdcardfs before), a FAT or exFAT
/// memory card. Every file there has the mode its mount gives, whatever
/// pigeon asks, and any app with storage access can read it.
pub fn keeps_no_modes(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| {
        // `f_type` is signed on some platforms and unsigned on others.
        #[allow(clippy::unnecessary_cast)]
        let magic = s.f_type as u64;
        is_modeless_magic(magic)
    })
}

/// The file systems (by `statfs` magic number) that keep no Unix modes.
fn is_modeless_magic(magic: u64) -> bool {
    const FUSE: u64 = 0x6573_5546;
    const SDCARDFS: u64 = 0x5dca_2df5;
    const MSDOS: u64 = 0x4d44;
    const EXFAT: u64 = 0x2011_bab0;
    [FUSE, SDCARDFS, MSDOS, EXFAT].contains(&magic)
}

/// A mode change that failed on a file system that keeps no modes is no
/// error: the file is the user's all the same and nothing pigeon could
/// set would change its mode (Android refuses `chmod` on shared storage
/// with "Operation not permitted"; a download into `~/storage/shared`
/// would otherwise fail after its hash was verified). Only for modes that
/// serve the user: what must be private never comes here.
fn best_effort_on_modeless(path: &Path, changed: std::io::Result<()>) -> std::io::Result<()> {
    match changed {
        Err(e) if keeps_no_modes(path) => {
            tracing::debug!(
                "{}: mode left as its file system has it ({e})",
                path.display()
            );
            Ok(())
        }
        other => other,
    }
}

/// SHA-256 of the first `size` bytes of a file, read in 1 MiB blocks.
pub(crate) fn hash_file(path: &std::path::Path, size: u64) -> Result<[u8; 32]> {
    let f = std::fs::File::open(path)
        .map_err(|e| CoreError::io(format!("hashing {}", path.display()), e))?;
    hash_open_file(&f, size).map_err(|e| at_path(e, path))
}

/// SHA-256 of the first `size` bytes of an open file (read at offsets, so
/// the file's own position is left alone).
pub(crate) fn hash_open_file(f: &std::fs::File, size: u64) -> Result<[u8; 32]> {
    use sha2::Digest;
    use std::os::unix::fs::FileExt;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut total = 0u64;
    while total < size {
        let want = (size - total).min(buf.len() as u64) as usize;
        let n = f
            .read_at(&mut buf[..want], total)
            .map_err(|e| CoreError::io("hashing the file".to_string(), e))?;
        if n == 0 {
            return Err(CoreError::Transfer(
                "the file is shorter than when the transfer started; run the command again".into(),
            ));
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// Name the file an error is about.
pub(crate) fn at_path(e: CoreError, path: &std::path::Path) -> CoreError {
    match e {
        CoreError::Io { source, .. } => {
            CoreError::io(format!("hashing {}", path.display()), source)
        }
        CoreError::Transfer(m) => {
            CoreError::Transfer(m.replace("the file", &path.display().to_string()))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 32: Android's shared storage and memory cards are known by
    /// their magic numbers; the file systems a home lives on are not.
    #[test]
    fn modeless_file_systems_are_known_by_their_magic() {
        for magic in [0x6573_5546, 0x5dca_2df5, 0x4d44, 0x2011_bab0] {
            assert!(is_modeless_magic(magic), "{magic:#x}");
        }
        // ext4, f2fs, tmpfs, btrfs, xfs, overlayfs
        for magic in [
            0xef53,
            0xf2f5_2010,
            0x0102_1994,
            0x9123_683e,
            0x5846_5342,
            0x794c_7630,
        ] {
            assert!(!is_modeless_magic(magic), "{magic:#x}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        // Wherever the tests run, a refusal off such a file system stays one.
        if !keeps_no_modes(dir.path()) {
            let refused = Err(std::io::ErrorKind::PermissionDenied.into());
            assert!(best_effort_on_modeless(&file, refused).is_err());
        }
    }
}
