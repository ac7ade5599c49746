//! The real `pigeon` TUI on a pseudo-terminal, driven as a person would:
//! keys in, the screen read back through a VT100 parser.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{native_pty_system, CommandBuilder, PtySize};

pub const COLS: u16 = 100;
pub const ROWS: u16 = 30;

/// A running `pigeon` on a pty, its screen kept up to date by a reader thread.
pub struct Session {
    pub screen: Arc<Mutex<vt100::Parser>>,
    /// Bytes the program has written to the terminal so far.
    pub written: Arc<AtomicUsize>,
    pub writer: Box<dyn Write + Send>,
    pub child: Box<dyn portable_pty::Child + Send + Sync>,
}

impl Session {
    pub fn start(home: &Path, cwd: &Path) -> Session {
        Session::start_with(home, cwd, &[])
    }

    /// `pigeon --home HOME ARGS…` in `cwd`.
    pub fn start_with(home: &Path, cwd: &Path, args: &[&str]) -> Session {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: ROWS,
                cols: COLS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("open a pty");
        let mut cmd = CommandBuilder::new(super::bin());
        cmd.arg("--home");
        cmd.arg(home);
        cmd.args(args);
        cmd.cwd(cwd);
        cmd.env("TERM", "xterm-256color");
        cmd.env_remove("NO_COLOR");
        let child = pty.slave.spawn_command(cmd).expect("spawn pigeon");
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().expect("pty reader");
        let writer = pty.master.take_writer().expect("pty writer");
        let screen = Arc::new(Mutex::new(vt100::Parser::new(ROWS, COLS, 0)));
        let parser = Arc::clone(&screen);
        let written = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&written);
        // Keep the master alive as long as the reader runs.
        let master = pty.master;
        std::thread::spawn(move || {
            let _master = master;
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                counter.fetch_add(n, Ordering::SeqCst);
                parser.lock().expect("parser lock").process(&buf[..n]);
            }
        });
        Session {
            screen,
            written,
            writer,
            child,
        }
    }

    pub fn contents(&self) -> String {
        self.screen.lock().expect("parser lock").screen().contents()
    }

    pub fn press(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).expect("write keys");
        self.writer.flush().expect("flush keys");
    }

    /// Wait until the screen shows `text`, or fail with the screen.
    pub fn wait_for(&self, text: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.contents().contains(text) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{text:?} not on screen after {timeout:?}:\n{}",
            self.contents()
        );
    }

    /// Wait until the screen no longer shows `text`.
    pub fn wait_gone(&self, text: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if !self.contents().contains(text) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{text:?} still on screen after {timeout:?}:\n{}",
            self.contents()
        );
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> portable_pty::ExitStatus {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!(
            "pigeon did not exit after {timeout:?}:\n{}",
            self.contents()
        );
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
    }
}
