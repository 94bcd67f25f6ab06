//! What a manager does beyond keeping the Raft log: admitting nodes (join tokens and
//! certificates), the dispatcher (heartbeats, nodes going Down and coming back), node
//! management with its quorum guards, and the loops only the leader runs.
//!
//! A [`Manager`] exists while this node is a Raft member. It speaks in typed results
//! ([`ManagerError`]); the daemon maps them onto HTTP. It does not run workloads, and it
//! does not know the wire format or who called (the daemon authenticates callers and
//! passes their verified identity in).
//!
//! What it runs in the background (proposals the dispatcher makes on the side, the
//! leader's loops) is tracked: [`Manager::shutdown`] waits for it within a grace.

mod ca;
mod cluster;
mod dispatcher;
mod error;
mod join;
mod nodes;
mod orchestrate;
mod renewals;
mod services;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hoist_raft::{ProposeError, RaftNode};
use hoist_state::{Change, ChangeOutcome, ClusterState};
use hoist_types::NodeId;
use tokio_util::task::TaskTracker;

pub use dispatcher::Dispatcher;
pub use error::{Conflict, Denial, Input, ManagerError, Object, Unavailable};
pub use join::{bootstrap_cluster, Bootstrap, BootstrapConfig};
pub use nodes::Demotion;

impl From<ProposeError> for ManagerError {
    fn from(err: ProposeError) -> Self {
        match err {
            ProposeError::Refused(refused) => {
                ManagerError::refused(Conflict::Change, refused.to_string())
            }
            ProposeError::NoQuorum(reason) => ManagerError::NoQuorum {
                cause: Unavailable::Quorum,
                reason: format!(
                    "no quorum: {reason}. The cluster cannot accept changes until a majority of managers is back; if they are gone for good, run `hoist init --force-new-cluster` on the surviving manager with the most recent state"
                ),
            },
            ProposeError::NotLeader { leader_addr } => ManagerError::NotLeader { leader_addr },
            ProposeError::Raft(reason) => ManagerError::internal(reason),
        }
    }
}

pub type Result<T, E = ManagerError> = std::result::Result<T, E>;

/// The manager side of a node, alive while the node is a Raft member.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    raft: RaftNode,
    dispatcher: Dispatcher,
    renewals: renewals::RenewLimiter,
    /// The proposals the dispatcher makes in the background and the leader's loops, so
    /// that stopping the manager can wait for them rather than cut them off.
    tasks: TaskTracker,
}

impl Manager {
    pub fn new(node_id: NodeId, raft: RaftNode) -> Self {
        Manager {
            inner: Arc::new(Inner {
                node_id,
                dispatcher: Dispatcher::new(),
                raft,
                renewals: Default::default(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    pub fn raft(&self) -> &RaftNode {
        &self.inner.raft
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.inner.dispatcher
    }

    /// Runs `work` in the background, tracked so that [`Manager::shutdown`] waits for it.
    fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.inner.tasks.spawn(work);
    }

    /// Runs a loop the owner spawned, tracked so that [`Manager::shutdown`] waits for it.
    async fn tracked<T>(&self, work: impl Future<Output = T>) -> T {
        self.inner.tasks.track_future(work).await
    }

    /// Waits, for at most `grace`, for the background proposals and the leader's loops
    /// (which end once their `shutdown` signal turns true) to finish. Returns whether
    /// they all did.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.inner.tasks.close();
        let finished = tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_ok();
        if !finished {
            tracing::warn!(node = %self.inner.node_id, n_tasks = self.inner.tasks.len(), ?grace, "the manager's tasks did not finish in time");
        }
        finished
    }

    /// Proposes a change through Raft (forwarded to the leader if need be).
    pub async fn propose(&self, change: Change) -> Result<ChangeOutcome> {
        Ok(self.inner.raft.propose(change).await?)
    }

    /// A linearizable copy of the state (or a part of it).
    pub async fn read<T>(&self, read: impl FnOnce(&ClusterState) -> T) -> Result<T> {
        self.inner.raft.linearizable_read().await?;
        Ok(self.inner.raft.state().read(read))
    }

    /// The locally applied state, without confirming it is current: for loops that
    /// react to changes, never for answering an operator.
    pub fn local<T>(&self, read: impl FnOnce(&ClusterState) -> T) -> T {
        self.inner.raft.state().read(read)
    }

    pub fn is_leader(&self) -> bool {
        self.inner.raft.is_leader()
    }

    pub fn require_leader(&self) -> Result<()> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(ManagerError::NotLeader {
                leader_addr: self.inner.raft.leader_addr(),
            })
        }
    }
}

/// Wall-clock milliseconds for the timestamps inside changes. Only proposers read the
/// clock; `apply` never does.
pub use hoist_types::clock::now_ms;
