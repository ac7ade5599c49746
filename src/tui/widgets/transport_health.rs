//! [`TransportHealthWidget`]: one channel's health in three lines.
//!
//! ```text
//! ● up   telegram-text     rtt 120 ms  38%
//! ▁▂▄█▆▃▁              2.0 KiB/s
//! 12/60 msg/min  errors 0  retry in 4s
//! ```
//!
//! Line one says whether the channel works (up; rate limited; DOWN or
//! SILENT while its circuit is open; probing; FAILED, with the reason in
//! place of the graph, when only the user can fix it), how far away it is, and its
//! share of what all channels sent in the last minute; line two
//! is a sparkline of bytes per second over the last minute and the latest
//! rate; line three the message budget, errors, and the provider's
//! `retry_after` when it asked us to slow down. Lines are dropped from the
//! bottom when the area is shorter.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Sparkline, Widget};

use std::time::Duration;

use pigeon_core::view::{LinkState, TransportHealth};

use crate::tui::format;
use crate::tui::theme::Theme;
use pigeon_core::policy::escape_control;

/// Lines one transport takes.
pub const HEIGHT: u16 = 3;

/// Width of the rate figure after the sparkline.
const RATE_WIDTH: u16 = 11;

/// The rate shown is the mean of this many one-second samples.
const RATE_SECONDS: usize = 5;

/// How much of the first line to show: see
/// [`TransportHealthWidget::status_line_within`].
#[derive(Clone, Copy)]
struct Detail {
    rtt: bool,
    share: bool,
    silence: Silence,
    profile: Profile,
}

impl Detail {
    const GLYPH_AND_STATE: Detail = Detail {
        rtt: false,
        share: false,
        silence: Silence::Hidden,
        profile: Profile::Hidden,
    };
}

/// How a silent agent is said after the profile.
#[derive(Clone, Copy)]
enum Silence {
    /// `no answer 14s`
    Said,
    /// `14s` (SILENT before it says the rest)
    Bare,
    Hidden,
}

#[derive(Clone, Copy)]
enum Profile {
    Whole,
    /// The part before the first `-`.
    Kind,
    Hidden,
}

pub struct TransportHealthWidget<'a> {
    health: &'a TransportHealth,
    theme: Theme,
    /// The agent has not answered for this long over the links.
    agent_silent: Option<Duration>,
}

impl<'a> TransportHealthWidget<'a> {
    pub fn new(health: &'a TransportHealth, theme: Theme) -> Self {
        TransportHealthWidget {
            health,
            theme,
            agent_silent: None,
        }
    }

    /// The agent is not answering: a link that takes our messages is
    /// shown as silent, not up.
    pub fn agent_silent(mut self, silent: Option<Duration>) -> Self {
        self.agent_silent = silent;
        self
    }

    /// The first line in `width`. What does not fit is left out whole, in
    /// this order: the share, the round trip, the words "no answer" (SILENT
    /// says it), the silence's length, the profile's flavour
    /// (`telegram-text` becomes `telegram`), the profile. A figure is never
    /// cut from its unit, nor a word in its middle.
    fn status_line_within(&self, width: usize) -> Line<'static> {
        use Silence::{Bare, Hidden, Said};
        let whole = Detail {
            rtt: true,
            share: true,
            silence: Said,
            profile: Profile::Whole,
        };
        [
            whole,
            Detail {
                share: false,
                ..whole
            },
            Detail {
                rtt: false,
                share: false,
                ..whole
            },
            Detail {
                rtt: false,
                share: false,
                silence: Bare,
                ..whole
            },
            Detail {
                rtt: false,
                share: false,
                silence: Hidden,
                ..whole
            },
            Detail {
                rtt: false,
                share: false,
                silence: Hidden,
                profile: Profile::Kind,
            },
            Detail {
                rtt: false,
                share: false,
                silence: Hidden,
                profile: Profile::Hidden,
            },
        ]
        .into_iter()
        .map(|detail| self.status_line(detail))
        .find(|l| l.width() <= width)
        .unwrap_or_else(|| self.status_line(Detail::GLYPH_AND_STATE))
    }

    fn status_line(&self, detail: Detail) -> Line<'static> {
        let h = self.health;
        let theme = self.theme;
        let (glyph, word, style) = match h.state {
            // Whatever its circuit says: it cannot work as it is set up.
            _ if !h.problems.is_empty() => ("✗", "FAILED", theme.bad()),
            LinkState::Up if self.agent_silent.is_some() => ("○", "SILENT", theme.bad()),
            LinkState::Up => ("●", "up  ", theme.good()),
            LinkState::RateLimited { .. } => ("◑", "rate limited", theme.warn()),
            LinkState::Probing => ("◐", "probing", theme.warn()),
            LinkState::Open { silent: false, .. } => ("○", "DOWN", theme.bad()),
            LinkState::Open { silent: true, .. } => ("○", "SILENT", theme.bad()),
        };
        let profile = if h.profile.is_empty() {
            format::transport_label(&h.uri)
        } else {
            &h.profile
        };
        let profile = match detail.profile {
            Profile::Whole => profile,
            // The transport before its flavour: `telegram` of `telegram-text`.
            Profile::Kind => profile.split_once('-').map_or(profile, |(kind, _)| kind),
            Profile::Hidden => "",
        };
        let mut spans = vec![Span::styled(format!("{glyph} {word}"), style)];
        if !profile.is_empty() {
            spans.push(Span::raw(" "));
            spans.push(Span::styled(
                escape_control(profile).into_owned(),
                theme.accent(),
            ));
        }
        if !h.problems.is_empty() {
            // The reason is on the next line; figures mean nothing here.
        } else if let Some(silent) = self.agent_silent.filter(|_| h.state == LinkState::Up) {
            // How long matters more than the last round trip.
            let said = match detail.silence {
                Silence::Said => format!("  no answer {}", format::duration(silent)),
                Silence::Bare => format!("  {}", format::duration(silent)),
                Silence::Hidden => String::new(),
            };
            if !said.is_empty() {
                spans.push(Span::styled(said, theme.bad()));
            }
        } else if let Some(rtt) = h.rtt.filter(|_| detail.rtt) {
            spans.push(Span::raw(format!("  rtt {}", format::rtt(rtt))));
        }
        if let Some(share) = h.share.filter(|_| detail.share) {
            spans.push(Span::raw(format!("  {:.0}%", share * 100.0)));
        }
        Line::from(spans)
    }

    /// The budget line in `width`, with the link's notes after it: each
    /// whole if it fits, else its first word (`base64`), else not at all.
    fn budget_line_within(&self, width: usize) -> Line<'static> {
        let mut line = self.budget_line();
        for note in &self.health.notes {
            let note = escape_control(note).into_owned();
            let short = note
                .split([':', ' '])
                .next()
                .unwrap_or_default()
                .to_string();
            let room = width.saturating_sub(line.width());
            let said = [note, short]
                .into_iter()
                .map(|n| format!("  {n}"))
                .find(|n| n.chars().count() <= room && n.len() > 2);
            if let Some(said) = said {
                line.spans.push(Span::styled(said, self.theme.warn()));
            }
        }
        line
    }

    fn budget_line(&self) -> Line<'static> {
        let h = self.health;
        let theme = self.theme;
        let mut spans = Vec::new();
        match h.messages_per_minute_limit {
            Some(limit) => {
                let near = u64::from(h.messages_last_minute) * 10 >= u64::from(limit) * 9;
                spans.push(Span::styled(
                    format!("{}/{limit} msg/min", h.messages_last_minute),
                    if near { theme.warn() } else { Style::default() },
                ));
            }
            None => spans.push(Span::raw(format!("{} msg/min", h.messages_last_minute))),
        }
        spans.push(Span::styled(
            format!("  errors {}", h.errors),
            if h.errors > 0 {
                theme.bad()
            } else {
                Style::default()
            },
        ));
        // Chunks it carried that never arrived (said only once there are).
        if h.faults.lost > 0 {
            spans.push(Span::styled(
                format!("  lost {}", h.faults.lost),
                theme.warn(),
            ));
        }
        let wait = match h.state {
            LinkState::Open { retry_in, .. } => Some(retry_in),
            _ => h.retry_after,
        };
        if let Some(wait) = wait {
            spans.push(Span::styled(
                format!("  retry in {}", format::duration(wait)),
                theme.warn(),
            ));
        }
        Line::from(spans)
    }
}

impl Widget for TransportHealthWidget<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.height == 0 || area.width == 0 {
            return;
        }
        let row = |i: u16| Rect::new(area.x, area.y + i, area.width, 1);
        self.status_line_within(usize::from(area.width))
            .render(row(0), buf);
        if area.height < 2 {
            return;
        }
        if !self.health.problems.is_empty() {
            // Why, in `pigeon transports test`'s words, in place of a
            // graph of nothing; the notice line and the log hold it whole.
            let why = escape_control(&self.health.problems.join("; ")).into_owned();
            let why = format::first_words(&why, usize::from(area.width)).into_owned();
            Line::styled(why, self.theme.bad()).render(row(1), buf);
            if area.height >= 3 {
                self.budget_line_within(usize::from(area.width))
                    .render(row(2), buf);
            }
            return;
        }
        let graph_width = area.width.saturating_sub(RATE_WIDTH);
        let samples = &self.health.throughput;
        let tail = &samples[samples.len().saturating_sub(graph_width as usize)..];
        Sparkline::default()
            .data(tail.iter().copied())
            .style(self.theme.accent())
            .render(Rect::new(area.x, area.y + 1, graph_width, 1), buf);
        // Over the same few seconds as a transfer's rate (the status bar's),
        // in bytes on the wire (encoding and framing included).
        let recent = &samples[samples.len().saturating_sub(RATE_SECONDS)..];
        let mean = if recent.is_empty() {
            0.0
        } else {
            recent.iter().sum::<u64>() as f64 / recent.len() as f64
        };
        let rate = format!(
            "{:>width$}",
            format::rate(mean),
            width = RATE_WIDTH as usize
        );
        buf.set_stringn(
            area.x + graph_width,
            area.y + 1,
            rate,
            RATE_WIDTH as usize,
            Style::default(),
        );
        if area.height < 3 {
            return;
        }
        self.budget_line_within(usize::from(area.width))
            .render(row(2), buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_core::view::FaultCounters;
    use ratatui::style::Modifier;
    use std::time::Duration;

    fn health() -> TransportHealth {
        TransportHealth {
            uri: "local:/tmp/spool?profile=telegram-text".into(),
            profile: "telegram-text".into(),
            up: true,
            state: LinkState::Up,
            share: None,
            rtt: Some(Duration::from_millis(120)),
            throughput: vec![0, 1024, 2048, 4096, 8192, 4096, 2048],
            messages_last_minute: 12,
            messages_per_minute_limit: Some(60),
            errors: 0,
            retry_after: None,
            faults: FaultCounters::default(),
            problems: vec![],
            notes: vec![],
        }
    }

    fn render(h: &TransportHealth, width: u16, height: u16) -> Buffer {
        let mut buf = Buffer::empty(Rect::new(0, 0, width, height));
        TransportHealthWidget::new(h, Theme::monochrome()).render(buf.area, &mut buf);
        buf
    }

    #[test]
    fn healthy_channel() {
        assert_eq!(
            render(&health(), 32, 3),
            Buffer::with_lines([
                "● up   telegram-text  rtt 120 ms",
                " ▁▂▄█▄▂                4.0 KiB/s",
                "12/60 msg/min  errors 0         ",
            ])
        );
    }

    /// Issue 28 item 6: a link's loss is seen where its errors are.
    #[test]
    fn the_chunks_a_link_lost_are_counted_beside_its_errors() {
        let h = TransportHealth {
            faults: FaultCounters {
                lost: 7,
                ..FaultCounters::default()
            },
            ..health()
        };
        let buf = render(&h, 40, 3);
        let budget: String = (0..40).map(|x| buf[(x, 2)].symbol().to_string()).collect();
        assert_eq!(budget.trim_end(), "12/60 msg/min  errors 0  lost 7");
    }

    /// Issue 29: a link that fell back to base64 says so after its
    /// figures, in a word when the line is short.
    #[test]
    fn a_link_that_fell_back_to_base64_says_so() {
        let h = TransportHealth {
            notes: vec!["base64: dense text arrived mangled".into()],
            ..health()
        };
        let budget = |width| {
            let buf = render(&h, width, 3);
            (0..width)
                .map(|x| buf[(x, 2)].symbol().to_string())
                .collect::<String>()
                .trim_end()
                .to_string()
        };
        assert_eq!(
            budget(60),
            "12/60 msg/min  errors 0  base64: dense text arrived mangled"
        );
        assert_eq!(budget(40), "12/60 msg/min  errors 0  base64");
        assert_eq!(budget(28), "12/60 msg/min  errors 0");
    }

    #[test]
    fn a_figure_that_does_not_fit_is_left_out_not_cut() {
        let h = TransportHealth {
            share: Some(0.38),
            ..health()
        };
        let first = |width| {
            let buf = render(&h, width, 1);
            (0..width)
                .map(|x| buf[(x, 0)].symbol().to_string())
                .collect::<String>()
        };
        assert_eq!(first(37), "● up   telegram-text  rtt 120 ms  38%");
        assert_eq!(first(33), "● up   telegram-text  rtt 120 ms ");
        assert_eq!(first(28), "● up   telegram-text        ");
    }

    #[test]
    fn channel_that_is_down_and_was_told_to_wait() {
        let h = TransportHealth {
            up: false,
            state: LinkState::Open {
                silent: false,
                retry_in: Duration::from_secs(42),
            },
            rtt: None,
            throughput: vec![],
            messages_last_minute: 60,
            errors: 3,
            retry_after: Some(Duration::from_secs(42)),
            ..health()
        };
        let mut expected = Buffer::with_lines([
            "○ DOWN telegram-text                    ",
            "                                   0 B/s",
            "60/60 msg/min  errors 3  retry in 42s   ",
        ]);
        // Without colour, what is wrong is bold.
        let bold = Style::default().add_modifier(Modifier::BOLD);
        expected.set_style(Rect::new(0, 0, 6, 1), bold);
        expected.set_style(Rect::new(13, 2, 10, 1), bold);
        assert_eq!(render(&h, 40, 3), expected);
    }

    #[test]
    fn a_silent_link_a_probed_one_and_a_rate_limited_one_say_so_with_their_share() {
        let line = |h: &TransportHealth| {
            let buf = render(h, 44, 3);
            let rows: Vec<String> = (0..3)
                .map(|y| {
                    (0..44)
                        .map(|x| buf[(x, y)].symbol().to_owned())
                        .collect::<String>()
                        .trim_end()
                        .to_owned()
                })
                .collect();
            rows
        };
        let silent = TransportHealth {
            up: false,
            state: LinkState::Open {
                silent: true,
                retry_in: Duration::from_secs(8),
            },
            share: Some(0.0),
            ..health()
        };
        let rows = line(&silent);
        assert_eq!(rows[0], "○ SILENT telegram-text  rtt 120 ms  0%");
        assert!(rows[2].ends_with("retry in 8s"), "{rows:?}");
        let probing = TransportHealth {
            state: LinkState::Probing,
            share: Some(0.375),
            ..health()
        };
        assert_eq!(
            line(&probing)[0],
            "◐ probing telegram-text  rtt 120 ms  38%"
        );
        let limited = TransportHealth {
            state: LinkState::RateLimited {
                wait: Duration::from_secs(30),
            },
            retry_after: Some(Duration::from_secs(30)),
            ..health()
        };
        let rows = line(&limited);
        assert!(
            rows[0].starts_with("◑ rate limited telegram-text"),
            "{rows:?}"
        );
        assert!(rows[2].ends_with("retry in 30s"), "{rows:?}");
    }

    /// Issue 32: a link that only the user can fix says FAILED and why.
    #[test]
    fn a_failed_link_says_so_and_why_in_place_of_its_graph() {
        let h = TransportHealth {
            up: false,
            errors: 2,
            problems: vec!["telegram refused the bot token (401 Unauthorized)".into()],
            ..health()
        };
        let buf = render(&h, 44, 3);
        let rows: Vec<String> = (0..3)
            .map(|y| {
                (0..44)
                    .map(|x| buf[(x, y)].symbol().to_owned())
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect();
        assert_eq!(rows[0], "✗ FAILED telegram-text");
        // Whole words: the notice line and the log hold all of it.
        assert_eq!(rows[1], "telegram refused the bot token (401 …");
        assert_eq!(rows[2], "12/60 msg/min  errors 2");
    }

    /// Issue 32: at 80x24 the pane is 30 columns and the line was cut to
    /// `○ SILENT telegram-text  no ans`.
    #[test]
    fn a_silent_agent_is_said_in_whole_words_however_narrow_the_pane() {
        let h = health();
        let first = |width: u16| {
            let mut buf = Buffer::empty(Rect::new(0, 0, width, 1));
            TransportHealthWidget::new(&h, Theme::monochrome())
                .agent_silent(Some(Duration::from_secs(14)))
                .render(buf.area, &mut buf);
            (0..width)
                .map(|x| buf[(x, 0)].symbol().to_string())
                .collect::<String>()
                .trim_end()
                .to_owned()
        };
        assert_eq!(first(40), "○ SILENT telegram-text  no answer 14s");
        assert_eq!(first(30), "○ SILENT telegram-text  14s");
        assert_eq!(first(24), "○ SILENT telegram-text");
        assert_eq!(first(18), "○ SILENT telegram");
        assert_eq!(first(10), "○ SILENT");
    }

    #[test]
    fn unlimited_channel_and_short_area() {
        let h = TransportHealth {
            profile: String::new(),
            uri: "local:/tmp/x".into(),
            messages_per_minute_limit: None,
            ..health()
        };
        assert_eq!(
            render(&h, 30, 1),
            Buffer::with_lines(["● up   local  rtt 120 ms      "])
        );
        let buf = render(&h, 40, 3);
        let last: String = (0..40).map(|x| buf[(x, 2)].symbol().to_owned()).collect();
        assert_eq!(last.trim_end(), "12 msg/min  errors 0");
    }
}
