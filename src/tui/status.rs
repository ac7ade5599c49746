//! The status line: who we talk to, how fast, and the latest notice.
//!
//! ```text
//!  local agent (embedded) │ ↑ 2.0 KiB/s ↓ 0 B/s │ ✓ completed a.txt   ? help
//! ```
//!
//! The embedded agent is named as such so nobody mistakes the local demo
//! for a real remote.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use pigeon_core::view::{Direction, EngineSnapshot, TransferStatus};

use super::format;
use super::panes::log::LogLine;
use super::theme::Theme;
use pigeon_core::policy::escape_control;

pub struct StatusLine<'a> {
    pub snapshot: &'a EngineSnapshot,
    /// The UI was told the agent is embedded (the snapshot may say so too).
    pub embedded_agent: bool,
    pub notice: Option<&'a LogLine>,
    /// The key that opens help, if bound.
    pub help_key: Option<String>,
    pub theme: Theme,
}

impl StatusLine<'_> {
    fn peer(&self) -> Span<'static> {
        if self.embedded_agent || self.snapshot.embedded_agent {
            Span::styled(" local agent (embedded)", self.theme.accent())
        } else if self.snapshot.peer.is_empty() {
            Span::styled(" no peer yet", self.theme.dim())
        } else {
            Span::styled(
                format!(" peer {}", escape_control(&self.snapshot.peer)),
                self.theme.accent(),
            )
        }
    }

    fn rates(&self) -> String {
        let (mut up, mut down) = (0.0, 0.0);
        for t in &self.snapshot.transfers {
            if t.status == TransferStatus::InProgress && t.rate.is_finite() {
                match t.direction {
                    Direction::Upload => up += t.rate,
                    Direction::Download => down += t.rate,
                }
            }
        }
        format!("↑ {} ↓ {}", format::rate(up), format::rate(down))
    }

    /// Nothing runs because everything left is paused: said, so a rate of
    /// zero is not read as a stall.
    fn all_paused(&self) -> Option<String> {
        let transfers = &self.snapshot.transfers;
        let running = transfers.iter().any(|t| {
            matches!(
                t.status,
                TransferStatus::InProgress | TransferStatus::Pending
            )
        });
        let paused = transfers
            .iter()
            .filter(|t| t.status == TransferStatus::Paused)
            .count();
        (!running && paused > 0).then(|| format!("{paused} paused (p resumes)"))
    }
}

impl Widget for StatusLine<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let separator = || Span::styled(" │ ", self.theme.dim());
        let help = self
            .help_key
            .as_ref()
            .map(|k| format!(" {k} help "))
            .unwrap_or_default();
        let help_width = help.chars().count() as u16;
        let mut spans = vec![self.peer(), separator(), Span::raw(self.rates())];
        if let Some(paused) = self.all_paused() {
            spans.push(separator());
            spans.push(Span::styled(paused, self.theme.warn()));
        }
        let left = Rect {
            width: area.width.saturating_sub(help_width),
            ..area
        };
        if let Some(notice) = self.notice {
            spans.push(separator());
            let used = Line::from(spans.clone()).width();
            let room = usize::from(left.width).saturating_sub(used);
            spans.extend(notice.to_line_within(self.theme, room).spans);
        }
        Line::from(spans).render(left, buf);
        if help_width > 0 && area.width > help_width {
            buf.set_string(area.right() - help_width, area.y, help, self.theme.dim());
        }
    }
}
