//! `pigeon-emulator telegram|shipper --listen 127.0.0.1:PORT ...`

use anyhow::{bail, Context, Result};
use pigeon_emulator::{shipper, telegram};

const USAGE: &str = "usage:
  pigeon-emulator telegram [--listen 127.0.0.1:8081] [--rate 1] --bot TOKEN=USERNAME [--bot ...]
  pigeon-emulator shipper  [--listen 127.0.0.1:8082] [--rate-limit 1000] [--max-message 1000000] --account NAME=KEY:SECRET [--account ...]

Local servers of the platforms' APIs for rehearsing pigeon:
  telegram: the Bot API with bots in bot-to-bot mode; point pigeon at it with
            telegram:@OTHER_BOT?token_env=VAR&api=http://ADDR
  shipper:  the SM APOS Shipper protocol (docs/shipper-protocol.md); point pigeon at it with
            shipper:OTHER_ACCOUNT?base_url=http://ADDR&api_key_env=VAR&api_secret_env=VAR";

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_default();
    let mut listen = None;
    let mut bots = vec![];
    let mut accounts = vec![];
    let mut rate = 1.0;
    let mut rate_limit = shipper::RATE_LIMIT;
    let mut max_message = shipper::MAX_MESSAGE;
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
        "whatsapp" | "messenger" => bail!("the {kind} emulator is not built yet"),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let default_port = if kind == "shipper" { 8082 } else { 8081 };
    let listen = listen.unwrap_or_else(|| format!("127.0.0.1:{default_port}"));
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    eprintln!("{what} on http://{}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}
