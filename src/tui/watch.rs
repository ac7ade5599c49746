//! Watching the folder the Files pane shows, so a file that appears in it
//! (a build's output, a download from another shell) is listed without
//! leaving the folder and entering it again.
//!
//! `notify` (inotify on Linux and Android, FSEvents, kqueue) tells of a
//! change; the event loop waits a moment for a burst to end
//! ([`SETTLE`]) and reads the folder again. A folder that cannot be
//! watched (too many watches, a file system without notifications) is
//! simply not watched: `R`-less, the pane still re-reads it on entry.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// How long a burst of changes may go on before the folder is read again
/// (a file copied in is many writes).
pub const SETTLE: Duration = Duration::from_millis(250);

/// A watch on one folder at a time.
pub struct FolderWatch {
    watcher: Option<notify::RecommendedWatcher>,
    watched: Option<PathBuf>,
}

impl FolderWatch {
    /// Changes are told on `changed` (once per event; the caller settles).
    pub fn new(changed: mpsc::UnboundedSender<()>) -> FolderWatch {
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Reading a file is no change to the listing.
            if event.is_ok_and(|e| !e.kind.is_access()) {
                let _ = changed.send(());
            }
        })
        .ok();
        FolderWatch {
            watcher,
            watched: None,
        }
    }

    /// Watch `dir` (and no longer the folder watched before), if not yet.
    pub fn follow(&mut self, dir: &Path) {
        if self.watched.as_deref() == Some(dir) {
            return;
        }
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        if let Some(old) = self.watched.take() {
            let _ = watcher.unwatch(&old);
        }
        if watcher.watch(dir, RecursiveMode::NonRecursive).is_ok() {
            self.watched = Some(dir.to_path_buf());
        }
    }
}
