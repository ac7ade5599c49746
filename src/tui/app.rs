//! [`App`]: the panes, the focus and the popup stack, wired together.
//!
//! The app is plain state with four inputs and one output:
//!
//! - [`App::on_key`] (a key press), [`App::on_snapshot`] (the engine's latest
//!   [`EngineSnapshot`]), [`App::on_event`] (an engine [`Event`]) and
//!   [`App::on_msg`] (the result of an earlier [`Effect`]) change the state
//!   and return the [`Effect`]s to run next;
//! - [`App::render`] draws a frame.
//!
//! No method does I/O or waits, so the app runs the same under the real
//! event loop and in tests on a `TestBackend`. The app only routes: each
//! pane owns its state and its keys, each popup its own.

use std::path::PathBuf;
use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;
use ratatui::widgets::{Paragraph, Widget, Wrap};
use ratatui::Frame;

use pigeon_core::engine::REPLACE_HINT;
use pigeon_core::view::{
    plural, Direction, EngineSnapshot, Event, LogLevel, TransferId, TransferView,
};

use super::effect::{Effect, Msg};
use super::keymap::{Action, Keymap};
use super::layout;
use super::panes::files::FilesPane;
use super::panes::log::{Level, LogLine, LogPane};
use super::panes::queue::{display_name, QueuePane};
use super::panes::remote::RemotePane;
use super::panes::transports::TransportsPane;
use super::panes::{chunks, Focus};
use super::popup::{self, Outcome, Popup};
use super::status::StatusLine;
use super::theme::Theme;

/// What the app is started with.
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// The folder Files opens in.
    pub start_dir: PathBuf,
    /// The peer is the agent inside this process.
    pub embedded_agent: bool,
    /// Ring the terminal bell when a transfer finishes or fails.
    pub bell: bool,
}

pub struct App {
    keymap: Keymap,
    theme: Theme,
    config: AppConfig,
    focus: Focus,
    files: FilesPane,
    remote: RemotePane,
    queue: QueuePane,
    transports: TransportsPane,
    log: LogPane,
    popups: Vec<Popup>,
    snapshot: Arc<EngineSnapshot>,
    /// The latest thing worth a glance: a transfer finished or failed, a
    /// command refused. Shown in the status line.
    notice: Option<LogLine>,
    /// Whether the last frame had room for the Log pane (Tab skips it if not).
    log_visible: bool,
    /// Where the panes were in the last frame, for the mouse.
    screen: Option<layout::Screen>,
    /// The chunk map shows chunks by link (when several carried them),
    /// not by state.
    chunks_by_link: bool,
    quit: bool,
}

impl App {
    /// A new app and the effects that fill it (list both folders).
    pub fn new(config: AppConfig, keymap: Keymap, theme: Theme) -> (App, Vec<Effect>) {
        let (files, read_files) = FilesPane::new(config.start_dir.clone());
        let (remote, list_remote) = RemotePane::new();
        let app = App {
            keymap,
            theme,
            config,
            focus: Focus::Files,
            files,
            remote,
            queue: QueuePane::default(),
            transports: TransportsPane::default(),
            log: LogPane::default(),
            popups: Vec::new(),
            snapshot: Arc::default(),
            notice: None,
            log_visible: false,
            chunks_by_link: false,
            screen: None,
            quit: false,
        };
        (app, vec![read_files, list_remote])
    }

    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// Add a line to the log without making it the notice.
    pub fn log(&mut self, line: LogLine) {
        self.log.push(line);
    }

    /// Add a line to the log and show it in the status line.
    pub fn notify(&mut self, level: Level, text: impl Into<String>) {
        let line = LogLine::new(level, text);
        self.log.push(line.clone());
        self.notice = Some(line);
    }

    pub fn on_snapshot(&mut self, snapshot: Arc<EngineSnapshot>) {
        self.queue.refresh(&snapshot);
        // A link that newly failed for a setting is worth the notice line
        // (its pane says FAILED; this says why, whole), once per reason.
        for t in &snapshot.transports {
            let Some(why) = t.failure() else { continue };
            let before = self.snapshot.transports.iter().find(|b| b.uri == t.uri);
            if before.is_some_and(|b| b.problems == t.problems) {
                continue;
            }
            let why = pigeon_core::policy::escape_control(&why).into_owned();
            self.notify(Level::Error, format!("transport failed: {why}"));
        }
        self.snapshot = snapshot;
    }

    /// A click focuses the pane under it and selects the row (a second
    /// click on the selected row opens it, as Enter); the wheel moves the
    /// cursor of the pane under it. Popups take no mouse.
    pub fn on_mouse(&mut self, mouse: MouseEvent) -> Vec<Effect> {
        let Some(screen) = self.screen else {
            return Vec::new();
        };
        if !self.popups.is_empty() {
            return Vec::new();
        }
        let at = ratatui::layout::Position::new(mouse.column, mouse.row);
        let panes = [
            (Focus::Files, Some(screen.files)),
            (Focus::Remote, Some(screen.remote)),
            (Focus::Queue, Some(screen.queue)),
            (Focus::Chunks, Some(screen.chunks)),
            (Focus::Transports, Some(screen.transports)),
            (Focus::Log, screen.log),
        ];
        let Some((pane, rect)) = panes
            .into_iter()
            .find_map(|(pane, rect)| rect.filter(|r| r.contains(at)).map(|r| (pane, r)))
        else {
            return Vec::new();
        };
        match mouse.kind {
            MouseEventKind::Down(MouseButton::Left) => {
                self.focus = pane;
                // Below the border and the column header.
                let Some(row) = mouse.row.checked_sub(rect.y + 2).map(usize::from) else {
                    return Vec::new();
                };
                let again = match pane {
                    Focus::Files => self.files.browser_mut().click(row),
                    Focus::Remote => self.remote.browser_mut().click(row),
                    Focus::Queue => self.queue.click(row, &self.snapshot),
                    _ => None,
                };
                if again == Some(true) {
                    return self.dispatch(Action::Open);
                }
                Vec::new()
            }
            MouseEventKind::ScrollUp | MouseEventKind::ScrollDown => {
                self.focus = pane;
                let action = if mouse.kind == MouseEventKind::ScrollUp {
                    Action::Up
                } else {
                    Action::Down
                };
                (0..3).flat_map(|_| self.dispatch(action)).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The folder the Files pane shows (the event loop watches it).
    pub fn files_folder(&self) -> &std::path::Path {
        self.files.cwd()
    }

    /// Read the Files pane's folder again: something in it changed.
    pub fn reload_files(&mut self) -> Effect {
        self.files.reload()
    }

    /// The name under the Files cursor (for tests).
    #[cfg(test)]
    pub fn files_current(&self) -> Option<String> {
        self.files.browser().current().map(|e| e.name.clone())
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        let action = self.keymap.action(&key);
        if let Some(top) = self.popups.last_mut() {
            return match top.handle_key(&key, action, &self.keymap, self.log.len()) {
                Outcome::Keep => Vec::new(),
                Outcome::Close => {
                    self.popups.pop();
                    Vec::new()
                }
                Outcome::CloseAndRun(effect) => {
                    self.popups.pop();
                    vec![effect]
                }
            };
        }
        match self.focus {
            Focus::Files if self.files.browser().is_typing_filter() => {
                self.files.browser_mut().filter_key(&key);
                return Vec::new();
            }
            Focus::Remote if self.remote.browser().is_typing_filter() => {
                self.remote.browser_mut().filter_key(&key);
                return Vec::new();
            }
            _ => {}
        }
        if key.code == KeyCode::Esc {
            match self.focus {
                Focus::Files => self.files.browser_mut().clear_filter(),
                Focus::Remote => self.remote.browser_mut().clear_filter(),
                _ => false,
            };
            return Vec::new();
        }
        match action {
            Some(action) => self.dispatch(action),
            None => Vec::new(),
        }
    }

    pub fn on_event(&mut self, event: Event) -> Vec<Effect> {
        let mut effects = Vec::new();
        match event {
            // The per-run report is for `--json`; the notices above cover it.
            Event::Finished(_) => {}
            Event::Queued { name, .. } => {
                self.log(LogLine::new(Level::Info, format!("queued {name}")));
            }
            Event::Started { name, resumed, .. } => {
                let verb = if resumed { "resumed" } else { "started" };
                self.log(LogLine::new(Level::Info, format!("{verb} {name}")));
            }
            Event::Completed { id, name } => {
                let transfer = self.transfer(id).cloned();
                let what = match transfer.as_ref().map(|t| t.direction) {
                    Some(Direction::Download) => "downloaded",
                    Some(Direction::Upload) => "uploaded",
                    None => "completed",
                };
                self.notify(Level::Success, format!("{what} {name}"));
                match transfer {
                    Some(t) if t.direction == Direction::Download => {
                        let landed_here =
                            std::path::Path::new(&t.local_path).parent() == Some(self.files.cwd());
                        if landed_here {
                            effects.push(self.files.reload());
                        }
                    }
                    // An upload changes the remote side: show it.
                    _ => effects.push(self.remote.reload()),
                }
                if self.config.bell {
                    effects.push(Effect::Bell);
                }
            }
            Event::Failed { id, name, error } if error.contains(REPLACE_HINT) => {
                // Not a failure to retry but a question to ask.
                self.notify(
                    Level::Warn,
                    format!("{name} exists on the agent: replace it?"),
                );
                let asked = self.popups.iter().any(
                    |p| matches!(p, Popup::ConfirmOverwrite { id: other, .. } if *other == id),
                );
                if !asked {
                    self.popups.push(Popup::ConfirmOverwrite { id, name });
                }
                if self.config.bell {
                    effects.push(Effect::Bell);
                }
            }
            Event::Failed { id: _, name, error } => {
                // A retry cannot help what only a person can decide.
                let next = pigeon_core::engine::policy_remedy(&error).unwrap_or("r retries");
                self.notify(
                    Level::Error,
                    // The log line escapes what it shows.
                    format!("failed {name}: {error} ({next})"),
                );
                if self.config.bell {
                    effects.push(Effect::Bell);
                }
            }
            Event::Cancelled { name, .. } => {
                self.notify(Level::Warn, format!("cancelled {name}"));
            }
            Event::Log { level, message } => match level {
                LogLevel::Info => self.log(LogLine::new(Level::Info, message)),
                LogLevel::Warn => self.log(LogLine::new(Level::Warn, message)),
                LogLevel::Error => self.notify(Level::Error, message),
            },
        }
        effects
    }

    pub fn on_msg(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::DirRead { dir, result } => self.files.on_listing(dir, result),
            Msg::RemoteListed { dir, result } => {
                if let Err(error) = &result {
                    self.notify(Level::Error, format!("cannot list remote /{dir}: {error}"));
                }
                self.remote.on_listing(dir, result);
            }
            Msg::Quota(line) => self.remote.set_quota(line),
            Msg::Queued { what, result } => {
                // Queued: the engine's own event says it (to every view of
                // this home), once.
                if let Err(error) = result {
                    self.notify(Level::Error, format!("{what} refused: {error}"));
                }
            }
            Msg::Failed { context, error } => {
                self.notify(Level::Error, format!("{context} failed: {error}"))
            }
            Msg::Note(text) => self.notify(Level::Warn, text),
        }
        Vec::new()
    }

    pub fn render(&mut self, frame: &mut Frame<'_>) {
        let area = frame.area();
        let buf = frame.buffer_mut();
        let Some(screen) = layout::split(area) else {
            let text = format!(
                "pigeon needs at least {}x{} (now {}x{}); q quits",
                layout::MIN_WIDTH,
                layout::MIN_HEIGHT,
                area.width,
                area.height
            );
            Paragraph::new(text)
                .wrap(Wrap { trim: true })
                .render(area, buf);
            return;
        };
        self.log_visible = screen.log.is_some();
        self.screen = Some(screen);
        if self.focus == Focus::Log && !self.log_visible {
            self.focus = Focus::Queue;
        }
        let theme = self.theme;
        let focus = self.focus;
        let snapshot = Arc::clone(&self.snapshot);
        self.files
            .render(screen.files, buf, theme, focus == Focus::Files);
        self.remote.render(
            screen.remote,
            buf,
            snapshot.agent_silent,
            theme,
            focus == Focus::Remote,
        );
        self.queue
            .render(screen.queue, buf, &snapshot, theme, focus == Focus::Queue);
        let chunk_key = self.keymap.first_key(Action::ChunkColours);
        chunks::render(
            screen.chunks,
            buf,
            self.queue.selected(&snapshot),
            theme,
            focus == Focus::Chunks,
            chunks::ChunkView {
                by_link: self.chunks_by_link,
                key: chunk_key.as_deref(),
            },
        );
        self.transports.render(
            screen.transports,
            buf,
            &snapshot.transports,
            snapshot.agent_silent,
            theme,
            focus == Focus::Transports,
        );
        if let Some(log_area) = screen.log {
            self.log.render(log_area, buf, theme, focus == Focus::Log);
        }
        StatusLine {
            snapshot: &snapshot,
            embedded_agent: self.config.embedded_agent,
            notice: self.notice.as_ref().or_else(|| self.log.latest()),
            help_key: self.keymap.first_key(Action::Help),
            log_key: self.keymap.first_key(Action::ShowLog),
            theme,
        }
        .render(screen.status, buf);
        let cx = popup::Context {
            keymap: &self.keymap,
            theme,
            log: &self.log,
            snapshot: &snapshot,
        };
        let body = Rect {
            height: area.height - 1,
            ..area
        };
        for popup in &self.popups {
            popup.render(body, buf, &cx);
        }
    }

    fn dispatch(&mut self, action: Action) -> Vec<Effect> {
        let effect = match action {
            Action::Quit => {
                self.quit = true;
                None
            }
            Action::Help => {
                self.popups.push(Popup::Help { scroll: 0 });
                None
            }
            Action::ShowLog => {
                self.popups.push(Popup::Log { back: 0 });
                None
            }
            Action::NextPane => {
                self.cycle_focus(1);
                None
            }
            Action::PrevPane => {
                self.cycle_focus(-1);
                None
            }
            Action::Upload => self.upload(),
            Action::Download => self.download(),
            Action::RefreshRemote => Some(self.remote.reload()),
            Action::PauseResume | Action::Retry | Action::PriorityUp | Action::PriorityDown => {
                match self.queue.command(action, &self.snapshot) {
                    Ok((effect, said)) => {
                        self.notify(Level::Info, said);
                        Some(effect)
                    }
                    Err(why) => {
                        self.notify(Level::Warn, why);
                        None
                    }
                }
            }
            Action::Cancel => {
                self.confirm_cancel();
                None
            }
            Action::Forget => self.forget(),
            Action::ChunkColours => {
                self.chunks_by_link = !self.chunks_by_link;
                None
            }
            Action::CycleView
            | Action::ViewActive
            | Action::ViewFailed
            | Action::ViewCompleted
            | Action::ViewAll => {
                self.queue.navigate(action, &self.snapshot);
                None
            }
            Action::Up
            | Action::Down
            | Action::PageUp
            | Action::PageDown
            | Action::Top
            | Action::Bottom
            | Action::Open
            | Action::Parent
            | Action::Select
            | Action::Filter
            | Action::ToggleHidden => self.focused_pane(action),
        };
        effect.into_iter().collect()
    }

    /// Movement and listing actions go to the pane with the focus.
    fn focused_pane(&mut self, action: Action) -> Option<Effect> {
        match self.focus {
            Focus::Files => self.files.handle(action),
            Focus::Remote => self.remote.handle(action),
            Focus::Queue if action == Action::Open => {
                match self.queue.selected(&self.snapshot) {
                    Some(t) => self.popups.push(Popup::Detail {
                        id: t.id,
                        scroll: 0,
                    }),
                    None => self.notify(Level::Warn, "no transfer selected in Queue"),
                }
                None
            }
            Focus::Queue => {
                self.queue.navigate(action, &self.snapshot);
                None
            }
            Focus::Transports => {
                self.transports
                    .handle(action, self.snapshot.transports.len());
                None
            }
            Focus::Log => {
                self.log.handle(action);
                None
            }
            Focus::Chunks => None,
        }
    }

    fn upload(&mut self) -> Option<Effect> {
        let sources = self.files.upload_sources();
        if sources.is_empty() {
            self.notify(
                Level::Warn,
                "nothing to upload: pick a file in Files (space marks several)",
            );
            return None;
        }
        let remote_dir = self.remote.cwd().to_owned();
        let what = match sources.as_slice() {
            [one] => one.file_name().map_or_else(
                || one.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            many => plural(many.len() as u64, "entry"),
        };
        self.notify(Level::Info, format!("uploading {what} to /{remote_dir}"));
        self.files.browser_mut().clear_selection();
        Some(Effect::Upload {
            sources,
            remote_dir,
        })
    }

    fn download(&mut self) -> Option<Effect> {
        let (items, folders) = self.remote.download_targets();
        if items.is_empty() && folders.is_empty() {
            self.notify(
                Level::Warn,
                "nothing to download: pick a file or folder in Remote",
            );
            return None;
        }
        let local_dir = self.files.cwd().to_path_buf();
        let what = match (items.len(), folders.len()) {
            (n, 0) => plural(n as u64, "file"),
            (0, f) => format!("{} with everything in them", plural(f as u64, "folder")),
            (n, f) => format!(
                "{} and {}",
                plural(n as u64, "file"),
                plural(f as u64, "folder")
            ),
        };
        self.notify(
            Level::Info,
            format!("downloading {what} into {}", local_dir.display()),
        );
        self.remote.browser_mut().clear_selection();
        Some(Effect::Download {
            items,
            folders,
            local_dir,
        })
    }

    fn forget(&mut self) -> Option<Effect> {
        let Some(transfer) = self.queue.selected(&self.snapshot) else {
            self.notify(Level::Warn, "no transfer selected in Queue");
            return None;
        };
        let name = display_name(transfer);
        if !transfer.status.is_finished() {
            self.notify(
                Level::Warn,
                format!("{name} is not finished: cancel it first (x), then remove it"),
            );
            return None;
        }
        let id = transfer.id;
        self.notify(Level::Info, format!("removed {name} from the list"));
        Some(Effect::Forget(id))
    }

    fn confirm_cancel(&mut self) {
        let Some(transfer) = self.queue.selected(&self.snapshot) else {
            self.notify(Level::Warn, "no transfer selected in Queue");
            return;
        };
        if transfer.status.is_finished() {
            let name = display_name(transfer);
            self.notify(Level::Warn, format!("{name} is already finished"));
            return;
        }
        let popup = Popup::ConfirmCancel {
            id: transfer.id,
            name: display_name(transfer),
        };
        self.popups.push(popup);
    }

    fn cycle_focus(&mut self, step: isize) {
        let order: Vec<Focus> = Focus::ORDER
            .into_iter()
            .filter(|&f| f != Focus::Log || self.log_visible)
            .collect();
        let pos = order.iter().position(|&f| f == self.focus).unwrap_or(0);
        let next = (pos as isize + step).rem_euclid(order.len() as isize) as usize;
        self.focus = order[next];
    }

    fn transfer(&self, id: TransferId) -> Option<&TransferView> {
        self.snapshot.transfers.iter().find(|t| t.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::fixtures::{self, id, remote_entry, snapshot, transfer};
    use crossterm::event::KeyModifiers;
    use pigeon_core::engine::TransferAction;
    use pigeon_core::view::TransferStatus;

    fn press(app: &mut App, code: KeyCode) -> Vec<Effect> {
        app.on_key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn chars(app: &mut App, text: &str) -> Vec<Effect> {
        text.chars()
            .flat_map(|c| press(app, KeyCode::Char(c)))
            .collect()
    }

    #[test]
    fn u_uploads_the_file_under_the_cursor_into_the_remote_folder() {
        let mut app = fixtures::app(vec![]);
        // docs/, src/, Cargo.toml: the cursor goes to Cargo.toml.
        chars(&mut app, "jj");
        let effects = chars(&mut app, "u");
        assert_eq!(
            effects,
            [Effect::Upload {
                sources: vec![PathBuf::from(fixtures::START_DIR).join("Cargo.toml")],
                remote_dir: String::new(),
            }]
        );
        assert!(app
            .notice
            .as_ref()
            .is_some_and(|n| n.text.contains("uploading Cargo.toml")));
    }

    #[test]
    fn space_selects_several_files_for_one_upload() {
        let mut app = fixtures::app(vec![]);
        chars(&mut app, "jj");
        press(&mut app, KeyCode::Char(' '));
        press(&mut app, KeyCode::Char(' '));
        let effects = chars(&mut app, "u");
        let Some(Effect::Upload { sources, .. }) = effects.first() else {
            panic!("expected an upload, got {effects:?}");
        };
        assert_eq!(sources.len(), 2);
        // The selection is spent.
        assert_eq!(app.files.browser().selection_len(), 0);
    }

    #[test]
    fn typing_a_filter_does_not_trigger_actions() {
        let mut app = fixtures::app(vec![]);
        press(&mut app, KeyCode::Char('/'));
        let effects = chars(&mut app, "qu");
        assert!(effects.is_empty());
        assert!(!app.should_quit());
        press(&mut app, KeyCode::Backspace);
        press(&mut app, KeyCode::Backspace);
        assert!(chars(&mut app, "dme").is_empty());
        assert_eq!(
            app.files.browser().current().map(|e| e.name.as_str()),
            Some("README.md")
        );
        press(&mut app, KeyCode::Esc);
        assert!(!app.files.browser().filter().is_active());
    }

    #[test]
    fn d_downloads_the_remote_selection_into_the_files_folder() {
        let mut app = fixtures::app(vec![remote_entry("report.pdf", 10)]);
        press(&mut app, KeyCode::Tab);
        let effects = chars(&mut app, "d");
        let [Effect::Download {
            items,
            folders,
            local_dir,
        }] = effects.as_slice()
        else {
            panic!("expected one download, got {effects:?}");
        };
        assert_eq!(items[0].path, "report.pdf");
        assert!(folders.is_empty());
        assert_eq!(local_dir, &PathBuf::from(fixtures::START_DIR));
        // Issue 32: one file is not "1 file(s)".
        let said = app.notice.as_ref().map(|n| n.text.as_str());
        assert!(
            said.is_some_and(|s| s.starts_with("downloading 1 file into ")),
            "{said:?}"
        );
    }

    #[test]
    fn cancel_asks_first_and_only_yes_cancels() {
        let mut app = fixtures::app(vec![]);
        app.on_snapshot(snapshot(vec![transfer(
            1,
            "a.bin",
            TransferStatus::InProgress,
            10,
            3,
        )]));
        assert!(chars(&mut app, "x").is_empty());
        assert!(matches!(
            app.popups.last(),
            Some(Popup::ConfirmCancel { .. })
        ));
        // Keys meant for the main screen do nothing while the popup is up.
        assert!(chars(&mut app, "q").is_empty());
        assert!(!app.should_quit());
        press(&mut app, KeyCode::Char('x'));
        chars(&mut app, "x");
        let effects = chars(&mut app, "y");
        assert_eq!(effects, [Effect::Act(id(1), TransferAction::Cancel)]);
        assert!(app.popups.is_empty());
    }

    #[test]
    fn queue_keys_act_on_the_selected_transfer_from_any_pane() {
        let mut app = fixtures::app(vec![]);
        app.on_snapshot(snapshot(vec![transfer(
            1,
            "a.bin",
            TransferStatus::InProgress,
            10,
            3,
        )]));
        assert_eq!(
            chars(&mut app, "p"),
            [Effect::Act(id(1), TransferAction::Pause)]
        );
        assert_eq!(
            chars(&mut app, "K"),
            [Effect::Act(id(1), TransferAction::Reprioritize(-1))]
        );
        assert_eq!(
            chars(&mut app, "J"),
            [Effect::Act(id(1), TransferAction::Reprioritize(1))]
        );
        // Retrying a running transfer is refused with a reason.
        assert!(chars(&mut app, "r").is_empty());
        assert!(app.notice.as_ref().is_some_and(|n| n.level == Level::Warn));
    }

    #[test]
    fn a_completed_upload_refreshes_remote_and_rings() {
        let mut app = fixtures::app(vec![]);
        app.on_snapshot(snapshot(vec![transfer(
            1,
            "a.bin",
            TransferStatus::Completed,
            10,
            10,
        )]));
        let effects = app.on_event(Event::Completed {
            id: id(1),
            name: "a.bin".into(),
        });
        assert_eq!(effects, [Effect::ListRemote(String::new()), Effect::Bell]);
        let notice = app.notice.as_ref().expect("a notice");
        assert_eq!(
            (notice.level, notice.text.as_str()),
            (Level::Success, "uploaded a.bin")
        );
    }

    /// A queued upload is one line in the log, not the engine's event and
    /// then the command's answer saying it again.
    #[test]
    fn a_queued_upload_is_logged_once() {
        let mut app = fixtures::app(vec![]);
        let before = app.log.len();
        let _ = app.on_event(Event::Queued {
            id: id(1),
            name: "s1.bin".into(),
        });
        app.on_msg(Msg::Queued {
            what: "upload of s1.bin".into(),
            result: Ok(id(1)),
        });
        assert_eq!(app.log.len(), before + 1);
        // A refusal is still said.
        app.on_msg(Msg::Queued {
            what: "upload of s2.bin".into(),
            result: Err("over quota".into()),
        });
        assert!(app
            .notice
            .as_ref()
            .is_some_and(|n| n.text.contains("over quota")));
    }

    #[test]
    fn a_failure_is_a_notice_with_the_reason() {
        let mut app = fixtures::app(vec![]);
        let effects = app.on_event(Event::Failed {
            id: id(9),
            name: "b\x1b[1m.bin".into(),
            error: "quota exceeded".into(),
        });
        assert_eq!(effects, [Effect::Bell]);
        let notice = app.notice.as_ref().expect("a notice");
        assert_eq!(notice.level, Level::Error);
        // Kept as it came; escaped where it is shown.
        let shown: String = notice
            .to_line_within(crate::tui::theme::Theme::monochrome(), usize::MAX)
            .spans
            .iter()
            .map(|s| s.content.as_ref())
            .collect();
        assert!(shown.contains("b\\x1b[1m.bin: quota exceeded"), "{shown}");
        assert!(!shown.contains('\x1b'), "{shown}");
    }

    #[test]
    fn tab_cycles_panes_and_skips_the_hidden_log() {
        let mut app = fixtures::app(vec![]);
        let mut seen = vec![app.focus];
        for _ in 0..5 {
            press(&mut app, KeyCode::Tab);
            seen.push(app.focus);
        }
        assert_eq!(
            seen,
            [
                Focus::Files,
                Focus::Remote,
                Focus::Queue,
                Focus::Chunks,
                Focus::Transports,
                Focus::Files
            ]
        );
        let _ = app.on_key(KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT));
        assert_eq!(app.focus, Focus::Transports);
    }

    #[test]
    fn help_opens_and_closes_and_q_quits() {
        let mut app = fixtures::app(vec![]);
        chars(&mut app, "?");
        assert_eq!(app.popups, [Popup::Help { scroll: 0 }]);
        press(&mut app, KeyCode::Esc);
        assert!(app.popups.is_empty());
        chars(&mut app, "q");
        assert!(app.should_quit());
    }

    #[test]
    fn key_releases_are_ignored() {
        let mut app = fixtures::app(vec![]);
        let mut key = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
        key.kind = KeyEventKind::Release;
        app.on_key(key);
        assert!(!app.should_quit());
    }
}
