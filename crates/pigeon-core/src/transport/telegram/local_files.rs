//! The files a local Bot API server names by an absolute path.
//!
//! A Bot API server started with `--local` answers `getFile` with the path
//! of the file on its own disk (under its `--dir`), for the bot to read
//! there. The answer comes from a server, so it is not trusted: it could
//! name `/dev/zero` (memory runs out), a FIFO (the poll loop waits for a
//! writer for ever), or any file the user may read. [`read`] therefore
//! takes only a regular file, inside the folder the user named with
//! `local_files=`, no bigger than a document, and reads no more than that
//! even if the file grows meanwhile.

use std::io::Read;
use std::path::Path;

use cap_std::fs::OpenOptionsExt;

/// The most of a server's path an error shows.
const SHOWN_CHARS: usize = 200;

/// The file at `path` (as the server answered it), if it is a regular
/// file of at most `limit` bytes inside `root`. Errors show paths with
/// `token` blotted out (the server keeps a bot's files in a folder named
/// by its token).
///
/// Blocking: call it on a blocking thread.
pub fn read(root: &Path, path: &str, limit: usize, token: &str) -> Result<Vec<u8>, String> {
    let shown = shown(path, token);
    let folder = || format!("local_files={}", root.display());
    let root_real = std::fs::canonicalize(root).map_err(|e| {
        format!(
            "telegram: cannot open {} ({e}); it should be the local Bot API server's working folder (its --dir)",
            folder()
        )
    })?;
    // Every link resolved, so the prefix test below sees where the path
    // really leads.
    let real = std::fs::canonicalize(path).map_err(|e| {
        format!("telegram getFile: cannot find {shown}, which the local Bot API server named ({e})")
    })?;
    let Ok(inside) = real.strip_prefix(&root_real) else {
        return Err(format!(
            "telegram getFile: the server named {shown}, which leads outside {} (to {}); refused (local_files= should be the server's --dir)",
            folder(),
            self::shown(&real.to_string_lossy(), token)
        ));
    };
    // Opened below a handle on the root (cap-std), so a folder on the way
    // swapped for a link since `canonicalize` cannot lead out either.
    let dir = cap_std::fs::Dir::open_ambient_dir(&root_real, cap_std::ambient_authority())
        .map_err(|e| format!("telegram: cannot open {} ({e})", folder()))?;
    // Looked at before it is opened: opening a FIFO would wait for a writer.
    let meta = dir
        .symlink_metadata(inside)
        .map_err(|e| format!("telegram getFile: cannot read {shown} ({e})"))?;
    admit(&meta, &shown, limit)?;
    let mut options = cap_std::fs::OpenOptions::new();
    options.read(true);
    // Should it have been swapped for a FIFO or a link in between: opening
    // does not wait (O_NONBLOCK) or follow (O_NOFOLLOW), and the handle's
    // own metadata is checked again.
    options
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOFOLLOW).bits() as i32);
    let file = dir
        .open_with(inside, &options)
        .map_err(|e| format!("telegram getFile: cannot open {shown} ({e})"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("telegram getFile: cannot read {shown} ({e})"))?;
    admit(&meta, &shown, limit)?;
    let mut data = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(limit).min(limit));
    // Bounded: a file that grows while it is read is not read past `limit`.
    file.take(limit as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("telegram getFile: cannot read {shown} ({e})"))?;
    if data.len() > limit {
        return Err(format!(
            "telegram getFile: {shown} grew past the {limit}-byte document limit while it was read; refused"
        ));
    }
    Ok(data)
}

/// A path from a server as an error may show it: without the bot's
/// `token`, control characters made inert, and not too long.
pub fn shown(path: &str, token: &str) -> String {
    let redacted = if token.is_empty() {
        path.to_string()
    } else {
        path.replace(token, "<bot token>")
    };
    let escaped = crate::policy::escape_control(&redacted);
    match escaped.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => format!("{}…", &escaped[..end]),
        None => escaped.into_owned(),
    }
}

/// A regular file of at most `limit` bytes, else why not.
fn admit(meta: &cap_std::fs::Metadata, shown: &str, limit: usize) -> Result<(), String> {
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_symlink() {
            "a symbolic link"
        } else if kind.is_dir() {
            "a folder"
        } else {
            "not a regular file (a FIFO, a socket or a device)"
        };
        return Err(format!("telegram getFile: {shown} is {what}; refused"));
    }
    if meta.len() > limit as u64 {
        return Err(format!(
            "telegram getFile: {shown} is {} bytes, over the {limit}-byte document limit; refused",
            meta.len()
        ));
    }
    Ok(())
}
