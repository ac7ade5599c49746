//! The "Queue" pane: every transfer, with direction, name, state, progress,
//! rate, ETA and transport, in four views (active, failed, completed, all).
//!
//! [`QueuePane`] is rebuilt from each [`EngineSnapshot`] by
//! [`QueuePane::refresh`], which keeps the cursor on the same transfer (by
//! id) while transfers move between views. Rows are drawn only for the
//! window on screen, so a queue of thousands costs what a screenful does.
//! Queue actions (pause, cancel, retry, priority) return an
//! [`Effect::Act`] or, when they make no sense for the selected
//! transfer, a message saying why.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use pigeon_core::view::{Direction, EngineSnapshot, TransferId, TransferStatus, TransferView};

use super::cursor::ListCursor;
use super::{pane_block, Focus};
use crate::tui::effect::Effect;
use crate::tui::format;
use crate::tui::keymap::Action;
use crate::tui::theme::Theme;
use pigeon_core::engine::TransferAction;
use pigeon_core::policy::escape_control;

/// Which transfers the queue lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueView {
    /// Queued, running and paused.
    #[default]
    Active,
    /// Failed and cancelled: the ones `retry` applies to.
    Failed,
    Completed,
    All,
}

impl QueueView {
    pub const ALL: [QueueView; 4] = [
        QueueView::Active,
        QueueView::Failed,
        QueueView::Completed,
        QueueView::All,
    ];

    pub fn label(self) -> &'static str {
        match self {
            QueueView::Active => "active",
            QueueView::Failed => "failed",
            QueueView::Completed => "done",
            QueueView::All => "all",
        }
    }

    pub fn contains(self, status: TransferStatus) -> bool {
        use TransferStatus::*;
        match self {
            QueueView::Active => matches!(status, Pending | InProgress | Paused),
            QueueView::Failed => matches!(status, Failed | Cancelled),
            QueueView::Completed => status == Completed,
            QueueView::All => true,
        }
    }

    fn next(self) -> QueueView {
        let i = QueueView::ALL.iter().position(|&v| v == self).unwrap_or(0);
        QueueView::ALL[(i + 1) % QueueView::ALL.len()]
    }

    fn placeholder(self) -> &'static str {
        match self {
            QueueView::Active => "nothing queued: select files in Files and press u",
            QueueView::Failed => "no failed transfers",
            QueueView::Completed => "nothing completed yet",
            QueueView::All => "no transfers yet",
        }
    }
}

/// The queue.
#[derive(Debug, Default)]
pub struct QueuePane {
    view: QueueView,
    /// Indexes into the snapshot's transfers, in queue order, for this view.
    rows: Vec<usize>,
    /// Transfers per view, for the title.
    counts: [usize; 4],
    cursor: ListCursor,
    selected: Option<TransferId>,
}

impl QueuePane {
    #[cfg(test)]
    pub fn view(&self) -> QueueView {
        self.view
    }

    /// Rebuild the rows from a new snapshot (or after a view change).
    pub fn refresh(&mut self, snapshot: &EngineSnapshot) {
        let view = self.view;
        self.counts = QueueView::ALL.map(|v| {
            snapshot
                .transfers
                .iter()
                .filter(|t| v.contains(t.status))
                .count()
        });
        self.rows.clear();
        self.rows.extend(
            (0..snapshot.transfers.len()).filter(|&i| view.contains(snapshot.transfers[i].status)),
        );
        let transfers = &snapshot.transfers;
        self.rows.sort_by(|&a, &b| {
            let (a, b) = (&transfers[a], &transfers[b]);
            (a.priority, a.created_unix, a.id).cmp(&(b.priority, b.created_unix, b.id))
        });
        if let Some(pos) = self
            .selected
            .and_then(|id| self.rows.iter().position(|&i| transfers[i].id == id))
        {
            self.cursor.select(pos, self.rows.len());
        } else {
            self.cursor.clamp(self.rows.len());
        }
        self.selected = self
            .rows
            .get(self.cursor.selected())
            .map(|&i| transfers[i].id);
    }

    /// The transfer under the cursor.
    pub fn selected<'s>(&self, snapshot: &'s EngineSnapshot) -> Option<&'s TransferView> {
        let id = self.selected?;
        // Fast path: the row index is still right for this snapshot.
        self.rows
            .get(self.cursor.selected())
            .and_then(|&i| snapshot.transfers.get(i))
            .filter(|t| t.id == id)
            .or_else(|| snapshot.transfers.iter().find(|t| t.id == id))
    }

    /// Moving and switching views (while focused, or from anywhere for the
    /// view keys). Returns false for actions that are not about moving.
    pub fn navigate(&mut self, action: Action, snapshot: &EngineSnapshot) -> bool {
        let len = self.rows.len();
        match action {
            Action::Up => self.cursor.move_by(-1, len),
            Action::Down => self.cursor.move_by(1, len),
            Action::PageUp => self.cursor.page_up(len),
            Action::PageDown => self.cursor.page_down(len),
            Action::Top => self.cursor.top(),
            Action::Bottom => self.cursor.bottom(len),
            Action::CycleView => return self.set_view(self.view.next(), snapshot),
            Action::ViewActive => return self.set_view(QueueView::Active, snapshot),
            Action::ViewFailed => return self.set_view(QueueView::Failed, snapshot),
            Action::ViewCompleted => return self.set_view(QueueView::Completed, snapshot),
            Action::ViewAll => return self.set_view(QueueView::All, snapshot),
            _ => return false,
        }
        self.selected = self
            .rows
            .get(self.cursor.selected())
            .map(|&i| snapshot.transfers[i].id);
        true
    }

    /// A click on the `row`-th listed line (see [`ListCursor::click`]).
    pub fn click(&mut self, row: usize, snapshot: &EngineSnapshot) -> Option<bool> {
        let again = self.cursor.click(row, self.rows.len())?;
        self.selected = self
            .rows
            .get(self.cursor.selected())
            .map(|&i| snapshot.transfers[i].id);
        Some(again)
    }

    fn set_view(&mut self, view: QueueView, snapshot: &EngineSnapshot) -> bool {
        if view != self.view {
            self.view = view;
            self.cursor = ListCursor::default();
            self.refresh(snapshot);
        }
        true
    }

    /// The effect of a queue key on the selected transfer and what to say
    /// about it, or why it does not apply. Cancel is not here: it asks
    /// for confirmation first.
    pub fn command(
        &self,
        action: Action,
        snapshot: &EngineSnapshot,
    ) -> Result<(Effect, String), String> {
        let transfer = self
            .selected(snapshot)
            .ok_or_else(|| "no transfer selected in Queue".to_owned())?;
        let id = transfer.id;
        let name = display_name(transfer);
        let act = match (action, transfer.status) {
            (Action::PauseResume, TransferStatus::Pending | TransferStatus::InProgress) => {
                TransferAction::Pause
            }
            (Action::PauseResume, TransferStatus::Paused) => TransferAction::Resume,
            (Action::PauseResume, status) => {
                return Err(format!(
                    "{name} is {}: nothing to pause",
                    Theme::status_label(status)
                ));
            }
            (Action::Retry, TransferStatus::Failed | TransferStatus::Cancelled) => {
                TransferAction::Retry
            }
            (Action::Retry, _) => return Err(format!("{name} has not failed: nothing to retry")),
            (Action::PriorityUp, status) if !status.is_finished() => {
                TransferAction::Reprioritize(-1)
            }
            (Action::PriorityDown, status) if !status.is_finished() => {
                TransferAction::Reprioritize(1)
            }
            (Action::PriorityUp | Action::PriorityDown, _) => {
                return Err(format!(
                    "{name} is finished: its priority no longer matters"
                ));
            }
            _ => return Err("not a queue action".to_owned()),
        };
        let said = match act {
            TransferAction::Pause => format!("pausing {name} (p resumes it)"),
            TransferAction::Resume => format!("resuming {name}"),
            TransferAction::Retry if transfer.status == TransferStatus::Cancelled => {
                format!("starting {name} again (a cancelled transfer starts over)")
            }
            TransferAction::Retry => format!("retrying {name} from where it stopped"),
            TransferAction::Reprioritize(d) if d < 0 => format!("moved {name} up the queue"),
            TransferAction::Reprioritize(_) => format!("moved {name} down the queue"),
            TransferAction::Cancel => format!("cancelling {name}"),
            TransferAction::Overwrite => format!("replacing the agent's {name}"),
        };
        Ok((Effect::Act(id, act), said))
    }

    pub fn render(
        &mut self,
        area: Rect,
        buf: &mut Buffer,
        snapshot: &EngineSnapshot,
        theme: Theme,
        focused: bool,
    ) {
        let block =
            pane_block(Focus::Queue, focused, theme).title(self.views_title(theme).right_aligned());
        let inner = block.inner(area);
        block.render(area, buf);
        if inner.height == 0 || inner.width < 20 {
            return;
        }
        let columns = Columns::for_width(inner.width);
        columns.header(buf, inner.x, inner.y, theme);
        let rows_area = Rect {
            y: inner.y + 1,
            height: inner.height - 1,
            ..inner
        };
        if self.rows.is_empty() {
            buf.set_stringn(
                rows_area.x + 2,
                rows_area.y,
                self.view.placeholder(),
                rows_area.width.saturating_sub(2) as usize,
                theme.dim(),
            );
            return;
        }
        let window = self
            .cursor
            .window(rows_area.height as usize, self.rows.len());
        let cursor = self.cursor.selected();
        for (line, row) in window.enumerate() {
            let transfer = &snapshot.transfers[self.rows[row]];
            let y = rows_area.y + line as u16;
            let silent = snapshot.agent_silent.is_some();
            columns.row(buf, rows_area.x, y, transfer, theme, silent);
            if row == cursor {
                buf.set_style(
                    Rect::new(rows_area.x, y, rows_area.width, 1),
                    theme.cursor_style(focused),
                );
            }
        }
    }

    fn views_title(&self, theme: Theme) -> Line<'static> {
        let mut spans = vec![Span::raw(" ")];
        for (i, view) in QueueView::ALL.into_iter().enumerate() {
            if i > 0 {
                spans.push(Span::styled(" │ ", theme.dim()));
            }
            let text = format!("{} {}", view.label(), self.counts[i]);
            if view == self.view {
                spans.push(Span::styled(format!("[{text}]"), theme.title_style(true)));
            } else {
                spans.push(Span::styled(text, theme.dim()));
            }
        }
        spans.push(Span::raw(" "));
        Line::from(spans)
    }
}

/// The name a transfer is shown by: the last component of the path on the
/// side it goes to, escaped.
pub fn display_name(transfer: &TransferView) -> String {
    let path = match transfer.direction {
        Direction::Upload => &transfer.remote_path,
        Direction::Download => &transfer.local_path,
    };
    let name = path
        .rsplit(['/', '\\'])
        .find(|s| !s.is_empty())
        .unwrap_or(path.as_str());
    escape_control(name).into_owned()
}

/// Fraction done, from chunks when known, else bytes.
pub fn progress(transfer: &TransferView) -> f64 {
    if transfer.status == TransferStatus::Completed {
        return 1.0;
    }
    let fraction = if transfer.chunks_total > 0 {
        transfer.chunks_done as f64 / transfer.chunks_total as f64
    } else if transfer.size > 0 {
        transfer.bytes_done as f64 / transfer.size as f64
    } else {
        0.0
    };
    fraction.clamp(0.0, 1.0)
}

/// Column geometry of the queue table.
struct Columns {
    name: u16,
    transport: u16,
}

impl Columns {
    const DIR: u16 = 2;
    const STATE: u16 = 9;
    const PROGRESS: u16 = 10;
    const RATE: u16 = 10;
    const ETA: u16 = 6;
    const BAR: usize = 5;

    fn for_width(width: u16) -> Self {
        let fixed = Self::DIR + Self::STATE + Self::PROGRESS + Self::RATE + Self::ETA + 5;
        let flexible = width.saturating_sub(fixed);
        let transport = (flexible / 3).clamp(5, 16);
        Columns {
            name: flexible.saturating_sub(transport).max(4),
            transport,
        }
    }

    fn header(&self, buf: &mut Buffer, x: u16, y: u16, theme: Theme) {
        let style = theme.header_style();
        let cells: [(&str, u16, bool); 7] = [
            ("", Self::DIR, false),
            ("Name", self.name, false),
            ("State", Self::STATE, false),
            ("Progress", Self::PROGRESS, false),
            ("Rate", Self::RATE, true),
            ("ETA", Self::ETA, true),
            ("Transport", self.transport, false),
        ];
        let mut cx = x;
        for (text, width, right) in cells {
            put(buf, cx, y, text, width, right, style);
            cx += width + u16::from(width != Self::DIR);
        }
    }

    /// One transfer's row; `silent`: the agent is not answering.
    fn row(&self, buf: &mut Buffer, x: u16, y: u16, t: &TransferView, theme: Theme, silent: bool) {
        let mut cx = x;
        let arrow = match t.direction {
            Direction::Upload => "↑",
            Direction::Download => "↓",
        };
        put(buf, cx, y, arrow, Self::DIR, false, theme.accent());
        cx += Self::DIR;
        let name = match t.delta_of {
            // What moves against what it rebuilds: the point of a delta.
            Some(whole) => format!(
                "{} · delta {} of {}",
                display_name(t),
                format::bytes(t.size),
                format::bytes(whole)
            ),
            None => display_name(t),
        };
        put(buf, cx, y, &name, self.name, false, Style::default());
        cx += self.name + 1;
        put(
            buf,
            cx,
            y,
            Theme::status_label(t.status),
            Self::STATE,
            false,
            theme.status_style(t.status),
        );
        cx += Self::STATE + 1;
        let fraction = progress(t);
        let filled = (fraction * Self::BAR as f64).round() as usize;
        let bar = format!(
            "{}{} {:>4}",
            "█".repeat(filled),
            "░".repeat(Self::BAR - filled),
            format!("{}%", (fraction * 100.0).floor() as u64)
        );
        put(
            buf,
            cx,
            y,
            &bar,
            Self::PROGRESS,
            false,
            theme.status_style(t.status),
        );
        cx += Self::PROGRESS + 1;
        let rest_width = Self::RATE + 1 + Self::ETA + 1 + self.transport;
        match (&t.error, t.status) {
            (Some(error), TransferStatus::Failed) => {
                // The reason matters more than rate and ETA of a dead
                // transfer; shortened by whole words (Enter shows it all).
                let error = escape_control(error);
                put(
                    buf,
                    cx,
                    y,
                    &format::fit_words(&error, rest_width as usize),
                    rest_width,
                    false,
                    theme.bad(),
                );
            }
            (_, TransferStatus::InProgress) if silent => {
                // Not an ETA of 14 hours: nothing moves until it answers.
                put(
                    buf,
                    cx,
                    y,
                    "waiting for agent",
                    Self::RATE + 1 + Self::ETA,
                    true,
                    theme.warn(),
                );
                cx += Self::RATE + 1 + Self::ETA + 1;
                let transport = escape_control(format::transport_label(&t.transport));
                put(buf, cx, y, &transport, self.transport, false, theme.dim());
            }
            _ => {
                let running = t.status == TransferStatus::InProgress;
                let rate = if running {
                    format::rate(t.rate)
                } else {
                    String::new()
                };
                put(buf, cx, y, &rate, Self::RATE, true, Style::default());
                cx += Self::RATE + 1;
                let eta = t
                    .eta
                    .filter(|_| running)
                    .map(format::duration)
                    .unwrap_or_default();
                put(buf, cx, y, &eta, Self::ETA, true, Style::default());
                cx += Self::ETA + 1;
                let transport = escape_control(format::transport_label(&t.transport));
                put(buf, cx, y, &transport, self.transport, false, theme.dim());
            }
        }
    }
}

/// Write `text` into a column of `width`, cut with `…` or right-aligned.
fn put(buf: &mut Buffer, x: u16, y: u16, text: &str, width: u16, right: bool, style: Style) {
    let width = width as usize;
    let text = format::truncate(text, width);
    if right {
        buf.set_stringn(x, y, format!("{text:>width$}"), width, style);
    } else {
        buf.set_stringn(x, y, text, width, style);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_core::view::FaultCounters;
    use std::sync::Arc;

    pub(crate) fn transfer(n: u8, status: TransferStatus, priority: i64) -> TransferView {
        TransferView {
            id: TransferId([n; 16]),
            direction: Direction::Upload,
            local_path: format!("/home/me/file{n}.bin"),
            remote_path: format!("file{n}.bin"),
            peer: "agent".into(),
            size: 1000,
            status,
            chunks_total: 10,
            chunks_done: 4,
            bytes_done: 400,
            rate: 100.0,
            eta: None,
            transport: "local:/spool?profile=shipper".into(),
            priority,
            error: None,
            faults: FaultCounters::default(),
            chunk_map: Arc::from(vec![0u8; 10]),
            chunk_links: Arc::from(Vec::new()),
            resumed: false,
            created_unix: u64::from(n),
            sha256: None,
            mime: String::new(),
            delta_of: None,
        }
    }

    fn snapshot(transfers: Vec<TransferView>) -> EngineSnapshot {
        EngineSnapshot {
            transfers,
            ..Default::default()
        }
    }

    #[test]
    fn views_split_transfers_by_state_in_priority_order() {
        let snap = snapshot(vec![
            transfer(1, TransferStatus::InProgress, 5),
            transfer(2, TransferStatus::Failed, 0),
            transfer(3, TransferStatus::Pending, -1),
            transfer(4, TransferStatus::Completed, 0),
        ]);
        let mut queue = QueuePane::default();
        queue.refresh(&snap);
        assert_eq!(queue.counts, [2, 1, 1, 4]);
        let ids: Vec<u8> = queue
            .rows
            .iter()
            .map(|&i| snap.transfers[i].id.0[0])
            .collect();
        assert_eq!(ids, [3, 1]);
        queue.navigate(Action::ViewFailed, &snap);
        assert_eq!(queue.selected(&snap).map(|t| t.id.0[0]), Some(2));
        queue.navigate(Action::CycleView, &snap);
        assert_eq!(queue.view(), QueueView::Completed);
    }

    #[test]
    fn cursor_stays_on_the_same_transfer_across_snapshots() {
        let mut snap = snapshot(vec![
            transfer(1, TransferStatus::Pending, 0),
            transfer(2, TransferStatus::Pending, 1),
        ]);
        let mut queue = QueuePane::default();
        queue.refresh(&snap);
        queue.navigate(Action::Down, &snap);
        assert_eq!(queue.selected(&snap).map(|t| t.id.0[0]), Some(2));
        // Transfer 2 jumps ahead in the queue.
        snap.transfers[1].priority = -5;
        queue.refresh(&snap);
        assert_eq!(queue.selected(&snap).map(|t| t.id.0[0]), Some(2));
        assert_eq!(queue.cursor.selected(), 0);
    }

    #[test]
    fn commands_fit_the_state_of_the_selected_transfer() {
        let snap = snapshot(vec![transfer(1, TransferStatus::InProgress, 0)]);
        let mut queue = QueuePane::default();
        queue.refresh(&snap);
        let id = TransferId([1; 16]);
        assert_eq!(
            queue.command(Action::PauseResume, &snap).map(|(e, _)| e),
            Ok(Effect::Act(id, TransferAction::Pause))
        );
        assert_eq!(
            queue.command(Action::PriorityUp, &snap).map(|(e, _)| e),
            Ok(Effect::Act(id, TransferAction::Reprioritize(-1)))
        );
        assert!(queue.command(Action::Retry, &snap).is_err());

        let snap = snapshot(vec![transfer(1, TransferStatus::Failed, 0)]);
        queue.refresh(&snap);
        queue.navigate(Action::ViewFailed, &snap);
        assert_eq!(
            queue.command(Action::Retry, &snap).map(|(e, s)| {
                assert!(s.contains("from where it stopped"), "{s}");
                e
            }),
            Ok(Effect::Act(id, TransferAction::Retry))
        );
        assert!(queue.command(Action::PauseResume, &snap).is_err());

        let empty = snapshot(vec![]);
        queue.refresh(&empty);
        assert!(queue.command(Action::PauseResume, &empty).is_err());
    }

    #[test]
    fn names_are_escaped_and_taken_from_the_destination() {
        let mut t = transfer(1, TransferStatus::Pending, 0);
        t.remote_path = "dir/\x1b[2Jevil.txt".into();
        assert_eq!(display_name(&t), "\\x1b[2Jevil.txt");
        t.direction = Direction::Download;
        t.local_path = "/tmp/x/got.bin".into();
        assert_eq!(display_name(&t), "got.bin");
    }
}
