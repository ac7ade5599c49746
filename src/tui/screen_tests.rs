//! Whole-screen snapshots on a `TestBackend`, at 80x24 and 120x40, in the
//! main states: empty, uploading, a failed transfer, help open. Inputs are
//! hand-built [`EngineSnapshot`](pigeon_core::view::EngineSnapshot)s with
//! fixed ids and numbers (see [`fixtures`](super::fixtures)), so the
//! snapshots need no filters. Plus the render benchmark (ignored by default).

use std::time::Instant;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use pigeon_core::view::{Event, TransferStatus};

use super::app::App;
use super::fixtures::{self, remote_entry, snapshot, transfer};

const SIZES: [(u16, u16); 2] = [(80, 24), (120, 40)];

fn draw(app: &mut App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test backend");
    terminal.draw(|frame| app.render(frame)).expect("draw");
    terminal
}

fn press(app: &mut App, code: KeyCode) {
    let _ = app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn assert_screens(name: &str, mut app: App) {
    for (w, h) in SIZES {
        let terminal = draw(&mut app, w, h);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), terminal.backend());
    }
}

#[test]
fn screen_empty() {
    let mut app = fixtures::app(vec![]);
    app.on_snapshot(snapshot(vec![]));
    assert_screens("empty", app);
}

#[test]
fn screen_uploading() {
    let mut app = fixtures::app(vec![remote_entry("earlier.txt", 12)]);
    app.on_snapshot(snapshot(vec![
        transfer(1, "dataset.bin", TransferStatus::InProgress, 1600, 800),
        transfer(2, "Cargo.toml", TransferStatus::Pending, 1, 0),
    ]));
    let _ = app.on_event(Event::Started {
        id: fixtures::id(1),
        name: "dataset.bin".into(),
        resumed: false,
    });
    assert_screens("uploading", app);
}

/// Issue 28, item 6: a transfer two links carried shows, on `c`, each
/// chunk by its link (numbered, in the link's colour), with a legend per
/// link and the footer naming the key; `c` again goes back to states.
#[test]
fn screen_chunks_by_link() {
    let mut app = fixtures::app(vec![]);
    let mut striped = transfer(1, "dataset.bin", TransferStatus::InProgress, 400, 200);
    let links: Vec<u8> = (0..400u32)
        .map(|i| if i < 203 { (i % 3 == 2) as u8 } else { u8::MAX })
        .collect();
    striped.chunk_links = links.into();
    app.on_snapshot(snapshot(vec![striped]));
    let before = format!("{:?}", draw(&mut app, 120, 40).backend());
    assert!(before.contains("c: by state"), "the footer names the key");
    press(&mut app, KeyCode::Char('c'));
    let after = format!("{:?}", draw(&mut app, 120, 40).backend());
    assert!(
        after.contains("c: by link") && after.contains("link 2"),
        "{after}"
    );
    press(&mut app, KeyCode::Char('c'));
    assert_eq!(format!("{:?}", draw(&mut app, 120, 40).backend()), before);
    press(&mut app, KeyCode::Char('c'));
    assert_screens("chunks_by_link", app);
}

/// Issue 31: an upload that moves only the differences says so in the
/// queue, against the file it rebuilds: "delta 1.0 MiB of 48 MiB".
#[test]
fn screen_delta_upload() {
    let mut app = fixtures::app(vec![]);
    let mut delta = transfer(1, "model.bin", TransferStatus::InProgress, 16, 6);
    delta.delta_of = Some(50_000_000);
    app.on_snapshot(snapshot(vec![delta]));
    let screen = format!("{:?}", draw(&mut app, 120, 40).backend());
    assert!(
        screen.contains("model.bin · delta 1.0 MiB of 48 MiB"),
        "{screen}"
    );
    assert_screens("delta_upload", app);
}

#[test]
fn screen_failed_transfer() {
    let mut app = fixtures::app(vec![remote_entry("earlier.txt", 12)]);
    let mut failed = transfer(
        3,
        "evil\x1b]52;c;aGk=\x07name.bin",
        TransferStatus::Failed,
        40,
        13,
    );
    failed.error = Some("the agent refused: quota exceeded (2.1 GB of 2 GB used)".into());
    let name = failed.remote_path.clone();
    let error = failed.error.clone().unwrap_or_default();
    app.on_snapshot(snapshot(vec![
        failed,
        transfer(4, "README.md", TransferStatus::Completed, 1, 1),
    ]));
    let _ = app.on_event(Event::Failed {
        id: fixtures::id(3),
        name,
        error,
    });
    press(&mut app, KeyCode::Char('4'));
    assert_screens("failed", app);
}

/// Issue 32: a link that failed for a setting says FAILED and why in the
/// Transports pane, beside one that works, and the notice line says it
/// (from the snapshot alone, whatever the engine logs).
#[test]
fn screen_a_failed_transport() {
    let mut app = fixtures::app(vec![remote_entry("earlier.txt", 12)]);
    let problem = "telegram refused the bot token (401 Unauthorized): check the token in its environment variable or file (from @BotFather)";
    let uri = "telegram:@agent_bot?token_env=PIGEON_TG_TOKEN";
    let failed = pigeon_core::view::TransportHealth {
        uri: uri.into(),
        profile: String::new(),
        up: false,
        throughput: vec![],
        messages_last_minute: 0,
        messages_per_minute_limit: Some(60),
        errors: 2,
        rtt: None,
        problems: vec![problem.into()],
        ..fixtures::transport("shipper")
    };
    let mut snap = (*snapshot(vec![transfer(
        1,
        "dataset.bin",
        TransferStatus::InProgress,
        1600,
        800,
    )]))
    .clone();
    snap.transports = vec![failed, fixtures::transport("shipper")];
    // The app notices it from the snapshot alone, whatever the engine logs.
    app.on_snapshot(std::sync::Arc::new(snap));
    assert_screens("transport_failed", app);
}

#[test]
fn screen_held_in_quarantine_with_the_quota_in_use() {
    let mut app = fixtures::app(vec![remote_entry("earlier.txt", 12)]);
    app.on_msg(super::effect::Msg::Quota(pigeon_core::policy::QuotaLine {
        who: "laptop".into(),
        usage: pigeon_core::policy::Usage {
            bytes: 1900 << 20,
            files: 12,
            open: 1,
            today: 300 << 20,
        },
        limits: pigeon_core::policy::Limits {
            quota: Some(pigeon_core::policy::Size(2 << 30)),
            ..Default::default()
        },
    }));
    let mut held = transfer(5, "report.pdf", TransferStatus::Failed, 10, 10);
    held.error =
        Some("the agent refused: held in quarantine: ELF executable named report.pdf".into());
    let error = held.error.clone().unwrap_or_default();
    app.on_snapshot(snapshot(vec![held]));
    let _ = app.on_event(Event::Failed {
        id: fixtures::id(5),
        name: "report.pdf".into(),
        error,
    });
    press(&mut app, KeyCode::Char('2'));
    assert_screens("quarantined", app);
}

#[test]
fn screen_what_another_peer_shares() {
    let dir = |path: &str| pigeon_core::engine::RemoteEntry {
        is_dir: true,
        ..remote_entry(path, 0)
    };
    let root = || {
        let mut app = fixtures::app(vec![
            dir("shared"),
            dir("logs"),
            remote_entry("notes.txt", 77),
        ]);
        app.on_snapshot(snapshot(vec![]));
        press(&mut app, KeyCode::Tab);
        app
    };
    assert_screens("shares_root", root());
    let mut app = root();
    press(&mut app, KeyCode::Down);
    // Into shared/ and the folder one owner shares.
    for (at, entries) in [
        ("shared", vec![dir("shared/alice")]),
        (
            "shared/alice",
            vec![
                dir("shared/alice/results"),
                remote_entry("shared/alice/model.bin", 52_428_800),
            ],
        ),
    ] {
        press(&mut app, KeyCode::Enter);
        app.on_msg(super::effect::Msg::RemoteListed {
            dir: at.into(),
            result: Ok(entries),
        });
    }
    assert_screens("shared_by_alice", app);
}

#[test]
fn screen_transfer_detail() {
    let mut app = fixtures::app(vec![]);
    let mut failed = transfer(3, "runs/42/model.bin", TransferStatus::Failed, 40, 13);
    failed.error = Some(
        "cannot write /srv/pigeon/storage/runs/42/.pigeon-3f2a.part: No space left on device (os error 28): free space on the agent, then press r to resume: the 13 chunks it holds are kept".into(),
    );
    failed.sha256 = Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into());
    failed.faults.retransmitted = 4;
    failed.faults.corrupt = 1;
    app.on_snapshot(snapshot(vec![failed]));
    press(&mut app, KeyCode::Char('4'));
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Enter);
    // The whole error, wrapped, never cut.
    let text = draw(&mut app, 80, 24).backend().to_string();
    let flat: String = text
        .lines()
        .filter_map(|l| l.split('║').nth(1))
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join(" ");
    for part in [
        "No space left on device",
        "chunks it holds are kept",
        "9f86d081884c7d65",
    ] {
        assert!(flat.contains(part), "{part} missing:\n{text}");
    }
    assert_screens("detail", app);
}

#[test]
fn a_silent_agent_is_said_in_every_pane_that_waits_on_it() {
    // The Remote pane still waits for its first listing.
    let mut app = fixtures::app_unlisted();
    let mut silent = (*snapshot(vec![transfer(
        1,
        "dataset.bin",
        TransferStatus::InProgress,
        1600,
        800,
    )]))
    .clone();
    silent.agent_silent = Some(std::time::Duration::from_secs(42));
    app.on_snapshot(std::sync::Arc::new(silent));
    let text = draw(&mut app, 120, 40).backend().to_string();
    for said in [
        "no answer from the agent for 42s",
        "waiting for agent",
        "SILENT",
        "no answer 42s",
    ] {
        assert!(text.contains(said), "{said:?} missing:\n{text}");
    }
    assert!(!text.contains("● up"), "{text}");
}

/// Issue 32: at 80x24 a silent agent's notices were cut mid-word (`no
/// answer from the agent for 14s; st`, `○ SILENT telegram-text  no ans`).
/// Every word on screen is whole: shortened text leaves words out and says
/// so with `…`, and L shows the notice whole.
#[test]
fn screen_a_silent_agent_and_a_long_notice_cut_no_word() {
    let mut app = fixtures::app_unlisted();
    let mut silent = (*snapshot(vec![transfer(
        1,
        "dataset.bin",
        TransferStatus::InProgress,
        1600,
        800,
    )]))
    .clone();
    silent.agent_silent = Some(std::time::Duration::from_secs(14));
    silent.transports = vec![fixtures::transport("telegram-text")];
    app.on_snapshot(std::sync::Arc::new(silent));
    let notice = "no answer from the agent over local:/home/dev/.pigeon/spool?profile=telegram-text for 14 s; still trying until the --timeout of 600 s (progress is kept)";
    let _ = app.on_event(Event::Log {
        level: pigeon_core::view::LogLevel::Error,
        message: notice.into(),
    });
    let remote = "no answer from the agent for 14s; still asking (R asks again)";
    let words: std::collections::HashSet<&str> = [
        notice,
        remote,
        "○ SILENT telegram-text no answer 14s",
        "local agent (embedded) L whole",
    ]
    .iter()
    .flat_map(|text| text.split(' '))
    .chain(["telegram-text"])
    .collect();
    let screen = draw(&mut app, 80, 24).backend().to_string();
    for token in screen.split(|c: char| c.is_whitespace() || "│┃\"".contains(c)) {
        // Figures are left out (a "0" is no cut "600").
        for part in token
            .split('…')
            .filter(|p| p.chars().any(char::is_alphabetic))
        {
            let cut = words
                .iter()
                .any(|w| w.len() > part.len() && (w.starts_with(part) || w.ends_with(part)));
            assert!(
                words.contains(part) || !cut,
                "{part:?} is a cut word:\n{screen}"
            );
        }
    }
    assert!(screen.contains("SILENT telegram-text"), "{screen}");
    assert!(screen.contains("still asking (R asks again)"), "{screen}");
    // The log popup holds the notice whole, wrapped.
    press(&mut app, KeyCode::Char('L'));
    let popup = draw(&mut app, 80, 24).backend().to_string();
    let flat: String = popup
        .lines()
        .filter_map(|l| l.split('║').nth(1))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(flat.contains("(progress is kept)"), "{popup}");
    assert!(flat.contains("--timeout of 600 s"), "{popup}");
    press(&mut app, KeyCode::Esc);
    assert_screens("silent_agent", app);
}

fn click(app: &mut App, column: u16, row: u16) -> Vec<super::effect::Effect> {
    app.on_mouse(crossterm::event::MouseEvent {
        kind: crossterm::event::MouseEventKind::Down(crossterm::event::MouseButton::Left),
        column,
        row,
        modifiers: KeyModifiers::NONE,
    })
}

#[test]
fn the_mouse_focuses_selects_opens_and_scrolls() {
    let mut app = fixtures::app(vec![remote_entry("earlier.txt", 12)]);
    app.on_snapshot(snapshot(vec![
        transfer(1, "one.bin", TransferStatus::InProgress, 10, 5),
        transfer(2, "two.bin", TransferStatus::Pending, 10, 0),
    ]));
    let text = |app: &mut App| draw(app, 80, 24).backend().to_string();
    let screen = text(&mut app);
    let line_of = |needle: &str| {
        screen
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not on screen:\n{screen}")) as u16
    };
    // A click on Files' third row ("src/" is second after "docs/"...).
    let src = line_of("src/");
    assert!(click(&mut app, 5, src).is_empty());
    assert_eq!(
        app_files_current(&app).as_deref(),
        Some("src"),
        "the click selects the row"
    );
    // A second click on it opens the folder.
    let effects = click(&mut app, 5, src);
    assert!(
        matches!(effects.as_slice(), [super::effect::Effect::ReadDir(p)] if p.ends_with("src")),
        "{effects:?}"
    );
    // A click in the Queue on the second transfer selects it; a second
    // click opens its details.
    let two = line_of("two.bin");
    click(&mut app, 10, two);
    click(&mut app, 10, two);
    let screen = text(&mut app);
    assert!(
        screen.contains("Transfer") && screen.contains("02020202"),
        "{screen}"
    );
    press(&mut app, KeyCode::Esc);
    // The wheel over Files moves its cursor three rows.
    let _ = app.on_mouse(crossterm::event::MouseEvent {
        kind: crossterm::event::MouseEventKind::ScrollDown,
        column: 5,
        row: src,
        modifiers: KeyModifiers::NONE,
    });
    assert_eq!(
        app_files_current(&app).as_deref(),
        Some("notes \x1b[31mred\x1b[0m.txt")
    );
}

fn app_files_current(app: &App) -> Option<String> {
    app.files_current()
}

#[test]
fn screen_help_open() {
    let mut app = fixtures::app(vec![]);
    app.on_snapshot(snapshot(vec![]));
    press(&mut app, KeyCode::Char('?'));
    assert_screens("help", app);
}

#[test]
fn screen_too_small_says_so() {
    let mut app = fixtures::app(vec![]);
    let terminal = draw(&mut app, 40, 10);
    let text = terminal.backend().to_string();
    assert!(text.contains("pigeon needs at least 60x16"), "{text}");
}

#[test]
fn every_pane_title_is_on_screen_at_80x24() {
    let mut app = fixtures::app(vec![]);
    app.on_snapshot(snapshot(vec![transfer(
        1,
        "a",
        TransferStatus::InProgress,
        10,
        5,
    )]));
    let text = draw(&mut app, 80, 24).backend().to_string();
    for title in [
        "Files",
        "Remote",
        "Queue",
        "Chunks",
        "Transports",
        "local agent (embedded)",
    ] {
        assert!(text.contains(title), "{title} missing:\n{text}");
    }
    let text = draw(&mut app, 120, 40).backend().to_string();
    assert!(text.contains("Log"), "{text}");
}

#[test]
fn hostile_names_never_reach_the_terminal_raw() {
    let mut app = fixtures::app(vec![remote_entry("\x1b[2Jwipe.txt", 1)]);
    app.on_snapshot(snapshot(vec![transfer(
        1,
        "\x1b]0;title\x07x",
        TransferStatus::InProgress,
        10,
        5,
    )]));
    let terminal = draw(&mut app, 120, 40);
    for cell in terminal.backend().buffer().content() {
        assert!(
            !cell.symbol().chars().any(char::is_control),
            "raw control character on screen: {:?}",
            cell.symbol()
        );
    }
}

/// Render time of one frame with 1,000 transfers queued and a transfer of
/// 100,000 chunks selected. Run with
/// `cargo test --release -- --ignored --nocapture tui_render_bench`.
#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn tui_render_bench() {
    let mut transfers = vec![transfer(
        0,
        "huge.bin",
        TransferStatus::InProgress,
        100_000,
        50_000,
    )];
    for n in 1..1000u32 {
        let mut t = transfer(
            1,
            &format!("file-{n:04}.bin"),
            TransferStatus::Pending,
            100,
            0,
        );
        t.id = pigeon_core::view::TransferId([
            (n % 251) as u8,
            (n / 251) as u8,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
        ]);
        t.created_unix += u64::from(n);
        transfers.push(t);
    }
    let mut app = fixtures::app(vec![]);
    app.on_snapshot(snapshot(transfers.clone()));
    for (w, h) in [(80u16, 24u16), (120, 40), (250, 70)] {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("test backend");
        terminal
            .draw(|frame| app.render(frame))
            .expect("warm-up draw");
        let frames = 200;
        let start = Instant::now();
        for i in 0..frames {
            // A fresh snapshot every frame, as during a transfer.
            if i % 2 == 0 {
                app.on_snapshot(snapshot(transfers.clone()));
            }
            terminal.draw(|frame| app.render(frame)).expect("draw");
        }
        let per_frame = start.elapsed().as_secs_f64() * 1000.0 / f64::from(frames);
        println!("tui_render_bench {w}x{h}: {per_frame:.3} ms per frame (1,000 transfers, 100,000-chunk map)");
        if !cfg!(debug_assertions) {
            assert!(
                per_frame < 5.0,
                "{per_frame:.3} ms per frame is over the 5 ms target"
            );
        }
    }
}
