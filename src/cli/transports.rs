//! `pigeon transports list` and `pigeon transports test URI`: each
//! transport checked as the core checks it
//! ([`pigeon_core::transport::check`]), one line each.

use anyhow::{anyhow, Result};
use pigeon_core::home::Home;
use pigeon_core::transport::TransportUri;

use super::args::TransportsCommand;

/// `pigeon transports list` and `pigeon transports test URI`.
pub async fn transports(home: &Home, cmd: TransportsCommand) -> Result<bool> {
    match cmd {
        TransportsCommand::Test { uri } => {
            let parsed = TransportUri::parse(&uri).map_err(|e| anyhow!(e))?;
            Ok(check_transport(&parsed).await)
        }
        TransportsCommand::List => {
            let cfg = home.config()?;
            if cfg.transports.is_empty() {
                println!(
                    "no transports in {}; add e.g. transports = [\"telegram:@phone_pigeon_bot?token_env=PIGEON_TG_TOKEN\"] (without any, pigeon uses the embedded local spool)",
                    home.config_path().display()
                );
                return Ok(true);
            }
            let mut all_ok = true;
            for (i, raw) in cfg.transports.iter().enumerate() {
                print!("{}. ", i + 1);
                match TransportUri::parse(raw) {
                    Ok(parsed) => all_ok &= check_transport(&parsed).await,
                    Err(e) => {
                        println!("{e}");
                        all_ok = false;
                    }
                }
            }
            Ok(all_ok)
        }
    }
}

/// Check one transport and say how it is, on one line: true when it works.
async fn check_transport(parsed: &TransportUri) -> bool {
    let (works, said) = match pigeon_core::transport::check(parsed).await {
        Ok(works) => (true, works),
        Err(wrong) => (false, wrong),
    };
    println!("{parsed}: {said}");
    works
}
