//! What a folder holds, local or remote: the entries the Files and Remote
//! panes show and the effects read or act on. Plain data (and the blocking
//! read of a local folder), so panes and effects both use it and neither
//! imports the other for it.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

/// One entry of a local folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEntry {
    /// The file name, lossily decoded for display and matching.
    pub name: String,
    pub path: PathBuf,
    /// A folder, or a link to one.
    pub is_dir: bool,
    pub is_symlink: bool,
    pub size: u64,
}

/// Read a folder: folders first, then files, each by name ignoring case.
/// Blocking: call it from `spawn_blocking`, never from the UI loop.
pub fn read_dir(dir: &Path) -> std::io::Result<Vec<LocalEntry>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        let Ok(link_meta) = entry.metadata() else {
            continue;
        };
        let is_symlink = link_meta.file_type().is_symlink();
        // Follow links for what they point to; a dangling link is a file.
        let meta = if is_symlink {
            std::fs::metadata(&path).unwrap_or(link_meta)
        } else {
            link_meta
        };
        entries.push(LocalEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            path,
            is_dir: meta.is_dir(),
            is_symlink,
            size: meta.len(),
        });
    }
    entries.sort_by(compare_entries);
    Ok(entries)
}

fn compare_entries(a: &LocalEntry, b: &LocalEntry) -> Ordering {
    b.is_dir
        .cmp(&a.is_dir)
        .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
        .then_with(|| a.name.cmp(&b.name))
}

/// One entry of the remote folder shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteItem {
    /// The last path component.
    pub name: String,
    /// The full path under the agent's root, `/`-separated.
    pub path: String,
    pub is_dir: bool,
    pub size: u64,
}
