//! The help overlay, generated from the [`Keymap`] in force.
//!
//! Every [`Action`] appears under its [`Section`] with the keys that are
//! really bound to it, so a rebinding in `keymap.toml` shows here at once,
//! and an unbound action says so. The modal keys (typing a filter) are
//! listed at the end. Wide terminals get two columns and no scrolling;
//! narrow ones one scrollable column.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Widget};

use super::keymap::{Action, Keymap, Section};
use super::theme::Theme;

/// Keys of the modal filter input, which the keymap does not hold.
const FILTER_KEYS: [(&str, &str); 3] = [
    ("enter", "keep the filter"),
    ("esc", "clear the filter"),
    ("backspace", "delete a character"),
];

/// The help text as blocks (one per section, each starting with its title).
pub fn sections(keymap: &Keymap, theme: Theme) -> Vec<Vec<Line<'static>>> {
    let keys_width = Action::ALL
        .iter()
        .map(|&a| keymap.describe(a).chars().count())
        .chain(FILTER_KEYS.iter().map(|(k, _)| k.len()))
        .max()
        .unwrap_or(8)
        + 2;
    let entry = |keys: String, what: &'static str, style| {
        Line::from(vec![
            Span::styled(format!("  {keys:<keys_width$}"), style),
            Span::raw(what),
        ])
    };
    let mut blocks: Vec<Vec<Line<'static>>> = Section::ALL
        .into_iter()
        .map(|section| {
            let mut lines = vec![Line::styled(section.title(), theme.header_style())];
            for action in Action::ALL.into_iter().filter(|a| a.section() == section) {
                let style = if keymap.keys(action).is_empty() {
                    theme.dim()
                } else {
                    theme.accent()
                };
                lines.push(entry(keymap.describe(action), action.description(), style));
            }
            lines
        })
        .collect();
    let mut filter = vec![Line::styled("While typing a filter", theme.header_style())];
    filter.extend(
        FILTER_KEYS
            .iter()
            .map(|&(k, what)| entry(k.to_owned(), what, theme.accent())),
    );
    blocks.push(filter);
    blocks
}

/// All blocks in one column, a blank line between them.
pub fn lines(keymap: &Keymap, theme: Theme) -> Vec<Line<'static>> {
    join(sections(keymap, theme))
}

/// The number of help lines in one column, to bound scrolling.
pub fn len(keymap: &Keymap) -> usize {
    lines(keymap, Theme::monochrome()).len()
}

fn join(blocks: impl IntoIterator<Item = Vec<Line<'static>>>) -> Vec<Line<'static>> {
    let mut out: Vec<Line<'static>> = Vec::new();
    for block in blocks {
        if !out.is_empty() {
            out.push(Line::raw(""));
        }
        out.extend(block);
    }
    out
}

fn width_of(lines: &[Line<'_>]) -> u16 {
    lines.iter().map(Line::width).max().unwrap_or(0) as u16
}

/// The overlay: a centred, bordered box.
pub struct HelpOverlay<'a> {
    pub keymap: &'a Keymap,
    pub theme: Theme,
    /// Lines scrolled, when one column does not fit.
    pub scroll: usize,
}

impl Widget for HelpOverlay<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let blocks = sections(self.keymap, self.theme);
        // Two columns: the listing sections left, the queue and modal keys right.
        let split = 3.min(blocks.len());
        let mut rest = blocks.clone();
        let right = join(rest.split_off(split));
        let left = join(rest);
        let (left_w, right_w) = (width_of(&left), width_of(&right));
        let two_wide = left_w + right_w + 3 + 4;
        let two_high = left.len().max(right.len()) as u16 + 2;
        if two_wide <= area.width && two_high <= area.height {
            let popup = centered(area, two_wide, two_high);
            let inner = self.frame(popup, buf, " esc closes ".to_owned());
            draw_lines(
                &left,
                Rect {
                    width: left_w + 1,
                    ..inner
                },
                buf,
                0,
            );
            let right_area = Rect {
                x: inner.x + left_w + 3,
                width: inner.width.saturating_sub(left_w + 3),
                ..inner
            };
            draw_lines(&right, right_area, buf, 0);
            return;
        }
        let lines = join(blocks);
        let width = (width_of(&lines) + 4).min(area.width);
        let height = (lines.len() as u16 + 2).min(area.height);
        let popup = centered(area, width, height);
        let visible = popup.height.saturating_sub(2) as usize;
        let max_scroll = lines.len().saturating_sub(visible);
        let scroll = self.scroll.min(max_scroll);
        let hint = if max_scroll > 0 {
            format!(
                " {}/{} ↑↓ scroll · esc closes ",
                scroll + visible,
                lines.len()
            )
        } else {
            " esc closes ".to_owned()
        };
        let inner = self.frame(popup, buf, hint);
        draw_lines(&lines, inner, buf, scroll);
    }
}

impl HelpOverlay<'_> {
    /// Clear `popup`, draw the frame, return the inside.
    fn frame(&self, popup: Rect, buf: &mut Buffer, hint: String) -> Rect {
        let block = Block::default()
            .borders(Borders::ALL)
            .border_type(BorderType::Double)
            .border_style(self.theme.border_style(true))
            .title(Line::styled(" Help ", self.theme.title_style(true)))
            .title_bottom(Line::styled(hint, self.theme.dim()).right_aligned());
        Clear.render(popup, buf);
        let inner = block.inner(popup);
        block.render(popup, buf);
        inner
    }
}

fn draw_lines(lines: &[Line<'_>], area: Rect, buf: &mut Buffer, scroll: usize) {
    for (row, line) in lines
        .iter()
        .skip(scroll)
        .take(area.height as usize)
        .enumerate()
    {
        let line_area = Rect::new(
            area.x + 1,
            area.y + row as u16,
            area.width.saturating_sub(1),
            1,
        );
        line.render(line_area, buf);
    }
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
        assert!(help
            .iter()
            .any(|l| l.starts_with("  q, ctrl-c ") && l.contains("quit")));
    }

    #[test]
    fn help_follows_rebinding() {
        let (keymap, _) = Keymap::from_toml("upload = \"U\"\nshow_log = []").expect("valid");
        let help = text(&keymap);
        assert!(help
            .iter()
            .any(|l| l.starts_with("  U ") && l.contains("upload selection")));
        assert!(help
            .iter()
            .any(|l| l.contains("(unbound)") && l.contains("event log")));
    }
}
