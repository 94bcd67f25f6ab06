//! What a node keeps on disk to find itself again after a restart: where each file is
//! (`node.json`, `identity.json`, `raft/`), what `node.json` holds (`NodeRecord`), and
//! how a file is written (through a temporary file, fsync and a rename, mode 0600).
//!
//! Does not touch: when a record is written or what a missing file means (the lifecycle
//! decides), the Raft store's content (the raft crate), nor the data directory's
//! permissions as a whole (`files`).

use std::path::{Path, PathBuf};

use hoist_types::NodeId;
use serde::{Deserialize, Serialize};

/// Where a node keeps who it is and where the managers are.
pub(super) fn node_file(dir: &Path) -> PathBuf {
    dir.join("node.json")
}

/// Where a node keeps its key and certificates.
pub(super) fn identity_file(dir: &Path) -> PathBuf {
    dir.join("identity.json")
}

/// A manager's Raft store.
pub(super) fn raft_dir(dir: &Path) -> PathBuf {
    dir.join("raft")
}

/// What `node.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct NodeRecord {
    pub(super) node_id: NodeId,
    pub(super) cluster_id: String,
    pub(super) hostname: String,
    pub(super) advertise_addr: String,
    pub(super) managers: Vec<String>,
    /// The managers' node ids, from the join answer and then every heartbeat answer;
    /// empty in a record an older version wrote, until the first heartbeat.
    #[serde(default)]
    pub(super) manager_ids: Vec<NodeId>,
    /// Whether this node has been confirmed as a Raft voter and keeps a store in
    /// `raft/`: at start, a voter whose store is missing, empty or unreadable refuses to
    /// run. Absent from older versions, which then go by the certificate's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) raft_voter: Option<bool>,
}

pub(super) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file.
/// Private like everything in the data directory (see `files`).
pub(super) fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    write_file(path, &serde_json::to_vec_pretty(value)?, 0o600)
}

pub(super) fn write_secret_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    write_file(path, &serde_json::to_vec_pretty(value)?, 0o600)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
