//! Offline surgery on a manager's store, for disaster recovery: reading everything it
//! holds, and reseeding it as a one-voter group (force-new-cluster, restore).
//!
//! Only call these while no `RaftNode` has the store open.

// openraft's types fix the error type; see store.rs.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use hoist_state::{persist, ClusterState};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta,
    StoredMembership, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable};

use crate::store::{
    StoreError, KEY_COMMITTED, KEY_PURGED, KEY_SNAPSHOT_DATA, KEY_SNAPSHOT_META, KEY_UNCONFIRMED,
    KEY_VOTE, LOG, META, SNAPSHOT,
};
use crate::TypeConfig;

/// Everything a store holds, folded into one state.
#[derive(Debug, Clone)]
pub struct RecoveredState {
    pub state: ClusterState,
    /// The last entry the state includes.
    pub last_log_id: Option<LogId<u64>>,
    /// The highest term seen, so the new group starts above it.
    pub term: u64,
}

fn corrupt(err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(err.to_string())
}

/// Opens the database, waiting briefly for a Raft that was just shut down to let go.
fn open(dir: &Path) -> Result<Database, StoreError> {
    let path = dir.join("raft.redb");
    if !path.exists() {
        return Err(StoreError::Open {
            path: path.display().to_string(),
            reason: "there is no Raft store here".into(),
        });
    }
    let mut last = String::new();
    for _ in 0..50 {
        match Database::open(&path) {
            Ok(db) => return Ok(db),
            Err(err) => last = err.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(StoreError::Open {
        path: path.display().to_string(),
        reason: last,
    })
}

/// The snapshot plus every entry after it in the log, committed or not: a survivor's
/// log is the best record of the cluster there is (etcd's force-new-cluster does the
/// same).
pub fn read_full_state(dir: &Path) -> Result<RecoveredState, StoreError> {
    let db = open(dir)?;
    let txn = db.begin_read().map_err(corrupt)?;
    let snapshots = txn.open_table(SNAPSHOT).map_err(corrupt)?;
    let (mut state, mut last_log_id) = match (
        snapshots.get(KEY_SNAPSHOT_META).map_err(corrupt)?,
        snapshots.get(KEY_SNAPSHOT_DATA).map_err(corrupt)?,
    ) {
        (Some(meta), Some(data)) => {
            let meta: SnapshotMeta<u64, BasicNode> =
                serde_json::from_slice(meta.value()).map_err(corrupt)?;
            let state = persist::decode_snapshot(data.value()).map_err(corrupt)?;
            (state, meta.last_log_id)
        }
        _ => (ClusterState::default(), None),
    };
    let mut term = last_log_id.map(|id| id.leader_id.term).unwrap_or(0);
    let log = txn.open_table(LOG).map_err(corrupt)?;
    for item in log.iter().map_err(corrupt)? {
        let (_, value) = item.map_err(corrupt)?;
        let entry: Entry<TypeConfig> = serde_json::from_slice(value.value()).map_err(corrupt)?;
        term = term.max(entry.log_id.leader_id.term);
        if last_log_id.is_some_and(|applied| entry.log_id.index <= applied.index) {
            continue;
        }
        if let EntryPayload::Normal(change) = &entry.payload {
            // A refused change is a no-op here as it was everywhere else.
            let _ = state.apply(change);
        }
        last_log_id = Some(entry.log_id);
    }
    let meta = txn.open_table(META).map_err(corrupt)?;
    if let Some(vote) = meta.get(KEY_VOTE).map_err(corrupt)? {
        let vote: Vote<u64> = serde_json::from_slice(vote.value()).map_err(corrupt)?;
        term = term.max(vote.leader_id.term);
    }
    Ok(RecoveredState {
        state,
        last_log_id,
        term,
    })
}

/// Rewrites the store in `dir` (creating it if need be) so that it holds `recovered` as
/// its snapshot, no log, and a membership of `node_id` alone at `addr`. The next start
/// of Raft elects this node by itself.
pub fn reseed_single_voter(
    dir: &Path,
    node_id: u64,
    addr: &str,
    recovered: &RecoveredState,
) -> Result<LogId<u64>, StoreError> {
    std::fs::create_dir_all(dir).map_err(corrupt)?;
    let path = dir.join("raft.redb");
    let db = if path.exists() {
        open(dir)?
    } else {
        Database::create(&path).map_err(corrupt)?
    };
    let term = recovered.term + 1;
    let last_log_id = recovered
        .last_log_id
        .unwrap_or_else(|| LogId::new(CommittedLeaderId::new(term, node_id), 1));
    let membership = Membership::new(
        vec![BTreeSet::from([node_id])],
        BTreeMap::from([(node_id, BasicNode::new(addr))]),
    );
    let meta: SnapshotMeta<u64, BasicNode> = SnapshotMeta {
        last_log_id: Some(last_log_id),
        last_membership: StoredMembership::new(Some(last_log_id), membership),
        snapshot_id: format!("reseeded-{term}-{}", last_log_id.index),
    };
    let data = persist::encode_snapshot(&recovered.state).map_err(corrupt)?;
    let txn = db.begin_write().map_err(corrupt)?;
    {
        let mut log = txn.open_table(LOG).map_err(corrupt)?;
        log.retain(|_, _| false).map_err(corrupt)?;
        let mut snapshots = txn.open_table(SNAPSHOT).map_err(corrupt)?;
        snapshots
            .insert(
                KEY_SNAPSHOT_META,
                serde_json::to_vec(&meta).map_err(corrupt)?.as_slice(),
            )
            .map_err(corrupt)?;
        snapshots
            .insert(KEY_SNAPSHOT_DATA, data.as_slice())
            .map_err(corrupt)?;
        let mut meta_table = txn.open_table(META).map_err(corrupt)?;
        let vote = Vote::new(term, node_id);
        meta_table
            .insert(
                KEY_VOTE,
                serde_json::to_vec(&vote).map_err(corrupt)?.as_slice(),
            )
            .map_err(corrupt)?;
        meta_table
            .insert(
                KEY_PURGED,
                serde_json::to_vec(&last_log_id)
                    .map_err(corrupt)?
                    .as_slice(),
            )
            .map_err(corrupt)?;
        meta_table
            .insert(
                KEY_COMMITTED,
                serde_json::to_vec(&Some(last_log_id))
                    .map_err(corrupt)?
                    .as_slice(),
            )
            .map_err(corrupt)?;
        // This node leads the new group alone: it has no earlier vote to wait on a
        // leader's confirmation for.
        meta_table.remove(KEY_UNCONFIRMED).map_err(corrupt)?;
    }
    txn.commit().map_err(corrupt)?;
    Ok(last_log_id)
}
