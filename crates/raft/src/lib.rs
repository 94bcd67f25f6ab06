//! Consensus for the managers: openraft wired to a redb store and to peer RPC over the
//! node's mutual-TLS HTTP client.
//!
//! This crate owns the Raft log format on disk, the snapshot format, and the peer RPC
//! routes (`/raft/*`). It exposes [`RaftNode`], a handle that proposes [`Change`]s
//! (forwarding to the leader when needed), serves linearizable reads and changes
//! membership; openraft's generics stay inside. It says which of its messages a leader
//! sends (`sent_by_leader`), but does not decide who may call the routes (the daemon's
//! TLS layer does) nor what a change means (`hoist-state` does).
//!
//! [`Change`]: hoist_state::Change

mod network;
mod node;
mod recovery;
mod routes;
mod store;

use std::io::Cursor;

pub use network::PeerNetwork;
pub use node::{MembershipInfo, ProposeError, RaftConfig, RaftNode, RaftStatus};
pub use recovery::{read_full_state, reseed_single_voter, RecoveredState};
pub use routes::{router, sent_by_leader};
pub use store::{check_store, open_store, store_file, SharedState, StoreError};

use hoist_state::{Change, ChangeError, ChangeOutcome};
use serde::{Deserialize, Serialize};

/// What applying one log entry produced, handed back to whoever proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult(pub Result<ChangeOutcome, ChangeError>);

impl Default for ApplyResult {
    fn default() -> Self {
        ApplyResult(Ok(ChangeOutcome::default()))
    }
}

openraft::declare_raft_types!(
    /// Hoist's Raft types: the log carries [`Change`]s, nodes are addressed by their
    /// TLS listener address.
    pub TypeConfig:
        D = Change,
        R = ApplyResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
