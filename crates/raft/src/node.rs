//! [`RaftNode`]: the handle the rest of the manager uses to propose changes, read
//! linearizably and change membership. Writes and read-index requests that reach a
//! follower are forwarded to the leader over peer RPC.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hoist_state::{Change, ChangeError, ChangeOutcome};
use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::network::{error_chain, PeerNetwork};
use crate::store::{open_store, SharedState, StoreError, VoterConfirmer};
use crate::{ApplyResult, Raft};

/// Timing and compaction knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftConfig {
    /// Leader heartbeat to followers.
    pub heartbeat_ms: u64,
    /// A follower that hears nothing for a random time in this range starts an
    /// election. Several times the heartbeat, so one late beat on a busy machine does not
    /// depose a healthy leader.
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Take a snapshot every this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind the snapshot, so a briefly lagging follower catches
    /// up from the log rather than by a full snapshot.
    pub keep_after_snapshot: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_ms: 150,
            election_min_ms: 600,
            election_max_ms: 1_200,
            snapshot_every: 2_000,
            keep_after_snapshot: 1_000,
        }
    }
}

/// Why a proposal or a read did not happen. The callers turn these into messages.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum ProposeError {
    /// The change reached the log but the state refused it; nothing changed.
    #[error(transparent)]
    Refused(ChangeError),
    /// No leader could be found or reached in time: most likely the managers lost
    /// quorum.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// This node is not the leader (only returned to a forwarding peer).
    #[error("this manager is not the leader")]
    NotLeader { leader_addr: Option<String> },
    #[error("raft: {0}")]
    Raft(String),
}

/// A summary for `hoist info` and `node ls`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RaftStatus {
    pub id: u64,
    pub state: String,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub membership: MembershipInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct MembershipInfo {
    /// Voters with their addresses.
    pub voters: BTreeMap<u64, String>,
    pub learners: BTreeMap<u64, String>,
}

impl MembershipInfo {
    /// Votes needed for a decision among the current voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

/// A leader that does not confirm a read index in this time is taken for gone (a
/// healthy one answers in milliseconds); the read looks for the next leader.
const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(2);

/// A forwarded write the leader has not answered in this time is reported, and retried
/// on whichever manager leads then.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a proposal keeps looking for a leader (an election takes a few seconds at
/// most) before reporting that there is no quorum.
const LEADER_WAIT: Duration = Duration::from_secs(8);

/// A running Raft member.
#[derive(Clone)]
pub struct RaftNode {
    id: u64,
    raft: Raft,
    shared: SharedState,
    http: reqwest::Client,
    /// Clears the store's "unconfirmed" marker once a leader confirms this node.
    confirmer: Arc<VoterConfirmer>,
    /// Drawn at random when Raft starts here. A new manager sends it when it asks to be
    /// a voter, so that the leader can tell its own retry (the answer was lost) from a
    /// voter that restarted with a blank store.
    incarnation: u64,
    /// On a leader: the incarnation each manager it made a voter asked with.
    added_voters: Arc<std::sync::Mutex<BTreeMap<u64, u64>>>,
    /// Whether this node may grant votes and stand for election. A node whose store
    /// began blank may have voted in a term it no longer remembers (its store was lost
    /// and it was a voter), so it does neither until it founds a group or a leader
    /// confirms it as a new voter ([`Self::allow_voting`]).
    may_vote: Arc<AtomicBool>,
}

impl RaftNode {
    /// Opens the store in `dir` and starts Raft. An uninitialized node waits to be
    /// initialized or added by a leader.
    pub async fn start(
        id: u64,
        dir: &Path,
        config: RaftConfig,
        http: reqwest::Client,
    ) -> Result<Self, StoreError> {
        let (log_store, state_machine, shared) = open_store(dir)?;
        let needs_confirmation = log_store.needs_confirmation()?;
        let confirmer = Arc::new(log_store.confirmer());
        let raft_config = Config {
            cluster_name: "hoist".into(),
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_min_ms,
            election_timeout_max: config.election_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_after_snapshot,
            ..Default::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|err| StoreError::Corrupt(format!("raft config: {err}")))?,
        );
        let raft = Raft::new(
            id,
            raft_config,
            PeerNetwork::new(http.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(|err| StoreError::Corrupt(format!("raft start: {err}")))?;
        if needs_confirmation {
            raft.runtime_config().elect(false);
        }
        Ok(RaftNode {
            id,
            raft,
            shared,
            http,
            confirmer,
            incarnation: rand::random::<u64>().max(1),
            added_voters: Arc::default(),
            may_vote: Arc::new(AtomicBool::new(!needs_confirmation)),
        })
    }

    /// Whether this node grants votes and stands for election: false while its store
    /// began blank and no leader has confirmed it as a new voter. A new manager is in
    /// that state until its join completes; a voter that lost its store stays in it,
    /// and the leader refuses to confirm it.
    pub fn may_vote(&self) -> bool {
        self.may_vote.load(Ordering::SeqCst)
    }

    /// Lets a node whose store began blank vote: it founded the group, or a leader has
    /// just made it a voter, so it has no earlier vote to contradict.
    pub fn allow_voting(&self) -> Result<(), ProposeError> {
        if self.may_vote() {
            return Ok(());
        }
        self.confirmer
            .confirm()
            .map_err(|err| ProposeError::Raft(format!("recording the confirmation: {err}")))?;
        self.may_vote.store(true, Ordering::SeqCst);
        self.raft.runtime_config().elect(true);
        Ok(())
    }

    /// Waits until Raft stops on its own: openraft's core hit a fatal error (a storage
    /// error such as a full disk, or a panic) and will not serve again. Returns the
    /// reason. A stop asked for with [`Self::shutdown`] never returns.
    pub async fn fatal(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            {
                let current = metrics.borrow_and_update();
                if current.state == ServerState::Shutdown {
                    match &current.running_state {
                        Err(openraft::error::Fatal::Stopped) => {}
                        Err(fatal) => return fatal.to_string(),
                        Ok(()) => return "the raft core stopped".to_string(),
                    }
                    break;
                }
            }
            if metrics.changed().await.is_err() {
                return "the raft core stopped".to_string();
            }
        }
        std::future::pending::<String>().await
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn state(&self) -> &SharedState {
        &self.shared
    }

    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Makes this node the only voter of a new group.
    pub async fn initialize(&self, addr: &str) -> Result<(), ProposeError> {
        self.allow_voting()?;
        let members = BTreeMap::from([(self.id, BasicNode::new(addr))]);
        self.raft
            .initialize(members)
            .await
            .map_err(|err| ProposeError::Raft(err.to_string()))
    }

    pub async fn is_initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(false)
    }

    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state == ServerState::Leader && metrics.current_leader == Some(self.id)
    }

    /// Waits for leadership changes.
    pub fn watch_metrics(
        &self,
    ) -> tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, BasicNode>> {
        self.raft.metrics()
    }

    pub fn status(&self) -> RaftStatus {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        RaftStatus {
            id: self.id,
            state: format!("{:?}", metrics.state),
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map(|id| id.index).unwrap_or(0),
            membership: membership_info(&metrics.membership_config),
        }
    }

    pub fn membership(&self) -> MembershipInfo {
        membership_info(&self.raft.metrics().borrow().membership_config)
    }

    /// The current leader's address, if one is known.
    pub fn leader_addr(&self) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|node| node.addr.clone())
    }

    /// Proposes a change and waits until it is committed and applied here, forwarding to
    /// the leader when this node is not it.
    pub async fn propose(&self, change: Change) -> Result<ChangeOutcome, ProposeError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let attempt = match self.propose_local(change.clone()).await {
                Err(ProposeError::NotLeader {
                    leader_addr: Some(addr),
                }) => self.forward_write(&addr, &change).await,
                other => other,
            };
            match attempt {
                Ok(ApplyResult(Ok(outcome))) => {
                    self.wait_applied_version(outcome.version).await;
                    return Ok(outcome);
                }
                Ok(ApplyResult(Err(refused))) => return Err(ProposeError::Refused(refused)),
                Err(ProposeError::NotLeader { .. }) | Err(ProposeError::NoQuorum(_))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(ProposeError::NotLeader { .. }) => {
                    return Err(ProposeError::NoQuorum(
                        "no manager is the leader: a majority of managers may be down".into(),
                    ))
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Proposes on this node only; `NotLeader` when it is not the leader.
    pub async fn propose_local(&self, change: Change) -> Result<ApplyResult, ProposeError> {
        match self.raft.client_write(change).await {
            Ok(response) => Ok(response.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(ProposeError::NotLeader {
                    leader_addr: forward.leader_node.map(|node| node.addr),
                })
            }
            Err(err) => Err(ProposeError::Raft(err.to_string())),
        }
    }

    async fn forward_write(
        &self,
        addr: &str,
        change: &Change,
    ) -> Result<ApplyResult, ProposeError> {
        self.call_leader(addr, "write", change, FORWARD_TIMEOUT)
            .await
    }

    async fn call_leader<Req: Serialize, Resp: for<'de> Deserialize<'de>>(
        &self,
        addr: &str,
        route: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, ProposeError> {
        let url = format!("https://{addr}/raft/{route}");
        let response = self
            .http
            .post(&url)
            .json(request)
            .timeout(timeout)
            .send()
            .await
            .map_err(|err| {
                ProposeError::NoQuorum(format!(
                    "the leader at {addr} cannot be reached: {}",
                    error_chain(&err)
                ))
            })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(ProposeError::Raft(format!("{url}: {status}: {body}")));
        }
        let result: Result<Resp, ProposeError> = response
            .json()
            .await
            .map_err(|err| ProposeError::Raft(format!("{url}: bad response: {err}")))?;
        result
    }

    /// Waits until this node has applied at least up to state version `version` (a
    /// forwarded write is applied on the leader first).
    async fn wait_applied_version(&self, version: u64) {
        let mut versions = self.shared.subscribe();
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        while *versions.borrow_and_update() < version {
            if tokio::time::timeout_at(deadline, versions.changed())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Makes the next read of [`Self::state`] linearizable: confirms leadership with a
    /// quorum (on the leader, or by asking it) and waits until this node has applied up
    /// to the confirmed index. No clock lease is trusted.
    pub async fn linearizable_read(&self) -> Result<(), ProposeError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let attempt = match self.read_index_local().await {
                Err(ProposeError::NotLeader {
                    leader_addr: Some(addr),
                }) => {
                    self.call_leader::<(), u64>(&addr, "read-index", &(), READ_INDEX_TIMEOUT)
                        .await
                }
                other => other,
            };
            match attempt {
                Ok(index) => {
                    return self
                        .raft
                        .wait(Some(LEADER_WAIT))
                        .applied_index_at_least(Some(index), "linearizable read")
                        .await
                        .map(|_| ())
                        .map_err(|err| ProposeError::NoQuorum(format!("catching up: {err}")))
                }
                // A leader that died or hangs is replaced within an election timeout:
                // look for the next one until the deadline. Reads are safe to retry.
                Err(ProposeError::NotLeader { .. }) | Err(ProposeError::NoQuorum(_))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(ProposeError::NotLeader { .. }) => {
                    return Err(ProposeError::NoQuorum(
                        "no manager is the leader: a majority of managers may be down".into(),
                    ))
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The read index, confirmed by a quorum; only on the leader.
    pub async fn read_index_local(&self) -> Result<u64, ProposeError> {
        match self.raft.get_read_log_id().await {
            Ok((read_log_id, _applied)) => Ok(read_log_id.map(|id| id.index).unwrap_or(0)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                Err(ProposeError::NotLeader {
                    leader_addr: forward.leader_node.map(|node| node.addr),
                })
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(err))) => {
                Err(ProposeError::NoQuorum(format!(
                    "the leader cannot reach a majority of managers: {err}"
                )))
            }
            Err(err) => Err(ProposeError::Raft(err.to_string())),
        }
    }

    /// This start of Raft's random number (see `incarnation`).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The incarnation manager `id` had when this leader made it a voter, if it did.
    pub fn added_voter_incarnation(&self, id: u64) -> Option<u64> {
        self.added_voters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    /// Adds a manager: first as a learner until it has caught up, then as a voter.
    /// `incarnation` is the manager's (see `incarnation`). Leader only.
    pub async fn add_voter(
        &self,
        id: u64,
        addr: &str,
        incarnation: u64,
    ) -> Result<(), ProposeError> {
        // Recorded first: a retry that arrives while this call still runs, or after its
        // answer was lost, is the same start of the same node.
        self.added_voters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, incarnation);
        let learner = BasicNode::new(addr);
        retry_in_progress(|| self.raft.add_learner(id, learner.clone(), true)).await?;
        self.change_membership(ChangeMembers::AddVoterIds([id].into()))
            .await
    }

    /// A membership change, waiting for one still in progress (a promotion's joint
    /// configuration, say) to finish first rather than failing with it.
    async fn change_membership(
        &self,
        change: ChangeMembers<u64, BasicNode>,
    ) -> Result<(), ProposeError> {
        retry_in_progress(|| self.raft.change_membership(change.clone(), false)).await
    }

    /// Removes a voter (and forgets its address). Leader only.
    pub async fn remove_voter(&self, id: u64) -> Result<(), ProposeError> {
        self.change_membership(ChangeMembers::RemoveVoters([id].into()))
            .await?;
        let membership = self.membership();
        if membership.learners.contains_key(&id) {
            self.change_membership(ChangeMembers::RemoveNodes([id].into()))
                .await?;
        }
        Ok(())
    }

    /// Updates a member's address (a manager that moved).
    pub async fn set_member_addr(&self, id: u64, addr: &str) -> Result<(), ProposeError> {
        self.change_membership(ChangeMembers::SetNodes([(id, BasicNode::new(addr))].into()))
            .await
    }

    pub async fn shutdown(&self) {
        if let Err(err) = self.raft.shutdown().await {
            tracing::warn!(error = %err, "raft shutdown");
        }
    }
}

/// How long a membership change waits for an earlier one to finish.
const MEMBERSHIP_IN_PROGRESS_WAIT: Duration = Duration::from_secs(10);

/// Runs a membership change, again while openraft answers that another is still in
/// progress (only one joint configuration at a time), until it is done or the wait is
/// over.
async fn retry_in_progress<T, F, Fut>(mut change: F) -> Result<(), ProposeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RaftError<u64, ClientWriteError<u64, BasicNode>>>>,
{
    let deadline = Instant::now() + MEMBERSHIP_IN_PROGRESS_WAIT;
    loop {
        match change().await {
            Ok(_) => return Ok(()),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_),
            ))) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => return Err(map_membership_error(err)),
        }
    }
}

fn map_membership_error(err: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> ProposeError {
    match err {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            ProposeError::NotLeader {
                leader_addr: forward.leader_node.map(|node| node.addr),
            }
        }
        other => ProposeError::Raft(other.to_string()),
    }
}

fn membership_info(stored: &openraft::StoredMembership<u64, BasicNode>) -> MembershipInfo {
    let membership = stored.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let mut info = MembershipInfo::default();
    for (id, node) in membership.nodes() {
        if voters.contains(id) {
            info.voters.insert(*id, node.addr.clone());
        } else {
            info.learners.insert(*id, node.addr.clone());
        }
    }
    info
}
