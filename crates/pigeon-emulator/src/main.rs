//! `pigeon-emulator telegram|shipper --listen 127.0.0.1:PORT ...`

use anyhow::{bail, Context, Result};
use pigeon_emulator::{messenger, shipper, telegram, whatsapp};

const USAGE: &str = "usage:
  pigeon-emulator telegram [--listen 127.0.0.1:8081] [--rate 1] --bot TOKEN=USERNAME [--bot ...]
  pigeon-emulator whatsapp [--listen 127.0.0.1:8083] [--pair-rate 0.1667] [--burst 1] --number PHONE_ID=WA_ID,token=T,app_secret=S,verify_token=V,webhook=URL[,name=N] [--number ...]
  pigeon-emulator messenger [--listen 127.0.0.1:8084] [--rate 1] --page PAGE_ID,token=T,app_secret=S,verify_token=V,webhook=URL[,name=N] --person PSID=PAGE_ID [...]
  pigeon-emulator messenger-person --api http://127.0.0.1:8084 --psid PSID --to-page SPOOL/AGENT_KEY_ID --from-page SPOOL/OWN_KEY_ID [--mode text|document]
  pigeon-emulator shipper  [--listen 127.0.0.1:8082] [--rate-limit 1000] [--max-message 1000000] --account NAME=KEY:SECRET [--account ...]

Local servers of the platforms' APIs for rehearsing pigeon:
  telegram: the Bot API with bots in bot-to-bot mode; point pigeon at it with
            telegram:@OTHER_BOT?token_env=VAR&api=http://ADDR
  whatsapp: the Cloud API for business numbers writing to each other, with
            signed webhooks; point pigeon at it with
            whatsapp:OTHER_WA_ID?phone_id=ID&token_env=..&app_secret_env=..&verify_token_env=..&listen=..&api=http://ADDR/v25.0
  messenger: the Send API for Pages and the people who write to them, with
            signed webhooks; a person is played with
            POST /_emulator/person/PSID/send {\"text\":..} and GET /_emulator/person/PSID/inbox
  messenger-person: the person carrying messages by hand between a pigeon on
            local:SPOOL?profile=messenger-text (or -doc, with --mode document)
            and the Page, through those two endpoints
  shipper:  the SM APOS Shipper protocol (docs/shipper-protocol.md); point pigeon at it with
            shipper:OTHER_ACCOUNT?base_url=http://ADDR&api_key_env=VAR&api_secret_env=VAR";

/// The platforms, as the first argument names them.
const KINDS: [&str; 5] = [
    "telegram",
    "whatsapp",
    "messenger",
    "messenger-person",
    "shipper",
];

/// The help of one subcommand: its usage line and what it is.
fn help_for(kind: &str) -> String {
    let usage = USAGE
        .lines()
        .filter(|l| {
            l.trim_start()
                .strip_prefix("pigeon-emulator ")
                .is_some_and(|rest| rest.split_whitespace().next() == Some(kind))
        })
        .map(str::trim)
        .collect::<Vec<_>>();
    let mut about = vec![];
    let mut lines = USAGE.lines();
    for l in lines.by_ref() {
        if l.trim_start().starts_with(&format!("{kind}:")) {
            about.push(
                l.trim()
                    .trim_start_matches(&format!("{kind}:"))
                    .trim()
                    .to_string(),
            );
            break;
        }
    }
    about.extend(
        lines
            .take_while(|l| l.starts_with("            "))
            .map(|l| l.trim().to_string()),
    );
    format!("usage: {}\n\n{}", usage.join("\n       "), about.join("\n"))
}

/// Errors are said in a line (never a backtrace: they are a user's to
/// read, not a developer's), with exit status 2.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pigeon-emulator: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_default();
    if matches!(kind.as_str(), "-h" | "--help" | "help") {
        println!("{USAGE}");
        return Ok(());
    }
    if !KINDS.contains(&kind.as_str()) {
        bail!("{kind:?} is not one of {}\n{USAGE}", KINDS.join(", "));
    }
    if std::env::args().skip(2).any(|a| a == "-h" || a == "--help") {
        println!("{}", help_for(&kind));
        return Ok(());
    }
    if kind == "messenger-person" {
        return person(args).await;
    }
    let mut listen = None;
    let mut bots = vec![];
    let mut accounts = vec![];
    let mut rate = 1.0;
    let mut rate_limit = shipper::RATE_LIMIT;
    let mut max_message = shipper::MAX_MESSAGE;
    let mut numbers = vec![];
    let (mut pair_rate, mut burst) = (1.0 / 6.0, 1.0);
    let mut pages = vec![];
    let mut people = vec![];
    let value = |args: &mut dyn Iterator<Item = String>, what: &str| {
        args.next().with_context(|| format!("{what}\n{USAGE}"))
    };
    while let Some(a) = args.next() {
        match (kind.as_str(), a.as_str()) {
            (_, "--listen") => listen = Some(value(&mut args, "--listen needs HOST:PORT")?),
            ("telegram", "--rate") => {
                rate = value(&mut args, "--rate needs messages a second per chat")?
                    .parse()
                    .ok()
                    .filter(|&r: &f64| r > 0.0)
                    .context("--rate needs messages a second per chat (Telegram's is 1)")?
            }
            ("telegram", "--bot") => {
                let spec = value(&mut args, "--bot needs TOKEN=USERNAME")?;
                let (token, username) =
                    spec.split_once('=').context("--bot needs TOKEN=USERNAME")?;
                bots.push(telegram::BotSpec {
                    token: token.into(),
                    username: username.into(),
                });
            }
            ("shipper", "--account") => accounts.push(
                value(&mut args, "--account needs NAME=KEY:SECRET")?
                    .parse::<shipper::AccountSpec>()
                    .map_err(anyhow::Error::msg)
                    .context("--account")?,
            ),
            ("shipper", "--rate-limit") => {
                rate_limit = value(&mut args, "--rate-limit needs messages a minute")?
                    .parse()
                    .context("--rate-limit needs a whole number of messages a minute")?
            }
            ("shipper", "--max-message") => {
                max_message = value(&mut args, "--max-message needs bytes")?
                    .parse()
                    .context("--max-message needs a whole number of bytes")?
            }
            ("whatsapp", "--number") => numbers.push(parse_number(&value(
                &mut args,
                "--number needs PHONE_ID=WA_ID,token=..",
            )?)?),
            ("whatsapp", "--pair-rate") => {
                pair_rate = value(&mut args, "--pair-rate needs messages a second")?
                    .parse()
                    .ok()
                    .filter(|&r: &f64| r > 0.0)
                    .context(
                        "--pair-rate needs messages a second to one user (WhatsApp's is 1/6)",
                    )?
            }
            ("whatsapp", "--burst") => {
                burst = value(&mut args, "--burst needs a number of messages")?
                    .parse()
                    .context("--burst needs a number of messages")?
            }
            ("messenger", "--page") => pages.push(parse_page(&value(
                &mut args,
                "--page needs PAGE_ID,token=..",
            )?)?),
            ("messenger", "--person") => {
                let spec = value(&mut args, "--person needs PSID=PAGE_ID")?;
                let (psid, page_id) = spec
                    .split_once('=')
                    .context("--person needs PSID=PAGE_ID")?;
                people.push(messenger::PersonSpec {
                    psid: psid.into(),
                    page_id: page_id.into(),
                });
            }
            ("messenger", "--rate") => {
                rate = value(&mut args, "--rate needs messages a second per person")?
                    .parse()
                    .ok()
                    .filter(|&r: &f64| r > 0.0)
                    .context("--rate needs messages a second per person")?
            }
            _ => bail!("unknown argument {a:?} for {kind:?}\n{USAGE}"),
        }
    }
    let (router, what) = match kind.as_str() {
        "telegram" => (
            telegram::Emulator::new(&bots).with_rate(rate).router(),
            format!("telegram emulator with {} bots", bots.len()),
        ),
        "shipper" => (
            shipper::Emulator::new(&accounts)
                .with_rate_limit(rate_limit)
                .with_max_message(max_message)
                .router(),
            format!("shipper emulator with {} accounts", accounts.len()),
        ),
        "whatsapp" => (
            whatsapp::Emulator::new(&numbers)
                .with_pair_rate(pair_rate, burst)
                .router(),
            format!("whatsapp emulator with {} numbers", numbers.len()),
        ),
        "messenger" => (
            messenger::Emulator::new(&pages, &people)
                .with_rate(rate, 3.0)
                .router(),
            format!(
                "messenger emulator with {} pages and {} people",
                pages.len(),
                people.len()
            ),
        ),
        _ => bail!("{kind:?} is not one of {}\n{USAGE}", KINDS.join(", ")),
    };
    let default_port = match kind.as_str() {
        "shipper" => 8082,
        "whatsapp" => 8083,
        "messenger" => 8084,
        _ => 8081,
    };
    let listen = listen.unwrap_or_else(|| format!("127.0.0.1:{default_port}"));
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    eprintln!("{what} on http://{}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}

/// `messenger-person`: carry a person's messages until stopped.
async fn person(mut args: impl Iterator<Item = String>) -> Result<()> {
    let (mut api, mut psid, mut to_page, mut from_page) = (None, None, None, None);
    let mut mode = pigeon_emulator::person::Mode::Text;
    while let Some(a) = args.next() {
        let mut value = |what: &str| {
            args.next()
                .with_context(|| format!("{a} needs {what}\n{USAGE}"))
        };
        match a.as_str() {
            "--api" => api = Some(value("the emulator's URL")?),
            "--psid" => psid = Some(value("the person's PSID")?),
            "--to-page" => to_page = Some(value("a folder")?),
            "--from-page" => from_page = Some(value("a folder")?),
            "--mode" => {
                mode = match value("text or document")?.as_str() {
                    "text" => pigeon_emulator::person::Mode::Text,
                    "document" => pigeon_emulator::person::Mode::Document,
                    other => bail!("--mode {other:?}: text or document"),
                }
            }
            _ => bail!("unknown argument {a:?} for \"messenger-person\"\n{USAGE}"),
        }
    }
    let need = |v: Option<_>, flag: &str| {
        v.with_context(|| format!("messenger-person needs {flag}\n{USAGE}"))
    };
    let carrier = pigeon_emulator::person::Carrier {
        api: need(api, "--api")?.trim_end_matches('/').to_string(),
        psid: need(psid, "--psid")?,
        to_page: need(to_page, "--to-page")?.into(),
        from_page: need(from_page, "--from-page")?.into(),
        mode,
    };
    eprintln!(
        "carrying {} -> person {} -> the Page, and back into {}",
        carrier.to_page.display(),
        carrier.psid,
        carrier.from_page.display()
    );
    carrier.run().await
}

/// `PHONE_ID=WA_ID,token=T,app_secret=S,verify_token=V,webhook=URL[,name=N]`.
fn parse_number(spec: &str) -> Result<whatsapp::NumberSpec> {
    let (phone_id, rest) = spec.split_once('=').context(
        "--number needs PHONE_ID=WA_ID,token=..,app_secret=..,verify_token=..,webhook=..",
    )?;
    let mut parts = rest.split(',');
    let wa_id = parts.next().unwrap_or_default().to_string();
    let mut n = whatsapp::NumberSpec {
        phone_id: phone_id.into(),
        name: format!("+{wa_id}"),
        wa_id,
        token: String::new(),
        app_secret: String::new(),
        verify_token: String::new(),
        webhook: String::new(),
    };
    for kv in parts {
        let (k, v) = kv
            .split_once('=')
            .context("--number: settings are key=value")?;
        match k {
            "token" => n.token = v.into(),
            "app_secret" => n.app_secret = v.into(),
            "verify_token" => n.verify_token = v.into(),
            "webhook" => n.webhook = v.into(),
            "name" => n.name = v.into(),
            other => bail!("--number: unknown setting {other:?}"),
        }
    }
    if n.token.is_empty()
        || n.app_secret.is_empty()
        || n.verify_token.is_empty()
        || n.webhook.is_empty()
    {
        bail!("--number needs token=, app_secret=, verify_token= and webhook=");
    }
    Ok(n)
}

/// `PAGE_ID,token=T,app_secret=S,verify_token=V,webhook=URL[,name=N]`.
fn parse_page(spec: &str) -> Result<messenger::PageSpec> {
    let mut parts = spec.split(',');
    let page_id = parts.next().unwrap_or_default().to_string();
    let mut p = messenger::PageSpec {
        name: format!("Page {page_id}"),
        page_id,
        token: String::new(),
        app_secret: String::new(),
        verify_token: String::new(),
        webhook: String::new(),
    };
    for kv in parts {
        let (k, v) = kv
            .split_once('=')
            .context("--page: settings are key=value")?;
        match k {
            "token" => p.token = v.into(),
            "app_secret" => p.app_secret = v.into(),
            "verify_token" => p.verify_token = v.into(),
            "webhook" => p.webhook = v.into(),
            "name" => p.name = v.into(),
            other => bail!("--page: unknown setting {other:?}"),
        }
    }
    if p.page_id.is_empty()
        || p.token.is_empty()
        || p.app_secret.is_empty()
        || p.verify_token.is_empty()
        || p.webhook.is_empty()
    {
        bail!("--page needs PAGE_ID, token=, app_secret=, verify_token= and webhook=");
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pigeon-emulator telegram --help` once said `unknown argument
    /// "--help"`: every subcommand has its help.
    #[test]
    fn every_subcommand_has_its_help() {
        for kind in KINDS {
            let help = help_for(kind);
            assert!(
                help.starts_with(&format!("usage: pigeon-emulator {kind} ")),
                "{kind}: {help}"
            );
            assert!(help.lines().count() >= 3, "{kind} says what it is: {help}");
        }
        assert!(help_for("messenger").contains("Send API"));
        assert!(!help_for("messenger").contains("messenger-person"));
    }
}
