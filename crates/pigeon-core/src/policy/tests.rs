use super::*;

#[test]
fn hostile_names_are_refused() {
    let corpus = [
        "/etc/passwd",
        "\\windows\\system32",
        "C:evil",
        "../x",
        "a/../../x",
        "a/..",
        "..",
        "a\u{0}b",
        "a\u{1b}[31mred",
        "bell\u{7}",
        "evil\u{202e}txt.exe",
        "a\\..\\b",
        ".pigeon/staging/x",
        ".PIGEON/staging/x",
        ".Pigeon",
        "re\u{200B}port.pdf",
        "a\u{200D}b",
        "word\u{2060}joiner",
        "\u{FEFF}bom.txt",
        "line\u{2028}sep",
        "soft\u{00AD}hyphen",
        "tag\u{E0041}",
        &"x".repeat(300),
        &"a/".repeat(600),
    ];
    for raw in corpus {
        assert!(RemotePath::parse(raw).is_err(), "{raw:?} accepted");
    }
}

#[test]
fn ordinary_names_are_kept() {
    for (raw, shown) in [
        ("a.txt", "a.txt"),
        ("./dir/b c.bin", "dir/b c.bin"),
        ("données/été.csv", "données/été.csv"),
        ("a//b/", "a/b"),
        ("x/.pigeon", "x/.pigeon"),
    ] {
        assert_eq!(RemotePath::parse(raw).unwrap().to_string(), shown);
    }
    assert!(RemotePath::parse("").unwrap().is_root());
    assert!(RemotePath::parse_file("").is_err());
}

#[test]
fn names_are_normalised_so_one_name_is_one_file() {
    // "é" precomposed and as e + combining acute are one name.
    let composed = RemotePath::parse("caf\u{e9}.txt").unwrap();
    let decomposed = RemotePath::parse("cafe\u{301}.txt").unwrap();
    assert_eq!(composed, decomposed);
    assert_eq!(decomposed.to_string(), "caf\u{e9}.txt");
    // Emoji keep their variation selectors.
    assert!(RemotePath::parse("\u{2764}\u{FE0F}.txt").is_ok());
}

#[test]
fn invisible_characters_are_shown_escaped() {
    assert_eq!(escape_control("a\u{200B}b"), "a\\u{200b}b");
    assert_eq!(escape_control("x\u{FEFF}"), "x\\u{feff}");
}

#[test]
fn escape_control_renders_ansi_inert() {
    assert_eq!(escape_control("plain"), "plain");
    assert_eq!(escape_control("a\u{1b}[2Jb"), "a\\x1b[2Jb");
    assert_eq!(escape_control("x\u{202e}y"), "x\\u{202e}y");
    assert_eq!(escape_control("c\u{9b}d\r"), "c\\x9bd\\r");
    assert!(!escape_control("\u{1b}]0;title\u{7}").contains('\u{1b}'));
}

#[test]
fn symlinks_out_of_the_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let root = StorageRoot::open(&dir.path().join("root")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
    std::fs::create_dir(root.path().join("inside")).unwrap();
    std::os::unix::fs::symlink("inside", root.path().join("in")).unwrap();
    std::os::unix::fs::symlink(root.path().join("inside"), root.path().join("abs")).unwrap();
    std::os::unix::fs::symlink("../../outside", root.path().join("rel-out")).unwrap();
    let err = root
        .prepare_parent(&RemotePath::parse("out/x.txt").unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(root.resolve(&RemotePath::parse("out").unwrap()).is_err());
    root.prepare_parent(&RemotePath::parse("in/x.txt").unwrap())
        .unwrap();
    for escaping in ["abs/x.txt", "rel-out/x.txt"] {
        let err = root
            .prepare_parent(&RemotePath::parse(escaping).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("symlink"), "{escaping}: {err}");
    }
    root.prepare_parent(&RemotePath::parse("new/deep/x.txt").unwrap())
        .unwrap();
}

#[test]
fn placing_a_verified_file_never_clobbers_without_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let root = StorageRoot::open(&dir.path().join("root")).unwrap();
    let target = RemotePath::parse("d/f.txt").unwrap();
    root.prepare_parent(&target).unwrap();
    let stage = |text: &str| {
        let p = root.staging_dir().join("t.part");
        std::fs::write(&p, text).unwrap();
        p
    };
    root.place(&stage("one"), &target, false).unwrap();
    let err = root.place(&stage("two"), &target, false).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(
        std::fs::read_to_string(root.path().join("d/f.txt")).unwrap(),
        "one"
    );
    root.place(&stage("three"), &target, true).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.path().join("d/f.txt")).unwrap(),
        "three"
    );
    assert!(!root.staging_dir().join("t.part").exists());
}

#[test]
fn the_root_itself_is_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = StorageRoot::open(&dir.path().join("root")).unwrap();
    assert_eq!(root.kind(&RemotePath::root()), Some(EntryKind::Folder));
    assert!(root.open_dir(&RemotePath::root()).is_ok());
}

#[test]
fn permissions_parse() {
    let p = Permissions::parse("upload,list").unwrap();
    assert!(p.upload && p.list && !p.download);
    assert_eq!(p.to_string(), "upload,list");
    assert!(Permissions::parse("delete").is_err());
}

#[test]
fn a_path_taken_is_taken_again_in_the_form_that_is_kept() {
    // Regressions from fuzzing (fuzz/regressions/name).
    let nfc_grows = vec!["\u{0958}".repeat(42); 8].join("/");
    assert!(nfc_grows.len() <= MAX_PATH_BYTES);
    for raw in ["./C:x", "a/./b", nfc_grows.as_str(), "./t:p022025", "x/C:y"] {
        if let Ok(p) = RemotePath::parse(raw) {
            let again = RemotePath::parse(&p.to_string())
                .unwrap_or_else(|e| panic!("{raw:?} taken as {p} but then refused: {e}"));
            assert_eq!(again, p);
        }
    }
    assert!(RemotePath::parse("./C:x").is_err());
    assert!(RemotePath::parse(&nfc_grows).is_err());
    assert!(
        RemotePath::parse("x/C:y").is_ok(),
        "only a first component is a drive"
    );
}

// The terminal's view of hostile names (the TUI shows them through this too).

#[test]
fn plain_names_are_borrowed_unchanged() {
    let name = "report (final) – ünïcode 日本.pdf";
    assert!(matches!(escape_control(name), std::borrow::Cow::Borrowed(n) if n == name));
}

#[test]
fn ansi_colour_sequence_is_rendered_inert() {
    assert_eq!(
        escape_control("\x1b[31mred\x1b[0m.txt"),
        "\\x1b[31mred\\x1b[0m.txt"
    );
}

#[test]
fn osc52_clipboard_write_is_rendered_inert() {
    let hostile = "a\x1b]52;c;ZXZpbA==\x07b";
    let shown = escape_control(hostile);
    assert_eq!(shown, "a\\x1b]52;c;ZXZpbA==\\x07b");
    assert!(!shown.contains('\x1b') && !shown.contains('\x07'));
}

#[test]
fn c1_csi_and_del_are_escaped() {
    assert_eq!(escape_control("x\u{9b}2Jy\u{7f}"), "x\\x9b2Jy\\x7f");
}

#[test]
fn line_breaks_and_tabs_use_short_escapes() {
    assert_eq!(
        escape_control("fake\rreal\n\tname"),
        "fake\\rreal\\n\\tname"
    );
}

#[test]
fn bidi_override_is_escaped() {
    assert_eq!(
        escape_control("invoice\u{202e}fdp.exe"),
        "invoice\\u{202e}fdp.exe"
    );
}

#[test]
fn escaped_output_contains_no_control_characters() {
    let fixtures = [
        "\x1b[2J\x1b[H",
        "\x1bP+q\x1b\\",
        "\x1b[?1049l",
        "\u{0}\u{1}\u{1f}",
        "\u{85}\u{9f}",
        "\u{2066}\u{2069}\u{200b}\u{feff}",
    ];
    for fixture in fixtures {
        let shown = escape_control(fixture);
        // Nothing forbidden is left but backslashes.
        assert!(
            shown.chars().all(|c| c == '\\' || !is_forbidden_char(c)),
            "{fixture:?} -> {shown:?}"
        );
    }
}

#[test]
fn escaping_twice_shows_the_same_as_once() {
    // The engine escapes a peer's reason into its error; a front end escapes
    // the error again where it shows it.
    for hostile in [
        "a\tb",
        "evil\x1b]52;c;aGk=\x07name",
        "invoice\u{202e}fdp.exe",
        "back\\slash\\x1b",
        "x\u{9b}2J\r\n",
    ] {
        let once = escape_control(hostile).into_owned();
        assert_eq!(escape_control(&once), once, "{hostile:?}");
    }
    assert_eq!(
        escape_control("a\\b"),
        "a\\b",
        "a backslash is shown as it is"
    );
}
