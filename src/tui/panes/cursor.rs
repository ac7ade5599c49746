//! [`ListCursor`]: the cursor and scroll offset of a list.

use std::ops::Range;

/// A cursor over a list of `len` rows and the first row shown. The offset
/// follows the cursor lazily: it only moves when the cursor would leave the
/// window, like every terminal pager.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListCursor {
    selected: usize,
    offset: usize,
    /// Rows shown at the last render, for page moves.
    page: usize,
}

impl ListCursor {
    pub fn selected(&self) -> usize {
        self.selected
    }

    pub fn select(&mut self, index: usize, len: usize) {
        self.selected = index.min(len.saturating_sub(1));
    }

    pub fn move_by(&mut self, delta: isize, len: usize) {
        let target = self.selected.saturating_add_signed(delta);
        self.select(target, len);
    }

    pub fn page_down(&mut self, len: usize) {
        self.move_by(self.page.max(1) as isize, len);
    }

    pub fn page_up(&mut self, len: usize) {
        self.move_by(-(self.page.max(1) as isize), len);
    }

    pub fn top(&mut self) {
        self.selected = 0;
    }

    pub fn bottom(&mut self, len: usize) {
        self.selected = len.saturating_sub(1);
    }

    /// A click on the `row`-th line of the window shown last: the cursor
    /// goes there. Some(true) when it was there already (a second click
    /// opens), None when the line holds no row.
    pub fn click(&mut self, row: usize, len: usize) -> Option<bool> {
        let index = self.offset + row;
        if index >= len {
            return None;
        }
        let again = index == self.selected;
        self.selected = index;
        Some(again)
    }

    /// Keep the cursor inside a list that changed length.
    pub fn clamp(&mut self, len: usize) {
        self.select(self.selected, len);
    }

    /// The rows to show in `height` lines, scrolling so the cursor is in view.
    pub fn window(&mut self, height: usize, len: usize) -> Range<usize> {
        self.page = height;
        self.clamp(len);
        if height == 0 || len == 0 {
            return 0..0;
        }
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + height {
            self.offset = self.selected + 1 - height;
        }
        // Do not leave empty rows at the bottom when the list shrank.
        self.offset = self.offset.min(len.saturating_sub(height));
        self.offset..(self.offset + height).min(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_follows_the_cursor_lazily() {
        let mut cursor = ListCursor::default();
        assert_eq!(cursor.window(3, 10), 0..3);
        cursor.move_by(2, 10);
        assert_eq!(cursor.window(3, 10), 0..3);
        cursor.move_by(1, 10);
        assert_eq!(cursor.window(3, 10), 1..4);
        cursor.bottom(10);
        assert_eq!(cursor.window(3, 10), 7..10);
        cursor.move_by(-1, 10);
        assert_eq!(cursor.window(3, 10), 7..10);
        cursor.top();
        assert_eq!(cursor.window(3, 10), 0..3);
    }

    #[test]
    fn cursor_stays_inside_a_shrinking_list() {
        let mut cursor = ListCursor::default();
        cursor.bottom(10);
        cursor.clamp(4);
        assert_eq!(cursor.selected(), 3);
        assert_eq!(cursor.window(3, 4), 1..4);
        cursor.clamp(0);
        assert_eq!(cursor.selected(), 0);
        assert_eq!(cursor.window(3, 0), 0..0);
    }

    #[test]
    fn pages_move_by_the_rows_last_shown() {
        let mut cursor = ListCursor::default();
        let _ = cursor.window(5, 100);
        cursor.page_down(100);
        assert_eq!(cursor.selected(), 5);
        cursor.page_up(100);
        assert_eq!(cursor.selected(), 0);
        cursor.move_by(-3, 100);
        assert_eq!(cursor.selected(), 0);
    }
}
