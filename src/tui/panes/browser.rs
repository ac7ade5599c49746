//! [`Browser`]: a folder listing with a cursor, a selection, a filter and
//! hidden-file toggling, drawn as Name / Size / Type columns.
//!
//! It knows nothing of where entries come from: [`FilesPane`] fills it from
//! the local disk and [`RemotePane`] from the agent, both through
//! [`Browser::set_entries`]. Entries implement [`BrowserEntry`].
//!
//! [`FilesPane`]: super::files::FilesPane
//! [`RemotePane`]: super::remote::RemotePane

use std::borrow::Cow;
use std::collections::BTreeSet;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::widgets::{Paragraph, Widget, Wrap};

use super::cursor::ListCursor;
use crate::tui::format;
use crate::tui::keymap::Action;
use crate::tui::theme::Theme;
use pigeon_core::policy::escape_control;

/// One row of a listing.
pub trait BrowserEntry {
    /// The bare name, as the source gave it (escaped when drawn).
    fn name(&self) -> &str;
    fn is_dir(&self) -> bool;
    /// `None` for folders.
    fn size(&self) -> Option<u64>;
    /// The Type column: `dir`, the extension, `file`.
    fn type_label(&self) -> Cow<'_, str> {
        type_from_name(self.name(), self.is_dir())
    }
}

/// The Type column for a plain name: `dir`, the lower-case extension (at
/// most 5 characters) or `file`.
pub fn type_from_name(name: &str, is_dir: bool) -> Cow<'static, str> {
    if is_dir {
        return Cow::Borrowed("dir");
    }
    match name.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty()
                && !ext.is_empty()
                && ext.len() <= 5
                && ext.chars().all(char::is_alphanumeric) =>
        {
            Cow::Owned(ext.to_lowercase())
        }
        _ => Cow::Borrowed("file"),
    }
}

/// The typed filter of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    text: String,
    /// Keys go to the filter text until Enter or Esc.
    editing: bool,
}

impl Filter {
    pub fn is_active(&self) -> bool {
        self.editing || !self.text.is_empty()
    }

    /// Case-insensitive substring match.
    fn matches(&self, name: &str) -> bool {
        self.text.is_empty() || name.to_lowercase().contains(&self.text.to_lowercase())
    }

    /// What the pane shows while a filter is in force: `/text_` while typing.
    pub fn label(&self) -> Option<String> {
        if !self.is_active() {
            return None;
        }
        let text = escape_control(&self.text);
        Some(if self.editing {
            format!("/{text}_")
        } else {
            format!("/{text}")
        })
    }
}

/// A listing with its cursor, selection and filter.
#[derive(Debug)]
pub struct Browser<E> {
    entries: Vec<E>,
    /// Indexes into `entries` that pass the hidden toggle and the filter.
    visible: Vec<usize>,
    cursor: ListCursor,
    /// Names of the marked entries of the current folder.
    selected: BTreeSet<String>,
    filter: Filter,
    show_hidden: bool,
}

impl<E> Default for Browser<E> {
    fn default() -> Self {
        Browser {
            entries: Vec::new(),
            visible: Vec::new(),
            cursor: ListCursor::default(),
            selected: BTreeSet::new(),
            filter: Filter::default(),
            show_hidden: false,
        }
    }
}

impl<E: BrowserEntry> Browser<E> {
    /// Replace the listing (a new folder, or the same one re-read). The
    /// cursor lands on `focus` when it is there, else stays where it was;
    /// marks of entries that are still there are kept.
    pub fn set_entries(&mut self, entries: Vec<E>, focus: Option<&str>) {
        let previous = self.current().map(|e| e.name().to_owned());
        self.entries = entries;
        let names: BTreeSet<&str> = self.entries.iter().map(BrowserEntry::name).collect();
        self.selected.retain(|n| names.contains(n.as_str()));
        self.refilter();
        let target = focus.map(str::to_owned).or(previous);
        if let Some(pos) = target.and_then(|t| self.position_of(&t)) {
            self.cursor.select(pos, self.visible.len());
        }
    }

    /// Forget the listing, the marks and the filter (entering another folder).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.visible.clear();
        self.selected.clear();
        self.filter = Filter::default();
        self.cursor = ListCursor::default();
    }

    pub fn current(&self) -> Option<&E> {
        self.visible
            .get(self.cursor.selected())
            .map(|&i| &self.entries[i])
    }

    /// A click on the `row`-th listed line (see [`ListCursor::click`]).
    pub fn click(&mut self, row: usize) -> Option<bool> {
        self.cursor.click(row, self.visible.len())
    }

    /// The marked entries in listing order, or else the one under the cursor.
    pub fn targets(&self) -> Vec<&E> {
        if self.selected.is_empty() {
            return self.current().into_iter().collect();
        }
        self.entries
            .iter()
            .filter(|e| self.selected.contains(e.name()))
            .collect()
    }

    pub fn clear_selection(&mut self) {
        self.selected.clear();
    }

    pub fn selection_len(&self) -> usize {
        self.selected.len()
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// True while keys go to the filter text.
    pub fn is_typing_filter(&self) -> bool {
        self.filter.editing
    }

    /// Apply a movement or listing action. Returns false for actions a
    /// listing does not handle.
    pub fn handle(&mut self, action: Action) -> bool {
        let len = self.visible.len();
        match action {
            Action::Up => self.cursor.move_by(-1, len),
            Action::Down => self.cursor.move_by(1, len),
            Action::PageUp => self.cursor.page_up(len),
            Action::PageDown => self.cursor.page_down(len),
            Action::Top => self.cursor.top(),
            Action::Bottom => self.cursor.bottom(len),
            Action::Select => {
                if let Some(name) = self.current().map(|e| e.name().to_owned()) {
                    if !self.selected.remove(&name) {
                        self.selected.insert(name);
                    }
                    self.cursor.move_by(1, len);
                }
            }
            Action::Filter => {
                self.filter.editing = true;
            }
            Action::ToggleHidden => {
                self.show_hidden = !self.show_hidden;
                self.refilter_keeping_cursor();
            }
            _ => return false,
        }
        true
    }

    /// A key while the filter is being typed. Enter keeps the filter, Esc
    /// drops it.
    pub fn filter_key(&mut self, key: &KeyEvent) {
        match key.code {
            KeyCode::Esc => {
                self.filter = Filter::default();
            }
            KeyCode::Enter => self.filter.editing = false,
            KeyCode::Backspace => {
                self.filter.text.pop();
            }
            KeyCode::Char(c)
                if !key
                    .modifiers
                    .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) =>
            {
                self.filter.text.push(c);
            }
            _ => return,
        }
        self.refilter_keeping_cursor();
    }

    /// Esc outside filter typing: drop the filter. False when there was none.
    pub fn clear_filter(&mut self) -> bool {
        if !self.filter.is_active() {
            return false;
        }
        self.filter = Filter::default();
        self.refilter_keeping_cursor();
        true
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Draw the columns into `area` (the inside of the pane's frame).
    /// `placeholder` is shown when there is nothing to list.
    pub fn render(
        &mut self,
        area: Rect,
        buf: &mut Buffer,
        theme: Theme,
        focused: bool,
        placeholder: &str,
    ) {
        if area.height == 0 || area.width < 8 {
            return;
        }
        let columns = Columns::for_width(area.width);
        let header_y = area.y;
        columns.draw(
            buf,
            area.x,
            header_y,
            [" ", "Name", "Size", "Type"],
            theme.header_style(),
        );
        let rows_area = Rect {
            y: area.y + 1,
            height: area.height - 1,
            ..area
        };
        if self.visible.is_empty() {
            let message = if self.entries.is_empty() || !self.filter.is_active() {
                placeholder
            } else {
                "nothing matches the filter"
            };
            // Wrapped, never cut: it may be an error with what to do at
            // its end, and an empty pane has the rows for it.
            let text_area = Rect {
                x: rows_area.x + 2,
                width: rows_area.width.saturating_sub(2),
                ..rows_area
            };
            Paragraph::new(escape_control(message).into_owned())
                .style(theme.dim())
                .wrap(Wrap { trim: true })
                .render(text_area, buf);
            return;
        }
        let window = self
            .cursor
            .window(rows_area.height as usize, self.visible.len());
        let cursor_row = self.cursor.selected();
        for (line, row) in window.enumerate() {
            let entry = &self.entries[self.visible[row]];
            let y = rows_area.y + line as u16;
            let marked = self.selected.contains(entry.name());
            let name = escape_control(entry.name());
            let name = if entry.is_dir() {
                Cow::Owned(format!("{name}/"))
            } else {
                name
            };
            let size = entry.size().map(format::bytes).unwrap_or_default();
            let kind = entry.type_label();
            let style = if marked {
                theme.selected_style()
            } else if entry.is_dir() {
                theme.dir_style()
            } else {
                Style::default()
            };
            columns.draw(
                buf,
                rows_area.x,
                y,
                [if marked { "+" } else { " " }, &name, &size, &kind],
                style,
            );
            if row == cursor_row {
                buf.set_style(
                    Rect::new(rows_area.x, y, rows_area.width, 1),
                    theme.cursor_style(focused),
                );
            }
        }
    }

    fn position_of(&self, name: &str) -> Option<usize> {
        self.visible
            .iter()
            .position(|&i| self.entries[i].name() == name)
    }

    fn refilter(&mut self) {
        let show_hidden = self.show_hidden;
        let filter = &self.filter;
        self.visible = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| show_hidden || !e.name().starts_with('.'))
            .filter(|(_, e)| filter.matches(e.name()))
            .map(|(i, _)| i)
            .collect();
        self.cursor.clamp(self.visible.len());
    }

    fn refilter_keeping_cursor(&mut self) {
        let previous = self.current().map(|e| e.name().to_owned());
        self.refilter();
        match previous.and_then(|name| self.position_of(&name)) {
            Some(pos) => self.cursor.select(pos, self.visible.len()),
            None => self.cursor.top(),
        }
    }
}

/// Column geometry: marker, name (takes the rest), size, type.
struct Columns {
    widths: [u16; 4],
}

impl Columns {
    const SIZE: u16 = 8;
    const TYPE: u16 = 5;

    fn for_width(width: u16) -> Self {
        let name = width
            .saturating_sub(2 + 1 + Self::SIZE + 1 + Self::TYPE)
            .max(1);
        Columns {
            widths: [2, name, Self::SIZE, Self::TYPE],
        }
    }

    fn draw(&self, buf: &mut Buffer, x: u16, y: u16, cells: [&str; 4], style: Style) {
        let [marker, name, size, kind] = self.widths;
        let mut cx = x;
        buf.set_stringn(cx, y, cells[0], marker as usize, style);
        cx += marker;
        buf.set_stringn(
            cx,
            y,
            format::truncate(cells[1], name as usize),
            name as usize,
            style,
        );
        cx += name + 1;
        let size_text = format!("{:>width$}", cells[2], width = size as usize);
        buf.set_stringn(cx, y, size_text, size as usize, style);
        cx += size + 1;
        buf.set_stringn(
            cx,
            y,
            format::truncate(cells[3], kind as usize),
            kind as usize,
            style,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Entry(&'static str, bool);

    impl BrowserEntry for Entry {
        fn name(&self) -> &str {
            self.0
        }
        fn is_dir(&self) -> bool {
            self.1
        }
        fn size(&self) -> Option<u64> {
            (!self.1).then_some(2048)
        }
    }

    fn browser() -> Browser<Entry> {
        let mut b = Browser::default();
        b.set_entries(
            vec![
                Entry("docs", true),
                Entry(".secret", false),
                Entry("a.txt", false),
                Entry("b.TXT", false),
                Entry("photo.jpeg", false),
            ],
            None,
        );
        b
    }

    fn names(b: &Browser<Entry>) -> Vec<&str> {
        b.visible.iter().map(|&i| b.entries[i].0).collect()
    }

    #[test]
    fn hidden_files_toggle() {
        let mut b = browser();
        assert!(!names(&b).contains(&".secret"));
        b.handle(Action::ToggleHidden);
        assert!(names(&b).contains(&".secret"));
    }

    #[test]
    fn filter_is_typed_case_insensitively_and_esc_clears_it() {
        let mut b = browser();
        b.handle(Action::Filter);
        for c in "txt".chars() {
            b.filter_key(&KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        }
        assert_eq!(names(&b), ["a.txt", "b.TXT"]);
        assert_eq!(b.filter().label().as_deref(), Some("/txt_"));
        b.filter_key(&KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        assert!(!b.is_typing_filter());
        assert_eq!(b.filter().label().as_deref(), Some("/txt"));
        assert!(b.clear_filter());
        assert_eq!(names(&b).len(), 4);
        assert!(!b.clear_filter());
    }

    #[test]
    fn targets_are_the_marks_or_else_the_cursor() {
        let mut b = browser();
        b.handle(Action::Down);
        assert_eq!(
            b.targets().iter().map(|e| e.0).collect::<Vec<_>>(),
            ["a.txt"]
        );
        b.handle(Action::Select); // marks a.txt, moves to b.TXT
        b.handle(Action::Down);
        b.handle(Action::Select); // marks photo.jpeg
        assert_eq!(
            b.targets().iter().map(|e| e.0).collect::<Vec<_>>(),
            ["a.txt", "photo.jpeg"]
        );
    }

    #[test]
    fn relisting_keeps_cursor_and_surviving_marks() {
        let mut b = browser();
        b.handle(Action::Bottom);
        b.handle(Action::Select);
        b.set_entries(vec![Entry("photo.jpeg", false), Entry("z", false)], None);
        assert_eq!(b.current().map(|e| e.0), Some("photo.jpeg"));
        assert_eq!(b.selection_len(), 1);
        b.set_entries(vec![Entry("z", false)], None);
        assert_eq!(b.selection_len(), 0);
    }

    #[test]
    fn type_column_uses_the_extension() {
        assert_eq!(type_from_name("a.TXT", false), "txt");
        assert_eq!(type_from_name("archive.tar.gz", false), "gz");
        assert_eq!(type_from_name(".bashrc", false), "file");
        assert_eq!(type_from_name("Makefile", false), "file");
        assert_eq!(type_from_name("x.verylongext", false), "file");
        assert_eq!(type_from_name("src", true), "dir");
    }

    #[test]
    fn render_shows_columns_marks_and_cursor() {
        let mut b = browser();
        b.handle(Action::Down);
        b.handle(Action::Select);
        let mut buf = Buffer::empty(Rect::new(0, 0, 36, 4));
        b.render(buf.area, &mut buf, Theme::monochrome(), true, "empty");
        let expected = Buffer::with_lines([
            "  Name                    Size Type ",
            "  docs/                        dir  ",
            "+ a.txt                2.0 KiB txt  ",
            "  b.TXT                2.0 KiB txt  ",
        ]);
        let text: Vec<String> = (0..4)
            .map(|y| (0..36).map(|x| buf[(x, y)].symbol().to_owned()).collect())
            .collect();
        let expected_text: Vec<String> = (0..4)
            .map(|y| {
                (0..36)
                    .map(|x| expected[(x, y)].symbol().to_owned())
                    .collect()
            })
            .collect();
        assert_eq!(text, expected_text);
    }
}
