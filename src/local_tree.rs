//! Local folders as the files in them: what `pigeon upload DIR` and the
//! TUI's upload of a folder send, each with the remote path it lands on.

use std::path::{Path, PathBuf};

/// Files one folder upload may expand to; beyond, it stops and says so.
pub const MAX_FILES: usize = 10_000;

/// (local file, remote path) for every file under `sources`, each landing
/// under `remote_dir` by its name; folders walked depth first, folders
/// before files, by name. Links to folders are not followed (no cycles).
/// True as the second value when it stopped at [`MAX_FILES`].
pub fn expand(sources: &[PathBuf], remote_dir: &str) -> (Vec<(PathBuf, String)>, bool) {
    let roots = sources
        .iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            Some((p.clone(), join_remote(remote_dir, &name)))
        })
        .collect();
    expand_roots(roots)
}

/// As [`expand`], each source given the remote path it lands on itself (a
/// folder's files go under it).
pub fn expand_roots(roots: Vec<(PathBuf, String)>) -> (Vec<(PathBuf, String)>, bool) {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, String)> = roots.into_iter().rev().collect();
    while let Some((local, remote)) = stack.pop() {
        if out.len() >= MAX_FILES {
            return (out, true);
        }
        if is_real_dir(&local) {
            let Ok(entries) = entries(&local) else {
                continue;
            };
            for (name, path, linked_dir) in entries.into_iter().rev() {
                if linked_dir {
                    continue;
                }
                let child_remote = join_remote(&remote, &name);
                stack.push((path, child_remote));
            }
        } else {
            out.push((local, remote));
        }
    }
    (out, false)
}

/// (name, path, is a link to a folder) of each entry, folders first, by name.
fn entries(dir: &Path) -> std::io::Result<Vec<(String, PathBuf, bool)>> {
    let mut all = vec![];
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let link = entry.file_type().is_ok_and(|t| t.is_symlink());
        let folder = is_real_dir(&path);
        all.push((
            folder,
            entry.file_name().to_string_lossy().into_owned(),
            path,
            link && folder,
        ));
    }
    all.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok(all.into_iter().map(|(_, n, p, l)| (n, p, l)).collect())
}

pub fn is_real_dir(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_dir())
}

/// `dir/name`, or `name` at the root.
pub fn join_remote(dir: &str, name: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths_join_without_doubled_slashes() {
        assert_eq!(join_remote("", "a.txt"), "a.txt");
        assert_eq!(join_remote("docs/", "a.txt"), "docs/a.txt");
        assert_eq!(join_remote("/docs/x", "a.txt"), "docs/x/a.txt");
    }

    #[test]
    fn folders_expand_into_their_files_with_remote_paths() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("proj");
        std::fs::create_dir_all(root.join("src")).expect("mkdir");
        std::fs::write(root.join("README"), b"r").expect("write");
        std::fs::write(root.join("src/main.rs"), b"m").expect("write");
        let single = dir.path().join("single.txt");
        std::fs::write(&single, b"s").expect("write");

        let (pairs, truncated) = expand(&[root.clone(), single.clone()], "up");
        assert!(!truncated);
        let remotes: Vec<&str> = pairs.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(
            remotes,
            ["up/proj/src/main.rs", "up/proj/README", "up/single.txt"]
        );
        assert_eq!(pairs[2].0, single);
    }
}
