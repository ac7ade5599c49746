//! Quarantine: every finished upload is looked at before it is put in
//! place, and a suspicious one is held where nobody can list, download or
//! run it (`<root>/.pigeon/quarantine/`) until the agent's owner decides.
//!
//! The rules ([`Rules`], `[agent.quarantine]` in the agent's config), each
//! judged from the file's bytes, never from what the peer says alone:
//!
//! - **executables**: held unless the peer has the `exec` permission, and
//!   held even then under a harmless name (`report.pdf`) — programs are
//!   deployed under their own names. pigeon never sets an exec bit either
//!   way. A program is, by its bytes: ELF, PE, Mach-O, Android's `dex`, a
//!   `#!` line (`#!/bin/sh`, `#!\t/bin/sh`, `#!python`: any spaces or tabs,
//!   then a path or an interpreter's name); by its zip directory: a Java
//!   archive (`META-INF/MANIFEST.MF`) or an Android package
//!   (`AndroidManifest.xml`, `classes.dex`), whatever it is called; by its
//!   name: `.jar`, `.war`, `.ear`, `.apk`, and text under a name a shell
//!   or a script runtime runs ([`SCRIPT_EXTENSIONS`]) even without a `#!`;
//! - **double extensions** hiding a program behind a document
//!   (`report.pdf.exe`);
//! - **content against name**: a file whose bytes are a known type other
//!   than the one its extension claims (a `.pdf` that is a zip), or other
//!   than the MIME type the peer declared;
//! - the **EICAR** test file (how a user checks that scanning works);
//! - **archive bombs**: a zip whose declared sizes (read from its central
//!   directory, nothing inflated) add up past a ratio of its size or a
//!   ceiling; a gzip inflated as a stream that stops as soon as it passes
//!   them;
//! - an **external scanner** (`scanner = ["clamdscan", "--no-summary",
//!   "{path}"]`), run without a shell, with a timeout: exit 0 is clean, 1
//!   is infected, anything else (or no answer in time) holds the file,
//!   since an unscanned file is not a clean one.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::limits::Size;

/// What an upload's error begins with once it is held (the agent's record
/// and the client's both say it).
pub const HELD: &str = "held in quarantine";

/// The quarantine rules, as `[agent.quarantine]` sets them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// Look at uploads at all.
    pub enabled: bool,
    /// Hold executables from peers without the `exec` permission, and
    /// under harmless names from everyone.
    pub executables: bool,
    /// Hold `name.pdf.exe` and the like.
    pub double_extensions: bool,
    /// Hold files whose content is not what their name or declared type says.
    pub mismatch: bool,
    /// Hold the EICAR test file.
    pub eicar: bool,
    /// Hold archives that would inflate past this many times their size…
    pub max_ratio: u64,
    /// …or past this many bytes.
    pub max_inflated: Size,
    /// An external scanner: the program and its arguments, `{path}` for
    /// the file (run without a shell).
    pub scanner: Vec<String>,
    /// Seconds the scanner may take.
    pub scanner_timeout: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            enabled: true,
            executables: true,
            double_extensions: true,
            mismatch: true,
            eicar: true,
            max_ratio: 200,
            max_inflated: Size(8 << 30),
            scanner: vec![],
            scanner_timeout: 60,
        }
    }
}

/// Names a program goes by.
const PROGRAM_EXTENSIONS: &[&str] = &[
    "exe", "com", "scr", "bat", "cmd", "pif", "msi", "dll", "vbs", "vbe", "js", "jse", "wsf",
    "hta", "ps1", "psm1", "sh", "bash", "zsh", "ksh", "csh", "tcsh", "fish", "command", "py",
    "pyw", "pl", "rb", "php", "elf", "bin", "run", "out", "so", "dylib", "app", "appimage", "apk",
    "dex", "jar", "war", "ear",
];

/// Names whose text a shell or a script runtime runs as it is, with no
/// `#!` needed: `sh x.sh`, a double click on `x.command` (macOS
/// Terminal), `x.py` or `x.rb` handed to their interpreter by a desktop,
/// and on Windows `.bat`/`.cmd` (cmd), `.ps1`/`.psm1` (PowerShell),
/// `.vbs`/`.vbe`/`.jse`/`.wsf` (Windows Script Host), `.hta` (mshta).
/// Not `.js`: as often a web page's code as a program, and run by a
/// double click on Windows alone; it is held behind a harmless name
/// (`report.pdf.js`) as any program is, not on its own.
pub const SCRIPT_EXTENSIONS: &[&str] = &[
    "sh", "bash", "zsh", "ksh", "csh", "tcsh", "fish", "command", "py", "pyw", "pl", "rb", "php",
    "bat", "cmd", "ps1", "psm1", "vbs", "vbe", "jse", "wsf", "hta",
];

/// Names of Java archives: the JVM (`java -jar`, a servlet container)
/// runs what they hold.
const JAVA_EXTENSIONS: &[&str] = &["jar", "war", "ear"];

/// What `infer` calls a zip, under any of the names zips go by.
const ZIP_KINDS: &[&str] = &[
    "zip", "jar", "apk", "docx", "xlsx", "pptx", "odt", "ods", "odp", "epub",
];

/// Names of documents, media and data: what nobody expects to run.
const HARMLESS_EXTENSIONS: &[&str] = &[
    "pdf", "txt", "log", "csv", "tsv", "json", "xml", "yaml", "yml", "toml", "md", "html", "htm",
    "doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt", "ods", "odp", "rtf", "jpg", "jpeg", "png",
    "gif", "webp", "bmp", "tif", "tiff", "svg", "mp3", "mp4", "m4a", "wav", "ogg", "flac", "mkv",
    "mov", "avi", "webm", "zip", "gz", "tgz", "tar", "7z", "rar", "xz", "bz2", "zst", "ini", "cfg",
    "conf",
];

/// Extensions that name the same kind of content as another (what
/// `infer` calls a type, and the other names people use for it).
fn same_kind(ext: &str, detected: &str) -> bool {
    const FAMILIES: &[&[&str]] = &[
        &["jpg", "jpeg", "jpe"],
        &["tif", "tiff"],
        &["gz", "tgz", "gzip"],
        &["mp4", "m4v", "m4a", "mov"],
        &["mkv", "webm"],
        &["ogg", "oga", "ogv", "opus"],
        &["html", "htm", "xml", "svg"],
        // Office documents, Java and Android packages, e-books and wheels
        // are all zip files inside.
        &[
            "zip", "docx", "xlsx", "pptx", "odt", "ods", "odp", "jar", "apk", "epub", "whl", "xpi",
            "aar", "ipa", "vsix", "kmz", "3mf", "nupkg",
        ],
        &["doc", "xls", "ppt", "msi", "msg"],
        &["exe", "dll", "scr", "com", "sys", "efi"],
        &["elf", "so", "bin", "out", "o"],
    ];
    ext == detected
        || FAMILIES
            .iter()
            .any(|f| f.contains(&ext) && f.contains(&detected))
}

/// The EICAR anti-virus test file's 68 characters.
const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// Why an upload is held, or nothing.
pub type Verdict = Option<String>;

/// What is being judged: the file on disk, the name it is to have, what
/// the peer declared, and whether the peer may deploy programs.
pub struct Upload<'a> {
    pub file: &'a Path,
    pub name: &'a str,
    pub declared_mime: &'a str,
    pub may_exec: bool,
}

/// Judge one finished upload (blocking: reads the file, may run the
/// scanner). An error reading it holds it too.
pub fn inspect(rules: &Rules, upload: &Upload<'_>) -> Verdict {
    if !rules.enabled {
        return None;
    }
    let shown = super::escape_control(upload.name);
    let mut head = vec![0u8; 8192];
    let n = match std::fs::File::open(upload.file).and_then(|mut f| read_up_to(&mut f, &mut head)) {
        Ok(n) => n,
        Err(e) => return Some(format!("could not be read to check it ({e})")),
    };
    head.truncate(n);
    let lower = upload.name.to_lowercase();
    let mut exts = lower.rsplit('.');
    let last = exts.next().filter(|_| lower.contains('.'));
    let before = exts.next().filter(|_| lower.matches('.').count() >= 2);
    let detected = infer::get(&head);
    let zip = detected.is_some_and(|k| ZIP_KINDS.contains(&k.extension()));
    let program =
        program_kind(&head, last).or_else(|| zip.then(|| packaged_program(upload.file)).flatten());

    if rules.eicar && head.starts_with(EICAR) && head.len() <= 128 {
        return Some(format!("the EICAR test file, named {shown}"));
    }
    if rules.double_extensions {
        if let (Some(last), Some(before)) = (last, before) {
            if PROGRAM_EXTENSIONS.contains(&last) && HARMLESS_EXTENSIONS.contains(&before) {
                return Some(format!(
                    "a double extension hides a program behind a document ({shown})"
                ));
            }
        }
    }
    if rules.executables {
        if let Some(kind) = program {
            let harmless = last.is_some_and(|e| HARMLESS_EXTENSIONS.contains(&e));
            if harmless {
                return Some(format!("{kind} named {shown}"));
            }
            if !upload.may_exec {
                return Some(format!(
                    "{kind} named {shown}, and this peer may not upload programs (on the agent: `pigeon keys trust <KEY> --name <PEER> --allow upload,exec,…`)"
                ));
            }
        }
    }
    if rules.mismatch {
        if let (Some(kind), Some(ext)) = (detected, last) {
            let claims_known = HARMLESS_EXTENSIONS.contains(&ext);
            if claims_known && !same_kind(ext, kind.extension()) && program.is_none() {
                return Some(format!(
                    "its content is {} ({}), not what the name {shown} says",
                    kind.mime_type(),
                    kind.extension()
                ));
            }
        }
        let actual = detected.map_or("application/octet-stream", |k| k.mime_type());
        let declared = upload.declared_mime;
        let generic =
            |m: &str| m.is_empty() || m == "application/octet-stream" || m.starts_with("text/");
        if !generic(declared) && declared != actual {
            return Some(format!(
                "declared as {} but its content is {actual}",
                super::escape_control(declared)
            ));
        }
    }
    if let Some(bomb) = archive_bomb(rules, upload.file, zip, detected.map(|k| k.extension())) {
        return Some(format!("{bomb} ({shown})"));
    }
    if !rules.scanner.is_empty() {
        return scan(rules, upload.file, &shown);
    }
    None
}

fn read_up_to(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What kind of program a file is, from its first bytes and its name's
/// extension (lower case), if any. What only a zip's directory tells (a
/// Java or Android package under another name) is [`packaged_program`]'s.
fn program_kind(head: &[u8], ext: Option<&str>) -> Option<&'static str> {
    if infer::app::is_elf(head) {
        Some("ELF executable")
    } else if is_pe(head) {
        Some("Windows (PE) executable")
    } else if infer::app::is_mach(head) {
        Some("Mach-O executable")
    } else if is_dex(head) {
        Some("Android (dex) executable")
    } else if is_shebang(head) {
        Some("script (#!)")
    } else {
        match ext? {
            e if JAVA_EXTENSIONS.contains(&e) => Some("Java archive"),
            "apk" => Some("Android package"),
            e if SCRIPT_EXTENSIONS.contains(&e) && is_text(head) => Some("script"),
            _ => None,
        }
    }
}

/// `#!`, any spaces or tabs, then the start of a path or of an
/// interpreter's name: the kernel runs what it names (a relative name
/// too, from wherever it is run). Not `#![`, which begins Rust source
/// (`#![allow(…)]`) and names no interpreter.
fn is_shebang(head: &[u8]) -> bool {
    let Some(rest) = head.strip_prefix(b"#!") else {
        return false;
    };
    rest.iter()
        .find(|&&c| c != b' ' && c != b'\t')
        .is_some_and(|&c| !c.is_ascii_whitespace() && !c.is_ascii_control() && c != b'[')
}

/// Android's Dalvik executable: `dex\n`, a three-digit version, `\0`.
fn is_dex(head: &[u8]) -> bool {
    head.len() >= 8
        && head.starts_with(b"dex\n")
        && head[4..7].iter().all(u8::is_ascii_digit)
        && head[7] == 0
}

/// Text as a shell or an interpreter reads it: no NUL byte in the first
/// bytes, or UTF-16 with its byte-order mark (PowerShell reads that).
fn is_text(head: &[u8]) -> bool {
    head.starts_with(&[0xff, 0xfe]) || head.starts_with(&[0xfe, 0xff]) || !head.contains(&0)
}

/// A Java archive or an Android package, whatever its name: a zip whose
/// directory (read, nothing inflated) names Android's manifest or code,
/// or the manifest the JVM looks for, in any case (as `JarFile` finds it).
/// Android first: a signed package holds a Java manifest too.
fn packaged_program(file: &Path) -> Option<&'static str> {
    let zip = zip::ZipArchive::new(std::fs::File::open(file).ok()?).ok()?;
    let named = |want: &str| {
        zip.file_names()
            .any(|n| n.is_ok_and(|n| n.eq_ignore_ascii_case(want)))
    };
    if named("AndroidManifest.xml") || named("classes.dex") {
        Some("Android package")
    } else if named("META-INF/MANIFEST.MF") {
        Some("Java archive")
    } else {
        None
    }
}

/// `MZ`, and where its header points, `PE\0\0` (two bytes alone are
/// one random file in 65536).
fn is_pe(head: &[u8]) -> bool {
    if !head.starts_with(b"MZ") || head.len() < 0x40 {
        return false;
    }
    let at = u32::from_le_bytes([head[0x3c], head[0x3d], head[0x3e], head[0x3f]]) as usize;
    head.get(at..at + 4) == Some(b"PE\0\0")
}

/// Whether an archive (`zip`: one by its magic) would inflate past the
/// rules' ratio or ceiling.
fn archive_bomb(rules: &Rules, file: &Path, zip: bool, detected: Option<&str>) -> Option<String> {
    let size = std::fs::metadata(file).ok()?.len().max(1);
    let ceiling = rules
        .max_inflated
        .0
        .min(size.saturating_mul(rules.max_ratio));
    let too_much = |n: u64| {
        format!(
            "an archive that inflates to more than {} from {} (at most {}× or {} allowed)",
            crate::view::human_bytes(n),
            crate::view::human_bytes(size),
            rules.max_ratio,
            crate::view::human_bytes(rules.max_inflated.0)
        )
    };
    match detected {
        _ if zip => {
            let f = std::fs::File::open(file).ok()?;
            let mut zip = match zip::ZipArchive::new(f) {
                Ok(z) => z,
                // Not a readable zip after all: its magic said so, its
                // directory does not. Nothing to inflate, nothing to judge.
                Err(_) => return None,
            };
            let mut declared: u64 = 0;
            for i in 0..zip.len() {
                let entry = zip.by_index_raw(i).ok()?;
                declared = declared.saturating_add(entry.size());
                if declared > ceiling {
                    return Some(too_much(declared));
                }
            }
            None
        }
        Some("gz") => {
            // The trailer's size is the peer's to forge: inflate, as a
            // stream, only as far as the ceiling.
            let f = std::fs::File::open(file).ok()?;
            let mut gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f));
            let mut buf = vec![0u8; 1 << 16];
            let mut out: u64 = 0;
            loop {
                match gz.read(&mut buf) {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => {
                        out += n as u64;
                        if out > ceiling {
                            return Some(too_much(out));
                        }
                    }
                }
            }
        }
        _ => None,
    }
}

/// Run the external scanner on `file`.
fn scan(rules: &Rules, file: &Path, shown: &str) -> Verdict {
    let path = file.to_string_lossy();
    let args: Vec<String> = rules.scanner[1..]
        .iter()
        .map(|a| a.replace("{path}", &path))
        .collect();
    let program = &rules.scanner[0];
    let mut child = match std::process::Command::new(program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Some(format!(
                "the scanner {program:?} did not start ({e}); held unscanned"
            ))
        }
    };
    // Read as it comes (a chatty scanner must not fill its pipe and stall);
    // the first 512 bytes kept for the verdict, the rest dropped.
    let reader = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = out.by_ref().take(512).read_to_end(&mut kept);
            let _ = std::io::copy(&mut out, &mut std::io::sink());
            kept
        })
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(rules.scanner_timeout);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Some(format!(
                    "the scanner gave no answer in {} s; held unscanned",
                    rules.scanner_timeout
                ));
            }
        }
    };
    let said = reader
        .and_then(|r| r.join().ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    // The peer is told this: its own file's name, not the agent's paths.
    let said = said.replace(path.as_ref(), shown);
    let said = super::escape_control(said.trim()).into_owned();
    match status.code() {
        Some(0) => None,
        Some(1) => Some(match said.is_empty() {
            true => format!("the scanner found {shown} infected"),
            false => format!("the scanner says: {said}"),
        }),
        code => Some(format!(
            "the scanner failed (exit {}); held unscanned",
            code.map_or("by a signal".into(), |c| c.to_string())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(rules: &Rules, name: &str, bytes: &[u8], may_exec: bool) -> Verdict {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload.part");
        std::fs::write(&path, bytes).unwrap();
        let mime = crate::engine::client::mime_of(bytes);
        inspect(
            rules,
            &Upload {
                file: &path,
                name,
                declared_mime: &mime,
                may_exec,
            },
        )
    }

    fn elf() -> Vec<u8> {
        let mut b = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        b.resize(4096, 0);
        b
    }

    #[test]
    fn programs_are_held_unless_deployed_by_a_peer_allowed_to_under_their_own_names() {
        let r = Rules::default();
        let held = judge(&r, "report.pdf", &elf(), true).unwrap();
        assert_eq!(held, "ELF executable named report.pdf");
        assert!(judge(&r, "server", &elf(), false)
            .unwrap()
            .contains("may not upload programs"));
        assert_eq!(judge(&r, "server", &elf(), true), None);
        assert_eq!(judge(&r, "deploy.sh", b"#!/bin/sh\necho hi\n", true), None);
        assert!(judge(&r, "notes.txt", b"#!/bin/sh\nrm -rf ~\n", true)
            .unwrap()
            .starts_with("script (#!) named notes.txt"));
        let mut pe = b"MZ".to_vec();
        pe.resize(1024, 0);
        pe[0x3c] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        let mut not_pe = pe.clone();
        not_pe[0x80] = b'X';
        assert_eq!(judge(&r, "data.bin", &not_pe, false), None);
        assert!(judge(&r, "invoice.pdf.exe", &pe, true)
            .unwrap()
            .contains("double extension"));
        assert!(judge(&r, "x.jpg", &pe, true)
            .unwrap()
            .starts_with("Windows (PE)"));
        // Plain files pass.
        assert_eq!(judge(&r, "notes.txt", b"hello\n", false), None);
        assert_eq!(judge(&r, "data.bin", &[7u8; 5000], false), None);
    }

    /// A zip holding `names` (each a few bytes, stored).
    fn zip_of(names: &[&str]) -> Vec<u8> {
        let mut zip = vec![];
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(&mut zip));
        for name in names {
            let stored = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            w.start_file(*name, stored).unwrap();
            std::io::Write::write_all(&mut w, b"Manifest-Version: 1.0\n").unwrap();
        }
        w.finish().unwrap();
        zip
    }

    #[test]
    fn scripts_however_they_begin_java_and_android_packages_are_programs() {
        let r = Rules::default();
        let jar = zip_of(&["META-INF/MANIFEST.MF", "app/Main.class"]);
        let lower_case_manifest = zip_of(&["meta-inf/manifest.mf", "Main.class"]);
        let apk = zip_of(&["META-INF/MANIFEST.MF", "AndroidManifest.xml", "classes.dex"]);
        let mut dex = b"dex\n035\0".to_vec();
        dex.resize(512, 0x11);
        let held = [
            // (name, content, what it is held as)
            ("run", b"#!\t/bin/sh\nrm -rf ~\n".to_vec(), "script (#!)"),
            ("run", b"#!  /usr/bin/env python3\n".to_vec(), "script (#!)"),
            ("run", b"#! \t /bin/sh\n".to_vec(), "script (#!)"),
            ("tool", b"#!python3\nprint(1)\n".to_vec(), "script (#!)"),
            ("tool", b"#!./local-interpreter\n".to_vec(), "script (#!)"),
            // No #!: a shell, an interpreter or Windows runs them by name.
            ("deploy.sh", b"rm -rf ~\n".to_vec(), "script"),
            ("setup.command", b"echo hi\n".to_vec(), "script"),
            ("job.py", b"import os\n".to_vec(), "script"),
            ("a.pl", b"print 1;\n".to_vec(), "script"),
            ("a.rb", b"puts 1\n".to_vec(), "script"),
            ("index.php", b"<?php echo 1;\n".to_vec(), "script"),
            ("fix.bat", b"@echo off\r\ndel /q *\r\n".to_vec(), "script"),
            ("FIX.CMD", b"@echo off\r\n".to_vec(), "script"),
            ("a.zsh", b"echo\n".to_vec(), "script"),
            ("a.fish", b"echo\n".to_vec(), "script"),
            ("a.ps1", b"\xff\xfeW\0r\0i\0t\0e\0".to_vec(), "script"),
            ("a.vbs", b"MsgBox 1\n".to_vec(), "script"),
            ("a.hta", b"<script>x</script>\n".to_vec(), "script"),
            // Java and Android, by name, by directory, by magic.
            ("app.jar", jar.clone(), "Java archive"),
            ("app.war", jar.clone(), "Java archive"),
            ("not-a-zip.jar", b"whatever".to_vec(), "Java archive"),
            ("lib", lower_case_manifest.clone(), "Java archive"),
            ("app.apk", apk.clone(), "Android package"),
            ("app", apk.clone(), "Android package"),
            ("classes.dex", dex.clone(), "Android (dex) executable"),
            ("data", dex.clone(), "Android (dex) executable"),
        ];
        for (name, bytes, kind) in &held {
            let refused = judge(&r, name, bytes, false);
            assert_eq!(
                refused.as_deref(),
                Some(format!("{kind} named {name}, and this peer may not upload programs (on the agent: `pigeon keys trust <KEY> --name <PEER> --allow upload,exec,…`)").as_str()),
                "{name}"
            );
            // Deployed under an honest name by a peer allowed to: placed.
            assert_eq!(
                judge(&r, name, bytes, true),
                None,
                "{name} from a peer with exec"
            );
        }
        // Under a harmless name, held whoever sends it.
        assert_eq!(
            judge(&r, "photos.zip", &jar, true).as_deref(),
            Some("Java archive named photos.zip")
        );
        assert_eq!(
            judge(&r, "notes.txt", b"#!\t/bin/sh\n", true).as_deref(),
            Some("script (#!) named notes.txt")
        );
        // Not programs: Rust's `#![`, a lone `#!`, data under a script's
        // name, an office document's zip (its manifest is another file).
        for (name, bytes) in [
            ("lib.rs", b"#![forbid(unsafe_code)]\n".to_vec()),
            ("x", b"#!\n".to_vec()),
            ("x", b"#!  \n".to_vec()),
            ("x", b"dex\nnotes\n".to_vec()),
            ("dump.sh", vec![0u8; 600]),
            ("app.js", b"console.log(1)\n".to_vec()),
            ("report.odt", zip_of(&["mimetype", "META-INF/manifest.xml"])),
            ("notes.txt", b"echo hi\n".to_vec()),
        ] {
            assert_eq!(judge(&r, name, &bytes, false), None, "{name}: {bytes:?}");
        }
    }

    #[test]
    fn eicar_mismatches_and_bombs_are_held() {
        let r = Rules::default();
        assert!(judge(&r, "eicar.com", EICAR, false)
            .unwrap()
            .contains("EICAR"));
        // A zip under a PDF's name.
        let mut zip = vec![];
        {
            let mut w = zip::ZipWriter::new(std::io::Cursor::new(&mut zip));
            w.start_file(
                "a.txt",
                zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored),
            )
            .unwrap();
            std::io::Write::write_all(&mut w, b"hello").unwrap();
            w.finish().unwrap();
        }
        assert!(judge(&r, "paper.pdf", &zip, false)
            .unwrap()
            .contains("application/zip"));
        assert_eq!(judge(&r, "paper.zip", &zip, false), None);
        // A gzip of 64 MiB of zeros is about 64 KiB: a ratio of 1000.
        let mut gz = flate2::write::GzEncoder::new(vec![], flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            std::io::Write::write_all(&mut gz, &zeros).unwrap();
        }
        let gz = gz.finish().unwrap();
        assert!(judge(&r, "logs.gz", &gz, false)
            .unwrap()
            .contains("inflates to more than"));
        let lenient = Rules {
            max_ratio: 10_000,
            ..Rules::default()
        };
        assert_eq!(judge(&lenient, "logs.gz", &gz, false), None);
        let off = Rules {
            enabled: false,
            ..Rules::default()
        };
        assert_eq!(judge(&off, "report.pdf", &elf(), false), None);
    }

    #[test]
    fn the_scanner_decides_and_a_silent_or_broken_one_holds() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("scan");
        std::fs::write(
            &script,
            "#!/bin/sh\nif grep -q BAD \"$1\"; then echo \"$1: Bad.Test FOUND\"; exit 1; fi\nif grep -q SLOW \"$1\"; then sleep 5; fi\nexit 0\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = Rules {
            scanner: vec![script.to_string_lossy().into(), "{path}".into()],
            scanner_timeout: 1,
            ..Rules::default()
        };
        assert_eq!(judge(&r, "a.txt", b"fine", false), None);
        assert!(judge(&r, "a.txt", b"BAD", false)
            .unwrap()
            .contains("Bad.Test FOUND"));
        assert!(judge(&r, "a.txt", b"SLOW", false)
            .unwrap()
            .contains("no answer in 1 s"));
        let missing = Rules {
            scanner: vec!["/nonexistent/scanner".into()],
            ..Rules::default()
        };
        assert!(judge(&missing, "a.txt", b"x", false)
            .unwrap()
            .contains("did not start"));
    }
}
