//! Who holds a store: sled's lock says only that someone does, so the
//! holder writes its pid and command beside it, for whoever finds the lock
//! taken.

use std::path::Path;

/// The file naming the process that holds a store.
pub(super) const HOLDER_FILE: &str = "holder";

/// This process, as a store's holder file says it: its pid and its
/// command (`pigeon agent`), no arguments (they may hold paths).
pub(super) fn holder_line() -> String {
    let mut args = std::env::args();
    let program = args
        .next()
        .map(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or(a)
        })
        .unwrap_or_default();
    // The subcommand: the first argument that is not an option or its value.
    let mut sub = None;
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
        } else if a.starts_with("--") {
            skip = !a.contains('=') && a != "--json";
        } else if !a.starts_with('-') {
            sub = Some(a);
            break;
        }
    }
    let command = match sub {
        Some(s) => format!("{program} {s}"),
        None => program,
    };
    format!(
        "{} {}",
        std::process::id(),
        crate::policy::escape_control(&command)
    )
}

/// Who holds the store in `dir`, as " (pid N, COMMAND)", if it is said and
/// that process lives.
pub(super) fn read_holder(dir: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(dir.join(HOLDER_FILE)) else {
        return String::new();
    };
    let (pid, command) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    let alive = pid.parse::<u32>().is_ok_and(process_lives);
    match (alive, command.is_empty()) {
        (false, _) => String::new(),
        (true, true) => format!(" (pid {pid})"),
        (true, false) => format!(" (pid {pid}, {command})"),
    }
}

/// Whether a process with this pid exists, asked of the kernel (`kill(pid,
/// 0)`) rather than of `/proc`: Android mounts `/proc` so that an app sees
/// few processes, and a system may not mount it at all. A process of
/// another user exists too (the kernel answers "not permitted").
pub(super) fn process_lives(pid: u32) -> bool {
    // Never 0 or negative: `kill` would then ask about process groups.
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}
