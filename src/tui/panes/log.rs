//! The "Log" pane: recent events and errors, newest at the bottom.
//!
//! [`LogPane`] keeps the last [`CAPACITY`] lines. The same lines feed the
//! status line (the latest one) and the full-screen log popup.

use std::collections::VecDeque;

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget, Wrap};

use super::{pane_block, Focus};
use crate::tui::keymap::Action;
use crate::tui::theme::Theme;
use pigeon_core::policy::escape_control;
use unicode_width::UnicodeWidthStr;

/// Lines kept.
pub const CAPACITY: usize = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    /// A transfer finished well.
    Success,
    Warn,
    Error,
}

impl Level {
    /// How a line of this level looks in `theme`.
    pub fn style(self, theme: Theme) -> Style {
        match self {
            Level::Info => Style::default(),
            Level::Success => theme.fg(Color::Green),
            Level::Warn => theme.fg(Color::Yellow),
            Level::Error => theme.fg(Color::Red).add_modifier(Modifier::BOLD),
        }
    }

    /// A glyph so that levels read without colour.
    pub fn glyph(self) -> &'static str {
        match self {
            Level::Info => "·",
            Level::Success => "✓",
            Level::Warn => "!",
            Level::Error => "✗",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub text: String,
}

impl LogLine {
    pub fn new(level: Level, text: impl Into<String>) -> Self {
        LogLine {
            level,
            text: text.into(),
        }
    }

    /// The line in at most `width` columns: a long one loses whole words
    /// from its middle, never its end (where what to do is said) nor part
    /// of a word. The log popup shows it whole.
    pub fn to_line_within(&self, theme: Theme, width: usize) -> Line<'static> {
        let text = escape_control(&self.text);
        let room = width.saturating_sub(2);
        let text = if text.width() > room {
            crate::tui::format::abbreviate_uris(&text)
                .into_owned()
                .into()
        } else {
            text
        };
        Line::from(vec![
            Span::styled(format!("{} ", self.level.glyph()), self.level.style(theme)),
            Span::styled(
                crate::tui::format::fit_words(&text, room).into_owned(),
                self.level.style(theme),
            ),
        ])
    }

    /// Whether the line fits `width` columns whole.
    pub fn fits(&self, width: usize) -> bool {
        escape_control(&self.text).width() + 2 <= width
    }
}

#[derive(Debug, Default)]
pub struct LogPane {
    lines: VecDeque<LogLine>,
    /// Lines scrolled back from the newest.
    back: usize,
}

impl LogPane {
    pub fn push(&mut self, line: LogLine) {
        if self.lines.len() == CAPACITY {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
        if self.back > 0 {
            // Keep the view still while the user reads back.
            self.back = (self.back + 1).min(self.lines.len().saturating_sub(1));
        }
    }

    pub fn latest(&self) -> Option<&LogLine> {
        self.lines.back()
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn handle(&mut self, action: Action) -> bool {
        let max = self.lines.len().saturating_sub(1);
        match action {
            Action::Up => self.back = (self.back + 1).min(max),
            Action::Down => self.back = self.back.saturating_sub(1),
            Action::PageUp => self.back = (self.back + 10).min(max),
            Action::PageDown => self.back = self.back.saturating_sub(10),
            Action::Top => self.back = max,
            Action::Bottom => self.back = 0,
            _ => return false,
        }
        true
    }

    pub fn render(&self, area: Rect, buf: &mut Buffer, theme: Theme, focused: bool) {
        let mut block = pane_block(Focus::Log, focused, theme);
        if self.back > 0 {
            block = block.title_bottom(
                Line::styled(format!(" {} newer below ", self.back), theme.dim()).right_aligned(),
            );
        }
        let inner = block.inner(area);
        block.render(area, buf);
        self.render_lines(inner, buf, theme);
    }

    /// The lines alone, newest at the bottom of `area`.
    pub fn render_lines(&self, area: Rect, buf: &mut Buffer, theme: Theme) {
        self.render_lines_back(area, buf, theme, self.back);
    }

    /// The lines ending `back` lines before the newest, each whole: a long
    /// one wraps over as many rows as it needs (the log popup, which keeps
    /// its own scroll position, shows every word of every line).
    pub fn render_whole_lines_back(&self, area: Rect, buf: &mut Buffer, theme: Theme, back: usize) {
        if area.height == 0 || self.lines.is_empty() {
            self.render_lines_back(area, buf, theme, back);
            return;
        }
        let end = self.lines.len() - back.min(self.lines.len());
        // From the newest up, until the area is full.
        let mut bottom = area.bottom();
        for line in self.lines.range(..end).rev() {
            if bottom <= area.y {
                break;
            }
            let paragraph =
                Paragraph::new(line.to_line_within(theme, usize::MAX)).wrap(Wrap { trim: false });
            let rows = u16::try_from(paragraph.line_count(area.width)).unwrap_or(u16::MAX);
            let shown = rows.min(bottom - area.y);
            // The top of a line taller than what is left is above the area.
            paragraph
                .scroll((rows - shown, 0))
                .render(Rect::new(area.x, bottom - shown, area.width, shown), buf);
            bottom -= shown;
        }
    }

    /// The lines ending `back` lines before the newest, one row each.
    pub fn render_lines_back(&self, area: Rect, buf: &mut Buffer, theme: Theme, back: usize) {
        if area.height == 0 {
            return;
        }
        if self.lines.is_empty() {
            buf.set_stringn(
                area.x + 1,
                area.y,
                "no events yet",
                area.width.saturating_sub(1) as usize,
                theme.dim(),
            );
            return;
        }
        let end = self.lines.len() - back.min(self.lines.len());
        let start = end.saturating_sub(area.height as usize);
        for (row, line) in self.lines.range(start..end).enumerate() {
            line.to_line_within(theme, usize::from(area.width))
                .render(Rect::new(area.x, area.y + row as u16, area.width, 1), buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::style::{Modifier, Style};

    #[test]
    fn keeps_only_the_most_recent_lines() {
        let mut log = LogPane::default();
        for i in 0..CAPACITY + 10 {
            log.push(LogLine::new(Level::Info, format!("line {i}")));
        }
        assert_eq!(log.len(), CAPACITY);
        assert_eq!(log.latest().map(|l| l.text.as_str()), Some("line 509"));
    }

    #[test]
    fn shows_the_newest_lines_escaped_with_level_glyphs() {
        let mut log = LogPane::default();
        log.push(LogLine::new(Level::Info, "old"));
        log.push(LogLine::new(Level::Success, "uploaded a.txt"));
        log.push(LogLine::new(Level::Error, "bad \x1b[31mname"));
        let mut buf = Buffer::empty(Rect::new(0, 0, 24, 2));
        log.render_lines(buf.area, &mut buf, Theme::monochrome());
        let mut expected =
            Buffer::with_lines(["✓ uploaded a.txt        ", "✗ bad \\x1b[31mname      "]);
        // Errors are bold, so they stand out without colour.
        expected.set_style(
            Rect::new(0, 1, 18, 1),
            Style::default().add_modifier(Modifier::BOLD),
        );
        assert_eq!(buf, expected);
    }

    #[test]
    fn scrolling_back_holds_the_view_as_lines_arrive() {
        let mut log = LogPane::default();
        for i in 0..5 {
            log.push(LogLine::new(Level::Info, format!("{i}")));
        }
        log.handle(Action::Up);
        log.push(LogLine::new(Level::Info, "5"));
        let mut buf = Buffer::empty(Rect::new(0, 0, 4, 1));
        log.render_lines(buf.area, &mut buf, Theme::monochrome());
        assert_eq!(buf, Buffer::with_lines(["· 3 "]));
    }
}
