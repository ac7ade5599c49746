//! Who may do what, and where: one decision for every request a peer
//! makes, before anything is opened, allocated or answered.
//!
//! The agent asks [`authorize`] first; what it gets back is either where
//! the request may act (a path already checked under the root) or a
//! [`Refusal`] to send as it is. Checks that need the store or the file's
//! content (a transfer id in use, the quotas and open-upload limits, a
//! file that is there already) follow in the agent, on the target this
//! returns.
//!
//! Nothing is made here, not even an upload's folders: a peer refused
//! after this (over its quota, say) must leave no trace under the root.
//! The agent makes them with [`StorageRoot::prepare_parent`] once every
//! check has passed, just before it accepts the upload.

use std::path::PathBuf;

use super::namespace::{Child, Namespace, Place};
use super::{Permissions, RemotePath, Share, StorageRoot};
use crate::protocol::RefuseCode;

/// A peer's request, as it named it.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    /// Put a file at `path`.
    Upload { path: &'a str },
    /// Send the file at `path`.
    Download { path: &'a str },
    /// List the folder `dir` (`""` or `.` for the root).
    List { dir: &'a str },
}

impl Request<'_> {
    /// The audit log's word for it.
    pub fn action(&self) -> &'static str {
        match self {
            Request::Upload { .. } => "upload",
            Request::Download { .. } => "download",
            Request::List { .. } => "list",
        }
    }
}

/// Where an authorised request acts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The path under the root, in the form that is kept.
    pub remote: RemotePath,
    /// The path as the peer's view names it (what it is told).
    pub shown: RemotePath,
    /// On disk, resolved under the root. An upload's parent folders may
    /// not exist yet: they are made only once the upload is accepted.
    pub path: PathBuf,
    /// The share it is reached through, when it is another peer's.
    pub share: Option<Share>,
}

/// What an authorised request found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    At(Target),
    /// A folder of the peer's view alone (`shared/`, an owner's folder in
    /// it): only a listing finds one.
    Virtual(Vec<Child>),
}

/// A request refused: what to tell the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: RefuseCode,
    pub reason: String,
}

impl Refusal {
    fn new(code: RefuseCode, reason: impl Into<String>) -> Refusal {
        Refusal {
            code,
            reason: reason.into(),
        }
    }
}

/// May `peer` (holding `perms`, seeing `ns`) do `request` under `root`,
/// and where.
pub fn authorize(
    peer: &str,
    perms: &Permissions,
    root: &StorageRoot,
    ns: &Namespace<'_>,
    request: Request<'_>,
) -> Result<Found, Refusal> {
    let (allowed, raw) = match request {
        Request::Upload { path } => (perms.upload, path),
        Request::Download { path } => (perms.download, path),
        Request::List { dir } => (perms.list, dir),
    };
    if !allowed {
        let mut granted = *perms;
        match request {
            Request::Upload { .. } => granted.upload = true,
            Request::Download { .. } => granted.download = true,
            Request::List { .. } => granted.list = true,
        }
        return Err(Refusal::new(
            RefuseCode::Permission,
            format!(
                "peer {peer} may not {}; to allow it, on the agent run `pigeon keys trust <KEY> --name {peer} --allow {granted}` (the key as `pigeon keys list` shows it; a running agent re-reads the list)",
                request.action()
            ),
        ));
    }
    let bad_path = |e: crate::error::CoreError| Refusal::new(RefuseCode::BadPath, e.to_string());
    let shown = match request {
        Request::List { .. } => RemotePath::parse(raw),
        _ => RemotePath::parse_file(raw),
    }
    .map_err(bad_path)?;
    let (remote, share) = match ns.place(&shown) {
        Ok(Place::Real { at, share }) => (at, share.cloned()),
        Ok(Place::Virtual(children)) => {
            return match request {
                Request::List { .. } => Ok(Found::Virtual(children)),
                _ => Err(Refusal::new(
                    RefuseCode::BadPath,
                    format!(
                        "{shown} holds what other peers share with you; name a file inside what they shared (`pigeon shares` lists it)"
                    ),
                )),
            }
        }
        Err(reason) => {
            return Err(Refusal::new(
                RefuseCode::NotFound,
                format!("{reason}; `pigeon shares` lists what is"),
            ))
        }
    };
    if let (Request::Upload { .. }, Some(s)) = (request, &share) {
        if s.read_only {
            return Err(Refusal::new(
                RefuseCode::Permission,
                format!(
                    "{} shared {} with you read-only; download it, or ask them to share it without --read-only",
                    s.owner, s.path
                ),
            ));
        }
    }
    let path = root.resolve(&remote).map_err(bad_path)?;
    Ok(Found::At(Target {
        remote,
        shown,
        path,
        share,
    }))
}

/// [`authorize`] for an upload or a download: a file, never a folder of
/// the view.
pub fn authorize_file(
    peer: &str,
    perms: &Permissions,
    root: &StorageRoot,
    ns: &Namespace<'_>,
    request: Request<'_>,
) -> Result<Target, Refusal> {
    match authorize(peer, perms, root, ns, request)? {
        Found::At(t) => Ok(t),
        Found::Virtual(_) => Err(Refusal::new(
            RefuseCode::BadPath,
            "a listing of what is shared is no file",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, StorageRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = StorageRoot::open(&dir.path().join("storage")).unwrap();
        (dir, root)
    }

    const ONE: Namespace<'static> = Namespace {
        layout: crate::policy::Layout::Shared,
        peer: "p",
        shares: &[],
    };

    const ALL: Permissions = Permissions {
        upload: true,
        download: true,
        list: true,
        exec: false,
    };

    #[test]
    fn each_request_needs_its_own_permission() {
        let (_d, root) = root();
        let none = Permissions {
            upload: false,
            download: false,
            list: false,
            exec: false,
        };
        for (request, word) in [
            (Request::Upload { path: "a.bin" }, "upload"),
            (Request::Download { path: "a.bin" }, "download"),
            (Request::List { dir: "" }, "list"),
        ] {
            let refused = authorize("laptop", &none, &root, &ONE, request).unwrap_err();
            assert_eq!(refused.code, RefuseCode::Permission);
            assert!(
                refused
                    .reason
                    .starts_with(&format!("peer laptop may not {word}; to allow it"))
                    && refused
                        .reason
                        .contains(&format!("--name laptop --allow {word}`")),
                "{}",
                refused.reason
            );
            assert!(authorize("laptop", &ALL, &root, &ONE, request).is_ok());
        }
    }

    #[test]
    fn hostile_paths_are_refused_before_anything_is_made() {
        let (dir, root) = root();
        for path in [
            "../x",
            "/etc/passwd",
            "a/../../b",
            ".pigeon/staging/x",
            "",
            "C:x",
        ] {
            let refused = authorize("p", &ALL, &root, &ONE, Request::Upload { path }).unwrap_err();
            assert_eq!(refused.code, RefuseCode::BadPath, "{path:?}: {refused:?}");
        }
        assert!(!dir.path().join("x").exists() && !dir.path().join("b").exists());
        // A folder is no file to download, and the root lists.
        assert!(authorize("p", &ALL, &root, &ONE, Request::Download { path: "" }).is_err());
        assert!(authorize("p", &ALL, &root, &ONE, Request::List { dir: "" }).is_ok());
    }

    #[test]
    fn an_authorised_upload_gets_a_path_under_the_root_and_no_folders_yet() {
        let (_d, root) = root();
        let t = authorize_file(
            "p",
            &ALL,
            &root,
            &ONE,
            Request::Upload {
                path: "logs/2026/a.txt",
            },
        )
        .unwrap();
        assert_eq!(t.remote.to_string(), "logs/2026/a.txt");
        assert!(t.path.starts_with(root.path()));
        // The quotas are judged after this: the folders wait for them.
        assert!(
            !root.path().join("logs").exists(),
            "authorising made folders before the agent's own checks"
        );
        root.prepare_parent(&t.remote).unwrap();
        assert!(t.path.parent().unwrap().is_dir());
    }
}
