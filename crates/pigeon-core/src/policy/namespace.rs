//! Whose files a peer sees, and where they are on disk.
//!
//! By default ([`Layout::PerPeer`]) each peer works in its own folder of
//! the root, `<root>/<peer>/`, and cannot see or touch another's: what it
//! calls `logs/a.txt` is `<root>/<peer>/logs/a.txt`. What other peers
//! shared with it appears under a folder of its view that is on no disk,
//! `shared/<owner>/…`, at the path the owner shared it from; only the
//! shared files and folders are reachable there, and only while their
//! [`Share`] lives. [`Layout::Shared`] keeps one namespace for every peer
//! (the whole root), as pigeon did before there were folders per peer.
//!
//! A peer's view is mapped here and nowhere else: [`Namespace::place`]
//! turns a path the peer named into a path under the root (or a folder of
//! the view), and [`Namespace::view_of`] turns a path under the root back
//! into the peer's name for it.

use serde::{Deserialize, Serialize};

use super::RemotePath;

/// The folder of each peer's view that holds what others shared with it.
pub const SHARED_DIR: &str = "shared";
/// Most live shares one peer may have made.
pub const MAX_SHARES_PER_PEER: usize = 1000;

/// How the root is divided between peers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// `<root>/<peer>/` each; sharing is how one peer sees another's.
    #[default]
    PerPeer,
    /// One namespace, the whole root, for every peer.
    Shared,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::PerPeer => "per-peer",
            Layout::Shared => "shared",
        })
    }
}

/// A file or folder one peer shared with another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub owner: String,
    /// In the owner's own folder, as the owner names it.
    pub path: String,
    /// The peer it is shared with.
    pub with: String,
    /// The other peer may download, never upload or replace.
    pub read_only: bool,
    pub made_unix: u64,
    pub expires_unix: Option<u64>,
}

impl Share {
    pub fn is_live(&self, now: u64) -> bool {
        self.expires_unix.is_none_or(|t| now < t)
    }

    /// One share per owner, path and peer: sharing again replaces it.
    pub fn key(&self) -> Vec<u8> {
        [self.owner.as_str(), self.path.as_str(), self.with.as_str()]
            .join("\0")
            .into_bytes()
    }

    /// Where the other peer sees it.
    pub fn seen_at(&self) -> String {
        format!("{SHARED_DIR}/{}/{}", self.owner, self.path)
    }

    fn components(&self) -> Vec<String> {
        RemotePath::parse(&self.path)
            .map(|p| p.components().to_vec())
            .unwrap_or_default()
    }
}

/// One entry of a folder that exists only in a peer's view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child {
    pub name: String,
    /// Under the root, when the entry is a shared file or folder itself
    /// (else it is a folder of the view, above what was shared).
    pub real: Option<RemotePath>,
}

/// Where a path of a peer's view is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place<'s> {
    /// Under the root, here; reached through `share` when it is another's.
    Real {
        at: RemotePath,
        share: Option<&'s Share>,
    },
    /// A folder of the view alone, with these entries.
    Virtual(Vec<Child>),
}

/// One peer's view of the root.
#[derive(Clone, Copy, Debug)]
pub struct Namespace<'a> {
    pub layout: Layout,
    pub peer: &'a str,
    /// Live shares with this peer (others are ignored).
    pub shares: &'a [Share],
}

impl<'a> Namespace<'a> {
    /// Where `view` is. `Err` says why nothing is there for this peer.
    pub fn place(&self, view: &RemotePath) -> Result<Place<'a>, String> {
        let parts = view.components();
        if self.layout == Layout::Shared {
            return Ok(Place::Real {
                at: view.clone(),
                share: None,
            });
        }
        if parts.first().map(String::as_str) != Some(SHARED_DIR) {
            return Ok(Place::Real {
                at: under(self.peer, parts),
                share: None,
            });
        }
        let shares: Vec<&'a Share> = self.shares.iter().filter(|s| s.with == self.peer).collect();
        let Some(owner) = parts.get(1) else {
            let mut owners: Vec<&str> = shares.iter().map(|s| s.owner.as_str()).collect();
            owners.sort_unstable();
            owners.dedup();
            return Ok(Place::Virtual(
                owners
                    .into_iter()
                    .map(|o| Child {
                        name: o.to_string(),
                        real: None,
                    })
                    .collect(),
            ));
        };
        let rest = &parts[2..];
        let theirs: Vec<(&'a Share, Vec<String>)> = shares
            .into_iter()
            .filter(|s| &s.owner == owner)
            .map(|s| (s, s.components()))
            .filter(|(_, c)| !c.is_empty())
            .collect();
        // The most specific share that holds the path decides.
        if let Some((share, _)) = theirs
            .iter()
            .filter(|(_, c)| rest.starts_with(c))
            .max_by_key(|(_, c)| c.len())
        {
            return Ok(Place::Real {
                at: under(owner, rest),
                share: Some(share),
            });
        }
        let mut children: Vec<Child> = vec![];
        for (_, c) in &theirs {
            if c.len() > rest.len() && c.starts_with(rest) {
                let name = c[rest.len()].clone();
                let real = (c.len() == rest.len() + 1).then(|| under(owner, c));
                match children.iter_mut().find(|ch| ch.name == name) {
                    Some(ch) if real.is_some() => ch.real = real,
                    Some(_) => {}
                    None => children.push(Child { name, real }),
                }
            }
        }
        if children.is_empty() {
            return Err(format!("nothing is shared with you at {view}"));
        }
        children.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Place::Virtual(children))
    }

    /// The peer's name for `at` (a path under the root), reached through
    /// `share` or in its own folder.
    pub fn view_of(&self, at: &str, share: Option<&Share>) -> String {
        if self.layout == Layout::Shared {
            return at.to_string();
        }
        let (owner, shown) = match share {
            Some(s) => (s.owner.as_str(), format!("{SHARED_DIR}/{}", s.owner)),
            None => (self.peer, String::new()),
        };
        let inside = at
            .strip_prefix(owner)
            .and_then(|r| r.strip_prefix('/').or(r.is_empty().then_some("")))
            .unwrap_or(at);
        match (shown.is_empty(), inside.is_empty()) {
            (true, _) => inside.to_string(),
            (false, true) => shown,
            (false, false) => format!("{shown}/{inside}"),
        }
    }
}

/// Where the root's layout is kept, so it stays what it was when the root
/// was first served (a root's files must not move under their peers).
const LAYOUT_FILE: &str = "layout";

/// The layout to serve `root` with: `asked` (`[agent] shared`, `pigeon
/// agent --shared`) when set, else the one the root was first served with,
/// else for a new root a folder per peer, and for a root that already
/// holds files (from before there were folders per peer: anything but
/// folders named after the `peers`) one namespace, so nobody's files seem
/// to vanish. The choice is kept in the root; the
/// second value says why, when the owner should know.
pub fn layout_of(
    root: &super::StorageRoot,
    asked: Option<bool>,
    peers: &[&str],
) -> crate::error::Result<(Layout, Option<String>)> {
    use crate::error::IoContext;
    let kept = root.path().join(super::INTERNAL_DIR).join(LAYOUT_FILE);
    let before = std::fs::read_to_string(&kept).ok();
    let before = before.as_deref().map(str::trim);
    let (layout, why) = match (asked, before) {
        (Some(true), _) => (Layout::Shared, None),
        (Some(false), _) => (Layout::PerPeer, None),
        (None, Some("shared")) => (Layout::Shared, None),
        (None, Some("per-peer")) => (Layout::PerPeer, None),
        (None, _) => {
            let used = std::fs::read_dir(root.path())
                .ctx(|| format!("reading {}", root.path().display()))?
                .flatten()
                .any(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let a_peers =
                        e.file_type().is_ok_and(|t| t.is_dir()) && peers.contains(&name.as_str());
                    !super::is_reserved(&name) && !a_peers
                });
            if used {
                (
                    Layout::Shared,
                    Some(format!(
                        "{} holds files from before pigeon gave each peer its own folder: every peer keeps seeing all of it; for a folder per peer, set `shared = false` under [agent] in config.toml",
                        root.path().display()
                    )),
                )
            } else {
                (Layout::PerPeer, None)
            }
        }
    };
    if before != Some(&layout.to_string()) {
        // Whole or not at all: a torn word must not change the layout.
        let fresh = kept.with_extension("new");
        std::fs::write(&fresh, layout.to_string())
            .and_then(|()| std::fs::rename(&fresh, &kept))
            .ctx(|| format!("writing {}", kept.display()))?;
    }
    Ok((layout, why))
}

/// `<folder>/<parts…>` as a path under the root. The folder is a peer
/// name ([`crate::home::PeerName`]: letters, digits, `-_.`, never starting
/// with a dot), so it is one plain component.
fn under(folder: &str, parts: &[String]) -> RemotePath {
    let mut all = Vec::with_capacity(parts.len() + 1);
    all.push(folder.to_string());
    all.extend_from_slice(parts);
    RemotePath::from_checked(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(owner: &str, path: &str, with: &str) -> Share {
        Share {
            owner: owner.into(),
            path: path.into(),
            with: with.into(),
            read_only: false,
            made_unix: 0,
            expires_unix: None,
        }
    }

    fn p(s: &str) -> RemotePath {
        RemotePath::parse(s).unwrap()
    }

    fn real(place: Place<'_>) -> (String, Option<String>) {
        match place {
            Place::Real { at, share } => (at.to_string(), share.map(|s| s.path.clone())),
            Place::Virtual(c) => panic!("virtual: {c:?}"),
        }
    }

    fn names(place: Place<'_>) -> Vec<(String, Option<String>)> {
        match place {
            Place::Virtual(c) => c
                .into_iter()
                .map(|c| (c.name, c.real.map(|r| r.to_string())))
                .collect(),
            Place::Real { at, .. } => panic!("real: {at}"),
        }
    }

    #[test]
    fn each_peer_is_in_its_own_folder_and_sees_only_what_is_shared_with_it() {
        let shares = [
            share("alice", "logs/app", "bob"),
            share("alice", "notes.txt", "bob"),
            share("alice", "secret", "carol"),
            share("dave", "x", "bob"),
        ];
        let bob = Namespace {
            layout: Layout::PerPeer,
            peer: "bob",
            shares: &shares,
        };
        assert_eq!(real(bob.place(&p("a/b.txt")).unwrap()).0, "bob/a/b.txt");
        assert_eq!(real(bob.place(&RemotePath::root()).unwrap()).0, "bob");
        assert_eq!(
            names(bob.place(&p("shared")).unwrap()),
            [("alice".into(), None), ("dave".into(), None)]
        );
        assert_eq!(
            names(bob.place(&p("shared/alice")).unwrap()),
            [
                ("logs".into(), None),
                ("notes.txt".into(), Some("alice/notes.txt".into()))
            ]
        );
        assert_eq!(
            names(bob.place(&p("shared/alice/logs")).unwrap()),
            [("app".into(), Some("alice/logs/app".into()))]
        );
        assert_eq!(
            real(bob.place(&p("shared/alice/logs/app/today.log")).unwrap()),
            (
                "alice/logs/app/today.log".into(),
                Some("logs/app".to_string())
            )
        );
        // Beside a shared folder, not in it: nothing there for bob.
        for hidden in [
            "shared/alice/logs/other.log",
            "shared/alice/secret",
            "shared/carol",
        ] {
            let e = bob.place(&p(hidden)).unwrap_err();
            assert!(e.contains("nothing is shared with you"), "{hidden}: {e}");
        }
        // The view's names map back.
        let s = &shares[0];
        assert_eq!(
            bob.view_of("alice/logs/app/x", Some(s)),
            "shared/alice/logs/app/x"
        );
        assert_eq!(bob.view_of("bob/a/b.txt", None), "a/b.txt");
        assert_eq!(bob.view_of("bob", None), "");
    }

    #[test]
    fn the_most_specific_share_decides() {
        let mut ro = share("alice", "logs", "bob");
        ro.read_only = true;
        let shares = [ro, share("alice", "logs/inbox", "bob")];
        let bob = Namespace {
            layout: Layout::PerPeer,
            peer: "bob",
            shares: &shares,
        };
        let Place::Real { share, .. } = bob.place(&p("shared/alice/logs/inbox/a")).unwrap() else {
            panic!()
        };
        assert!(!share.unwrap().read_only);
        let Place::Real { share, .. } = bob.place(&p("shared/alice/logs/b")).unwrap() else {
            panic!()
        };
        assert!(share.unwrap().read_only);
    }

    #[test]
    fn a_root_keeps_the_layout_it_was_first_served_with() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| crate::policy::StorageRoot::open(&dir.path().join(name)).unwrap();
        // New: a folder per peer, kept.
        let fresh = open("fresh");
        assert_eq!(
            layout_of(&fresh, None, &[]).unwrap(),
            (Layout::PerPeer, None)
        );
        std::fs::write(fresh.path().join("later.txt"), b"x").unwrap();
        assert_eq!(layout_of(&fresh, None, &[]).unwrap().0, Layout::PerPeer);
        // Files from before: one namespace, said, and kept.
        let old = open("old");
        std::fs::write(old.path().join("notes.txt"), b"x").unwrap();
        let (layout, why) = layout_of(&old, None, &[]).unwrap();
        assert_eq!(layout, Layout::Shared);
        assert!(why.unwrap().contains("shared = false"));
        std::fs::remove_file(old.path().join("notes.txt")).unwrap();
        assert_eq!(layout_of(&old, None, &[]).unwrap(), (Layout::Shared, None));
        // Only the trusted peers' folders: made ready for them, not from before.
        let ready = open("ready");
        std::fs::create_dir_all(ready.path().join("laptop/logs")).unwrap();
        assert_eq!(
            layout_of(&ready, None, &["laptop"]).unwrap().0,
            Layout::PerPeer
        );
        // Asked for: what was asked, and kept from then on.
        assert_eq!(
            layout_of(&old, Some(false), &[]).unwrap().0,
            Layout::PerPeer
        );
        assert_eq!(layout_of(&old, None, &[]).unwrap().0, Layout::PerPeer);
    }

    #[test]
    fn one_namespace_is_the_whole_root() {
        let ns = Namespace {
            layout: Layout::Shared,
            peer: "bob",
            shares: &[],
        };
        assert_eq!(real(ns.place(&p("shared/x")).unwrap()).0, "shared/x");
        assert_eq!(ns.view_of("alice/x", None), "alice/x");
    }
}
