//! The chunk map: one cell per chunk, or per group of chunks when there are
//! more chunks than cells.
//!
//! [`ChunkMap`] draws the grid; a group shows its worst member (the
//! [`ChunkState`] order is worst = max), so one failed chunk among a thousand
//! still shows. [`ChunkCounts`] counts states for [`ChunkLegend`], which
//! names every state with its glyph and count, so the map reads without
//! colour too. [`ChunkMap::by_link`] draws each chunk by the link that
//! carried it instead (its number, in the link's colour), and
//! [`LinkLegend`] names the links.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use pigeon_core::view::ChunkState;

use crate::tui::theme::{Theme, CHUNK_STATES};

/// The grid of a chunk map, filling its area row by row.
pub struct ChunkMap<'a> {
    map: &'a [u8],
    /// Each chunk's link (255: none yet), to draw chunks by link.
    links: Option<&'a [u8]>,
    theme: Theme,
}

impl<'a> ChunkMap<'a> {
    /// `map` holds one [`ChunkState`] byte per chunk.
    pub fn new(map: &'a [u8], theme: Theme) -> Self {
        ChunkMap {
            map,
            links: None,
            theme,
        }
    }

    /// Draw each chunk a link carried by that link (one byte per chunk,
    /// 255 for none, as [`TransferView::chunk_links`](pigeon_core::view::TransferView)):
    /// a pending chunk, or one no link is known for, keeps its state.
    pub fn by_link(mut self, links: &'a [u8]) -> Self {
        if links.len() == self.map.len() {
            self.links = Some(links);
        }
        self
    }

    /// Chunks per cell so that `chunks` fit in `cells`.
    pub fn group_size(chunks: usize, cells: usize) -> usize {
        if cells == 0 {
            return chunks.max(1);
        }
        chunks.div_ceil(cells).max(1)
    }
}

impl Widget for ChunkMap<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let cells = area.width as usize * area.height as usize;
        if cells == 0 || self.map.is_empty() {
            return;
        }
        let group = ChunkMap::group_size(self.map.len(), cells);
        let width = area.width as usize;
        let mut glyph = [0u8; 4];
        for (i, chunk) in self.map.chunks(group).enumerate() {
            let (at, worst) = chunk
                .iter()
                .map(|&b| ChunkState::from_u8(b))
                .enumerate()
                .max_by_key(|&(_, s)| s)
                .unwrap_or((0, ChunkState::Pending));
            // By link: the link of the member the group shows.
            let link = self
                .links
                .and_then(|l| l.get(i * group + at).copied())
                .filter(|&l| l != NO_LINK && worst != ChunkState::Pending);
            let (symbol, style) = match link {
                Some(l) => (self.theme.link_glyph(l), self.theme.link_style(l)),
                None => (self.theme.chunk_glyph(worst), self.theme.chunk_style(worst)),
            };
            let x = area.x + (i % width) as u16;
            let y = area.y + (i / width) as u16;
            if let Some(cell) = buf.cell_mut((x, y)) {
                cell.set_symbol(symbol.encode_utf8(&mut glyph))
                    .set_style(style);
            }
        }
    }
}

/// In a chunk's link byte: no link has carried it yet.
const NO_LINK: u8 = u8::MAX;

/// One line naming each link with its glyph and chunk count, then the
/// chunks no link carried yet: `1 link 1 40  2 link 2 23  · pending 5`, or
/// `1:40 2:23 ·5` when that does not fit.
pub struct LinkLegend {
    /// Chunks per link, by link.
    per_link: Vec<(u8, u64)>,
    rest: u64,
    theme: Theme,
}

impl LinkLegend {
    /// For the chunks of `map` (states) and `links` (their links) that
    /// [`ChunkMap::by_link`] draws by link.
    pub fn new(map: &[u8], links: &[u8], theme: Theme) -> Self {
        let mut counts = std::collections::BTreeMap::new();
        let mut rest = 0;
        for (&state, &link) in map.iter().zip(links) {
            if link == NO_LINK || ChunkState::from_u8(state) == ChunkState::Pending {
                rest += 1;
            } else {
                *counts.entry(link).or_insert(0u64) += 1;
            }
        }
        LinkLegend {
            per_link: counts.into_iter().collect(),
            rest,
            theme,
        }
    }

    fn line(&self, long: bool) -> Line<'static> {
        let mut spans = Vec::new();
        let sep = if long { "  " } else { " " };
        for &(link, count) in &self.per_link {
            if !spans.is_empty() {
                spans.push(Span::raw(sep));
            }
            let glyph = self.theme.link_glyph(link);
            spans.push(Span::styled(glyph.to_string(), self.theme.link_style(link)));
            spans.push(Span::raw(if long {
                format!(" link {} {count}", u32::from(link) + 1)
            } else {
                format!(":{count}")
            }));
        }
        let pending = ChunkState::Pending;
        spans.push(Span::raw(sep));
        spans.push(Span::styled(
            self.theme.chunk_glyph(pending).to_string(),
            self.theme.chunk_style(pending),
        ));
        spans.push(Span::raw(if long {
            format!(" {} {}", Theme::chunk_label(pending), self.rest)
        } else {
            self.rest.to_string()
        }));
        Line::from(spans)
    }
}

impl Widget for LinkLegend {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let long = self.line(true);
        let line = if long.width() <= area.width as usize {
            long
        } else {
            self.line(false)
        };
        line.render(area, buf);
    }
}

/// How many chunks are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkCounts([u64; 5]);

impl ChunkCounts {
    pub fn of(map: &[u8]) -> Self {
        let mut counts = [0u64; 5];
        for &b in map {
            counts[ChunkState::from_u8(b) as usize] += 1;
        }
        ChunkCounts(counts)
    }

    pub fn get(&self, state: ChunkState) -> u64 {
        self.0[state as usize]
    }
}

/// One line naming each state with glyph and count: `█ acked 3  · pending 5`,
/// or, when that does not fit, `█3 ·5 ▒0 r0 X0`.
pub struct ChunkLegend {
    counts: ChunkCounts,
    theme: Theme,
}

impl ChunkLegend {
    pub fn new(counts: ChunkCounts, theme: Theme) -> Self {
        ChunkLegend { counts, theme }
    }

    /// Every state named (`long`), or only those some chunk is in, named
    /// (`!long && named`) or by glyph alone.
    fn line(&self, long: bool, named: bool) -> Line<'static> {
        let mut spans = Vec::with_capacity(CHUNK_STATES.len() * 2);
        let shown = CHUNK_STATES
            .into_iter()
            .filter(|&s| long || self.counts.get(s) > 0);
        for (i, state) in shown.enumerate() {
            if i > 0 {
                spans.push(Span::raw(if long { "  " } else { " " }));
            }
            let glyph = self.theme.chunk_glyph(state);
            let count = self.counts.get(state);
            spans.push(Span::styled(
                glyph.to_string(),
                self.theme.chunk_style(state),
            ));
            spans.push(Span::raw(match (long, named) {
                (true, _) => format!(" {} {count}", Theme::chunk_label(state)),
                (false, true) => format!("{count} {}", short_label(state)),
                (false, false) => count.to_string(),
            }));
        }
        Line::from(spans)
    }
}

/// The words of the middle-sized legend: `█800 done ·797 to go ▒2 in flight`.
fn short_label(state: ChunkState) -> &'static str {
    match state {
        ChunkState::Acked => "done",
        ChunkState::Pending => "to go",
        ChunkState::InFlight => "in flight",
        ChunkState::Retried => "retried",
        ChunkState::Failed => "failed",
    }
}

impl Widget for ChunkLegend {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let fits = |l: &Line| l.width() <= area.width as usize;
        let line = [(true, true), (false, true)]
            .into_iter()
            .map(|(long, named)| self.line(long, named))
            .find(fits)
            .unwrap_or_else(|| self.line(false, false));
        line.render(area, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::style::{Color, Style};

    const A: u8 = ChunkState::Acked as u8;
    const P: u8 = ChunkState::Pending as u8;
    const I: u8 = ChunkState::InFlight as u8;
    const R: u8 = ChunkState::Retried as u8;
    const F: u8 = ChunkState::Failed as u8;

    fn render(widget: impl Widget, width: u16, height: u16) -> Buffer {
        let mut buf = Buffer::empty(Rect::new(0, 0, width, height));
        widget.render(buf.area, &mut buf);
        buf
    }

    #[test]
    fn one_cell_per_chunk_when_they_fit() {
        let map = [A, A, I, P, R, F, P];
        let buf = render(ChunkMap::new(&map, Theme::monochrome()), 4, 2);
        assert_eq!(buf, Buffer::with_lines(["██▒·", "rX· "]));
    }

    #[test]
    fn a_group_shows_its_worst_chunk() {
        // 12 chunks in 4 cells: groups of 3.
        let map = [A, A, A, A, F, A, A, I, P, A, A, A];
        let buf = render(ChunkMap::new(&map, Theme::monochrome()), 2, 2);
        assert_eq!(buf, Buffer::with_lines(["█X", "▒█"]));
    }

    #[test]
    fn a_hundred_thousand_chunks_fit_the_area() {
        let map = vec![A; 100_000];
        let buf = render(ChunkMap::new(&map, Theme::monochrome()), 10, 3);
        assert_eq!(
            buf,
            Buffer::with_lines(["██████████", "██████████", "██████████"])
        );
        assert_eq!(ChunkMap::group_size(100_000, 30), 3_334);
    }

    #[test]
    fn cells_are_coloured_by_state() {
        let map = [A, F];
        let buf = render(ChunkMap::new(&map, Theme::colored()), 2, 1);
        let mut expected = Buffer::with_lines(["█X"]);
        expected.set_style(Rect::new(0, 0, 1, 1), Style::default().fg(Color::Green));
        expected.set_style(Rect::new(1, 0, 1, 1), Style::default().fg(Color::Red));
        assert_eq!(buf, expected);
    }

    /// Issue 28, item 6: by link, a chunk a link carried shows that link's
    /// number in its colour; a pending one keeps its state.
    #[test]
    fn by_link_a_chunk_shows_the_link_that_carried_it() {
        let map = [A, I, P, R];
        let links = [0, 1, NO_LINK, 1];
        let buf = render(
            ChunkMap::new(&map, Theme::monochrome()).by_link(&links),
            4,
            1,
        );
        assert_eq!(buf, Buffer::with_lines(["12·2"]));
        let buf = render(ChunkMap::new(&map, Theme::colored()).by_link(&links), 4, 1);
        let mut expected = Buffer::with_lines(["12·2"]);
        let cyan = Style::default().fg(Color::Cyan);
        let magenta = Style::default().fg(Color::Magenta);
        expected.set_style(Rect::new(0, 0, 1, 1), cyan);
        expected.set_style(Rect::new(1, 0, 1, 1), magenta);
        expected.set_style(Rect::new(2, 0, 1, 1), Style::default().fg(Color::DarkGray));
        expected.set_style(Rect::new(3, 0, 1, 1), magenta);
        assert_eq!(buf, expected);
        // Links that do not match the map are not used.
        let buf = render(ChunkMap::new(&map, Theme::monochrome()).by_link(&[0]), 4, 1);
        assert_eq!(buf, Buffer::with_lines(["█▒·r"]));
    }

    #[test]
    fn the_link_legend_counts_each_links_chunks() {
        let map = [A, A, I, P];
        let links = [0, 1, 1, NO_LINK];
        let legend = || LinkLegend::new(&map, &links, Theme::monochrome());
        let buf = render(legend(), 35, 1);
        assert_eq!(
            buf,
            Buffer::with_lines(["1 link 1 1  2 link 2 2  · pending 1"])
        );
        let buf = render(legend(), 12, 1);
        assert_eq!(buf, Buffer::with_lines(["1:1 2:2 ·1  "]));
    }

    #[test]
    fn counts_cover_every_state() {
        let counts = ChunkCounts::of(&[A, A, P, I, R, F, F, F]);
        assert_eq!(CHUNK_STATES.map(|s| counts.get(s)), [2, 1, 1, 1, 3]);
    }

    #[test]
    fn legend_names_states_when_there_is_room() {
        let counts = ChunkCounts::of(&[A, A, P]);
        let buf = render(ChunkLegend::new(counts, Theme::monochrome()), 64, 1);
        assert_eq!(
            buf,
            Buffer::with_lines([
                "█ acked 2  · pending 1  ▒ in flight 0  r retried 0  X failed 0  "
            ])
        );
    }

    #[test]
    fn legend_goes_short_when_narrow() {
        let counts = ChunkCounts::of(&[A, A, P]);
        // Named while it fits, states no chunk is in left out.
        let buf = render(ChunkLegend::new(counts, Theme::monochrome()), 20, 1);
        assert_eq!(buf, Buffer::with_lines(["█2 done ·1 to go    "]));
        // Glyphs and counts when even that does not.
        let buf = render(ChunkLegend::new(counts, Theme::monochrome()), 10, 1);
        assert_eq!(buf, Buffer::with_lines(["█2 ·1     "]));
    }
}
