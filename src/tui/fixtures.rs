//! Hand-built engine data for tests: the real input types, filled with
//! fixed ids, names and numbers so that rendered screens are stable.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pigeon_core::engine::RemoteEntry;
use pigeon_core::view::{
    ChunkState, Direction, EngineSnapshot, FaultCounters, TransferId, TransferStatus, TransferView,
    TransportHealth,
};

use super::app::{App, AppConfig};
use super::effect::Msg;
use super::entries::LocalEntry;
use super::keymap::Keymap;
use super::theme::Theme;

pub const START_DIR: &str = "/home/dev/project";

pub fn id(n: u8) -> TransferId {
    TransferId([n; 16])
}

/// A transfer of `chunks` chunks, the first `acked` acknowledged, the next
/// two in flight, one retried after them, the rest pending.
pub fn transfer(
    n: u8,
    name: &str,
    status: TransferStatus,
    chunks: usize,
    acked: usize,
) -> TransferView {
    let mut map = vec![ChunkState::Pending as u8; chunks];
    for (i, cell) in map.iter_mut().enumerate() {
        *cell = match i {
            i if i < acked => ChunkState::Acked as u8,
            i if i < acked + 2 && status == TransferStatus::InProgress => {
                ChunkState::InFlight as u8
            }
            i if i == acked + 2 && status == TransferStatus::InProgress => {
                ChunkState::Retried as u8
            }
            _ => ChunkState::Pending as u8,
        };
    }
    let chunk_size = 64 * 1024;
    TransferView {
        id: id(n),
        direction: Direction::Upload,
        local_path: format!("{START_DIR}/{name}"),
        remote_path: name.to_owned(),
        peer: "local".into(),
        size: (chunks * chunk_size) as u64,
        status,
        chunks_total: chunks as u64,
        chunks_done: acked as u64,
        bytes_done: (acked * chunk_size) as u64,
        rate: if status == TransferStatus::InProgress {
            180_000.0
        } else {
            0.0
        },
        eta: (status == TransferStatus::InProgress).then(|| Duration::from_secs(95)),
        transport: "local:/home/dev/.pigeon/spool?profile=shipper".into(),
        priority: 0,
        error: None,
        faults: FaultCounters::default(),
        chunk_map: Arc::from(map),
        chunk_links: Arc::from(Vec::new()),
        resumed: false,
        created_unix: 1_700_000_000 + u64::from(n),
        sha256: None,
        mime: "application/octet-stream".into(),
        delta_of: None,
    }
}

pub fn transport(profile: &str) -> TransportHealth {
    TransportHealth {
        uri: format!("local:/home/dev/.pigeon/spool?profile={profile}"),
        profile: profile.into(),
        up: true,
        state: pigeon_core::view::LinkState::Up,
        share: None,
        rtt: Some(Duration::from_millis(42)),
        throughput: (0..60).map(|i| 100_000 + (i % 7) * 20_000).collect(),
        messages_last_minute: 180,
        messages_per_minute_limit: Some(1000),
        errors: 0,
        retry_after: None,
        faults: FaultCounters::default(),
        problems: vec![],
        notes: vec![],
    }
}

pub fn snapshot(transfers: Vec<TransferView>) -> Arc<EngineSnapshot> {
    Arc::new(EngineSnapshot {
        peer: "local".into(),
        embedded_agent: true,
        transfers,
        transports: vec![transport("shipper")],
        agent_silent: None,
        version: 1,
    })
}

fn local(name: &str, is_dir: bool, size: u64) -> LocalEntry {
    LocalEntry {
        name: name.into(),
        path: PathBuf::from(START_DIR).join(name),
        is_dir,
        is_symlink: false,
        size,
    }
}

/// An app whose Files pane lists a small project and whose Remote pane
/// lists `remote`.
pub fn app(remote: Vec<RemoteEntry>) -> App {
    let mut app = app_unlisted();
    app.on_msg(Msg::RemoteListed {
        dir: String::new(),
        result: Ok(remote),
    });
    app
}

/// The app with Files read and Remote still waiting for its first listing.
pub fn app_unlisted() -> App {
    let config = AppConfig {
        start_dir: PathBuf::from(START_DIR),
        embedded_agent: true,
        bell: true,
    };
    let (mut app, _) = App::new(config, Keymap::defaults(), Theme::monochrome());
    app.on_msg(Msg::DirRead {
        dir: PathBuf::from(START_DIR),
        result: Ok(vec![
            local("docs", true, 4096),
            local("src", true, 4096),
            local(".git", true, 4096),
            local("Cargo.toml", false, 1_234),
            local("dataset.bin", false, 104_857_600),
            local("notes \x1b[31mred\x1b[0m.txt", false, 77),
            local("README.md", false, 5_120),
        ]),
    });
    app
}

pub fn remote_entry(path: &str, size: u64) -> RemoteEntry {
    RemoteEntry {
        path: path.into(),
        size,
        is_dir: false,
        sha256: None,
        modified_unix: 0,
    }
}
