//! The cluster state every manager holds, and the only way to change it: a [`Change`]
//! applied by [`ClusterState::apply`].
//!
//! `apply` is deterministic: the same log gives the same state on every manager, so it
//! reads no clock and no randomness (times and ids come inside the `Change`, chosen by
//! the leader that proposed it). A change that does not fit the state is refused with a
//! [`ChangeError`] and leaves the state untouched; it never panics. This crate knows
//! nothing of Raft, the network or storage: the `raft` crate persists and replicates it.

mod change;
mod cluster;
pub mod persist;
pub mod records;

pub use change::{Change, ChangeError, ChangeOutcome, TaskEdit, TaskReport};
pub use cluster::{
    CaMaterial, CaRotation, ClusterSettings, ClusterState, JoinTokens, RetiredSecret,
    DEFAULT_JOIN_RATE_LIMIT, DEFAULT_MAX_REPLICAS, DEFAULT_TASK_HISTORY_LIMIT,
    MAX_REPLICAS_CEILING, MAX_TASK_HISTORY_LIMIT, MIN_CERT_EXPIRY_SECS,
};
