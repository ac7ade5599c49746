//! The "Transports" pane: the health of every channel, three lines each,
//! scrollable when there are more channels than fit.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Widget;

use pigeon_core::view::TransportHealth;

use super::{pane_block, Focus};
use crate::tui::keymap::Action;
use crate::tui::theme::Theme;
use crate::tui::widgets::transport_health::{self, TransportHealthWidget};

#[derive(Debug, Default)]
pub struct TransportsPane {
    /// Index of the first transport shown.
    scroll: usize,
}

impl TransportsPane {
    pub fn handle(&mut self, action: Action, count: usize) -> bool {
        let last = count.saturating_sub(1);
        match action {
            Action::Up | Action::PageUp => self.scroll = self.scroll.saturating_sub(1),
            Action::Down | Action::PageDown => self.scroll = (self.scroll + 1).min(last),
            Action::Top => self.scroll = 0,
            Action::Bottom => self.scroll = last,
            _ => return false,
        }
        true
    }

    pub fn render(
        &mut self,
        area: Rect,
        buf: &mut Buffer,
        transports: &[TransportHealth],
        agent_silent: Option<std::time::Duration>,
        theme: Theme,
        focused: bool,
    ) {
        let mut block = pane_block(Focus::Transports, focused, theme);
        let inner_height = area.height.saturating_sub(2);
        // One blank line between channels.
        let per_page = ((inner_height + 1) / (transport_health::HEIGHT + 1)).max(1) as usize;
        self.scroll = self.scroll.min(transports.len().saturating_sub(per_page));
        let hidden = transports.len().saturating_sub(self.scroll + per_page);
        if self.scroll > 0 || hidden > 0 {
            block = block.title_bottom(
                Line::styled(
                    format!(
                        " {}-{} of {} ",
                        self.scroll + 1,
                        (self.scroll + per_page).min(transports.len()),
                        transports.len()
                    ),
                    theme.dim(),
                )
                .right_aligned(),
            );
        }
        let inner = block.inner(area);
        block.render(area, buf);
        if transports.is_empty() {
            buf.set_stringn(
                inner.x + 1,
                inner.y,
                "no transport open",
                inner.width.saturating_sub(1) as usize,
                theme.dim(),
            );
            return;
        }
        let mut y = inner.y;
        for health in transports.iter().skip(self.scroll) {
            if y >= inner.bottom() {
                break;
            }
            let height = transport_health::HEIGHT.min(inner.bottom() - y);
            TransportHealthWidget::new(health, theme)
                .agent_silent(agent_silent)
                .render(Rect::new(inner.x, y, inner.width, height), buf);
            y += transport_health::HEIGHT + 1;
        }
    }
}
