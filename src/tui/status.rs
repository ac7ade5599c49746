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
use unicode_width::UnicodeWidthStr;

pub struct StatusLine<'a> {
    pub snapshot: &'a EngineSnapshot,
    /// The UI was told the agent is embedded (the snapshot may say so too).
    pub embedded_agent: bool,
    pub notice: Option<&'a LogLine>,
    /// The key that opens help, if bound.
    pub help_key: Option<String>,
    /// The key that opens the log, where a shortened notice is whole.
    pub log_key: Option<String>,
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

    /// Both directions' rates; `compact` leaves out a direction at zero.
    fn rates(&self, compact: bool) -> String {
        let (mut up, mut down) = (0.0, 0.0);
        for t in &self.snapshot.transfers {
            if t.status == TransferStatus::InProgress && t.rate.is_finite() {
                match t.direction {
                    Direction::Upload => up += t.rate,
                    Direction::Download => down += t.rate,
                }
            }
        }
        if !compact {
            return format!("↑ {} ↓ {}", format::rate(up), format::rate(down));
        }
        match (up > 0.0, down > 0.0) {
            (true, true) => format!("↑ {} ↓ {}", format::rate(up), format::rate(down)),
            (true, false) => format!("↑ {}", format::rate(up)),
            (false, true) => format!("↓ {}", format::rate(down)),
            (false, false) => format::rate(0.0),
        }
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

impl StatusLine<'_> {
    /// The left part up to the notice, rates whole or `compact`.
    fn figures(&self, compact: bool) -> Vec<Span<'static>> {
        let separator = || Span::styled(" │ ", self.theme.dim());
        let mut spans = vec![self.peer(), separator(), Span::raw(self.rates(compact))];
        if let Some(paused) = self.all_paused() {
            spans.push(separator());
            spans.push(Span::styled(paused, self.theme.warn()));
        }
        if self.notice.is_some() {
            spans.push(separator());
        }
        spans
    }
}

impl Widget for StatusLine<'_> {
    /// The notice gets the room the figures leave: a rate at zero is left
    /// out before a word of it is. A notice that still does not fit loses
    /// whole words from its middle, and the hint at the right says which key
    /// shows it whole (the log) in place of the help key.
    fn render(self, area: Rect, buf: &mut Buffer) {
        let hint = |key: &Option<String>, what: &str| {
            key.as_ref()
                .map(|k| format!(" {k} {what} "))
                .unwrap_or_default()
        };
        let help = hint(&self.help_key, "help");
        let width = usize::from(area.width);
        let fits = |spans: &[Span<'_>], hint: &str| {
            let used = Line::from(spans.to_vec()).width() + hint.width();
            self.notice
                .is_none_or(|n| n.fits(width.saturating_sub(used)))
        };
        let (mut spans, hint) = match [false, true]
            .into_iter()
            .map(|compact| self.figures(compact))
            .find(|spans| fits(spans, &help))
        {
            Some(spans) => (spans, help),
            None => {
                let whole = hint(&self.log_key, "whole");
                (
                    self.figures(true),
                    if whole.is_empty() { help } else { whole },
                )
            }
        };
        let hint_width = hint.width() as u16;
        let left = Rect {
            width: area.width.saturating_sub(hint_width),
            ..area
        };
        if let Some(notice) = self.notice {
            let used = Line::from(spans.clone()).width();
            let room = usize::from(left.width).saturating_sub(used);
            spans.extend(notice.to_line_within(self.theme, room).spans);
        }
        Line::from(spans).render(left, buf);
        if hint_width > 0 && area.width > hint_width {
            buf.set_string(area.right() - hint_width, area.y, hint, self.theme.dim());
        }
    }
}
