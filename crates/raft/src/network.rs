//! Peer RPC client: Raft messages to other managers, as JSON over the node's mutual-TLS
//! HTTP client. The routes that answer them are in `routes.rs`.

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, LogId};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::TypeConfig;

type NodeId = u64;

/// Makes one client per peer; all share the node's TLS client (and so its certificate).
#[derive(Clone)]
pub struct PeerNetwork {
    http: reqwest::Client,
}

impl PeerNetwork {
    /// `http` must be configured with the cluster CA and this node's certificate.
    pub fn new(http: reqwest::Client) -> Self {
        PeerNetwork { http }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient {
            http: self.http.clone(),
            target,
            addr: node.addr.clone(),
            acked: None,
        }
    }
}

pub struct PeerClient {
    http: reqwest::Client,
    target: NodeId,
    addr: String,
    /// The last log id this peer confirmed holding, in this client's life: one
    /// replication stream of one leader, during which a follower's log never goes back.
    acked: Option<LogId<NodeId>>,
}

/// Why a call did not produce the peer's answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CallError(String);

impl PeerClient {
    async fn call<Req, Resp, Err>(
        &self,
        route: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, Err>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        Err: std::error::Error + DeserializeOwned,
    {
        let url = format!("https://{}/raft/{route}", self.addr);
        let response = self
            .http
            .post(&url)
            .json(request)
            .timeout(option.hard_ttl())
            .send()
            .await
            .map_err(|err| {
                // A peer we cannot reach is "unreachable" so that openraft backs off
                // instead of retrying at full speed.
                RPCError::Unreachable(Unreachable::new(&CallError(format!(
                    "{url}: {}",
                    error_chain(&err)
                ))))
            })?;
        let status = response.status();
        if !status.is_success() {
            // A refusal (a peer that does not accept our certificate yet, or one that is
            // shutting down) is treated as unreachable, so openraft backs off.
            let body = response.text().await.unwrap_or_default();
            return Err(RPCError::Unreachable(Unreachable::new(&CallError(
                format!("{url}: {status}: {body}"),
            ))));
        }
        let result: Result<Resp, Err> = response.json().await.map_err(|err| {
            RPCError::Network(NetworkError::new(&CallError(format!(
                "{url}: bad response: {err}"
            ))))
        })?;
        result.map_err(|err| RPCError::RemoteError(RemoteError::new(self.target, err)))
    }
}

/// Whether a conflict at `prev_log_id` means the peer lost entries it had confirmed
/// holding (`acked`).
fn lost_acked_entries(acked: Option<LogId<NodeId>>, prev_log_id: Option<LogId<NodeId>>) -> bool {
    match (acked, prev_log_id) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(acked), Some(prev)) => prev.index <= acked.index,
    }
}

/// The whole chain of an error's causes, since reqwest's top-level message hides the
/// TLS or connect error underneath.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let prev_log_id = rpc.prev_log_id;
        let sent_up_to = rpc.entries.last().map(|entry| entry.log_id).or(prev_log_id);
        let response: AppendEntriesResponse<NodeId> = self.call("append", &rpc, &option).await?;
        match &response {
            AppendEntriesResponse::Success => self.acked = self.acked.max(sent_up_to),
            AppendEntriesResponse::PartialSuccess(matching) => {
                self.acked = self.acked.max(*matching)
            }
            AppendEntriesResponse::Conflict if lost_acked_entries(self.acked, prev_log_id) => {
                // The peer no longer has entries it confirmed: its store was lost or
                // replaced (a voter that came back empty). It may have voted in terms it
                // no longer remembers, and openraft takes a follower's log going back for
                // a bug, so the leader refuses it: the peer counts as unreachable until an
                // operator restores its store or removes it.
                tracing::error!(
                    node = %format!("{:016x}", self.target),
                    addr = %self.addr,
                    confirmed = ?self.acked,
                    asked = ?prev_log_id,
                    "this manager lost raft entries it had confirmed (its store was lost or replaced): refused; restore its store from a backup, or demote and remove it and join it again"
                );
                return Err(RPCError::Unreachable(Unreachable::new(&CallError(
                    format!(
                        "manager {} at {} lost raft entries it had confirmed: refused",
                        self.target, self.addr
                    ),
                ))));
            }
            AppendEntriesResponse::Conflict | AppendEntriesResponse::HigherVote(_) => {}
        }
        Ok(response)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn log_id(index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(CommittedLeaderId::new(2, 1), index))
    }

    #[test]
    fn a_conflict_below_what_the_peer_confirmed_is_a_lost_store() {
        // A new follower, or one that never confirmed anything to this leader: the
        // usual search for the matching point.
        assert!(!lost_acked_entries(None, log_id(40)));
        assert!(!lost_acked_entries(None, None));
        // Confirmed up to 40: a conflict when asked about 41 or later is the search
        // after entries it had not confirmed yet (a new leader's uncommitted tail).
        assert!(!lost_acked_entries(log_id(40), log_id(41)));
        // Asked about entries it confirmed holding: they are gone.
        assert!(lost_acked_entries(log_id(40), log_id(40)));
        assert!(lost_acked_entries(log_id(40), log_id(3)));
        assert!(lost_acked_entries(log_id(40), None));
    }
}
