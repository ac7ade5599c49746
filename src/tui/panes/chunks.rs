//! The "Chunks" pane: the chunk map of the transfer selected in Queue.
//!
//! Stateless: it draws whatever transfer it is given, with the map filling
//! the pane, the legend with counts on the last line, the transfer's name
//! and progress in the title, and the group size when chunks are grouped.
//! When several links carried the transfer's chunks, the map can show
//! each chunk by its link instead of its state ([`ChunkView`]); the footer
//! says which, and the key that changes it.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Widget;

use pigeon_core::view::{plural, TransferView};

use super::queue::{display_name, progress};
use super::{pane_block, Focus};
use crate::tui::format;
use crate::tui::theme::Theme;
use crate::tui::widgets::chunk_map::{ChunkCounts, ChunkLegend, ChunkMap, LinkLegend};

/// How the map colours chunks, and the key that switches (for the footer).
#[derive(Clone, Copy, Debug, Default)]
pub struct ChunkView<'a> {
    /// By the link that carried each chunk, when several did.
    pub by_link: bool,
    pub key: Option<&'a str>,
}

pub fn render(
    area: Rect,
    buf: &mut Buffer,
    transfer: Option<&TransferView>,
    theme: Theme,
    focused: bool,
    view: ChunkView<'_>,
) {
    let mut block = pane_block(Focus::Chunks, focused, theme);
    let Some(transfer) = transfer else {
        let inner = block.inner(area);
        block.render(area, buf);
        buf.set_stringn(
            inner.x + 1,
            inner.y,
            "select a transfer in Queue",
            inner.width.saturating_sub(1) as usize,
            theme.dim(),
        );
        return;
    };
    let name = display_name(transfer);
    let percent = (progress(transfer) * 100.0).floor() as u64;
    let title = format!(" {name} {percent}% ");
    let title_width = area.width.saturating_sub(10) as usize;
    block = block.title(
        Line::styled(
            format::truncate(&title, title_width).into_owned(),
            theme.dim(),
        )
        .right_aligned(),
    );

    let map: &[u8] = &transfer.chunk_map;
    let inner_probe = block.inner(area);
    let grid = Rect {
        height: inner_probe.height.saturating_sub(1),
        ..inner_probe
    };
    let group = ChunkMap::group_size(map.len(), grid.width as usize * grid.height as usize);
    // Only a transfer several links carried has links to show.
    let links: &[u8] = &transfer.chunk_links;
    let several = !links.is_empty() && links.len() == map.len();
    let by_link = view.by_link && several;
    if several {
        let now = if by_link { "by link" } else { "by state" };
        let hint = view.key.map_or(String::new(), |k| format!("{k}: "));
        block = block.title_bottom(Line::styled(format!(" {hint}{now} "), theme.dim()));
    }
    if group > 1 {
        block = block.title_bottom(
            Line::styled(
                format!(" 1 cell = {} ", plural(group as u64, "chunk")),
                theme.dim(),
            )
            .right_aligned(),
        );
    }
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.height == 0 {
        return;
    }
    if map.is_empty() {
        let text = if transfer.chunks_total == 0 {
            "waiting for the manifest…".to_owned()
        } else {
            plural(transfer.chunks_total, "chunk")
        };
        buf.set_stringn(
            inner.x + 1,
            inner.y,
            text,
            inner.width.saturating_sub(1) as usize,
            theme.dim(),
        );
    } else if by_link {
        ChunkMap::new(map, theme).by_link(links).render(grid, buf);
    } else {
        ChunkMap::new(map, theme).render(grid, buf);
    }
    let legend = Rect {
        y: inner.bottom() - 1,
        height: 1,
        ..inner
    };
    if by_link {
        LinkLegend::new(map, links, theme).render(legend, buf);
    } else {
        ChunkLegend::new(ChunkCounts::of(map), theme).render(legend, buf);
    }
}
