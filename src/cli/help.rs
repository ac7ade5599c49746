//! `pigeon completions SHELL` and `pigeon man`: both made from the
//! argument types ([`super::args`]), so they never differ from `--help`.

use anyhow::{anyhow, Context, Result};

use super::args::Cli;

/// `pigeon completions SHELL`: the script, on stdout.
pub fn completions(shell: clap_complete::Shell) {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "pigeon", &mut std::io::stdout());
}

/// `pigeon man [SUBCOMMAND…] [--install DIR]`: one manual page on
/// stdout, or every page written into DIR.
pub fn man(subcommand: &[String], install: Option<&std::path::Path>) -> Result<()> {
    if let Some(dir) = install {
        let pages = man_pages(dir)?;
        eprintln!(
            "wrote {} manual pages into {}; if `man pigeon` does not find them, add that folder's parent to MANPATH",
            pages,
            dir.display()
        );
        return Ok(());
    }
    man_page(subcommand, &mut std::io::stdout())
}

/// The page of `subcommand` (pigeon's own when empty), named as the
/// pages list it (`pigeon-keys-trust(1)`).
fn man_page(subcommand: &[String], out: &mut dyn std::io::Write) -> Result<()> {
    let cmd = built_command();
    let mut page = &cmd;
    for (depth, word) in subcommand.iter().enumerate() {
        page = page
            .get_subcommands()
            .find(|c| c.get_name() == word || c.get_all_aliases().any(|a| a == word))
            .ok_or_else(|| {
                let known: Vec<&str> = page.get_subcommands().map(|c| c.get_name()).collect();
                anyhow!(
                    "`pigeon {}` has no subcommand {word:?}; it has: {}",
                    subcommand[..depth].join(" "),
                    known.join(", ")
                )
            })?;
    }
    man_of(page).render(out)?;
    Ok(())
}

/// pigeon's command, built: each subcommand knows its full name
/// (pigeon-keys-trust), as its page is named.
fn built_command() -> clap::Command {
    let mut cmd = <Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// The page of `cmd`, footed with pigeon's name and version (a
/// subcommand has no version of its own).
fn man_of(cmd: &clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd.clone()).source(format!("pigeon {}", env!("CARGO_PKG_VERSION")))
}

/// Write pigeon's page and every subcommand's into `dir` (made if need
/// be); returns how many.
fn man_pages(dir: &std::path::Path) -> Result<usize> {
    fn write(cmd: &clap::Command, dir: &std::path::Path) -> Result<usize> {
        let path = dir.join(format!(
            "{}.1",
            cmd.get_display_name().unwrap_or(cmd.get_name())
        ));
        let mut page = vec![];
        man_of(cmd).render(&mut page)?;
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        let mut written = 1;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            written += write(sub, dir)?;
        }
        Ok(written)
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write(&built_command(), dir)
}

#[cfg(test)]
mod tests {
    use super::{man_page, man_pages, Cli};
    use clap::CommandFactory;

    #[test]
    fn every_command_and_argument_says_what_it_is_for() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} <{id}>"));
                }
            }
            for sub in cmd.get_subcommands() {
                let here = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(here.clone());
                }
                walk(sub, &here, missing);
            }
        }
        let mut missing = vec![];
        walk(&Cli::command(), "pigeon", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn completions_and_the_man_page_cover_every_command() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = vec![];
            clap_complete::generate(shell, &mut Cli::command(), "pigeon", &mut out);
            let text = String::from_utf8(out).unwrap();
            for word in ["upload", "download", "agent", "completions", "transport"] {
                assert!(text.contains(word), "{shell:?} completion lacks {word}");
            }
        }
        let mut page = vec![];
        man_page(&[], &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains(".TH pigeon 1"), "{page}");
        assert!(page.contains("pigeon\\-upload(1)"), "{page}");
    }

    /// Every page pigeon's own page lists exists: printed by name, and
    /// written by `--install`.
    #[test]
    fn every_subcommand_has_its_manual_page() {
        let mut page = vec![];
        man_page(&["keys".into(), "trust".into()], &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains(".TH pigeon-keys-trust 1"), "{page}");
        assert!(
            page.contains("--reuse-name") || page.contains("\\-\\-reuse\\-name"),
            "{page}"
        );
        let wrong = man_page(&["keys".into(), "trus".into()], &mut vec![]).unwrap_err();
        assert!(
            wrong.to_string().contains("show, trust, list, revoke"),
            "{wrong}"
        );

        let dir = tempfile::tempdir().unwrap();
        let written = man_pages(dir.path()).unwrap();
        let mut main = vec![];
        man_page(&[], &mut main).unwrap();
        let main = String::from_utf8(main).unwrap();
        // Each page the main one refers to, as "pigeon\-NAME(1)".
        let listed: Vec<String> = main
            .split("pigeon\\-")
            .skip(1)
            .filter_map(|rest| rest.split_once("(1)"))
            .map(|(name, _)| format!("pigeon-{}.1", name.replace("\\-", "-")))
            .collect();
        assert!(listed.len() > 10, "{listed:?}");
        for name in &listed {
            assert!(dir.path().join(name).is_file(), "{name} was not written");
        }
        assert!(dir.path().join("pigeon-keys-trust.1").is_file());
        assert!(written > listed.len(), "{written} pages");
    }
}
