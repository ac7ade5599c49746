//! Checking a transport from its URI without using it: the secrets are
//! found, the service answers and accepts them. `pigeon transports test`
//! and `list` print what [`check`] says; like [`super::open`], this is a
//! place that knows every kind, so the binary names none of them.

use super::messenger::Messenger;
use super::shipper::Shipper;
use super::telegram::Telegram;
use super::whatsapp::Whatsapp;
use super::TransportUri;
use crate::policy::escape_control;
use crate::view::{human_bytes, plural};

/// Check the transport `uri` names, once. `Ok` says what it reached
/// ("ok, this bot is @agent_bot (id 42); it writes to 7"); `Err` says what
/// is wrong and what to do. Each is one sentence, written to follow the
/// URI on a line. Never polls or listens, so a running pigeon on the same
/// credentials is not disturbed.
pub async fn check(uri: &TransportUri) -> Result<String, String> {
    match uri {
        TransportUri::Local(l) => match l.dir.is_dir() {
            true => Ok(format!("ok, the spool folder {} is there", l.dir.display())),
            false => Err(format!(
                "the spool folder {} does not exist",
                l.dir.display()
            )),
        },
        TransportUri::Memory(_) => Err("an in-memory channel joins parties of one process only (the simulator's); use local:<SPOOL_DIR> between processes".to_string()),
        TransportUri::Telegram(t) => {
            let me = Telegram::check(t).await?;
            Ok(format!(
                "ok, this bot is @{} (id {}); it writes to {}",
                escape_control(me.username.as_deref().unwrap_or("?")),
                me.id,
                t.chat
            ))
        }
        TransportUri::Whatsapp(t) => {
            let number = Whatsapp::check(t).await?;
            Ok(format!(
                "ok, the token speaks for {} ({}, id {}); it writes to {}; the webhook will listen on {}",
                escape_control(number.display_phone_number.as_deref().unwrap_or("?")),
                escape_control(number.verified_name.as_deref().unwrap_or("no verified name")),
                number.id,
                t.peer,
                t.meta.listen
            ))
        }
        TransportUri::Messenger(t) => {
            let page = Messenger::check(t).await?;
            Ok(format!(
                "ok, the token speaks for the Page {:?} (id {}); it writes to the person {}; the webhook will listen on {}",
                escape_control(page.name.as_deref().unwrap_or("?")),
                page.id,
                t.psid,
                t.meta.listen
            ))
        }
        TransportUri::Shipper(t) => {
            let ping = Shipper::check(t).await?;
            Ok(format!(
                "ok, these credentials are the account {:?} ({} a minute, {} a message); it writes to {}",
                escape_control(&ping.account),
                plural(u64::from(ping.rate_limit), "message"),
                human_bytes(ping.max_message as u64),
                t.peer
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spool_folder_checks_ok_only_when_it_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let there = TransportUri::parse(&format!("local:{}", dir.path().display())).unwrap();
        assert_eq!(
            check(&there).await,
            Ok(format!(
                "ok, the spool folder {} is there",
                dir.path().display()
            ))
        );
        let missing = dir.path().join("nope");
        let gone = TransportUri::parse(&format!("local:{}", missing.display())).unwrap();
        assert_eq!(
            check(&gone).await,
            Err(format!(
                "the spool folder {} does not exist",
                missing.display()
            ))
        );
    }

    #[tokio::test]
    async fn an_in_memory_channel_never_checks_ok_between_processes() {
        let uri = TransportUri::parse("mem:net").unwrap();
        let said = check(&uri).await.unwrap_err();
        assert!(said.contains("use local:<SPOOL_DIR>"), "{said}");
    }
}
