//! Issue 11: the agent's policy, end to end with the real binary (client
//! and agent separate processes, each its own home).
//!
//! - quotas per peer (`keys trust --quota --max-file`) and for all peers
//!   (`[agent.total]`), refused at offer time with the numbers, nothing
//!   staged, the refusal audited with its size; `pigeon quota` shows use;
//! - quarantine: a program under a harmless name, a program from a peer
//!   without `exec`, the EICAR file and the external scanner's verdict are
//!   held (never placed, never listed, never executable), the client told
//!   why; a peer with `exec` deploys a binary under its own name; the
//!   owner lists, shows and releases;
//! - audit: `pigeon audit` (filters, JSON with key ids and sizes),
//!   `verify`, `export`, asked of the running agent;
//! - cleanup: `pigeon clean --dry-run` on the agent's home shows what the
//!   policies would remove, and `pigeon clean` removes it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::common::*;

/// Run `pigeon` as the agent's owner, on the agent's home.
#[track_caller]
fn owner(w: &World, args: &[&str]) -> Run {
    pigeon(&w.agent_home, args, &w.logs, Duration::from_secs(60))
}

/// Trust the world's client again as `laptop`, with `extra` flags.
#[track_caller]
fn trust_laptop(w: &World, extra: &[&str]) {
    let key = w.client_key.clone();
    let mut args = vec!["keys", "trust", &key, "--name", "laptop"];
    args.extend_from_slice(extra);
    owner(w, &args).assert_ok();
}

/// Everything a command said, on either stream (`--json` puts a failed
/// transfer's error on stdout).
fn said(run: &Run) -> String {
    format!("{}{}", run.stdout, run.stderr)
}

fn write_agent_config(w: &World, text: &str) {
    std::fs::write(w.agent_home.join("config.toml"), text).unwrap();
}

/// The start of a 64-bit ELF executable, and some body.
fn elf(len: usize) -> Vec<u8> {
    let mut b = vec![
        0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0x3e, 0,
    ];
    b.resize(len, 0x90);
    b
}

const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

#[test]
fn quotas_refuse_at_offer_with_the_numbers_and_are_shown_and_audited() {
    let mut w = World::new("");
    trust_laptop(&w, &["--quota", "100k", "--max-file", "60k"]);
    write_agent_config(&w, "[agent.total]\nmax_files = 2\n");
    w.start_agent();

    let a = w.random_file("a.bin", 30 * 1024, 1);
    w.upload(&[&a], &[]).assert_ok();
    // Larger than a file may be.
    let b = w.random_file("b.bin", 70 * 1024, 2);
    let run = w.upload(&[&b], &[]);
    run.assert_failed();
    assert!(
        said(&run).contains("file too large: 70 KiB is above the 60 KiB a file laptop may upload"),
        "{}",
        run.describe()
    );
    let c = w.random_file("c.bin", 50 * 1024, 3);
    w.upload(&[&c], &[]).assert_ok();
    // 80 KiB kept; 30 more would pass 100.
    let d = w.random_file("d.bin", 30 * 1024, 4);
    let run = w.upload(&[&d], &[]);
    run.assert_failed();
    assert!(
        said(&run)
            .contains("quota exceeded (80 KiB of 100 KiB used by laptop, and this file is 30 KiB)"),
        "{}",
        run.describe()
    );
    // Fits this peer's quota, not the agent's file count.
    let e = w.random_file("e.bin", 10 * 1024, 5);
    let run = w.upload(&[&e], &[]);
    run.assert_failed();
    assert!(
        said(&run).contains("too many files (2 of 2 stored by all peers)"),
        "{}",
        run.describe()
    );
    // Refused, into folders that are not there: none are made (they
    // were, before the quotas were judged: empty chains without end).
    let run = w.upload(&[&e], &["--to", "a/b/c/d/"]);
    run.assert_failed();
    assert!(said(&run).contains("too many files"), "{}", run.describe());
    let run = w.upload(&[&d], &["--to", "q/r/s/t/"]);
    run.assert_failed();
    assert!(said(&run).contains("quota exceeded"), "{}", run.describe());
    let folders: Vec<_> = std::fs::read_dir(w.storage())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name())
        .collect();
    assert!(
        folders.is_empty(),
        "a refused upload made folders: {folders:?}"
    );
    assert_eq!(w.stored_files(), vec!["a.bin", "c.bin"]);
    assert!(w.staged_files().is_empty(), "{:?}", w.staged_files());
    // A refusal that only a person can lift is not retried by resume --all.
    let resume = w.client(&["resume", "--all"]);
    assert!(
        said(&resume).contains("file too large"),
        "resume says why it leaves it: {}",
        resume.describe()
    );

    // The owner sees the use, while the agent runs (it holds the store).
    let quota = owner(&w, &["quota"]);
    quota.assert_ok();
    assert!(
        quota
            .stdout
            .contains("laptop: stored 80 KiB of 100 KiB · files 2 · open 0 of 16"),
        "{}",
        quota.describe()
    );
    assert!(
        quota
            .stdout
            .contains("all peers: stored 80 KiB · files 2 of 2"),
        "{}",
        quota.describe()
    );
    // The client asks its own, over the channel: its line and the total,
    // no other peer's.
    let uri = w.uri();
    let mine = w.client(&["quota", "--transport", &uri]);
    mine.assert_ok();
    assert!(
        mine.stdout
            .contains("laptop: stored 80 KiB of 100 KiB · files 2 · open 0 of 16")
            && mine.stdout.contains("all peers: stored 80 KiB"),
        "{}",
        mine.describe()
    );
    // Removing a file frees its share; within the limits, an upload gets
    // its folders.
    std::fs::remove_file(w.storage().join("c.bin")).unwrap();
    w.upload(&[&d], &["--to", "a/b/c/d/"]).assert_ok();
    assert_same_file(&d, &w.storage().join("a/b/c/d/d.bin"));
    // Replacing a file counts the new one, not both: 30 KiB kept beside
    // a.bin, a 60 KiB a.bin in its place fits the 100 KiB.
    let bigger = w.random_file("a.bin", 60 * 1024, 8);
    w.upload(&[&bigger], &["--overwrite"]).assert_ok();
    assert_same_file(&bigger, &w.storage().join("a.bin"));

    // Each refusal is audited with who, the key, the size and the reason.
    let audit = owner(&w, &["audit", "--peer", "laptop", "--json"]);
    audit.assert_ok();
    let refused: Vec<_> = json_lines(&audit.stdout)
        .into_iter()
        .filter(|r| {
            r["outcome"]
                .as_str()
                .unwrap_or("")
                .starts_with("refused: quota")
                && r["path"] == "d.bin"
        })
        .collect();
    assert_eq!(refused.len(), 1, "{}", audit.stdout);
    assert_eq!(refused[0]["size"], 30 * 1024);
    assert_eq!(refused[0]["path"], "d.bin");
    assert_eq!(
        refused[0]["key_id"].as_str().unwrap(),
        key_id(&w.client_key),
        "{}",
        audit.stdout
    );
    w.stop_agent();
}

#[test]
fn quarantine_holds_what_it_must_tells_the_client_and_the_owner_releases() {
    let mut w = World::new("");
    // A scanner in the config: exit 1 on a marker, as clamdscan does.
    let scanner = w.work.join("scan");
    std::fs::write(
        &scanner,
        "#!/bin/sh\nif grep -q XINFECTEDX \"$1\"; then echo \"$1: Test.Marker FOUND\"; exit 1; fi\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&scanner, std::fs::Permissions::from_mode(0o755)).unwrap();
    write_agent_config(
        &w,
        &format!(
            "[agent.quarantine]\nscanner = [\"{}\", \"{{path}}\"]\nscanner_timeout = 20\n",
            scanner.display()
        ),
    );
    w.start_agent();

    let cases = [
        (
            "report.pdf",
            elf(20_000),
            "held in quarantine: ELF executable named report.pdf",
        ),
        (
            "tool",
            elf(20_000),
            "ELF executable named tool, and this peer may not upload programs",
        ),
        (
            "eicar.com",
            EICAR.as_bytes().to_vec(),
            "the EICAR test file",
        ),
        (
            "notes.txt",
            b"some notes\nXINFECTEDX\n".to_vec(),
            "Test.Marker FOUND",
        ),
        (
            "invoice.pdf.exe",
            b"MZ just a name".to_vec(),
            "double extension",
        ),
    ];
    for (name, bytes, says) in &cases {
        let f = w.file(name, bytes);
        let run = w.upload(&[&f], &[]);
        run.assert_failed();
        assert!(
            said(&run).contains(says),
            "{name}: the client is told why ({says:?})\n{}",
            run.describe()
        );
    }
    assert!(w.stored_files().is_empty(), "{:?}", w.stored_files());
    // Held where nobody can list, fetch or run it.
    let qdir = w.storage_root().join(".pigeon/quarantine");
    let held: Vec<_> = std::fs::read_dir(&qdir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "held"))
        .collect();
    assert_eq!(held.len(), cases.len());
    for h in &held {
        assert_eq!(h.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }
    let ls = w.client(&["ls"]);
    ls.assert_ok();
    assert!(!ls.stdout.contains("report.pdf"), "{}", ls.describe());
    let fetch = w.download(".pigeon/quarantine", &w.work.join("x"), &[]);
    fetch.assert_failed();
    // The client's record says so too.
    let status = w.client(&["history", "--json"]);
    assert!(
        status.stdout.contains("held in quarantine"),
        "{}",
        status.describe()
    );
    // A plain file passes.
    let plain = w.file("plain.txt", b"just text\n");
    w.upload(&[&plain], &[]).assert_ok();
    // What is held takes the agent's disk: it counts against the quota.
    let quota = owner(&w, &["quota"]);
    assert!(
        quota.stdout.contains("laptop: stored ")
            && quota.stdout.contains(&format!("files {}", cases.len() + 1)),
        "{}",
        quota.describe()
    );

    // The owner's view, from the running agent.
    let list = owner(&w, &["quarantine", "list"]);
    list.assert_ok();
    assert_eq!(
        list.stdout.lines().count(),
        cases.len(),
        "{}",
        list.describe()
    );
    let line = list
        .stdout
        .lines()
        .find(|l| l.contains("report.pdf"))
        .unwrap()
        .to_string();
    let id = line.split_whitespace().next().unwrap().to_string();
    let show = owner(&w, &["quarantine", "show", &id]);
    assert!(
        show.stdout.contains("ELF executable named report.pdf")
            && show.stdout.contains(&sha256_hex(&elf(20_000))),
        "{}",
        show.describe()
    );
    owner(&w, &["quarantine", "release", &id]).assert_ok();
    let placed = w.storage().join("report.pdf");
    assert_eq!(std::fs::read(&placed).unwrap(), elf(20_000));
    assert_eq!(
        std::fs::metadata(&placed).unwrap().permissions().mode() & 0o111,
        0,
        "released, never executable"
    );
    let eicar_id = owner(&w, &["quarantine", "list"])
        .stdout
        .lines()
        .find(|l| l.contains("eicar.com"))
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap();
    owner(&w, &["quarantine", "delete", &eicar_id]).assert_ok();
    assert_eq!(
        owner(&w, &["quarantine", "list"]).stdout.lines().count(),
        cases.len() - 2
    );

    // A peer allowed to deploy programs does, under their own names; not
    // under a document's.
    trust_laptop(&w, &["--allow", "upload,download,list,exec"]);
    let tool = w.file("tool", &elf(30_000));
    w.upload(&[&tool], &["--to", "bin/tool"]).assert_ok();
    let deployed = w.storage().join("bin/tool");
    assert_eq!(std::fs::read(&deployed).unwrap(), elf(30_000));
    assert_eq!(
        std::fs::metadata(&deployed).unwrap().permissions().mode() & 0o111,
        0,
        "pigeon never sets the exec bit"
    );
    let disguised = w.file("cv.pdf", &elf(30_000));
    let run = w.upload(&[&disguised], &[]);
    run.assert_failed();
    assert!(
        said(&run).contains("ELF executable named cv.pdf"),
        "{}",
        run.describe()
    );

    // Audited: held, released, deleted; and the chain verifies.
    let audit = owner(&w, &["audit"]);
    for word in [
        "held in quarantine: ELF executable named report.pdf",
        "released from quarantine",
        "deleted from quarantine",
    ] {
        assert!(audit.stdout.contains(word), "{word}\n{}", audit.describe());
    }
    let verify = owner(&w, &["audit", "verify"]);
    verify.assert_ok();
    assert!(
        verify.stdout.starts_with("audit log intact"),
        "{}",
        verify.describe()
    );
    w.stop_agent();

    // Export, from the store now the agent is gone: JSON lines.
    let out = w.work.join("audit.jsonl");
    owner(&w, &["audit", "export", "-o", out.to_str().unwrap()]).assert_ok();
    let lines = json_lines(&std::fs::read_to_string(&out).unwrap());
    assert!(lines.len() > 10, "{lines:?}");
    assert!(lines.iter().enumerate().all(|(i, l)| l["seq"] == i as u64));
}

#[test]
fn clean_on_the_agent_shows_then_removes_what_its_policies_say() {
    let mut w = World::new("");
    write_agent_config(
        &w,
        "[agent.cleanup]\nquarantine_days = 0\npartials_days = 3\n",
    );
    w.start_agent();
    let f = w.file("report.pdf", &elf(10_000));
    w.upload(&[&f], &[]).assert_failed();
    let dry = owner(&w, &["clean", "--dry-run"]);
    dry.assert_ok();
    assert!(
        dry.stdout
            .contains("would remove quarantined laptop/report.pdf by laptop (held 0 days"),
        "{}",
        dry.describe()
    );
    assert_eq!(owner(&w, &["quarantine", "list"]).stdout.lines().count(), 1);
    let clean = owner(&w, &["clean"]);
    assert!(
        clean
            .stdout
            .contains("removed quarantined laptop/report.pdf"),
        "{}",
        clean.describe()
    );
    assert_eq!(owner(&w, &["quarantine", "list"]).stdout.lines().count(), 0);
    w.stop_agent();

    // A partial upload left for longer than partials_days: shown, then
    // removed, from the store with no agent running.
    let staged = w.staging().join("0123456789abcdef0123456789abcdef.part");
    std::fs::write(&staged, b"half a file").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(4 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&staged)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let young = w.staging().join("fedcba9876543210fedcba9876543210.part");
    std::fs::write(&young, b"recent").unwrap();
    let dry = owner(&w, &["clean", "--agent", "--dry-run"]);
    assert!(
        dry.stdout
            .contains("would remove staging file 0123456789abcdef"),
        "{}",
        dry.describe()
    );
    assert!(staged.exists() && young.exists());
    owner(&w, &["clean", "--agent"]).assert_ok();
    assert!(!staged.exists(), "the old partial is gone");
    assert!(young.exists(), "a recent one stays");
    assert!(Path::new(&young).exists());
}

/// `pigeon pair` on a fresh agent home, waiting; its code, once printed.
fn start_pairing(w: &World, home: &Path, extra: &[&str], tag: &str) -> (Proc, String) {
    let uri = w.uri();
    let mut args = vec!["pair", "--transport", &uri];
    args.extend_from_slice(extra);
    let p = Proc::spawn(home, &args, &w.logs, tag);
    let mut code = String::new();
    wait_until("the pairing code", Duration::from_secs(30), || {
        code = p
            .stdout()
            .lines()
            .find_map(|l| l.strip_prefix("pairing code: ").map(String::from))
            .unwrap_or_default();
        !code.is_empty()
    });
    (p, code)
}

#[test]
fn pairing_by_a_short_code_trusts_both_ways_and_a_wrong_code_burns_it() {
    let w = World::new("");
    let agent_home = w.dir.path().join("paired-agent");
    let client_home = w.dir.path().join("paired-client");
    let (pairing, code) = start_pairing(
        &w,
        &agent_home,
        &[
            "--name",
            "laptop",
            "--allow",
            "upload,list",
            "--quota",
            "1M",
        ],
        "pair-agent",
    );
    assert!(
        code.split('-').count() == 3 && code.as_bytes()[0].is_ascii_digit(),
        "{code}"
    );
    let uri = w.uri();
    let client = pigeon(
        &client_home,
        &["pair", &code, "--transport", &uri],
        &w.logs,
        Duration::from_secs(60),
    );
    client.assert_ok();
    let agent = pairing.wait(Duration::from_secs(30));
    agent.assert_ok();
    assert!(
        agent.stderr.contains("paired: trusting laptop") && agent.stderr.contains("upload,list"),
        "{}",
        agent.describe()
    );
    // Each side holds the other's real key.
    let key_of = |home: &Path| {
        pigeon(home, &["keys", "show"], &w.logs, Duration::from_secs(30))
            .stdout
            .trim()
            .to_string()
    };
    let listed =
        |home: &Path| pigeon(home, &["keys", "list"], &w.logs, Duration::from_secs(30)).stdout;
    assert!(
        listed(&agent_home).contains(&format!("laptop\t{}\tupload,list", key_of(&client_home))),
        "{}",
        listed(&agent_home)
    );
    assert!(
        listed(&client_home).contains(&format!("agent\t{}", key_of(&agent_home))),
        "{}",
        listed(&client_home)
    );
    let peers = std::fs::read_to_string(agent_home.join("peers.toml")).unwrap();
    assert!(peers.contains("quota = \"1M\""), "{peers}");

    // And the pair works: an agent on that home serves that client.
    let mut served = Proc::spawn(
        &agent_home,
        &["agent", "--transport", &uri],
        &w.logs,
        "paired-agent",
    );
    wait_until("the agent is ready", Duration::from_secs(60), || {
        served.stderr().contains("agent ready")
    });
    let f = w.random_file("after-pairing.bin", 20_000, 7);
    pigeon(
        &client_home,
        &["upload", f.to_str().unwrap(), "--transport", &uri],
        &w.logs,
        Duration::from_secs(60),
    )
    .assert_ok();
    assert_same_file(&f, &agent_home.join("storage/laptop/after-pairing.bin"));
    // Its permissions are the ones given: no download.
    let denied = pigeon(
        &client_home,
        &[
            "download",
            "after-pairing.bin",
            "-o",
            w.work.join("x").to_str().unwrap(),
            "--transport",
            &uri,
        ],
        &w.logs,
        Duration::from_secs(60),
    );
    denied.assert_failed();
    served.terminate(Duration::from_secs(20));

    // A wrong code fails on both sides, and the right one is then useless.
    let other_agent = w.dir.path().join("other-agent");
    let (pairing, code) = start_pairing(&w, &other_agent, &[], "pair-agent-2");
    let slot = code.split('-').next().unwrap().to_string();
    let words = code.split('-').skip(1).collect::<Vec<_>>();
    let wrong = format!("{slot}-{}-{}", words[1], words[0]);
    let wrong = if wrong == code {
        format!("{slot}-zebra-zebra")
    } else {
        wrong
    };
    let stranger = w.dir.path().join("stranger");
    let guess = pigeon(
        &stranger,
        &["pair", &wrong, "--transport", &uri],
        &w.logs,
        Duration::from_secs(60),
    );
    guess.assert_failed();
    assert!(guess.stderr.contains("wrong code"), "{}", guess.describe());
    let agent = pairing.wait(Duration::from_secs(30));
    agent.assert_failed();
    assert!(agent.stderr.contains("burnt"), "{}", agent.describe());
    let late = pigeon(
        &w.dir.path().join("late"),
        &["pair", &code, "--transport", &uri, "--timeout", "3"],
        &w.logs,
        Duration::from_secs(60),
    );
    late.assert_failed();
    assert!(
        late.stderr.contains("no agent answered"),
        "{}",
        late.describe()
    );
    assert!(
        !std::fs::read_to_string(other_agent.join("peers.toml"))
            .unwrap_or_default()
            .contains("key"),
        "the burnt code trusted nobody"
    );
}

#[test]
fn a_revoked_peers_name_passes_to_no_other_key_unasked() {
    let w = World::new("");
    let old = w.client_key.clone();
    let revoke = owner(&w, &["keys", "revoke", "laptop"]);
    revoke.assert_ok();
    assert!(
        revoke.stderr.contains("the name stays with that key"),
        "{}",
        revoke.describe()
    );
    let (_home, other) = w.stranger("other");
    let refused = owner(&w, &["keys", "trust", &other, "--name", "laptop"]);
    refused.assert_failed();
    assert!(
        refused
            .stderr
            .contains("the name laptop belonged to a revoked key")
            && refused.stderr.contains("--reuse-name"),
        "{}",
        refused.describe()
    );
    let listed = owner(&w, &["keys", "list"]);
    assert!(
        !listed.stdout.contains("laptop") && listed.stderr.contains("revoked: laptop"),
        "{}",
        listed.describe()
    );
    // Its own key again is welcome under its name.
    owner(&w, &["keys", "trust", &old, "--name", "laptop"]).assert_ok();
    owner(&w, &["keys", "revoke", "laptop"]).assert_ok();
    // Given to another key deliberately, and said what goes with it.
    let reused = owner(
        &w,
        &["keys", "trust", &other, "--name", "laptop", "--reuse-name"],
    );
    reused.assert_ok();
    assert!(
        reused.stderr.contains("now pass to this key"),
        "{}",
        reused.describe()
    );
    assert!(
        owner(&w, &["keys", "list"])
            .stdout
            .contains(&format!("laptop\t{other}")),
        "the name is the new key's"
    );
}
