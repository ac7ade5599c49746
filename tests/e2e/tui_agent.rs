//! The TUI against an agent that does not answer (issue 10, part 2): within
//! seconds every pane that waits on it says so, rather than "listing…"
//! for ever, a link shown up and an ETA of hours.

use std::time::Duration;

use crate::common::pty::Session;
use crate::common::*;

#[test]
fn a_silent_agent_is_said_in_the_tui_within_seconds() {
    // No agent runs on the spool: the TUI's messages go nowhere.
    let w = World::new("");
    let uri = w.uri();
    let tui = Session::start_with(&w.client_home, &w.work, &["--transport", &uri]);
    tui.wait_for("peer agent", Duration::from_secs(30));
    tui.wait_for("no answer from the agent for", Duration::from_secs(25));
    tui.wait_for("SILENT", Duration::from_secs(5));
    let screen = tui.contents();
    assert!(!screen.contains("listing…"), "{screen}");
}
