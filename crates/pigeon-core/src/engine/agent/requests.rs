//! The other requests a peer makes: listings and quota questions; and
//! what uploads and downloads share (the audit line, how an accepted
//! request is described).

use super::*;

impl AgentHooks {
    pub(super) async fn on_list(
        &self,
        node: &Arc<Node>,
        peer: Arc<Peer>,
        request: u64,
        dir: String,
        offset: u32,
    ) {
        let refuse = |reason: String| refuse_list(node, &peer, request, &dir, reason);
        let perms = *lock(&peer.permissions);
        let asked = Request::List { dir: &dir };
        let shares = self.shares_with(node, &peer);
        let found = match authorize(
            peer.name.as_str(),
            &perms,
            &self.root,
            &self.namespace(&peer, &shares),
            asked,
        ) {
            Ok(found) => found,
            Err(r) => return refuse(r.reason),
        };
        // Listing (and hashing) runs beside the router: a big folder must
        // not hold up every other peer's frames.
        let root = self.root.clone();
        let hashes = self.hashes.clone();
        let node = node.clone();
        let background = (self.hashing.clone(), self.hasher.clone());
        let layout = self.layout;
        crate::task::spawn(async move {
            let ns = Namespace {
                layout,
                peer: peer.name.as_str(),
                shares: &shares,
            };
            let entries = match found {
                Found::Virtual(children) => {
                    let shown = RemotePath::parse(&dir).unwrap_or_else(|_| RemotePath::root());
                    let lister = root.clone();
                    let listed = tokio::task::spawn_blocking(move || {
                        list_virtual(&lister, &shown, &children)
                    })
                    .await;
                    match listed {
                        Ok(entries) => entries,
                        Err(_) => return,
                    }
                }
                Found::At(target) => {
                    let cache: HashCache = lock(&hashes).clone();
                    let lister = root.clone();
                    let at = target.remote.clone();
                    // A peer's own folder is there before its first upload.
                    let own_root = layout == Layout::PerPeer
                        && target.share.is_none()
                        && target.shown.is_root();
                    let listed = tokio::task::spawn_blocking(move || {
                        if own_root && lister.kind(&at).is_none() {
                            return Ok(Listed::default());
                        }
                        list_dir(&lister, &at, cache)
                    })
                    .await;
                    let Listed {
                        mut entries,
                        fresh,
                        unhashed,
                    } = match listed {
                        Ok(Ok(x)) => x,
                        Ok(Err(reason)) => {
                            let reason = reason.replace(&target.remote.to_string(), &dir);
                            return refuse_list(&node, &peer, request, &dir, reason);
                        }
                        Err(_) => return,
                    };
                    for (path, (stamp, sha)) in &fresh {
                        let _ = node.store.put_file_hash(path, *stamp, *sha);
                    }
                    lock(&hashes).extend(fresh);
                    hash_in_background(&node, &root, &hashes, background, unhashed);
                    for e in &mut entries {
                        e.path = ns.view_of(&e.path, target.share.as_ref());
                    }
                    if own_root && shares.iter().any(|s| s.with == peer.name.as_str()) {
                        entries.insert(0, virtual_dir(SHARED_DIR.to_string()));
                    }
                    entries
                }
            };
            if offset == 0 {
                audit(&node, peer.name.as_str(), "list", &dir, "ok", None);
            }
            // Pages small enough to seal in one control frame.
            let mut page = vec![];
            let mut bytes = 0;
            let mut i = offset as usize;
            while i < entries.len() && bytes < 40_000 {
                bytes += entries[i].path.len() + 120;
                page.push(entries[i].clone());
                i += 1;
            }
            node.send_control(
                &peer,
                &Control::Listing {
                    request,
                    entries: page,
                    more: i < entries.len(),
                },
            );
        });
    }
}

impl AgentHooks {
    /// A peer asks its quota: its own line, and all peers' summed.
    pub(super) fn on_quota(&self, node: &Arc<Node>, peer: &Peer, request: u64) {
        let Ok(all) = node.store.transfers() else {
            return;
        };
        let own = lock(&self.limits).clone();
        let lines: Vec<crate::policy::QuotaLine> =
            policy::quota_lines(&all, &policy::held(self.root.path()), &self.settings, &own)
                .into_iter()
                .filter(|l| l.who == peer.name.as_str() || l.who == "all peers")
                .collect();
        node.send_control(peer, &Control::Quota { request, lines });
    }
}

/// Refuse a listing: audited, and the reason goes back to the peer.
pub(super) fn refuse_list(node: &Node, peer: &Peer, request: u64, dir: &str, reason: String) {
    audit(
        node,
        peer.name.as_str(),
        "list",
        dir,
        &format!("refused: {reason}"),
        None,
    );
    node.send_control(peer, &Control::ListRefused { request, reason });
}

/// Append one line to the audit log (a failure is logged, not fatal).
pub(super) fn audit(
    node: &Node,
    peer: &str,
    action: &str,
    path: &str,
    outcome: &str,
    size: Option<u64>,
) {
    // Who: the trusted peer's key, or the key an untrusted name carries.
    let key_id = match peer.strip_prefix("untrusted:") {
        Some(id) => Some(id.to_string()),
        None => node.peer(peer).map(|p| p.key.id().to_string()),
    };
    let rec = AuditRecord {
        transport: node.transports_label(),
        key_id,
        size,
        ..AuditRecord::new(peer, action, path, outcome)
    };
    if let Err(e) = node.store.audit(rec) {
        node.log(LogLevel::Error, format!("audit log write failed: {e}"));
    }
}

/// Hash the big files a listing left unhashed, one at a time, each once,
/// so the next listing shows them.
pub(super) fn hash_in_background(
    node: &Arc<Node>,
    root: &StorageRoot,
    hashes: &Arc<Mutex<HashCache>>,
    (hashing, hasher): (Arc<Mutex<HashSet<PathBuf>>>, Arc<tokio::sync::Semaphore>),
    unhashed: Vec<(RemotePath, PathBuf)>,
) {
    for (remote, on_disk) in unhashed {
        if !lock(&hashing).insert(on_disk.clone()) {
            continue;
        }
        let (node, root, hashes, hashing, hasher) = (
            node.clone(),
            root.clone(),
            hashes.clone(),
            hashing.clone(),
            hasher.clone(),
        );
        crate::task::spawn(async move {
            let Ok(_permit) = hasher.acquire_owned().await else {
                return;
            };
            let hashed = tokio::task::spawn_blocking(move || {
                let file = root.open_file(&remote).ok()?;
                let meta = file.metadata().ok()?;
                meta.is_file().then_some(())?;
                let sha = crate::files::hash_open_file(&file, meta.len()).ok()?;
                Some((SourceStamp::of(&meta), sha))
            })
            .await;
            if let Ok(Some((stamp, sha))) = hashed {
                let _ = node.store.put_file_hash(&on_disk, stamp, sha);
                lock(&hashes).insert(on_disk.clone(), (stamp, sha));
            }
            lock(&hashing).remove(&on_disk);
        });
    }
}

/// A folder of the view alone in a listing.
fn virtual_dir(path: String) -> RemoteEntry {
    RemoteEntry {
        path,
        size: 0,
        is_dir: true,
        sha256: None,
        modified_unix: 0,
    }
}

/// The entries of a folder of `shown`'s view alone: folders above what was
/// shared, and the shared files and folders themselves as they are.
fn list_virtual(root: &StorageRoot, shown: &RemotePath, children: &[Child]) -> Vec<RemoteEntry> {
    let mut entries = vec![];
    for child in children {
        let Ok(path) = shown.join(&child.name) else {
            continue;
        };
        let path = path.to_string();
        let Some(real) = &child.real else {
            entries.push(virtual_dir(path));
            continue;
        };
        // A shared file or folder that is gone since is not listed.
        let Ok(meta) = root.open_file(real).and_then(|f| f.metadata()) else {
            continue;
        };
        let modified_unix = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        entries.push(RemoteEntry {
            path,
            size: if meta.is_dir() { 0 } else { meta.len() },
            is_dir: meta.is_dir(),
            sha256: None,
            modified_unix,
        });
    }
    entries.sort_by(|a, b| (!a.is_dir, &a.path).cmp(&(!b.is_dir, &b.path)));
    entries
}

/// How an accepted request is audited: through whose share, until when.
pub(super) fn accepted(share: Option<&Share>, expires_unix: Option<u64>) -> String {
    let mut out = "accepted".to_string();
    if let Some(s) = share {
        out.push_str(&format!(" (shared by {})", s.owner));
    }
    if let Some(t) = expires_unix {
        out.push_str(&format!(" (expires {})", crate::view::format_time(t)));
    }
    out
}

/// What [`list_dir`] found: the entries, the hashes it computed on the way
/// (for the cache), and the big files it left to hash in the background.
#[derive(Default)]
pub(super) struct Listed {
    entries: Vec<RemoteEntry>,
    fresh: HashCache,
    unhashed: Vec<(RemotePath, PathBuf)>,
}

/// Largest file a listing hashes when it has no cached hash.
pub(super) const LIST_HASH_LIMIT: u64 = 64 * 1024 * 1024;

/// List the entries of `remote` with sizes and (for files up to
/// [`LIST_HASH_LIMIT`], or cached) hashes, through the root's handle:
/// symlinks are not listed, and pigeon's own folder never is.
/// Returns the entries and the hashes computed on the way (for the cache).
pub(super) fn list_dir(
    root: &StorageRoot,
    remote: &RemotePath,
    cache: HashCache,
) -> std::result::Result<Listed, String> {
    let dir = match root.kind(remote) {
        Some(EntryKind::Folder) => root
            .open_dir(remote)
            .map_err(|e| format!("cannot read {remote}: {e}"))?,
        Some(EntryKind::File) => return Err(format!("{remote} is not a folder")),
        None => return Err(format!("{remote} does not exist")),
    };
    let mut entries = vec![];
    let mut fresh = HashCache::new();
    let mut unhashed = vec![];
    let read = dir
        .entries()
        .map_err(|e| format!("cannot read {remote}: {e}"))?;
    for entry in read.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if remote.is_root() && crate::policy::is_reserved(&name) {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            continue;
        }
        let rel = if remote.is_root() {
            name.clone()
        } else {
            format!("{remote}/{name}")
        };
        let on_disk = root.path().join(&rel);
        let (size, modified, sha256) = if kind.is_dir() {
            let modified = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .map(|t| t.into_std());
            (0, modified, None)
        } else {
            let Ok(file) = entry.open() else {
                continue;
            };
            let file = file.into_std();
            let Ok(meta) = file.metadata() else {
                continue;
            };
            let stamp = SourceStamp::of(&meta);
            let sha256 = match cache.get(&on_disk) {
                Some((s, h)) if *s == stamp => Some(sha_hex(h)),
                // Big files are not hashed on a listing's time (its answer
                // waits for it) but in the background, for the next one.
                _ if meta.len() > LIST_HASH_LIMIT => {
                    if let Ok(path) = RemotePath::parse_file(&rel) {
                        unhashed.push((path, on_disk.clone()));
                    }
                    None
                }
                _ => crate::files::hash_open_file(&file, meta.len())
                    .ok()
                    .map(|h| {
                        fresh.insert(on_disk.clone(), (stamp, h));
                        sha_hex(&h)
                    }),
            };
            (meta.len(), meta.modified().ok(), sha256)
        };
        let modified_unix = modified
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        entries.push(RemoteEntry {
            path: rel,
            size,
            is_dir: kind.is_dir(),
            sha256,
            modified_unix,
        });
    }
    entries.sort_by(|a, b| (!a.is_dir, &a.path).cmp(&(!b.is_dir, &b.path)));
    Ok(Listed {
        entries,
        fresh,
        unhashed,
    })
}

/// The peer asks again about a transfer this agent completed (an offer, a
/// Finish): the Done it was sent may have vanished, on the link answers
/// take. Say it again.
pub(super) fn say_done_again(node: &Node, peer: &Peer, rec: &TransferRecord) {
    node.answer_lost(peer);
    if let Some(sha256) = rec.sha256 {
        node.send_control(
            peer,
            &Control::Done {
                transfer: rec.id,
                sha256,
                faults: rec.faults,
            },
        );
    }
}
