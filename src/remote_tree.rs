//! Remote folders as the files in them: what `pigeon download DIR/` and the
//! TUI's download of a folder fetch, each with the local path it lands on.
//!
//! The agent's listings are not trusted to stay inside the folder asked
//! for: an entry whose path is not under it, or whose name could not be a
//! plain file name here (`..`, a separator, a NUL), is left out and
//! counted.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use pigeon_core::engine::{ClientHandle, RemoteEntry};
use pigeon_core::error::Result;

/// Files one folder download may expand to (as many as an upload).
pub const MAX_FILES: usize = crate::local_tree::MAX_FILES;

/// What a walk of a remote folder found.
#[derive(Debug, Default)]
pub struct Tree {
    /// (remote file, local path), folders before their files, by listing order.
    pub files: Vec<(RemoteEntry, PathBuf)>,
    /// Entries left out: outside the folder, or names unsafe here.
    pub refused: usize,
    /// It stopped at [`MAX_FILES`].
    pub capped: bool,
}

/// Walk `dir` on the agent (one listing per folder, breadth first) and
/// place each file under `root` by its path below `dir`.
pub async fn walk(handle: &ClientHandle, dir: &str, root: &Path) -> Result<Tree> {
    let dir = dir.trim_matches('/');
    let mut tree = Tree::default();
    let mut folders = VecDeque::from([dir.to_string()]);
    while let Some(folder) = folders.pop_front() {
        for entry in handle.list(folder.clone()).await? {
            let Some(local) = local_path(root, dir, &entry.path) else {
                tree.refused += 1;
                continue;
            };
            // A folder is walked only if it is inside the one listed.
            if entry.is_dir {
                if entry.path.trim_end_matches('/').len() > folder.len() {
                    folders.push_back(entry.path.trim_end_matches('/').to_string());
                } else {
                    tree.refused += 1;
                }
                continue;
            }
            if tree.files.len() >= MAX_FILES {
                tree.capped = true;
                return Ok(tree);
            }
            tree.files.push((entry, local));
        }
    }
    Ok(tree)
}

/// Where the remote `path`, found under the remote folder `dir`, lands
/// under `root`; None when it is not under `dir` or a part of it could
/// not be a file name here.
pub fn local_path(root: &Path, dir: &str, path: &str) -> Option<PathBuf> {
    let dir = dir.trim_matches('/');
    let rel = if dir.is_empty() {
        path
    } else {
        path.strip_prefix(dir)?.strip_prefix('/')?
    };
    let mut out = root.to_path_buf();
    let mut parts = 0;
    for part in rel.trim_end_matches('/').split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains(['\0', '\\']) {
            return None;
        }
        out.push(part);
        parts += 1;
    }
    (parts > 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_land_below_the_root_by_their_path_under_the_folder() {
        let root = Path::new("/tmp/out");
        assert_eq!(
            local_path(root, "runs/42/", "runs/42/logs/a.txt"),
            Some(PathBuf::from("/tmp/out/logs/a.txt"))
        );
        assert_eq!(
            local_path(root, "", "a.txt"),
            Some(PathBuf::from("/tmp/out/a.txt"))
        );
    }

    #[test]
    fn a_hostile_listing_cannot_place_a_file_outside_the_root() {
        let root = Path::new("/tmp/out");
        for bad in [
            "elsewhere/a.txt",
            "runs/42/../../etc/passwd",
            "runs/42//a",
            "runs/42/./a",
            "runs/420/a.txt",
            "runs/42",
            "runs/42/a\0b",
            "runs/42/a\\..\\b",
        ] {
            assert_eq!(local_path(root, "runs/42", bad), None, "{bad:?}");
        }
    }
}
