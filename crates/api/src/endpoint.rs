//! The endpoints of the control API, one typed definition each: method, path pattern,
//! path parameters, query, request and response types, who may call it ([`Access`])
//! and how large its body may be ([`MaxBody`]).
//!
//! The daemon mounts each handler from its definition (the pattern is axum's, with
//! `{node}` segments) and takes the access class and body bound from it; the CLI's
//! [`Client`](crate::Client) and the nodes' TLS callers build their paths from the same
//! definitions, so a path, a method or a response type cannot drift between the two.
//!
//! Does not know: what a handler does, or who a caller is (the daemon decides that from
//! the class). Raft's peer messages under `/raft` are the raft crate's wire: [`RaftRpc`]
//! only says where they are mounted and who may send them.

use std::fmt::Write as _;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::wire::*;
use hoist_types::Role;

/// Who may call an endpoint. The daemon's router applies the class of each endpoint
/// where it mounts it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// The local socket only (the operator): the node's own lifecycle.
    Local,
    /// Anyone who can reach the TLS port: the join request (a joining node has no
    /// certificate yet).
    Open,
    /// Any node certificate of this cluster, over TLS: heartbeats, renewal, the
    /// assignment stream and status reports.
    Member,
    /// A manager certificate of a node the cluster state records as a manager now, over
    /// TLS only (a node confirming itself as a Raft voter).
    ManagerPeer,
    /// Raft's peer messages: a manager certificate; votes, forwarded writes and
    /// read-index requests also need the sender in the Raft group as the receiver knows
    /// it (appends and snapshots come from a leader, whose term openraft checks).
    RaftPeer,
    /// The control API: the local socket, or a manager certificate of a node the
    /// cluster state records as a manager now.
    Control,
}

/// How large a request body an endpoint accepts, by kind; the daemon sets the bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MaxBody {
    /// The join request: a secret, a hostname, an address and a CSR.
    Join,
    /// Heartbeats, status reports and control requests.
    Standard,
    /// Raft snapshots and whole backups.
    Bulk,
}

/// An endpoint's place in the router: what the daemon mounts and checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub max_body: MaxBody,
}

/// One endpoint of the control API.
pub trait Endpoint {
    const METHOD: Method;
    /// The axum pattern: `{name}` segments are filled from [`Endpoint::Params`] in order.
    const PATH: &'static str;
    const ACCESS: Access;
    const MAX_BODY: MaxBody = MaxBody::Standard;
    const ROUTE: Route = Route {
        method: Self::METHOD,
        path: Self::PATH,
        access: Self::ACCESS,
        max_body: Self::MAX_BODY,
    };
    /// The values of the path's `{name}` segments.
    type Params: PathParams + ?Sized;
    /// The query string (`NoQuery` for none).
    type Query: Serialize + DeserializeOwned;
    /// The JSON body (`()` for none; a POST of `()` sends `null`).
    type Request: Serialize + DeserializeOwned;
    /// The JSON answer, or a marker for a streamed one ([`TextStream`], [`NdjsonStream`]).
    type Response;

    /// The concrete path for `params`, each value percent-encoded as a path segment.
    fn path(params: &Self::Params) -> String {
        fill(Self::PATH, &params.values())
    }

    /// The path and, when the query has members, `?` and the query.
    fn path_and_query(params: &Self::Params, query: &Self::Query) -> String {
        let mut path = Self::path(params);
        // A query type is a flat struct of strings, numbers and booleans: it always
        // encodes. An empty one adds nothing.
        let encoded = serde_urlencoded::to_string(query).unwrap_or_default();
        if !encoded.is_empty() {
            path.push('?');
            path.push_str(&encoded);
        }
        path
    }

    /// The URL of this endpoint on the node listening at `addr` (TLS).
    fn url(addr: &str, params: &Self::Params) -> String {
        format!("https://{addr}{}", Self::path(params))
    }
}

/// The values a path's `{name}` segments take, in order.
pub trait PathParams {
    fn values(&self) -> Vec<String>;
}

impl PathParams for () {
    fn values(&self) -> Vec<String> {
        Vec::new()
    }
}

impl PathParams for str {
    fn values(&self) -> Vec<String> {
        vec![self.to_string()]
    }
}

impl PathParams for Role {
    fn values(&self) -> Vec<String> {
        vec![self.to_string()]
    }
}

/// Everything but unreserved characters (RFC 3986) is encoded, so a node or service
/// reference can never reach into another segment or the query.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

fn fill(pattern: &str, values: &[String]) -> String {
    let mut path = String::with_capacity(pattern.len());
    let mut values = values.iter();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        path.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .map_or(rest.len(), |at| open + at + 1);
        if let Some(value) = values.next() {
            let _ = write!(path, "{}", utf8_percent_encode(value, SEGMENT));
        }
        rest = &rest[close..];
    }
    path.push_str(rest);
    path
}

/// No query string.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct NoQuery {}

/// An answer with nothing to say: `{}`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Empty {}

/// A streamed answer of text lines (task output).
#[derive(Debug)]
pub enum TextStream {}

/// A streamed answer of JSON lines, one `T` each; a blank line is a keep-alive.
#[derive(Debug)]
pub struct NdjsonStream<T>(std::marker::PhantomData<T>);

/// The metrics page, Prometheus text.
#[derive(Debug)]
pub enum PrometheusText {}

/// A Raft message, in the raft crate's own encoding.
#[derive(Debug)]
pub enum RaftMessage {}

/// `DELETE /v1/nodes/{node}`: `force` removes a node that is not down.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ForceQuery {
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
}

/// `/v1/join-tokens/{role}`: `rotate` (on a POST) replaces the token.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct RotateQuery {
    #[serde(default, skip_serializing_if = "is_false")]
    pub rotate: bool,
}

fn is_false(value: &bool) -> bool {
    !value
}

/// The answer to a service's removal: the id it had.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRemoved {
    pub id: hoist_types::ServiceId,
}

/// Defines an endpoint type. `params` is the type of the path's `{name}` values.
macro_rules! endpoint {
    (
        $(#[$doc:meta])*
        $name:ident: $method:ident $path:literal, $access:ident
        $(, body $max_body:ident)?,
        params $params:ty, query $query:ty, request $request:ty, response $response:ty
    ) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $name {}

        impl Endpoint for $name {
            const METHOD: Method = Method::$method;
            const PATH: &'static str = $path;
            const ACCESS: Access = Access::$access;
            $(const MAX_BODY: MaxBody = MaxBody::$max_body;)?
            type Params = $params;
            type Query = $query;
            type Request = $request;
            type Response = $response;
        }

        impl $name {
            /// [`Endpoint::url`], callable without the trait in scope.
            pub fn url(addr: &str, params: &$params) -> String {
                <Self as Endpoint>::url(addr, params)
            }
        }
    };
}

endpoint! {
    /// Creates a cluster with this node as its first manager.
    Init: POST "/v1/init", Local,
    params (), query NoQuery, request InitRequest, response InitResponse
}
endpoint! {
    /// Joins the cluster a token names (`hoist join`).
    JoinCluster: POST "/v1/join-cluster", Local,
    params (), query NoQuery, request JoinClusterRequest, response JoinClusterResponse
}
endpoint! {
    /// Leaves the cluster.
    Leave: POST "/v1/leave", Local,
    params (), query NoQuery, request LeaveRequest, response Empty
}
endpoint! {
    /// Makes this manager the only one of a new cluster keeping the state.
    ForceNewCluster: POST "/v1/force-new-cluster", Local,
    params (), query NoQuery, request ForceNewClusterRequest, response ForceNewClusterResponse
}
endpoint! {
    /// Starts a cluster from a backup.
    Restore: POST "/v1/restore", Local, body Bulk,
    params (), query NoQuery, request RestoreRequest, response ForceNewClusterResponse
}
endpoint! {
    /// A consistent copy of the cluster state.
    Backup: GET "/v1/backup", Control,
    params (), query NoQuery, request (), response BackupFile
}
endpoint! {
    /// A node asks to join, with the token's secret and a CSR.
    Join: POST "/v1/join", Open, body Join,
    params (), query NoQuery, request JoinRequest, response JoinResponse
}
endpoint! {
    /// A node whose join failed after admission takes its record back.
    JoinAbandon: POST "/v1/join/abandon", Member,
    params (), query NoQuery, request (), response Empty
}
endpoint! {
    /// A node's heartbeat to the leader.
    Heartbeat: POST "/v1/dispatcher/heartbeat", Member,
    params (), query NoQuery, request HeartbeatRequest, response HeartbeatResponse
}
endpoint! {
    /// A node renews its certificate.
    Renew: POST "/v1/node/renew", Member,
    params (), query NoQuery, request RenewRequest, response RenewResponse
}
endpoint! {
    /// The stream of a node's assignment sets.
    Assignments: POST "/v1/dispatcher/assignments", Member,
    params (), query NoQuery, request (), response NdjsonStream<AssignmentSet>
}
endpoint! {
    /// A node reports the state of its tasks.
    Status: POST "/v1/dispatcher/status", Member,
    params (), query NoQuery, request StatusReportRequest, response Empty
}
endpoint! {
    /// A manager asks the leader to make it a Raft voter.
    RaftJoinMe: POST "/v1/raft/join-me", ManagerPeer,
    params (), query NoQuery, request RaftJoinRequest, response Empty
}
/// Where Raft's router is mounted: [`RaftRpc`]'s pattern is this and the message's own
/// path (`/append`, `/vote`, ...).
pub const RAFT_PREFIX: &str = "/raft";

endpoint! {
    /// Raft's peer messages (`/raft/append`, `/raft/vote`, ...): the raft crate's router.
    RaftRpc: POST "/raft/{*rest}", RaftPeer, body Bulk,
    params str, query NoQuery, request (), response RaftMessage
}
endpoint! {
    /// What this node knows of the cluster.
    Info: GET "/v1/info", Control,
    params (), query NoQuery, request (), response InfoResponse
}
endpoint! {
    /// The mesh's metrics.
    Metrics: GET "/metrics", Control,
    params (), query NoQuery, request (), response PrometheusText
}
endpoint! {
    NodeList: GET "/v1/nodes", Control,
    params (), query NoQuery, request (), response Vec<NodeView>
}
endpoint! {
    NodeInspect: GET "/v1/nodes/{node}", Control,
    params str, query NoQuery, request (), response NodeView
}
endpoint! {
    NodeRemove: DELETE "/v1/nodes/{node}", Control,
    params str, query ForceQuery, request (), response Empty
}
endpoint! {
    NodeUpdate: POST "/v1/nodes/{node}/update", Control,
    params str, query NoQuery, request NodeUpdateRequest, response NodeView
}
endpoint! {
    NodePromote: POST "/v1/nodes/{node}/promote", Control,
    params str, query NoQuery, request (), response NodeView
}
endpoint! {
    NodeDemote: POST "/v1/nodes/{node}/demote", Control,
    params str, query NoQuery, request (), response NodeView
}
endpoint! {
    /// Reads a join token (a GET never rotates).
    JoinToken: GET "/v1/join-tokens/{role}", Control,
    params Role, query RotateQuery, request (), response TokenResponse
}
endpoint! {
    /// Reads, or with `rotate=true` replaces, a join token.
    JoinTokenRotate: POST "/v1/join-tokens/{role}", Control,
    params Role, query RotateQuery, request (), response TokenResponse
}
endpoint! {
    ClusterInspect: GET "/v1/cluster", Control,
    params (), query NoQuery, request (), response ClusterView
}
endpoint! {
    ClusterUpdate: POST "/v1/cluster/update", Control,
    params (), query NoQuery, request ClusterUpdateRequest, response ClusterView
}
endpoint! {
    CaStatus: GET "/v1/cluster/ca", Control,
    params (), query NoQuery, request (), response CaView
}
endpoint! {
    CaRotate: POST "/v1/cluster/ca/rotate", Control,
    params (), query NoQuery, request (), response CaView
}
endpoint! {
    ServiceList: GET "/v1/services", Control,
    params (), query NoQuery, request (), response Vec<ServiceView>
}
endpoint! {
    ServiceCreate: POST "/v1/services", Control,
    params (), query NoQuery, request CreateServiceRequest, response ServiceView
}
endpoint! {
    ServiceInspect: GET "/v1/services/{service}", Control,
    params str, query NoQuery, request (), response ServiceView
}
endpoint! {
    ServiceRemove: DELETE "/v1/services/{service}", Control,
    params str, query NoQuery, request (), response ServiceRemoved
}
endpoint! {
    ServiceUpdate: POST "/v1/services/{service}/update", Control,
    params str, query NoQuery, request UpdateServiceRequest, response ServiceView
}
endpoint! {
    ServiceScale: POST "/v1/services/{service}/scale", Control,
    params str, query NoQuery, request ScaleRequest, response ServiceView
}
endpoint! {
    ServiceTasks: GET "/v1/services/{service}/tasks", Control,
    params str, query NoQuery, request (), response Vec<TaskView>
}
endpoint! {
    /// A service's output, gathered from the nodes that ran its tasks.
    ServiceLogs: GET "/v1/services/{service}/logs", Control,
    params str, query LogsQuery, request (), response TextStream
}
endpoint! {
    /// One task's output, from the node that ran it (a manager asks it for
    /// `service logs`).
    NodeLogs: GET "/v1/node-logs", Control,
    params (), query LogsQuery, request (), response TextStream
}

/// Every endpoint, as the daemon mounts them.
pub const ENDPOINTS: &[Route] = &[
    Init::ROUTE,
    JoinCluster::ROUTE,
    Leave::ROUTE,
    ForceNewCluster::ROUTE,
    Restore::ROUTE,
    Backup::ROUTE,
    Join::ROUTE,
    JoinAbandon::ROUTE,
    Heartbeat::ROUTE,
    Renew::ROUTE,
    Assignments::ROUTE,
    Status::ROUTE,
    RaftJoinMe::ROUTE,
    RaftRpc::ROUTE,
    Info::ROUTE,
    Metrics::ROUTE,
    NodeList::ROUTE,
    NodeInspect::ROUTE,
    NodeRemove::ROUTE,
    NodeUpdate::ROUTE,
    NodePromote::ROUTE,
    NodeDemote::ROUTE,
    JoinToken::ROUTE,
    JoinTokenRotate::ROUTE,
    ClusterInspect::ROUTE,
    ClusterUpdate::ROUTE,
    CaStatus::ROUTE,
    CaRotate::ROUTE,
    ServiceList::ROUTE,
    ServiceCreate::ROUTE,
    ServiceInspect::ROUTE,
    ServiceRemove::ROUTE,
    ServiceUpdate::ROUTE,
    ServiceScale::ROUTE,
    ServiceTasks::ROUTE,
    ServiceLogs::ROUTE,
    NodeLogs::ROUTE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_filled_and_encoded() {
        assert_eq!(NodeList::path(&()), "/v1/nodes");
        assert_eq!(NodeInspect::path("node-1"), "/v1/nodes/node-1");
        assert_eq!(NodeDemote::path("a b/c"), "/v1/nodes/a%20b%2Fc/demote");
        assert_eq!(JoinToken::path(&Role::Worker), "/v1/join-tokens/worker");
        assert_eq!(
            ServiceLogs::path_and_query(
                "web",
                &LogsQuery {
                    tail: Some(5),
                    follow: true,
                    task: None
                }
            ),
            "/v1/services/web/logs?tail=5&follow=true"
        );
        assert_eq!(
            NodeRemove::path_and_query("n", &ForceQuery { force: false }),
            "/v1/nodes/n"
        );
        assert_eq!(
            NodeRemove::path_and_query("n", &ForceQuery { force: true }),
            "/v1/nodes/n?force=true"
        );
        assert_eq!(
            Heartbeat::url("10.0.0.1:4243", &()),
            "https://10.0.0.1:4243/v1/dispatcher/heartbeat"
        );
    }

    #[test]
    fn each_route_is_defined_once() {
        for (index, route) in ENDPOINTS.iter().enumerate() {
            assert!(
                !ENDPOINTS[..index]
                    .iter()
                    .any(|other| other.path == route.path && other.method == route.method),
                "{} {} defined twice",
                route.method,
                route.path
            );
        }
    }

    #[test]
    fn classes_and_bounds_are_declared() {
        assert_eq!(Init::ACCESS, Access::Local);
        assert_eq!(Join::ACCESS, Access::Open);
        assert_eq!(Join::MAX_BODY, MaxBody::Join);
        assert_eq!(Heartbeat::ACCESS, Access::Member);
        assert_eq!(RaftRpc::ACCESS, Access::RaftPeer);
        assert_eq!(RaftJoinMe::ACCESS, Access::ManagerPeer);
        assert_eq!(NodeList::ACCESS, Access::Control);
        assert_eq!(Restore::MAX_BODY, MaxBody::Bulk);
        assert!(RaftRpc::PATH.starts_with(&format!("{RAFT_PREFIX}/")));
    }
}
