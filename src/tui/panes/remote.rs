//! The "Remote" pane: the agent's files, listed through the transport.
//!
//! Like Files, [`RemotePane`] only asks: entering a folder or refreshing
//! returns [`Effect::ListRemote`], and the answer (which may take seconds on
//! a slow channel) comes back through [`RemotePane::on_listing`]. Names come
//! from the other side, so they are escaped when drawn.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Widget;

use pigeon_core::engine::RemoteEntry;

use super::browser::{Browser, BrowserEntry};
use super::{pane_block, Focus};
use crate::tui::effect::Effect;
use crate::tui::entries::RemoteItem;
use crate::tui::format;
use crate::tui::keymap::Action;
use crate::tui::theme::Theme;
use pigeon_core::policy::escape_control;
use pigeon_core::policy::namespace::SHARED_DIR;

impl BrowserEntry for RemoteItem {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_dir(&self) -> bool {
        self.is_dir
    }

    fn size(&self) -> Option<u64> {
        (!self.is_dir).then_some(self.size)
    }

    /// What other peers share shows as such: `shared/` and its owners.
    fn type_label(&self) -> std::borrow::Cow<'_, str> {
        match shared_by(&self.path) {
            Some(_) if self.is_dir && self.path.matches('/').count() <= 1 => "⇄dir".into(),
            _ => super::browser::type_from_name(&self.name, self.is_dir),
        }
    }
}

/// Whose share a remote path is in (`shared/<owner>/…`), if another's.
fn shared_by(path: &str) -> Option<&str> {
    let rest = path.trim_start_matches('/').strip_prefix(SHARED_DIR)?;
    if rest.is_empty() {
        return Some("");
    }
    rest.strip_prefix('/')?.split('/').next()
}

/// The entries directly inside `dir`, from a listing that may be flat or
/// recursive: deeper paths show as their first folder. Folders first, then
/// by name.
pub fn children(dir: &str, listing: &[RemoteEntry]) -> Vec<RemoteItem> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{}/", dir.trim_end_matches('/'))
    };
    let mut items: Vec<RemoteItem> = Vec::new();
    for entry in listing {
        let path = entry.path.trim_start_matches('/');
        let Some(rest) = path.strip_prefix(prefix.as_str()) else {
            continue;
        };
        if rest.is_empty() {
            continue;
        }
        let item = match rest.split_once('/') {
            Some((first, _)) => RemoteItem {
                name: first.to_owned(),
                path: format!("{prefix}{first}"),
                is_dir: true,
                size: 0,
            },
            None => RemoteItem {
                name: rest.to_owned(),
                path: path.to_owned(),
                is_dir: entry.is_dir,
                size: entry.size,
            },
        };
        if !items
            .iter()
            .any(|i| i.name == item.name && i.is_dir == item.is_dir)
        {
            items.push(item);
        }
    }
    items.sort_by(|a, b| {
        b.is_dir
            .cmp(&a.is_dir)
            .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
            .then_with(|| a.name.cmp(&b.name))
    });
    items
}

/// The parent of a remote folder ("" is the root, which has none).
fn parent(dir: &str) -> Option<String> {
    if dir.is_empty() {
        return None;
    }
    Some(
        dir.rsplit_once('/')
            .map_or(String::new(), |(p, _)| p.to_owned()),
    )
}

/// The remote browser.
#[derive(Debug, Default)]
pub struct RemotePane {
    /// The folder shown, relative to the agent's root ("" is the root).
    cwd: String,
    loading: Option<String>,
    focus_after_load: Option<String>,
    error: Option<String>,
    /// False until the first listing arrives.
    listed: bool,
    browser: Browser<RemoteItem>,
    /// This peer's use of its quota, as the agent last said.
    quota: Option<pigeon_core::policy::QuotaLine>,
}

impl RemotePane {
    /// A pane on the agent's root; returns the listing it needs.
    pub fn new() -> (Self, Effect) {
        let mut pane = RemotePane::default();
        let effect = pane.reload();
        (pane, effect)
    }

    pub fn cwd(&self) -> &str {
        &self.cwd
    }

    pub fn browser(&self) -> &Browser<RemoteItem> {
        &self.browser
    }

    pub fn browser_mut(&mut self) -> &mut Browser<RemoteItem> {
        &mut self.browser
    }

    pub fn handle(&mut self, action: Action) -> Option<Effect> {
        match action {
            Action::Open => {
                let target = self.browser.current().filter(|e| e.is_dir)?.path.clone();
                Some(self.go(target, None))
            }
            Action::Parent => {
                let target = parent(&self.cwd)?;
                let came_from = self.cwd.rsplit('/').next().map(str::to_owned);
                Some(self.go(target, came_from))
            }
            other => {
                self.browser.handle(other);
                None
            }
        }
    }

    pub fn set_quota(&mut self, line: pigeon_core::policy::QuotaLine) {
        self.quota = Some(line);
    }

    /// `80 KiB of 100 KiB used`, or `80 KiB stored` without a quota.
    fn quota_label(&self) -> Option<String> {
        let q = self.quota.as_ref()?;
        let used = pigeon_core::view::human_bytes(q.usage.bytes);
        Some(match q.limits.quota {
            Some(max) => format!(" {used} of {} used ", pigeon_core::view::human_bytes(max.0)),
            None => format!(" {used} stored "),
        })
    }

    /// List the current folder again.
    pub fn reload(&mut self) -> Effect {
        self.loading = Some(self.cwd.clone());
        Effect::ListRemote(self.cwd.clone())
    }

    /// The answer to an [`Effect::ListRemote`].
    pub fn on_listing(&mut self, dir: String, result: Result<Vec<RemoteEntry>, String>) {
        if self.loading.as_deref() != Some(dir.as_str()) {
            return;
        }
        self.loading = None;
        match result {
            Ok(listing) => {
                if dir != self.cwd {
                    self.browser.clear();
                    self.cwd = dir;
                }
                self.listed = true;
                self.error = None;
                let focus = self.focus_after_load.take();
                self.browser
                    .set_entries(children(&self.cwd, &listing), focus.as_deref());
            }
            Err(error) => {
                self.focus_after_load = None;
                self.error = Some(error);
            }
        }
    }

    /// Files to download: the marks, or the entry under the cursor. Folders
    /// are left out and counted.
    /// The files and the folders selected (or under the cursor).
    pub fn download_targets(&self) -> (Vec<RemoteItem>, Vec<RemoteItem>) {
        let (dirs, files): (Vec<&RemoteItem>, Vec<&RemoteItem>) =
            self.browser.targets().into_iter().partition(|e| e.is_dir);
        (
            files.into_iter().cloned().collect(),
            dirs.into_iter().cloned().collect(),
        )
    }

    pub fn render(
        &mut self,
        area: Rect,
        buf: &mut Buffer,
        agent_silent: Option<std::time::Duration>,
        theme: Theme,
        focused: bool,
    ) {
        let shown = format!("/{}", escape_control(&self.cwd));
        let width = area.width.saturating_sub(13) as usize;
        let mut block = pane_block(Focus::Remote, focused, theme).title(
            Line::styled(
                format!(" {} ", format::truncate_start(&shown, width)),
                theme.dim(),
            )
            .right_aligned(),
        );
        let owner = shared_by(&self.cwd).filter(|o| !o.is_empty());
        if let Some(label) = self.browser.filter().label() {
            block = block.title_bottom(Line::styled(label, theme.accent()));
        } else if let Some(owner) = owner {
            let label = format!(" shared with you by {} ", escape_control(owner));
            block = block.title_bottom(Line::styled(label, theme.accent()));
        } else if let Some(label) = self.quota_label() {
            block = block.title_bottom(Line::styled(label, theme.dim()));
        }
        if self.browser.selection_len() > 0 {
            block = block.title_bottom(
                Line::styled(
                    format!(" {} selected ", self.browser.selection_len()),
                    theme.selected_style(),
                )
                .right_aligned(),
            );
        } else if self.loading.is_some() && self.listed {
            block = block.title_bottom(Line::styled(" refreshing… ", theme.dim()).right_aligned());
        }
        let inner = block.inner(area);
        block.render(area, buf);
        let silent;
        let placeholder = match (&self.error, &self.loading, agent_silent) {
            (Some(error), _, _) => error.as_str(),
            (None, Some(_), Some(for_)) => {
                silent = format!(
                    "no answer from the agent for {}; still asking (R asks again)",
                    format::duration(for_)
                );
                silent.as_str()
            }
            (None, Some(_), None) => "listing…",
            (None, None, _) => "empty: press u in Files to upload",
        };
        self.browser.render(inner, buf, theme, focused, placeholder);
        if let Some(error) = self.error.as_deref().filter(|_| !self.browser.is_empty()) {
            let y = inner.bottom().saturating_sub(1);
            let error = escape_control(error);
            buf.set_stringn(
                inner.x,
                y,
                format::fit_words(&error, inner.width as usize),
                inner.width as usize,
                theme.bad(),
            );
        }
    }

    fn go(&mut self, target: String, focus_after_load: Option<String>) -> Effect {
        self.loading = Some(target.clone());
        self.focus_after_load = focus_after_load;
        self.error = None;
        Effect::ListRemote(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(path: &str, size: u64, is_dir: bool) -> RemoteEntry {
        RemoteEntry {
            path: path.to_owned(),
            size,
            is_dir,
            sha256: None,
            modified_unix: 0,
        }
    }

    #[test]
    fn children_of_a_flat_listing() {
        let listing = [
            remote("b.txt", 3, false),
            remote("docs", 0, true),
            remote("a.bin", 5, false),
        ];
        let names: Vec<_> = children("", &listing).into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["docs", "a.bin", "b.txt"]);
    }

    #[test]
    fn children_of_a_recursive_listing_fold_into_folders() {
        let listing = [
            remote("docs/x/deep.txt", 1, false),
            remote("docs/y.txt", 2, false),
            remote("top.txt", 3, false),
        ];
        let root = children("", &listing);
        assert_eq!(
            root.iter()
                .map(|i| (i.name.as_str(), i.is_dir))
                .collect::<Vec<_>>(),
            [("docs", true), ("top.txt", false)]
        );
        let docs = children("docs", &listing);
        assert_eq!(
            docs.iter()
                .map(|i| (i.path.as_str(), i.is_dir))
                .collect::<Vec<_>>(),
            [("docs/x", true), ("docs/y.txt", false)]
        );
    }

    #[test]
    fn navigation_asks_for_listings_and_returns_to_the_folder_left() {
        let (mut pane, first) = RemotePane::new();
        assert_eq!(first, Effect::ListRemote(String::new()));
        pane.on_listing(
            String::new(),
            Ok(vec![remote("docs", 0, true), remote("z", 1, false)]),
        );
        assert_eq!(
            pane.handle(Action::Open),
            Some(Effect::ListRemote("docs".into()))
        );
        pane.on_listing("docs".into(), Ok(vec![remote("docs/a", 1, false)]));
        assert_eq!(pane.cwd(), "docs");
        assert_eq!(
            pane.handle(Action::Parent),
            Some(Effect::ListRemote(String::new()))
        );
        pane.on_listing(
            String::new(),
            Ok(vec![remote("docs", 0, true), remote("z", 1, false)]),
        );
        assert_eq!(
            pane.browser().current().map(|i| i.name.as_str()),
            Some("docs")
        );
        assert_eq!(pane.handle(Action::Parent), None);
    }

    #[test]
    fn download_targets_split_files_and_folders() {
        let (mut pane, _) = RemotePane::new();
        pane.on_listing(
            String::new(),
            Ok(vec![remote("docs", 0, true), remote("z", 1, false)]),
        );
        pane.handle(Action::Select);
        pane.handle(Action::Select);
        let (files, folders) = pane.download_targets();
        assert_eq!(
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["z"]
        );
        assert_eq!(
            folders.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["docs"]
        );
    }

    #[test]
    fn listing_errors_are_kept_for_display() {
        let (mut pane, _) = RemotePane::new();
        pane.on_listing(String::new(), Err("no answer".into()));
        assert_eq!(pane.error.as_deref(), Some("no answer"));
    }
}
