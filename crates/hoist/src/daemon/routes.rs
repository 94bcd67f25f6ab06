//! The HTTP routes both listeners serve: each endpoint of `hoist_api::endpoint` mounted
//! with its handler, behind the checks its definition declares (who may call it:
//! `access.rs`; how large its body may be and how often the open join endpoint may be
//! tried: `limits.rs`). Also the error answer every handler gives (`{"message"}` with
//! a status) and the lookups handlers share.
//!
//! The handlers live by domain beside this file: `lifecycle_routes.rs` (the node's own
//! lifecycle and what it knows), `dispatcher_routes.rs` (what nodes send: join,
//! heartbeats, renewal, assignments, status, Raft), `node_routes.rs`,
//! `service_routes.rs`, `cluster_routes.rs` and `ca_routes.rs`. They translate typed
//! errors into statuses and decide nothing about who may call them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Extension, Json, Router};
use hoist_api::endpoint::{self as api, Endpoint};
use hoist_api::{ErrorBody, NotLeaderBody, Route};
use hoist_manager::{Manager, ManagerError};
use hoist_pki::PeerIdentity;
use hoist_types::Role;

use super::access::{self, Guard};
use super::errors::{manager_error_status, LifecycleError};
use super::limits::{self, InputBound, JoinLimiter};
use super::member::Member;
use super::server::Caller;
use super::{
    ca_routes, cluster_routes, dispatcher_routes, lifecycle_routes, node_routes, service_routes,
    Daemon,
};

pub(super) type AppState = Arc<Daemon>;
/// The JSON body a handler of endpoint `E` reads.
pub(super) type JsonBody<E> = Json<<E as Endpoint>::Request>;

/// What a handler of endpoint `E` answers: `E`'s response type, or an error.
pub(super) type Reply<E> = Result<Json<<E as Endpoint>::Response>, ApiError>;

pub fn router(daemon: Arc<Daemon>) -> Router {
    mount_all(Mounts::new(daemon.clone()))
        .finish()
        .with_state(daemon)
}

/// Mounts a handler at an endpoint's method and path, behind the endpoint's checks.
trait Mount: Sized {
    fn mount<E, H, T>(self, handler: H) -> Self
    where
        E: Endpoint,
        H: Handler<T, AppState>,
        T: 'static;
}

/// Every endpoint with its handler.
fn mount_all<M: Mount>(mounts: M) -> M {
    let raft = hoist_raft::router();
    mounts
        .mount::<api::Init, _, _>(lifecycle_routes::init)
        .mount::<api::JoinCluster, _, _>(lifecycle_routes::join_cluster)
        .mount::<api::Leave, _, _>(lifecycle_routes::leave)
        .mount::<api::ForceNewCluster, _, _>(lifecycle_routes::force_new_cluster)
        .mount::<api::Restore, _, _>(lifecycle_routes::restore)
        .mount::<api::Backup, _, _>(lifecycle_routes::backup)
        .mount::<api::Info, _, _>(lifecycle_routes::info)
        .mount::<api::Metrics, _, _>(lifecycle_routes::metrics)
        .mount::<api::Join, _, _>(dispatcher_routes::join)
        .mount::<api::JoinAbandon, _, _>(dispatcher_routes::join_abandon)
        .mount::<api::Heartbeat, _, _>(dispatcher_routes::heartbeat)
        .mount::<api::Renew, _, _>(dispatcher_routes::renew)
        .mount::<api::Assignments, _, _>(dispatcher_routes::assignments)
        .mount::<api::Status, _, _>(dispatcher_routes::status)
        .mount::<api::RaftJoinMe, _, _>(dispatcher_routes::raft_join)
        .mount::<api::RaftRpc, _, _>(move |state, path, request| {
            dispatcher_routes::raft_rpc(state, raft.clone(), path, request)
        })
        .mount::<api::NodeList, _, _>(node_routes::node_ls)
        .mount::<api::NodeInspect, _, _>(node_routes::node_inspect)
        .mount::<api::NodeRemove, _, _>(node_routes::node_rm)
        .mount::<api::NodeUpdate, _, _>(node_routes::node_update)
        .mount::<api::NodePromote, _, _>(node_routes::node_promote)
        .mount::<api::NodeDemote, _, _>(node_routes::node_demote)
        .mount::<api::JoinToken, _, _>(node_routes::join_token)
        .mount::<api::JoinTokenRotate, _, _>(node_routes::join_token_rotate)
        .mount::<api::ClusterInspect, _, _>(cluster_routes::cluster_inspect)
        .mount::<api::ClusterUpdate, _, _>(cluster_routes::cluster_update)
        .mount::<api::CaStatus, _, _>(ca_routes::ca_status)
        .mount::<api::CaRotate, _, _>(ca_routes::ca_rotate)
        .mount::<api::ServiceList, _, _>(service_routes::service_ls)
        .mount::<api::ServiceCreate, _, _>(service_routes::service_create)
        .mount::<api::ServiceInspect, _, _>(service_routes::service_inspect)
        .mount::<api::ServiceRemove, _, _>(service_routes::service_rm)
        .mount::<api::ServiceUpdate, _, _>(service_routes::service_update)
        .mount::<api::ServiceScale, _, _>(service_routes::service_scale)
        .mount::<api::ServiceTasks, _, _>(service_routes::service_tasks)
        .mount::<api::ServiceLogs, _, _>(service_routes::service_logs)
        .mount::<api::NodeLogs, _, _>(service_routes::node_logs)
}

/// The router being built, and what every route's checks share.
struct Mounts {
    router: Router<AppState>,
    daemon: Arc<Daemon>,
    joins: Arc<JoinLimiter>,
}

/// An unknown path is answered `404` after the checks of the control API, as if it
/// were one of its routes: a caller without a certificate learns nothing of the routes.
const UNKNOWN_ROUTE: Route = Route {
    method: axum::http::Method::GET,
    path: "",
    access: hoist_api::Access::Control,
    max_body: hoist_api::MaxBody::Standard,
};

impl Mounts {
    fn new(daemon: Arc<Daemon>) -> Self {
        let joins = Arc::new(JoinLimiter::new({
            let daemon = daemon.clone();
            move || join_rate_limit(&daemon)
        }));
        Mounts {
            router: Router::new(),
            daemon,
            joins,
        }
    }

    /// The input bounds first (a body over the limit is refused before anything else
    /// reads it), then who may call.
    fn guarded(
        &self,
        method_router: MethodRouter<AppState>,
        route: &Route,
    ) -> MethodRouter<AppState> {
        method_router
            .layer(axum::middleware::from_fn_with_state(
                Guard {
                    daemon: self.daemon.clone(),
                    access: route.access,
                },
                access::authorize,
            ))
            .layer(axum::middleware::from_fn_with_state(
                InputBound::new(self.joins.clone(), route),
                limits::bound_input,
            ))
    }

    fn finish(self) -> Router<AppState> {
        let unknown = self.guarded(axum::routing::any(not_found), &UNKNOWN_ROUTE);
        self.router
            .fallback_service(unknown.with_state(self.daemon.clone()))
            // Each route's own limit is `limits::bound_input`'s.
            .layer(DefaultBodyLimit::disable())
    }
}

impl Mount for Mounts {
    fn mount<E, H, T>(mut self, handler: H) -> Self
    where
        E: Endpoint,
        H: Handler<T, AppState>,
        T: 'static,
    {
        let method_router = self.guarded(on(method_filter(&E::METHOD), handler), &E::ROUTE);
        self.router = self.router.route(E::PATH, method_router);
        self
    }
}

async fn not_found() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// Endpoints use GET, POST and DELETE (`hoist_api::endpoint`); its tests and this
/// file's check that each is mounted under its own method.
fn method_filter(method: &axum::http::Method) -> MethodFilter {
    if *method == axum::http::Method::GET {
        MethodFilter::GET
    } else if *method == axum::http::Method::DELETE {
        MethodFilter::DELETE
    } else if *method == axum::http::Method::PUT {
        MethodFilter::PUT
    } else {
        MethodFilter::POST
    }
}

/// The cluster's `join_rate_limit`, as this manager last applied it (only managers
/// answer joins; the default otherwise).
fn join_rate_limit(daemon: &Daemon) -> u32 {
    daemon
        .member()
        .and_then(|member| member.manager())
        .map(|manager| manager.local(|state| state.settings.join_rate_limit))
        .unwrap_or(limits::JOIN_PER_SECOND)
}

/// An error response.
pub struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: serde_json::to_value(ErrorBody {
                message: message.into(),
            })
            .unwrap_or_default(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<ManagerError> for ApiError {
    fn from(err: ManagerError) -> Self {
        let status = manager_error_status(&err);
        if let ManagerError::NotLeader { leader_addr } = err {
            return ApiError {
                status: StatusCode::MISDIRECTED_REQUEST,
                body: serde_json::to_value(NotLeaderBody {
                    message: "this manager is not the leader".into(),
                    leader_addr,
                })
                .unwrap_or_default(),
            };
        }
        ApiError::new(status, err.to_string())
    }
}

impl From<LifecycleError> for ApiError {
    fn from(err: LifecycleError) -> Self {
        ApiError::new(err.status(), err.to_string())
    }
}

pub(super) const NOT_IN_CLUSTER: &str =
    "this node is not part of a cluster: run `hoist init` or `hoist join` first";
pub(super) const NOT_A_MANAGER: &str = "this node is not a manager. Worker nodes can't be used to view or modify cluster state: run this command on a manager node, or promote this node to a manager";

pub(super) fn peer_of(caller: &Caller) -> Result<&PeerIdentity, ApiError> {
    match caller {
        Caller::Peer(Some(peer)) => Ok(peer),
        _ => Err(ApiError::new(401, "a node certificate is required")),
    }
}

pub(super) fn member_of(daemon: &Daemon) -> Result<Arc<Member>, ApiError> {
    let member = daemon
        .member()
        .ok_or_else(|| ApiError::new(503, NOT_IN_CLUSTER))?;
    if let Some(message) = member.removed_message() {
        return Err(ApiError::new(
            503,
            format!("this node was refused by the cluster: {message}"),
        ));
    }
    Ok(member)
}

pub(super) fn manager_of(daemon: &Daemon) -> Result<(Arc<Member>, Manager), ApiError> {
    let member = member_of(daemon)?;
    let manager = member.manager().ok_or_else(|| {
        if member.cert_role() == Role::Manager {
            // Between a restart and Raft coming up, or during a promotion.
            ApiError::new(
                503,
                "this manager is starting (Raft is not running yet): retry in a moment",
            )
        } else {
            ApiError::new(503, NOT_A_MANAGER)
        }
    })?;
    Ok((member, manager))
}

/// The IP address a TLS request came from (`None` on the local socket).
pub(super) fn source_ip(remote: Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<IpAddr> {
    remote.map(|Extension(ConnectInfo(addr))| addr.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `mount_all` mounts.
    #[derive(Default)]
    struct Recorder(Vec<Route>);

    impl Mount for Recorder {
        fn mount<E, H, T>(mut self, _: H) -> Self
        where
            E: Endpoint,
            H: Handler<T, AppState>,
            T: 'static,
        {
            self.0.push(E::ROUTE);
            self
        }
    }

    #[test]
    fn every_endpoint_is_mounted_once() {
        let Recorder(mounted) = mount_all(Recorder::default());
        for route in hoist_api::ENDPOINTS {
            let times = mounted.iter().filter(|other| *other == route).count();
            assert_eq!(times, 1, "{route:?}");
        }
        assert_eq!(mounted.len(), hoist_api::ENDPOINTS.len());
    }

    #[test]
    fn every_endpoint_is_mounted_under_its_own_method() {
        for route in hoist_api::ENDPOINTS {
            let expected = MethodFilter::try_from(route.method.clone()).map_err(|_| ());
            assert_eq!(Ok(method_filter(&route.method)), expected, "{route:?}");
        }
    }
}
