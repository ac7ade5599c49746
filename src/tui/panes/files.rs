//! The "Files" pane: the local file browser.
//!
//! [`FilesPane`] never touches the disk itself. Entering a folder returns an
//! [`Effect::ReadDir`]; the event loop runs [`read_dir`](crate::tui::entries::read_dir) on a blocking
//! thread and hands the result back through [`FilesPane::on_listing`]. While
//! the answer is on its way the old listing stays on screen, marked as
//! loading, and a late answer for a folder the user has already left is
//! dropped.

use std::path::{Path, PathBuf};

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Widget;

use super::browser::{Browser, BrowserEntry};
use super::{pane_block, Focus};
use crate::tui::effect::Effect;
use crate::tui::entries::LocalEntry;
use crate::tui::format;
use crate::tui::keymap::Action;
use crate::tui::theme::Theme;
use pigeon_core::policy::escape_control;

impl BrowserEntry for LocalEntry {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_dir(&self) -> bool {
        self.is_dir
    }

    fn size(&self) -> Option<u64> {
        (!self.is_dir).then_some(self.size)
    }

    fn type_label(&self) -> std::borrow::Cow<'_, str> {
        let base = super::browser::type_from_name(&self.name, self.is_dir);
        if self.is_symlink {
            std::borrow::Cow::Owned(format!("{base}@"))
        } else {
            base
        }
    }
}

/// The local file browser.
#[derive(Debug)]
pub struct FilesPane {
    /// The folder whose listing is shown.
    cwd: PathBuf,
    /// The folder asked for and not yet listed.
    loading: Option<PathBuf>,
    /// The entry to put the cursor on when the listing arrives (the folder
    /// we came up from).
    focus_after_load: Option<String>,
    error: Option<String>,
    browser: Browser<LocalEntry>,
}

impl FilesPane {
    /// A pane that will show `start`; returns the read it needs.
    pub fn new(start: PathBuf) -> (Self, Effect) {
        let pane = FilesPane {
            cwd: start.clone(),
            loading: Some(start.clone()),
            focus_after_load: None,
            error: None,
            browser: Browser::default(),
        };
        (pane, Effect::ReadDir(start))
    }

    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    pub fn browser(&self) -> &Browser<LocalEntry> {
        &self.browser
    }

    pub fn browser_mut(&mut self) -> &mut Browser<LocalEntry> {
        &mut self.browser
    }

    /// Handle an action while focused.
    pub fn handle(&mut self, action: Action) -> Option<Effect> {
        match action {
            Action::Open => {
                let entry = self.browser.current().filter(|e| e.is_dir)?;
                let target = entry.path.clone();
                Some(self.go(target, None))
            }
            Action::Parent => {
                let parent = self.cwd.parent()?.to_path_buf();
                let came_from = self
                    .cwd
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned());
                Some(self.go(parent, came_from))
            }
            other => {
                self.browser.handle(other);
                None
            }
        }
    }

    /// Read the current folder again (after a download landed in it).
    pub fn reload(&mut self) -> Effect {
        self.loading = Some(self.cwd.clone());
        Effect::ReadDir(self.cwd.clone())
    }

    /// The answer to an [`Effect::ReadDir`].
    pub fn on_listing(&mut self, dir: PathBuf, result: Result<Vec<LocalEntry>, String>) {
        if self.loading.as_deref() != Some(dir.as_path()) {
            return; // the user has moved on
        }
        self.loading = None;
        match result {
            Ok(entries) => {
                if dir != self.cwd {
                    self.browser.clear();
                    self.cwd = dir;
                }
                self.error = None;
                let focus = self.focus_after_load.take();
                self.browser.set_entries(entries, focus.as_deref());
            }
            Err(error) => {
                self.focus_after_load = None;
                self.error = Some(format!("cannot open {}: {error}", dir.display()));
            }
        }
    }

    /// Local paths to upload: the marks, or the entry under the cursor.
    pub fn upload_sources(&self) -> Vec<PathBuf> {
        self.browser
            .targets()
            .into_iter()
            .map(|e| e.path.clone())
            .collect()
    }

    pub fn render(&mut self, area: Rect, buf: &mut Buffer, theme: Theme, focused: bool) {
        let path = self.cwd.to_string_lossy();
        let path = escape_control(&path);
        let width = area.width.saturating_sub(12) as usize;
        let mut block = pane_block(Focus::Files, focused, theme).title(
            Line::styled(
                format!(" {} ", format::truncate_start(&path, width)),
                theme.dim(),
            )
            .right_aligned(),
        );
        if let Some(label) = self.browser.filter().label() {
            block = block.title_bottom(Line::styled(label, theme.accent()));
        }
        if self.browser.selection_len() > 0 {
            block = block.title_bottom(
                Line::styled(
                    format!(" {} selected ", self.browser.selection_len()),
                    theme.selected_style(),
                )
                .right_aligned(),
            );
        }
        let inner = block.inner(area);
        block.render(area, buf);
        let placeholder = match (&self.error, &self.loading) {
            (Some(error), _) => error.as_str(),
            (None, Some(_)) => "loading…",
            (None, None) => "empty folder",
        };
        self.browser.render(inner, buf, theme, focused, placeholder);
        if let Some(error) = self.error.as_deref().filter(|_| !self.browser.is_empty()) {
            // Keep the old listing visible and say why we did not move.
            let y = inner.bottom().saturating_sub(1);
            let shown = crate::tui::format::fit_words(error, inner.width as usize);
            buf.set_stringn(inner.x, y, shown, inner.width as usize, theme.bad());
        }
    }

    fn go(&mut self, target: PathBuf, focus_after_load: Option<String>) -> Effect {
        self.loading = Some(target.clone());
        self.focus_after_load = focus_after_load;
        self.error = None;
        Effect::ReadDir(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::entries::read_dir;

    fn entry(name: &str, is_dir: bool) -> LocalEntry {
        LocalEntry {
            name: name.to_owned(),
            path: PathBuf::from("/w").join(name),
            is_dir,
            is_symlink: false,
            size: 10,
        }
    }

    #[test]
    fn read_dir_lists_folders_first_by_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("zeta")).expect("mkdir");
        std::fs::write(dir.path().join("B.txt"), b"bb").expect("write");
        std::fs::write(dir.path().join("a.txt"), b"a").expect("write");
        let entries = read_dir(dir.path()).expect("readable");
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["zeta", "a.txt", "B.txt"]);
        assert_eq!(entries[2].size, 2);
        assert!(entries[0].is_dir);
    }

    #[test]
    fn entering_and_leaving_folders_goes_through_effects() {
        let (mut pane, first) = FilesPane::new(PathBuf::from("/w"));
        assert_eq!(first, Effect::ReadDir(PathBuf::from("/w")));
        pane.on_listing(
            PathBuf::from("/w"),
            Ok(vec![entry("sub", true), entry("f", false)]),
        );
        assert_eq!(
            pane.handle(Action::Open),
            Some(Effect::ReadDir(PathBuf::from("/w/sub")))
        );
        // Until the answer comes, we are still in /w.
        assert_eq!(pane.cwd(), Path::new("/w"));
        pane.on_listing(PathBuf::from("/w/sub"), Ok(vec![entry("inner", false)]));
        assert_eq!(pane.cwd(), Path::new("/w/sub"));
        assert_eq!(
            pane.handle(Action::Parent),
            Some(Effect::ReadDir(PathBuf::from("/w")))
        );
        pane.on_listing(
            PathBuf::from("/w"),
            Ok(vec![entry("sub", true), entry("f", false)]),
        );
        assert_eq!(
            pane.browser().current().map(|e| e.name.as_str()),
            Some("sub")
        );
    }

    #[test]
    fn a_late_listing_for_a_folder_we_left_is_ignored() {
        let (mut pane, _) = FilesPane::new(PathBuf::from("/w"));
        pane.on_listing(
            PathBuf::from("/w"),
            Ok(vec![entry("a", true), entry("b", true)]),
        );
        let _ = pane.handle(Action::Open); // asks for /w/a
        pane.on_listing(PathBuf::from("/elsewhere"), Ok(vec![]));
        assert_eq!(pane.cwd(), Path::new("/w"));
        assert_eq!(pane.browser().current().map(|e| e.name.as_str()), Some("a"));
    }

    #[test]
    fn opening_a_file_does_nothing() {
        let (mut pane, _) = FilesPane::new(PathBuf::from("/w"));
        pane.on_listing(PathBuf::from("/w"), Ok(vec![entry("f", false)]));
        assert_eq!(pane.handle(Action::Open), None);
    }

    #[test]
    fn upload_sources_default_to_the_cursor() {
        let (mut pane, _) = FilesPane::new(PathBuf::from("/w"));
        pane.on_listing(
            PathBuf::from("/w"),
            Ok(vec![entry("f", false), entry("g", false)]),
        );
        assert_eq!(pane.upload_sources(), [PathBuf::from("/w/f")]);
        pane.handle(Action::Select);
        pane.handle(Action::Select);
        assert_eq!(
            pane.upload_sources(),
            [PathBuf::from("/w/f"), PathBuf::from("/w/g")]
        );
    }
}
