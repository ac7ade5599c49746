//! Popups: modal layers over the main screen, kept in a stack by the app.
//!
//! Each [`Popup`] variant carries its own state and takes every key while
//! on top; [`Popup::handle_key`] says whether it stays, closes, or closes
//! with an [`Effect`] to run (the cancel confirmation).

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Paragraph, Widget, Wrap};

use pigeon_core::view::TransferId;

use super::effect::Effect;
use super::help::{self, HelpOverlay};
use super::keymap::{Action, Keymap};
use super::panes::log::LogPane;
use super::theme::Theme;
use pigeon_core::engine::TransferAction;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Popup {
    /// The keymap, scrolled by `scroll` lines.
    Help { scroll: usize },
    /// "Cancel this transfer?"
    ConfirmCancel { id: TransferId, name: String },
    /// The event log, full screen, `back` lines from the newest.
    Log { back: usize },
}

/// What a key did to the popup on top.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Keep,
    Close,
    CloseAndRun(Effect),
}

/// What popups draw from.
pub struct Context<'a> {
    pub keymap: &'a Keymap,
    pub theme: Theme,
    pub log: &'a LogPane,
}

impl Popup {
    pub fn handle_key(
        &mut self,
        key: &KeyEvent,
        action: Option<Action>,
        keymap: &Keymap,
        log_len: usize,
    ) -> Outcome {
        match self {
            Popup::Help { scroll } => {
                let max = help::len(keymap);
                match (key.code, action) {
                    (KeyCode::Esc | KeyCode::Enter, _) | (_, Some(Action::Help | Action::Quit)) => {
                        Outcome::Close
                    }
                    (_, Some(Action::Down)) => {
                        *scroll = (*scroll + 1).min(max);
                        Outcome::Keep
                    }
                    (_, Some(Action::Up)) => {
                        *scroll = scroll.saturating_sub(1);
                        Outcome::Keep
                    }
                    (_, Some(Action::PageDown)) => {
                        *scroll = (*scroll + 10).min(max);
                        Outcome::Keep
                    }
                    (_, Some(Action::PageUp)) => {
                        *scroll = scroll.saturating_sub(10);
                        Outcome::Keep
                    }
                    (_, Some(Action::Top)) => {
                        *scroll = 0;
                        Outcome::Keep
                    }
                    (_, Some(Action::Bottom)) => {
                        *scroll = max;
                        Outcome::Keep
                    }
                    _ => Outcome::Keep,
                }
            }
            Popup::ConfirmCancel { id, .. } => match key.code {
                KeyCode::Char('y' | 'Y') | KeyCode::Enter => {
                    Outcome::CloseAndRun(Effect::Act(*id, TransferAction::Cancel))
                }
                KeyCode::Char('n' | 'N') | KeyCode::Esc => Outcome::Close,
                _ if action == Some(Action::Quit) => Outcome::Close,
                _ => Outcome::Keep,
            },
            Popup::Log { back } => {
                let max = log_len.saturating_sub(1);
                match (key.code, action) {
                    (KeyCode::Esc | KeyCode::Enter, _)
                    | (_, Some(Action::ShowLog | Action::Quit)) => Outcome::Close,
                    (_, Some(Action::Up)) => {
                        *back = (*back + 1).min(max);
                        Outcome::Keep
                    }
                    (_, Some(Action::Down)) => {
                        *back = back.saturating_sub(1);
                        Outcome::Keep
                    }
                    (_, Some(Action::PageUp)) => {
                        *back = (*back + 10).min(max);
                        Outcome::Keep
                    }
                    (_, Some(Action::PageDown)) => {
                        *back = back.saturating_sub(10);
                        Outcome::Keep
                    }
                    _ => Outcome::Keep,
                }
            }
        }
    }

    pub fn render(&self, area: Rect, buf: &mut Buffer, cx: &Context<'_>) {
        match self {
            Popup::Help { scroll } => HelpOverlay {
                keymap: cx.keymap,
                theme: cx.theme,
                scroll: *scroll,
            }
            .render(area, buf),
            Popup::ConfirmCancel { name, .. } => render_confirm(area, buf, name, cx.theme),
            Popup::Log { back } => {
                let block = frame(" Log ", cx.theme).title_bottom(
                    Line::styled(" ↑↓ scroll · esc closes ", cx.theme.dim()).right_aligned(),
                );
                let popup = Rect {
                    x: area.x + 1,
                    y: area.y + 1,
                    width: area.width.saturating_sub(2),
                    height: area.height.saturating_sub(2),
                };
                Clear.render(popup, buf);
                let inner = block.inner(popup);
                block.render(popup, buf);
                cx.log.render_lines_back(inner, buf, cx.theme, *back);
            }
        }
    }
}

fn frame(title: &'static str, theme: Theme) -> Block<'static> {
    Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Double)
        .border_style(theme.border_style(true))
        .title(Line::styled(title, theme.title_style(true)))
}

fn render_confirm(area: Rect, buf: &mut Buffer, name: &str, theme: Theme) {
    let popup = help::centered(area, 52, 7);
    let text = vec![
        Line::from(vec![
            Span::raw("Cancel "),
            Span::styled(name.to_owned(), theme.title_style(false)),
            Span::raw("?"),
        ]),
        Line::styled("Received chunks are kept; r retries it later.", theme.dim()),
        Line::raw(""),
        Line::from(vec![
            Span::styled("y", theme.bad()),
            Span::raw(" cancel it    "),
            Span::styled("n", theme.good()),
            Span::raw(" keep it"),
        ]),
    ];
    let block = frame(" Cancel transfer ", theme);
    Clear.render(popup, buf);
    Paragraph::new(text)
        .wrap(Wrap { trim: true })
        .block(block)
        .render(popup, buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::KeyModifiers;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn confirm_cancel_runs_only_on_yes() {
        let id = TransferId([7; 16]);
        let keymap = Keymap::defaults();
        let mut popup = Popup::ConfirmCancel {
            id,
            name: "a".into(),
        };
        assert_eq!(
            popup.handle_key(&key(KeyCode::Char('z')), None, &keymap, 0),
            Outcome::Keep
        );
        assert_eq!(
            popup.handle_key(&key(KeyCode::Esc), None, &keymap, 0),
            Outcome::Close
        );
        assert_eq!(
            popup.handle_key(&key(KeyCode::Char('y')), None, &keymap, 0),
            Outcome::CloseAndRun(Effect::Act(id, TransferAction::Cancel))
        );
    }

    #[test]
    fn help_scrolls_and_closes_with_its_own_key() {
        let keymap = Keymap::defaults();
        let mut popup = Popup::Help { scroll: 0 };
        let down = key(KeyCode::Char('j'));
        assert_eq!(
            popup.handle_key(&down, keymap.action(&down), &keymap, 0),
            Outcome::Keep
        );
        assert_eq!(popup, Popup::Help { scroll: 1 });
        let help = key(KeyCode::Char('?'));
        assert_eq!(
            popup.handle_key(&help, keymap.action(&help), &keymap, 0),
            Outcome::Close
        );
    }
}
