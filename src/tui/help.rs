//! The help overlay, generated from the [`Keymap`] in force.
//!
//! Every [`Action`] appears under its [`Section`] with the keys that are
//! really bound to it, so a rebinding in `keymap.toml` shows here at once,
//! and an unbound action says so. The modal keys (typing a filter, answering
//! a confirmation) are listed at the end.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Widget};

use super::keymap::{Action, Keymap, Section};
use super::theme::Theme;

/// Width of the keys column.
const KEYS_WIDTH: usize = 22;

/// The lines of the help text.
pub fn lines(keymap: &Keymap, theme: Theme) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for section in Section::ALL {
        if !lines.is_empty() {
            lines.push(Line::raw(""));
        }
        lines.push(Line::styled(section.title(), theme.header_style()));
        for action in Action::ALL.into_iter().filter(|a| a.section() == section) {
            let keys = keymap.describe(action);
            let style = if keymap.keys(action).is_empty() {
                theme.dim()
            } else {
                theme.accent()
            };
            lines.push(Line::from(vec![
                Span::styled(format!("  {keys:<KEYS_WIDTH$}"), style),
                Span::raw(action.description()),
            ]));
        }
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled("While typing a filter", theme.header_style()));
    for (keys, what) in [
        ("enter", "keep the filter, back to the list"),
        ("esc", "clear the filter"),
        ("backspace", "delete a character"),
    ] {
        lines.push(Line::from(vec![
            Span::styled(format!("  {keys:<KEYS_WIDTH$}"), theme.accent()),
            Span::raw(what),
        ]));
    }
    lines
}

/// The overlay: a centred, bordered box, scrolled by `scroll` lines.
pub struct HelpOverlay<'a> {
    pub keymap: &'a Keymap,
    pub theme: Theme,
    pub scroll: usize,
}

impl Widget for HelpOverlay<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let lines = lines(self.keymap, self.theme);
        let width = (lines.iter().map(Line::width).max().unwrap_or(0) as u16 + 4).min(area.width);
        let height = (lines.len() as u16 + 2).min(area.height);
        let popup = centered(area, width, height);
        let visible = popup.height.saturating_sub(2) as usize;
        let max_scroll = lines.len().saturating_sub(visible);
        let scroll = self.scroll.min(max_scroll);
        let mut block = Block::default()
            .borders(Borders::ALL)
            .border_type(BorderType::Double)
            .border_style(self.theme.border_style(true))
            .title(Line::styled(" Help ", self.theme.title_style(true)));
        let hint = if max_scroll > 0 {
            format!(" {}/{} ↑↓ scroll · esc closes ", scroll + visible, lines.len())
        } else {
            " esc closes ".to_owned()
        };
        block = block.title_bottom(Line::styled(hint, self.theme.dim()).right_aligned());
        Clear.render(popup, buf);
        let inner = block.inner(popup);
        block.render(popup, buf);
        for (row, line) in lines.iter().skip(scroll).take(visible).enumerate() {
            let line_area = Rect::new(inner.x + 1, inner.y + row as u16, inner.width.saturating_sub(1), 1);
            line.render(line_area, buf);
        }
    }
}

/// The number of help lines, to bound scrolling.
pub fn len(keymap: &Keymap) -> usize {
    lines(keymap, Theme::monochrome()).len()
}

/// A `width` x `height` rectangle in the middle of `area`.
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(keymap: &Keymap) -> Vec<String> {
        lines(keymap, Theme::monochrome())
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
            .collect()
    }

    #[test]
    fn help_lists_every_action_with_its_keys() {
        let help = text(&Keymap::defaults());
        for action in Action::ALL {
            assert!(
                help.iter().any(|l| l.contains(action.description())),
                "{} missing",
                action.name()
            );
        }
        assert!(help.iter().any(|l| l.starts_with("  q, ctrl-c ") && l.contains("quit")));
    }

    #[test]
    fn help_follows_rebinding() {
        let (keymap, _) = Keymap::from_toml("upload = \"U\"\nshow_log = []").expect("valid");
        let help = text(&keymap);
        assert!(help.iter().any(|l| l.starts_with("  U ") && l.contains("upload selection")));
        assert!(help.iter().any(|l| l.contains("(unbound)") && l.contains("event log")));
    }
}
