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
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777 & !user_umask()))?;
    }
    Ok(())
}
