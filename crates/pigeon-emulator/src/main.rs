//! `pigeon-emulator telegram --listen 127.0.0.1:PORT --bot TOKEN=USERNAME ...`

use anyhow::{bail, Context, Result};
use pigeon_emulator::telegram::{BotSpec, Emulator};

const USAGE: &str = "usage: pigeon-emulator telegram [--listen 127.0.0.1:8081] [--rate 1] --bot TOKEN=USERNAME [--bot ...]

A local Telegram Bot API server for rehearsing pigeon (bots in bot-to-bot
mode). Point pigeon at it with telegram:@OTHER_BOT?token_env=VAR&api=http://ADDR";

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("telegram") => {}
        Some("whatsapp" | "messenger" | "shipper") => {
            bail!("that emulator is not built yet; only telegram is")
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
    let mut listen = "127.0.0.1:8081".to_string();
    let mut bots = vec![];
    let mut rate = 1.0;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().context("--listen needs HOST:PORT")?,
            "--rate" => {
                rate = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&r: &f64| r > 0.0)
                    .context("--rate needs messages a second per chat (Telegram's is 1)")?
            }
            "--bot" => {
                let spec = args.next().context("--bot needs TOKEN=USERNAME")?;
                let (token, username) =
                    spec.split_once('=').context("--bot needs TOKEN=USERNAME")?;
                bots.push(BotSpec {
                    token: token.into(),
                    username: username.into(),
                });
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    eprintln!(
        "telegram emulator on http://{} with {} bots",
        listener.local_addr()?,
        bots.len()
    );
    Emulator::new(&bots).with_rate(rate).serve(listener).await?;
    Ok(())
}
