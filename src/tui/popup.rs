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

use pigeon_core::policy::escape_control;
use pigeon_core::view::{
    plural, Direction, EngineSnapshot, TransferId, TransferStatus, TransferView,
};

use super::effect::Effect;
use super::format;
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
    /// "The agent holds another file under this name: replace it?"
    ConfirmOverwrite { id: TransferId, name: String },
    /// The event log, full screen, `back` lines from the newest.
    Log { back: usize },
    /// One transfer whole: paths, hashes, transports, faults and its
    /// error without a character cut, scrolled by `scroll` lines.
    Detail { id: TransferId, scroll: usize },
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
    pub snapshot: &'a EngineSnapshot,
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
                    (_, Some(action)) => scroll_by(scroll, action, max),
                    _ => Outcome::Keep,
                }
            }
            Popup::ConfirmOverwrite { id, .. } => match key.code {
                KeyCode::Char('y' | 'Y') => {
                    Outcome::CloseAndRun(Effect::Act(*id, TransferAction::Overwrite))
                }
                KeyCode::Char('n' | 'N') | KeyCode::Esc => Outcome::Close,
                _ if action == Some(Action::Quit) => Outcome::Close,
                _ => Outcome::Keep,
            },
            Popup::ConfirmCancel { id, .. } => match key.code {
                KeyCode::Char('y' | 'Y') | KeyCode::Enter => {
                    Outcome::CloseAndRun(Effect::Act(*id, TransferAction::Cancel))
                }
                KeyCode::Char('n' | 'N') | KeyCode::Esc => Outcome::Close,
                _ if action == Some(Action::Quit) => Outcome::Close,
                _ => Outcome::Keep,
            },
            Popup::Detail { scroll, .. } => match (key.code, action) {
                (KeyCode::Esc | KeyCode::Enter, _) | (_, Some(Action::Quit)) => Outcome::Close,
                (_, Some(action)) => scroll_by(scroll, action, DETAIL_LINES),
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
            Popup::ConfirmOverwrite { name, .. } => render_overwrite(area, buf, name, cx.theme),
            Popup::Detail { id, scroll } => {
                let transfer = cx.snapshot.transfers.iter().find(|t| t.id == *id);
                render_detail(area, buf, transfer, cx.theme, *scroll);
            }
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
                cx.log.render_whole_lines_back(inner, buf, cx.theme, *back);
            }
        }
    }
}

/// Move a popup's `scroll` (lines from its top, at most `max`) by a
/// movement key; anything else leaves it.
fn scroll_by(scroll: &mut usize, action: Action, max: usize) -> Outcome {
    *scroll = match action {
        Action::Down => (*scroll + 1).min(max),
        Action::Up => scroll.saturating_sub(1),
        Action::PageDown => (*scroll + 10).min(max),
        Action::PageUp => scroll.saturating_sub(10),
        Action::Top => 0,
        Action::Bottom => max,
        _ => *scroll,
    };
    Outcome::Keep
}

/// Most a detail popup scrolls (its text is about 20 lines before wrapping).
const DETAIL_LINES: usize = 60;

/// The lines of a transfer's detail popup.
fn detail_lines(t: &TransferView, theme: Theme) -> Vec<Line<'static>> {
    let field = |label: &'static str, value: String| {
        Line::from(vec![
            Span::styled(format!("{label:<12}"), theme.dim()),
            Span::raw(value),
        ])
    };
    let (arrow, direction) = match t.direction {
        Direction::Upload => ("->", "upload"),
        Direction::Download => ("<-", "download"),
    };
    let mut lines = vec![
        field("transfer", t.id.to_string()),
        Line::from(vec![
            Span::styled(format!("{:<12}", "status"), theme.dim()),
            Span::styled(
                super::theme::Theme::status_label(t.status).to_string(),
                theme.status_style(t.status),
            ),
            Span::raw(if t.resumed { " (resumed)" } else { "" }),
        ]),
    ];
    if let Some(error) = &t.error {
        lines.push(Line::from(vec![
            Span::styled(format!("{:<12}", "error"), theme.dim()),
            Span::styled(escape_control(error).into_owned(), theme.bad()),
        ]));
    }
    lines.extend([
        field("direction", format!("{direction} {arrow}")),
        field("local", escape_control(&t.local_path).into_owned()),
        field("remote", escape_control(&t.remote_path).into_owned()),
        field("peer", escape_control(&t.peer).into_owned()),
        field(
            "size",
            format!("{} ({} bytes){}, {}", format::bytes(t.delta_of.unwrap_or(t.size)), t.delta_of.unwrap_or(t.size), match t.delta_of {
                Some(_) => format!(", sent as a delta of {}", format::bytes(t.size)),
                None => String::new(),
            }, {
                if t.mime.is_empty() {
                    "type not known yet".to_string()
                } else {
                    escape_control(&t.mime).into_owned()
                }
            }),
        ),
        field(
            "sha256",
            t.sha256.clone().unwrap_or_else(|| {
                match t.status {
                    TransferStatus::Cancelled => "never known (cancelled before it was)",
                    TransferStatus::Failed => "never known (it failed before it was)",
                    _ => "not known yet (an upload hashes its file first; a download learns it from the offer)",
                }
                .into()
            }),
        ),
        field(
            "progress",
            format!(
                "{} of {}, {} of {}",
                t.chunks_done,
                plural(t.chunks_total, "chunk"),
                format::bytes(t.bytes_done),
                format::bytes(t.size)
            ),
        ),
        field(
            "rate",
            match t.eta {
                Some(eta) => format!("{}, about {} left", format::rate(t.rate), format::duration(eta)),
                None => format::rate(t.rate),
            },
        ),
        field("transports", escape_control(&t.transport).into_owned()),
        field(
            "faults",
            format!(
                "corrupt {} · duplicate {} · reordered {} · retransmitted {}",
                t.faults.corrupt, t.faults.duplicate, t.faults.reordered, t.faults.retransmitted
            ),
        ),
        field("queued", crate::tui::format::unix_time(t.created_unix)),
        field("priority", t.priority.to_string()),
    ]);
    lines
}

fn render_detail(
    area: Rect,
    buf: &mut Buffer,
    t: Option<&TransferView>,
    theme: Theme,
    scroll: usize,
) {
    let block = frame(" Transfer ", theme)
        .title_bottom(Line::styled(" ↑↓ scroll · esc closes ", theme.dim()).right_aligned());
    let popup = Rect {
        x: area.x + 1,
        y: area.y + 1,
        width: area.width.saturating_sub(2),
        height: area.height.saturating_sub(2),
    };
    Clear.render(popup, buf);
    let lines = match t {
        Some(t) => detail_lines(t, theme),
        None => vec![Line::styled(
            "this transfer is no longer in the list (forgotten or cleaned)",
            theme.dim(),
        )],
    };
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .scroll((u16::try_from(scroll).unwrap_or(u16::MAX), 0))
        .block(block)
        .render(popup, buf);
}

fn frame(title: &'static str, theme: Theme) -> Block<'static> {
    Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Double)
        .border_style(theme.border_style(true))
        .title(Line::styled(title, theme.title_style(true)))
}

fn render_overwrite(area: Rect, buf: &mut Buffer, name: &str, theme: Theme) {
    let question = Line::from(vec![
        Span::styled(escape_control(name).into_owned(), theme.title_style(false)),
        Span::raw(" already exists on the agent, with other content."),
    ]);
    let question = Question {
        title: " File exists ",
        size: (56, 8),
        question,
        detail: "Replace it? Its file stays until this one is verified.",
        yes: " replace it    ",
        no: " keep the agent's",
    };
    question.render(area, buf, theme);
}

fn render_confirm(area: Rect, buf: &mut Buffer, name: &str, theme: Theme) {
    let question = Line::from(vec![
        Span::raw("Cancel "),
        Span::styled(name.to_owned(), theme.title_style(false)),
        Span::raw("?"),
    ]);
    let question = Question {
        title: " Cancel transfer ",
        size: (52, 7),
        question,
        detail: "The agent drops what it holds; r starts it again.",
        yes: " cancel it    ",
        no: " keep it",
    };
    question.render(area, buf, theme);
}

/// A yes-or-no popup: a question, a line on what follows, `y` and `n`.
struct Question {
    title: &'static str,
    size: (u16, u16),
    question: Line<'static>,
    detail: &'static str,
    yes: &'static str,
    no: &'static str,
}

impl Question {
    fn render(self, area: Rect, buf: &mut Buffer, theme: Theme) {
        let popup = help::centered(area, self.size.0, self.size.1);
        let text = vec![
            self.question,
            Line::styled(self.detail, theme.dim()),
            Line::raw(""),
            Line::from(vec![
                Span::styled("y", theme.bad()),
                Span::raw(self.yes),
                Span::styled("n", theme.good()),
                Span::raw(self.no),
            ]),
        ];
        let block = frame(self.title, theme);
        Clear.render(popup, buf);
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .block(block)
            .render(popup, buf);
    }
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
    fn overwrite_runs_only_on_yes_and_enter_is_not_yes() {
        let id = TransferId([8; 16]);
        let keymap = Keymap::defaults();
        let mut popup = Popup::ConfirmOverwrite {
            id,
            name: "a".into(),
        };
        // Replacing a file is never the default.
        assert_eq!(
            popup.handle_key(&key(KeyCode::Enter), None, &keymap, 0),
            Outcome::Keep
        );
        assert_eq!(
            popup.handle_key(&key(KeyCode::Char('n')), None, &keymap, 0),
            Outcome::Close
        );
        assert_eq!(
            popup.handle_key(&key(KeyCode::Char('y')), None, &keymap, 0),
            Outcome::CloseAndRun(Effect::Act(id, TransferAction::Overwrite))
        );
    }

    /// A transfer that ended without a hash says so, not "not known yet".
    #[test]
    fn details_of_an_ended_transfer_never_promise_its_hash() {
        let text = |status| {
            let mut t = crate::tui::fixtures::transfer(1, "a.bin", status, 4, 1);
            t.sha256 = None;
            detail_lines(&t, Theme::monochrome())
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        };
        let cancelled = text(TransferStatus::Cancelled);
        assert!(cancelled.contains("never known (cancelled"), "{cancelled}");
        assert!(!cancelled.contains("not known yet"), "{cancelled}");
        assert!(text(TransferStatus::InProgress).contains("not known yet"));
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
