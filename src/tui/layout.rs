//! Where each pane goes, for any terminal size.
//!
//! ```text
//! ┌Files──────────────┐┌Remote─────────────┐
//! └───────────────────┘└───────────────────┘
//! ┌Queue─────────────────────────────────────┐
//! └──────────────────────────────────────────┘
//! ┌Chunks────────────────┐┌Transports───────┐
//! └──────────────────────┘└─────────────────┘
//! ┌Log (30 rows and more)────────────────────┐
//! └──────────────────────────────────────────┘
//!  status line
//! ```
//!
//! At 80x24 every pane but Log is on screen (Log is one key away as a
//! popup); bigger terminals give the extra rows to all panes and show Log.

use ratatui::layout::Rect;

/// Smallest usable terminal.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;

/// Rows from which the Log pane is shown.
const LOG_FROM_HEIGHT: u16 = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Screen {
    pub files: Rect,
    pub remote: Rect,
    pub queue: Rect,
    pub chunks: Rect,
    pub transports: Rect,
    pub log: Option<Rect>,
    pub status: Rect,
}

/// The screen for `area`, or `None` when it is too small to be useful.
pub fn split(area: Rect) -> Option<Screen> {
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        return None;
    }
    let body = area.height - 1;
    let log_height = if area.height >= LOG_FROM_HEIGHT {
        (body / 6).max(5)
    } else {
        0
    };
    let panes = body - log_height;
    let top = panes / 3;
    let queue = panes / 3;
    let bottom = panes - top - queue;

    let row = |y: u16, height: u16| Rect::new(area.x, area.y + y, area.width, height);
    let (files, remote) = split_columns(row(0, top), area.width / 2);
    let queue_area = row(top, queue);
    let transports_width = (area.width * 2 / 5).clamp(30, 60);
    let (chunks, transports) =
        split_columns(row(top + queue, bottom), area.width - transports_width);
    let log = (log_height > 0).then(|| row(top + queue + bottom, log_height));
    Some(Screen {
        files,
        remote,
        queue: queue_area,
        chunks,
        transports,
        log,
        status: row(body, 1),
    })
}

fn split_columns(area: Rect, left_width: u16) -> (Rect, Rect) {
    let left = Rect {
        width: left_width,
        ..area
    };
    let right = Rect {
        x: area.x + left_width,
        width: area.width - left_width,
        ..area
    };
    (left, right)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers_without_overlap(screen: &Screen, area: Rect) {
        let mut rects = vec![
            screen.files,
            screen.remote,
            screen.queue,
            screen.chunks,
            screen.transports,
            screen.status,
        ];
        rects.extend(screen.log);
        let total: u32 = rects
            .iter()
            .map(|r| u32::from(r.width) * u32::from(r.height))
            .sum();
        assert_eq!(total, u32::from(area.width) * u32::from(area.height));
        for (i, a) in rects.iter().enumerate() {
            assert!(area.contains(a.as_position()), "{a:?}");
            for b in &rects[i + 1..] {
                assert!(!a.intersects(*b), "{a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn eighty_by_twenty_four_has_every_main_pane() {
        let area = Rect::new(0, 0, 80, 24);
        let screen = split(area).expect("80x24 is usable");
        covers_without_overlap(&screen, area);
        assert_eq!(screen.log, None);
        assert!(screen.queue.height >= 6, "{screen:?}");
        assert!(screen.files.height >= 6);
        assert!(screen.transports.width >= 30);
    }

    #[test]
    fn big_screens_show_the_log() {
        for (w, h) in [(120, 40), (200, 60), (61, 30)] {
            let area = Rect::new(0, 0, w, h);
            let screen = split(area).expect("usable");
            covers_without_overlap(&screen, area);
            assert!(screen.log.is_some());
        }
    }

    #[test]
    fn tiny_screens_are_refused() {
        assert_eq!(split(Rect::new(0, 0, 59, 24)), None);
        assert_eq!(split(Rect::new(0, 0, 80, 15)), None);
    }
}
