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
use openraft::BasicNode;
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
        }
    }
}

pub struct PeerClient {
    http: reqwest::Client,
    target: NodeId,
    addr: String,
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
        self.call("append", &rpc, &option).await
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
