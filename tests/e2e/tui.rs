//! Issue 3, end to end: the real `pigeon` binary in a pseudo-terminal, with
//! nothing configured (so on the embedded local agent). We press keys like
//! a user, read the screen through a VT100 parser, and check that the file
//! arrived byte-exact in the agent's storage and that the terminal is given
//! back on quit.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::pty::Session;

fn wait_for_file(path: &Path, expected: &[u8], timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::fs::read(path).is_ok_and(|got| got == expected) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn pressing_u_uploads_the_file_under_the_cursor_to_the_embedded_agent() {
    let home = tempfile::tempdir().expect("home");
    let work = tempfile::tempdir().expect("work dir");
    // Several chunks' worth of incompressible bytes.
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(work.path().join("hello.bin"), &data).expect("write the file");

    let mut pigeon = Session::start(home.path(), work.path());
    pigeon.wait_for("local agent (embedded)", Duration::from_secs(30));
    pigeon.wait_for("hello.bin", Duration::from_secs(10));
    for title in ["Files", "Remote", "Queue", "Chunks", "Transports"] {
        assert!(pigeon.contents().contains(title), "{title} missing");
    }

    // The only entry is under the cursor.
    pigeon.press("u");
    let stored = home.path().join("storage").join("hello.bin");
    assert!(
        wait_for_file(&stored, &data, Duration::from_secs(60)),
        "hello.bin did not arrive byte-exact in {}:\n{}",
        stored.display(),
        pigeon.contents()
    );
    pigeon.wait_for("uploaded hello.bin", Duration::from_secs(10));

    // Help opens and closes.
    pigeon.press("?");
    pigeon.wait_for("Moving around", Duration::from_secs(5));
    // Esc alone (a following key in the same read would make it Alt-key).
    pigeon.press("\x1b");
    pigeon.wait_gone("Moving around", Duration::from_secs(5));

    pigeon.press("q");
    let status = pigeon.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "pigeon exited with {status:?}");
    // The alternate screen was left: the TUI's panes are gone.
    let screen = pigeon.screen.lock().expect("parser lock");
    assert!(
        !screen.screen().alternate_screen(),
        "still on the alternate screen"
    );
}

#[test]
fn sigterm_gives_the_terminal_back() {
    let home = tempfile::tempdir().expect("home");
    let work = tempfile::tempdir().expect("work dir");
    let mut pigeon = Session::start(home.path(), work.path());
    pigeon.wait_for("local agent (embedded)", Duration::from_secs(30));
    assert!(pigeon
        .screen
        .lock()
        .expect("parser lock")
        .screen()
        .alternate_screen());
    let pid = pigeon.child.process_id().expect("a pid");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    pigeon.wait_exit(Duration::from_secs(30));
    // Give the reader a moment to parse the last bytes.
    std::thread::sleep(Duration::from_millis(200));
    let screen = pigeon.screen.lock().expect("parser lock");
    assert!(
        !screen.screen().alternate_screen(),
        "still on the alternate screen after SIGTERM"
    );
    assert!(
        !screen.screen().hide_cursor(),
        "cursor left hidden after SIGTERM"
    );
}

/// Start pigeon, let it settle, stay idle for `idle`: (CPU clock ticks of
/// the whole process, TUI and embedded engine and agent; bytes written to
/// the terminal).
fn measure_idle(idle: Duration) -> (u64, usize) {
    let home = tempfile::tempdir().expect("home");
    let work = tempfile::tempdir().expect("work dir");
    let pigeon = Session::start(home.path(), work.path());
    // Settled: both listings are in.
    pigeon.wait_for("empty: press u in Files", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let pid = pigeon.child.process_id().expect("a pid");
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .expect("stat fields")
            .split_whitespace()
            .collect();
        // utime and stime (fields 14 and 15 of proc(5); 12 and 13 after the name).
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
    };
    let before = cpu();
    let bytes_before = pigeon.written.load(Ordering::SeqCst);
    std::thread::sleep(idle);
    (
        cpu() - before,
        pigeon.written.load(Ordering::SeqCst) - bytes_before,
    )
}

/// Idle, the screen is not redrawn: only what moves with time is written
/// (a link's graph scrolling for a minute after its last message, its
/// figures falling to zero), at most once a second, a few cells each time.
#[test]
fn an_idle_screen_is_not_redrawn() {
    let idle = Duration::from_secs(3);
    let (_, bytes) = measure_idle(idle);
    // One full redraw of the 80x24 screen is about 2,000 bytes.
    let most = 200 * idle.as_secs() as usize;
    assert!(
        bytes <= most,
        "an idle TUI wrote {bytes} bytes to the terminal in {idle:?} (at most {most})"
    );
}

/// The CPU an idle TUI uses over 10 s, for the README.
/// `cargo test --release --test e2e tui::idle_cpu -- --ignored --nocapture`
#[test]
#[ignore = "measurement: takes 12 s"]
fn idle_cpu_over_ten_seconds() {
    let (ticks, bytes) = measure_idle(Duration::from_secs(10));
    println!("idle for 10 s: {ticks} clock ticks of CPU (1 tick = 10 ms), {bytes} bytes written");
    assert_eq!(bytes, 0);
}

/// Issue 32: the Files pane did not notice a new file until the folder
/// was left and entered again. It watches the folder it shows.
#[test]
fn a_file_that_appears_in_the_folder_shown_is_listed_without_a_key() {
    let home = tempfile::tempdir().expect("home");
    let work = tempfile::tempdir().expect("work dir");
    std::fs::write(work.path().join("before.txt"), b"x").expect("a file");
    let mut pigeon = Session::start(home.path(), work.path());
    pigeon.wait_for("before.txt", Duration::from_secs(30));
    std::fs::write(work.path().join("appeared-later.txt"), b"y").expect("a new file");
    pigeon.wait_for("appeared-later.txt", Duration::from_secs(5));
    std::fs::remove_file(work.path().join("before.txt")).expect("removed");
    let started = std::time::Instant::now();
    while pigeon.contents().contains("before.txt") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a removed file is still listed:\n{}",
            pigeon.contents()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    pigeon.press("q");
}

#[test]
fn d_on_a_remote_folder_downloads_everything_in_it() {
    let home = tempfile::tempdir().expect("home");
    let work = tempfile::tempdir().expect("work dir");
    let storage = home.path().join("storage");
    std::fs::create_dir_all(storage.join("proj/sub")).expect("remote folders");
    std::fs::write(storage.join("proj/a.txt"), b"alpha\n").expect("a");
    std::fs::write(storage.join("proj/sub/b.txt"), b"beta\n").expect("b");

    let mut pigeon = Session::start(home.path(), work.path());
    pigeon.wait_for("local agent (embedded)", Duration::from_secs(30));
    pigeon.wait_for("proj/", Duration::from_secs(10));
    // To Remote, where the only entry is under the cursor.
    pigeon.press("\t");
    pigeon.press("d");
    // The notice is said while the folder is listed and fetched; on a busy
    // machine both files may be in before the screen is read again, and
    // the queue's count says so instead.
    let started = std::time::Instant::now();
    while !["downloading 1 folder", "done 2 │ all 2"]
        .iter()
        .any(|said| pigeon.contents().contains(said))
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the folder's download not said:\n{}",
            pigeon.contents()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for (rel, data) in [
        ("proj/a.txt", &b"alpha\n"[..]),
        ("proj/sub/b.txt", b"beta\n"),
    ] {
        let local = work.path().join(rel);
        assert!(
            wait_for_file(&local, data, Duration::from_secs(30)),
            "{} did not arrive:\n{}",
            local.display(),
            pigeon.contents()
        );
    }
    pigeon.press("q");
    assert!(pigeon.wait_exit(Duration::from_secs(30)).success());
}

#[test]
fn uploading_over_a_different_remote_file_asks_first() {
    let home = tempfile::tempdir().expect("home");
    let work = tempfile::tempdir().expect("work dir");
    let storage = home.path().join("storage");
    std::fs::create_dir_all(&storage).expect("storage");
    std::fs::write(storage.join("notes.txt"), b"the agent's notes\n").expect("theirs");
    std::fs::write(work.path().join("notes.txt"), b"my newer notes\n").expect("mine");

    let mut pigeon = Session::start(home.path(), work.path());
    pigeon.wait_for("local agent (embedded)", Duration::from_secs(30));
    pigeon.wait_for("notes.txt", Duration::from_secs(10));
    pigeon.press("u");
    pigeon.wait_for("already exists on the agent", Duration::from_secs(30));
    // n keeps the agent's file.
    pigeon.press("n");
    pigeon.wait_gone("already exists on the agent", Duration::from_secs(5));
    assert_eq!(
        std::fs::read(storage.join("notes.txt")).expect("theirs"),
        b"the agent's notes\n"
    );
    // Asked again, y replaces it.
    pigeon.press("u");
    pigeon.wait_for("already exists on the agent", Duration::from_secs(30));
    pigeon.press("y");
    assert!(
        wait_for_file(
            &storage.join("notes.txt"),
            b"my newer notes\n",
            Duration::from_secs(30)
        ),
        "the agent's file was not replaced:\n{}",
        pigeon.contents()
    );
    pigeon.press("q");
    assert!(pigeon.wait_exit(Duration::from_secs(30)).success());
}

#[test]
fn a_click_selects_the_file_that_u_then_uploads() {
    let home = tempfile::tempdir().expect("home");
    let work = tempfile::tempdir().expect("work dir");
    std::fs::write(work.path().join("first.txt"), b"first\n").expect("first");
    std::fs::write(work.path().join("second.txt"), b"second\n").expect("second");

    let mut pigeon = Session::start(home.path(), work.path());
    pigeon.wait_for("local agent (embedded)", Duration::from_secs(30));
    pigeon.wait_for("second.txt", Duration::from_secs(10));
    let screen = pigeon.contents();
    let row = screen
        .lines()
        .position(|l| l.contains("second.txt"))
        .expect("second.txt on screen");
    // An SGR mouse report: left button pressed and released at column 6
    // of that line (1-based).
    pigeon.press(&format!("\x1b[<0;6;{}M\x1b[<0;6;{}m", row + 1, row + 1));
    std::thread::sleep(Duration::from_millis(300));
    pigeon.press("u");
    let stored = home.path().join("storage");
    assert!(
        wait_for_file(
            &stored.join("second.txt"),
            b"second\n",
            Duration::from_secs(30)
        ),
        "the clicked file was not uploaded:\n{}",
        pigeon.contents()
    );
    assert!(
        !stored.join("first.txt").exists(),
        "the file under the old cursor went"
    );
    pigeon.press("q");
    assert!(pigeon.wait_exit(Duration::from_secs(30)).success());
}
