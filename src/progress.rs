//! The plain CLI's progress line: one per transfer, fitted to the terminal.
//!
//! ```text
//! runs/42/model.bin [=========>          ] 50 MiB/100 MiB 2.0 MiB/s eta 25s
//! ```
//!
//! [`line`] builds it for a width; [`terminal_width`] says which. A line
//! wider than the terminal wraps and the bars redraw over the wrong rows,
//! so whatever does not fit goes, in this order: the bar shrinks, then the
//! eta, then the rate, then the name loses its middle (never its ends:
//! the folder it is in and its extension), then the bar. Sizes stay: they
//! are the progress. A name over 40 columns is whole only where the bar
//! has its full length beside it.

use std::time::Duration;

use unicode_width::UnicodeWidthStr;

use crate::tui::format;

/// What one progress line says.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress<'a> {
    /// The remote path, escaped.
    pub name: &'a str,
    pub done: u64,
    pub total: u64,
    /// Bytes a second, over the last few seconds.
    pub rate: f64,
    pub eta: Option<Duration>,
}

/// Most columns the name takes while the line has room for the rest.
const NAME_MAX: usize = 40;
/// Fewest columns a shortened name keeps.
const NAME_MIN: usize = 12;
const BAR_MAX: usize = 30;
/// A bar shorter than this says nothing a percentage would not.
const BAR_MIN: usize = 10;

/// The columns of the terminal on stderr; else `COLUMNS`; else 80.
pub fn terminal_width() -> usize {
    use std::io::IsTerminal;
    let from_terminal = std::io::stderr()
        .is_terminal()
        .then(crossterm::terminal::size)
        .and_then(Result::ok)
        .map(|(columns, _)| usize::from(columns));
    from_terminal
        .or_else(|| std::env::var("COLUMNS").ok()?.trim().parse().ok())
        .filter(|&w| w > 0)
        .unwrap_or(80)
}

/// The line in at most `width` columns.
pub fn line(p: &Progress<'_>, width: usize) -> String {
    let sizes = format!("{}/{}", format::bytes(p.done), format::bytes(p.total));
    let rate = format::rate(p.rate);
    let eta = p.eta.map(|d| format!("eta {}", format::duration(d)));
    let name_width = p.name.width();
    // Optional fields, the first left out first.
    let with_rate = [Some(rate.as_str()), eta.as_deref()];
    let with_rate_only = [Some(rate.as_str()), None];
    let none = [None, None];
    for optional in [with_rate, with_rate_only, none] {
        let tail = tail(&sizes, &optional);
        // " [" + bar + "] " around the bar.
        let rest = width.saturating_sub(tail.width() + 4);
        // Whole when the bar has its full length beside it; else at most
        // NAME_MAX columns, so the bar keeps room.
        let name = name_width.min(NAME_MAX.max(rest.saturating_sub(BAR_MAX)));
        if rest >= name + BAR_MIN {
            let bar = (rest - name).min(BAR_MAX);
            return assemble(p, name, Some(bar), &tail);
        }
    }
    // Only the sizes are left: the name gives way to the bar, then the bar
    // to the name.
    let tail = tail(&sizes, &[None, None]);
    let rest = width.saturating_sub(tail.width() + 4);
    if rest >= NAME_MIN + BAR_MIN {
        return assemble(p, rest - BAR_MIN, Some(BAR_MIN), &tail);
    }
    let rest = width.saturating_sub(tail.width() + 1);
    let name = rest.max(NAME_MIN.min(name_width));
    let line = assemble(p, name, None, &tail);
    if line.width() <= width {
        line
    } else {
        // Narrower than a name and its sizes: the sizes alone.
        format::truncate(&sizes, width).into_owned()
    }
}

/// The sizes and the optional fields kept, space-separated.
fn tail(sizes: &str, optional: &[Option<&str>]) -> String {
    std::iter::once(sizes)
        .chain(optional.iter().flatten().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `name [bar] tail`, the name in `name_width` columns (shortened in its
/// middle when longer).
fn assemble(p: &Progress<'_>, name_width: usize, bar: Option<usize>, tail: &str) -> String {
    let name = format::elide_middle(p.name, name_width);
    let pad = " ".repeat(name_width.saturating_sub(name.width()));
    match bar {
        Some(bar) => format!("{name}{pad} [{}] {tail}", bar_text(p, bar)),
        None => format!("{name}{pad} {tail}"),
    }
}

/// `=====>    ` in `width` columns.
fn bar_text(p: &Progress<'_>, width: usize) -> String {
    let fraction = if p.total == 0 {
        0.0
    } else {
        (p.done as f64 / p.total as f64).clamp(0.0, 1.0)
    };
    let filled = ((width as f64) * fraction).floor() as usize;
    if filled >= width {
        return "=".repeat(width);
    }
    format!("{}>{}", "=".repeat(filled), " ".repeat(width - filled - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(name: &str) -> Progress<'_> {
        Progress {
            name,
            done: 50 << 20,
            total: 100 << 20,
            rate: 2.0 * 1024.0 * 1024.0,
            eta: Some(Duration::from_secs(25)),
        }
    }

    const LONG: &str = "datasets/2026-11/experiment-42/checkpoints/model-final.safetensors";

    /// Issue 32: progress lines of about 101 columns wrapped in a
    /// 100-column terminal.
    #[test]
    fn a_progress_line_never_outgrows_its_terminal() {
        for name in ["a.bin", "runs/42/model.bin", LONG] {
            for width in [60, 80, 100, 200] {
                let shown = line(&progress(name), width);
                assert!(
                    shown.width() <= width,
                    "{} columns at {width}: {shown:?}",
                    shown.width()
                );
                assert!(shown.contains("50 MiB/100 MiB"), "{shown:?}");
            }
        }
    }

    #[test]
    fn optional_fields_go_before_the_name_is_shortened() {
        let p = progress("runs/42/model.bin");
        let at = |width| line(&p, width);
        assert_eq!(
            at(200),
            "runs/42/model.bin [===============>              ] 50 MiB/100 MiB 2.0 MiB/s eta 25s"
        );
        assert_eq!(
            at(100),
            "runs/42/model.bin [===============>              ] 50 MiB/100 MiB 2.0 MiB/s eta 25s"
        );
        assert_eq!(
            at(80),
            "runs/42/model.bin [=============>             ] 50 MiB/100 MiB 2.0 MiB/s eta 25s"
        );
        assert_eq!(
            at(60),
            "runs/42/model.bin [=======>       ] 50 MiB/100 MiB 2.0 MiB/s"
        );
    }

    #[test]
    fn a_long_name_loses_its_middle_and_keeps_its_ends() {
        let p = progress(LONG);
        let at = |width| line(&p, width);
        let wide = at(200);
        assert!(wide.starts_with(&format!("{LONG} [")), "{wide}");
        assert!(wide.ends_with("eta 25s"), "{wide}");
        let middle = at(100);
        assert!(middle.starts_with("datasets/2026-1…"), "{middle}");
        assert!(middle.contains("…"), "{middle}");
        assert!(middle.contains(".safetensors ["), "{middle}");
        let narrow = at(60);
        assert!(narrow.starts_with("datasets"), "{narrow}");
        assert!(narrow.contains(".safetensors ["), "{narrow}");
        assert!(narrow.ends_with("50 MiB/100 MiB"), "{narrow}");
        assert!(!narrow.contains("eta"), "{narrow}");
    }

    #[test]
    fn a_tiny_terminal_still_gets_the_sizes() {
        let p = progress(LONG);
        assert!(line(&p, 30).width() <= 30);
        assert!(line(&p, 30).ends_with("50 MiB/100 MiB"));
        assert_eq!(line(&p, 10), "50 MiB/10…");
    }

    #[test]
    fn the_bar_is_full_when_done_and_empty_without_a_size() {
        let done = Progress {
            done: 7,
            total: 7,
            ..progress("x")
        };
        assert_eq!(bar_text(&done, 5), "=====");
        let unknown = Progress {
            done: 0,
            total: 0,
            ..progress("x")
        };
        assert_eq!(bar_text(&unknown, 5), ">    ");
    }
}
