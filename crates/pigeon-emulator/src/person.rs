//! The person's side of a Messenger conversation, carried between the
//! emulator and a pigeon on a local spool.
//!
//! Messenger has no API for a person (only the Messenger app), so two
//! pigeons meet over it only if someone carries each message across: what
//! the person's pigeon writes is typed (or attached) to the Page, and what
//! the Page sends is handed back. [`Carrier`] does that through the
//! emulator's person endpoints (`POST /_emulator/person/{psid}/send`,
//! `GET /_emulator/person/{psid}/inbox`), as `pigeon-emulator
//! messenger-person`, so a rehearsal needs no test code:
//!
//! ```text
//! pigeon (person) --local spool--> Carrier --person API--> emulator --webhook--> pigeon (Page)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};

/// How the person writes to the Page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Each message typed as a text (`messenger-text` on the spool).
    Text,
    /// Each message attached as a file (`messenger-doc`).
    Document,
}

/// Carries messages between a person's spool folders and the emulator.
pub struct Carrier {
    /// The emulator's base URL, e.g. `http://127.0.0.1:8084`.
    pub api: String,
    pub psid: String,
    /// Where the person's pigeon puts messages for the Page's agent: the
    /// spool's inbox of the agent's key id.
    pub to_page: PathBuf,
    /// Where the person's pigeon reads: the spool's inbox of its own key id.
    pub from_page: PathBuf,
    pub mode: Mode,
}

/// How often the folders and the person's inbox are looked at.
const EVERY: Duration = Duration::from_millis(50);

impl Carrier {
    /// Carry messages until the process ends. A person the emulator does
    /// not know is an error at once; an emulator that does not answer is
    /// said once and tried again.
    pub async fn run(&self) -> Result<()> {
        let http = reqwest::Client::new();
        std::fs::create_dir_all(&self.from_page)
            .with_context(|| format!("creating {}", self.from_page.display()))?;
        let mut seq = 0u64;
        let mut said = false;
        loop {
            match self.step(&http, &mut seq).await {
                Ok(_) => said = false,
                Err(e) if e.downcast_ref::<reqwest::Error>().is_some() => {
                    if !said {
                        eprintln!("pigeon-emulator: the emulator at {} does not answer ({e:#}); trying again", self.api);
                        said = true;
                    }
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(EVERY).await;
        }
    }

    /// One pass each way; returns how many messages were carried.
    pub async fn step(&self, http: &reqwest::Client, seq: &mut u64) -> Result<usize> {
        let mut carried = 0;
        for path in messages_in(&self.to_page) {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let body = match self.mode {
                Mode::Text => json!({ "text": String::from_utf8_lossy(&bytes) }),
                Mode::Document => {
                    json!({ "file": base64::engine::general_purpose::STANDARD.encode(&bytes) })
                }
            };
            let url = format!("{}/_emulator/person/{}/send", self.api, self.psid);
            let answer = http.post(&url).json(&body).send().await?;
            match answer.status().as_u16() {
                200 => {}
                404 => bail!(
                    "the emulator knows no person {:?}: give the PSID of a --person it was started with",
                    self.psid
                ),
                status => bail!(
                    "the emulator refused the person's message (HTTP {status}): {}",
                    answer.text().await.unwrap_or_default()
                ),
            }
            // Sent: only now is it the Page's, and gone from the folder.
            let _ = std::fs::remove_file(&path);
            carried += 1;
        }
        let url = format!("{}/_emulator/person/{}/inbox", self.api, self.psid);
        let inbox: Value = http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for m in inbox.as_array().into_iter().flatten() {
            let bytes = match (m["text"].as_str(), m["file"].as_str()) {
                (Some(t), _) => t.as_bytes().to_vec(),
                (None, Some(b)) => base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .context("the emulator's inbox holds a file that is not base64")?,
                _ => continue,
            };
            *seq += 1;
            deliver(&self.from_page, &bytes, *seq)?;
            carried += 1;
        }
        Ok(carried)
    }
}

/// The messages waiting in a spool inbox, oldest first (the spool names
/// them by time; temporary files begin with a dot).
pub fn messages_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".msg") && !n.starts_with('.'))
        })
        .collect();
    v.sort();
    v
}

/// Put a message into a spool inbox as the spool does: written under a
/// temporary name, then renamed, named so that it sorts by arrival.
fn deliver(dir: &Path, bytes: &[u8], seq: u64) -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!("{now:020}-person-{seq:010}.msg");
    let tmp = dir.join(format!(".tmp-{name}"));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(&name)).with_context(|| format!("delivering {name}"))?;
    Ok(())
}
