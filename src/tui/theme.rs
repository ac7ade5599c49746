//! Colours, glyphs and modifiers, in one place.
//!
//! [`Theme`] has two faces: colour (the 8 basic ANSI colours plus dark grey,
//! so it reads on any 16-colour terminal) and monochrome, chosen when
//! `NO_COLOR` is set (<https://no-color.org>). Every state that colour tells
//! apart also has its own glyph or modifier, so the monochrome face loses no
//! information: chunk states have distinct glyphs, the focused pane a thick
//! border, the cursor row reverse video.

use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::BorderType;

use pigeon_core::view::{ChunkState, TransferStatus};

/// Every chunk state, best first, as the legend lists them.
pub const CHUNK_STATES: [ChunkState; 5] = [
    ChunkState::Acked,
    ChunkState::Pending,
    ChunkState::InFlight,
    ChunkState::Retried,
    ChunkState::Failed,
];

/// How the TUI looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Theme {
    /// False under `NO_COLOR`: modifiers and glyphs only.
    pub color: bool,
}

impl Theme {
    /// Colour unless `NO_COLOR` is set to anything non-empty.
    pub fn from_env() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Theme { color: !no_color }
    }

    #[cfg(test)]
    pub const fn colored() -> Self {
        Theme { color: true }
    }

    pub const fn monochrome() -> Self {
        Theme { color: false }
    }

    /// The cell glyph of a chunk state. Distinct in both faces.
    pub fn chunk_glyph(self, state: ChunkState) -> char {
        match state {
            ChunkState::Acked => '█',
            ChunkState::Pending => '·',
            ChunkState::InFlight => '▒',
            ChunkState::Retried => 'r',
            ChunkState::Failed => 'X',
        }
    }

    pub fn chunk_style(self, state: ChunkState) -> Style {
        self.fg(match state {
            ChunkState::Acked => Color::Green,
            ChunkState::Pending => Color::DarkGray,
            ChunkState::InFlight => Color::Yellow,
            ChunkState::Retried => Color::Magenta,
            ChunkState::Failed => Color::Red,
        })
    }

    /// The cell glyph of a chunk carried by link `link` (from 0): its
    /// number from 1, so the map reads without colour too; `+` past 9.
    pub fn link_glyph(self, link: u8) -> char {
        char::from_digit(u32::from(link) + 1, 10).unwrap_or('+')
    }

    /// The colour of link `link`'s chunks: basic colours, in turn.
    pub fn link_style(self, link: u8) -> Style {
        const COLOURS: [Color; 6] = [
            Color::Cyan,
            Color::Magenta,
            Color::Yellow,
            Color::Blue,
            Color::Green,
            Color::Red,
        ];
        self.fg(COLOURS[usize::from(link) % COLOURS.len()])
    }

    pub fn chunk_label(state: ChunkState) -> &'static str {
        match state {
            ChunkState::Acked => "acked",
            ChunkState::Pending => "pending",
            ChunkState::InFlight => "in flight",
            ChunkState::Retried => "retried",
            ChunkState::Failed => "failed",
        }
    }

    /// Short words for the queue's state column.
    pub fn status_label(status: TransferStatus) -> &'static str {
        match status {
            TransferStatus::Pending => "queued",
            TransferStatus::InProgress => "running",
            TransferStatus::Paused => "paused",
            TransferStatus::Completed => "done",
            TransferStatus::Failed => "FAILED",
            TransferStatus::Cancelled => "cancelled",
        }
    }

    pub fn status_style(self, status: TransferStatus) -> Style {
        match status {
            TransferStatus::Pending => self.fg(Color::Gray),
            TransferStatus::InProgress => self.fg(Color::Cyan),
            TransferStatus::Paused => self.fg(Color::Yellow),
            TransferStatus::Completed => self.fg(Color::Green),
            TransferStatus::Failed => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            TransferStatus::Cancelled => self.fg(Color::DarkGray),
        }
    }

    pub fn border_type(self, focused: bool) -> BorderType {
        if focused {
            BorderType::Thick
        } else {
            BorderType::Plain
        }
    }

    pub fn border_style(self, focused: bool) -> Style {
        if focused {
            self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
        } else {
            self.fg(Color::Gray)
        }
    }

    pub fn title_style(self, focused: bool) -> Style {
        if focused {
            self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        }
    }

    /// The cursor row. Reverse video only where the pane has focus, so the
    /// eye finds the active cursor at once.
    pub fn cursor_style(self, focused: bool) -> Style {
        if focused {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default().add_modifier(Modifier::UNDERLINED)
        }
    }

    /// Selected (marked with Space) entries.
    pub fn selected_style(self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }

    pub fn dir_style(self) -> Style {
        self.fg(Color::Blue).add_modifier(Modifier::BOLD)
    }

    pub fn dim(self) -> Style {
        if self.color {
            Style::default().fg(Color::DarkGray)
        } else {
            Style::default().add_modifier(Modifier::DIM)
        }
    }

    pub fn header_style(self) -> Style {
        Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
    }

    pub fn good(self) -> Style {
        self.fg(Color::Green)
    }

    pub fn bad(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    pub fn warn(self) -> Style {
        self.fg(Color::Yellow)
    }

    pub fn accent(self) -> Style {
        self.fg(Color::Cyan)
    }

    pub fn fg(self, color: Color) -> Style {
        if self.color {
            Style::default().fg(color)
        } else {
            Style::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_glyphs_are_distinct_so_monochrome_loses_nothing() {
        let theme = Theme::monochrome();
        let mut glyphs: Vec<char> = CHUNK_STATES.iter().map(|&s| theme.chunk_glyph(s)).collect();
        glyphs.sort_unstable();
        glyphs.dedup();
        assert_eq!(glyphs.len(), CHUNK_STATES.len());
    }

    #[test]
    fn monochrome_uses_no_colour_at_all() {
        let theme = Theme::monochrome();
        for state in CHUNK_STATES {
            assert_eq!(theme.chunk_style(state).fg, None);
        }
        assert_eq!(theme.border_style(true).fg, None);
        assert_eq!(theme.bad().fg, None);
        assert_eq!(theme.dim().fg, None);
    }

    #[test]
    fn colours_are_basic_ansi_only() {
        let theme = Theme::colored();
        let styles = CHUNK_STATES.iter().map(|&s| theme.chunk_style(s)).chain([
            theme.border_style(true),
            theme.dim(),
            theme.bad(),
        ]);
        for style in styles {
            let fg = style.fg.expect("coloured theme sets a foreground");
            assert!(
                !matches!(fg, Color::Rgb(..) | Color::Indexed(_)),
                "{fg:?} is not a basic ANSI colour"
            );
        }
    }
}
