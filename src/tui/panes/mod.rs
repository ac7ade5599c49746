//! The panes of the main screen, each a component that owns its state.
//!
//! - [`files::FilesPane`]: the local file browser ("Files");
//! - [`remote::RemotePane`]: the agent's files ("Remote");
//! - [`queue::QueuePane`]: every transfer, in four views ("Queue");
//! - [`chunks`]: the chunk map of the transfer selected in the queue ("Chunks");
//! - [`transports::TransportsPane`]: channel health ("Transports");
//! - [`log::LogPane`]: recent events and errors ("Log").
//!
//! Files and Remote share [`browser::Browser`], a filtered, selectable
//! listing; all scrolling lists share [`cursor::ListCursor`]. A pane turns
//! an [`Action`](super::keymap::Action) into changes of its own state and,
//! when something must happen outside the UI, an
//! [`Effect`](super::effect::Effect) for the event loop to run.

pub mod browser;
pub mod chunks;
pub mod cursor;
pub mod files;
pub mod log;
pub mod queue;
pub mod remote;
pub mod transports;

use ratatui::text::Line;
use ratatui::widgets::{Block, Borders};

use super::theme::Theme;

/// Which pane has the keyboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Files,
    Remote,
    Queue,
    Chunks,
    Transports,
    Log,
}

impl Focus {
    /// Tab order.
    pub const ORDER: [Focus; 6] = [
        Focus::Files,
        Focus::Remote,
        Focus::Queue,
        Focus::Chunks,
        Focus::Transports,
        Focus::Log,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Focus::Files => "Files",
            Focus::Remote => "Remote",
            Focus::Queue => "Queue",
            Focus::Chunks => "Chunks",
            Focus::Transports => "Transports",
            Focus::Log => "Log",
        }
    }
}

/// The frame of a pane: its title (exactly [`Focus::title`]) top left, and
/// a thick, highlighted border when it has the focus.
pub fn pane_block(pane: Focus, focused: bool, theme: Theme) -> Block<'static> {
    Block::default()
        .borders(Borders::ALL)
        .border_type(theme.border_type(focused))
        .border_style(theme.border_style(focused))
        .title(Line::styled(pane.title(), theme.title_style(focused)))
}
