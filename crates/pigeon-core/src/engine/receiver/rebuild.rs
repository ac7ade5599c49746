//! A delta's end: the file it describes, rebuilt from the copy this side
//! holds (the base) and checked before anything else happens to it.
//!
//! ```text
//! delta verified ──apply──> <partial>.rebuilt ──size, SHA-256 ok, synced──>
//!     delta partial removed ──> rebuilt file put in place (as any upload)
//! ```
//!
//! Each step is safe to die in: killed before the delta partial goes, the
//! next run verifies the delta again and rebuilds again (the base has not
//! moved); killed after, the next run finds the rebuilt file, checks it
//! again and puts it in place ([`Receiver::open_partial`]); killed after
//! that, the file in place is checked against the announced hash.

use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::*;
use crate::protocol::DeltaOf;

/// Where the file a delta rebuilds waits to be put in place.
pub(crate) fn rebuilt_path(partial: &Path) -> PathBuf {
    let mut name = partial.as_os_str().to_owned();
    name.push(".rebuilt");
    PathBuf::from(name)
}

/// Counts and hashes what passes through to `inner`.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Receiver {
    /// The copy the delta applies to: the file at the destination.
    fn open_base(&self) -> std::io::Result<std::fs::File> {
        match &self.cfg.root {
            Some(root) => {
                let remote = crate::policy::RemotePath::parse_file(&self.rec.remote_path)
                    .map_err(std::io::Error::other)?;
                root.open_file(&remote)
            }
            None => std::fs::File::open(&self.rec.local_path),
        }
    }

    /// Rebuild the file `delta` describes from the verified delta in the
    /// partial file and the base, into [`rebuilt_path`], and check it.
    /// `Ok(Err(why))`: it is not the file the sender announced (the base
    /// changed under it, or the delta is hostile): nothing is kept. `Err`:
    /// this side could not write (a full disk).
    pub(super) async fn rebuild(
        &mut self,
        delta: DeltaOf,
    ) -> Result<std::result::Result<PathBuf, String>> {
        let partial = self.partial_path();
        let out_path = rebuilt_path(&partial);
        let base = self.open_base();
        let delta_len = self.rec.manifest.size;
        let made = out_path.clone();
        let built = tokio::task::spawn_blocking(move || -> Result<std::result::Result<(), String>> {
            let base = match base {
                Ok(f) => f,
                Err(e) => return Ok(Err(format!("its base cannot be read here ({e})"))),
            };
            let base_len = base
                .metadata()
                .ctx(|| "reading the delta's base".to_string())?
                .len();
            let instructions = std::fs::File::open(&partial)
                .ctx(|| format!("reading {}", partial.display()))?;
            let out = std::fs::File::create(&made).ctx(|| format!("creating {}", made.display()))?;
            let mut writer = Hashing {
                inner: BufWriter::with_capacity(1 << 20, out),
                hasher: Sha256::new(),
            };
            let applied = crate::delta::apply(
                BufReader::with_capacity(1 << 16, base),
                base_len,
                std::io::Read::take(BufReader::with_capacity(1 << 16, instructions), delta_len),
                &mut writer,
                delta.size,
            );
            let len = match applied {
                Ok(len) => len,
                Err(crate::delta::DeltaError::Output(e)) => {
                    return Err(CoreError::io(format!("writing {} (is the disk full?)", made.display()), e))
                }
                Err(crate::delta::DeltaError::Delta(e)) => {
                    return Err(CoreError::io(format!("reading {}", partial.display()), e))
                }
                Err(e) => {
                    tracing::info!("a delta did not apply: {e}");
                    return Ok(Err(match e {
                        crate::delta::DeltaError::BaseMismatch { .. }
                        | crate::delta::DeltaError::BaseShort { .. }
                        | crate::delta::DeltaError::Base(_) => {
                            "the copy here is not the delta's base any more".to_string()
                        }
                        other => other.to_string(),
                    }));
                }
            };
            let sha: [u8; 32] = writer.hasher.clone().finalize().into();
            let out = writer
                .inner
                .into_inner()
                .map_err(|e| CoreError::io(format!("writing {} (is the disk full?)", made.display()), e.into_error()))?;
            if len != delta.size || sha != delta.sha256 {
                // Said to the peer: nothing of this side's file.
                tracing::info!(
                    "a delta rebuilt {len} bytes, sha256 {}; its sender said {} bytes, {}",
                    &hex::encode(sha)[..16],
                    delta.size,
                    &hex::encode(delta.sha256)[..16]
                );
                return Ok(Err(
                    "the file rebuilt from the delta is not the one sent: the copy here changed under it"
                        .into(),
                ));
            }
            out.sync_all()
                .ctx(|| format!("syncing {} (is the disk full?)", made.display()))?;
            // Only a rebuilt file that is durable lets the delta go.
            std::fs::remove_file(&partial).ctx(|| format!("removing {}", partial.display()))?;
            if let Some(dir) = partial.parent() {
                crate::home::sync_dir(dir).ctx(|| format!("syncing {}", dir.display()))?;
            }
            Ok(Ok(()))
        })
        .await
        .map_err(|e| CoreError::Transfer(e.to_string()))??;
        match built {
            Ok(()) => {
                // The partial's handle is the delta's: what goes in place
                // from here is the rebuilt file, by its path.
                self.file = None;
                Ok(Ok(out_path))
            }
            Err(why) => {
                let _ = std::fs::remove_file(&out_path);
                Ok(Err(why))
            }
        }
    }

    /// A rebuilt file a run died before putting in place: the one the
    /// sender announced (checked again: it was checked before the delta
    /// went, but not since), or Err(why).
    pub(super) async fn check_rebuilt(
        &self,
        delta: DeltaOf,
    ) -> Result<std::result::Result<PathBuf, String>> {
        let path = rebuilt_path(&self.partial_path());
        let hashing = path.clone();
        let sha = tokio::task::spawn_blocking(move || hash_file(&hashing, delta.size))
            .await
            .map_err(|e| CoreError::Transfer(e.to_string()))?;
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match sha {
            Ok(sha) if sha == delta.sha256 && len == delta.size => Ok(Ok(path)),
            _ => {
                let _ = std::fs::remove_file(&path);
                Ok(Err(
                    "the file rebuilt from the delta changed before it was put in place".into(),
                ))
            }
        }
    }
}
