//! The data the daemon feeds the mesh: its configuration and the services it routes.
//!
//! Owns: `MeshConfig` (with its documented defaults), `ServiceRoute` and the types inside
//! it, `validate_services`, the pure check run before any update is applied, and
//! `servable`, the pure choice of which services of a clashing set the mesh serves.
//!
//! Does not know: where these values come from. The mesh never reads cluster state or Raft;
//! the daemon translates its services and running tasks into `ServiceRoute`s and pushes
//! them (`Mesh::set_services`, `Mesh::set_endpoints`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::balance::Balancing;
use crate::error::MeshError;

/// hyper refuses a header buffer smaller than this (its `max_buf_size` floor), so the
/// mesh does too.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;

/// How one node's mesh listens and how hard it tries before giving up on an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshConfig {
    /// Address the published ports are bound on; `0.0.0.0` for a real node (ingress mode
    /// listens everywhere), `127.0.0.1` in tests.
    pub listen_ip: IpAddr,
    /// A client must send a complete request head within this time or get `408` and a
    /// closed connection (slowloris). 10 s, a little below nginx's 60 s
    /// `client_header_timeout` and HAProxy's usual `timeout http-request 10s`. It also
    /// bounds how long an idle keep-alive client connection is kept, because hyper starts
    /// the deadline as soon as it waits for the next head (such a connection is closed
    /// without a 408).
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) accepted; larger gets `431` and is
    /// never forwarded. 16 KiB is HAProxy's `tune.bufsize` and what nginx allows with its
    /// default `large_client_header_buffers 4 8k` for a single header line pair; at least
    /// `MIN_HEADER_BYTES`.
    pub max_header_bytes: usize,
    /// Time from sending a request to an endpoint until its response head arrives; past
    /// it the client gets `504`. 60 s, nginx's `proxy_read_timeout`.
    pub upstream_timeout: Duration,
    /// Time to open a TCP connection to an endpoint. 1 s is short on purpose: endpoints
    /// are on the cluster network, where an unanswered SYN after 1 s (the first SYN
    /// retransmit) means the node is gone, and trying another endpoint beats waiting.
    pub connect_timeout: Duration,
    /// How long an endpoint is skipped after a refused connection or after
    /// `eject_after_failures` consecutive failures. 5 s: long enough to stop hammering a
    /// dead task, short enough that a restarted one is back before anyone notices.
    pub ejection_time: Duration,
    /// Consecutive failed requests (connect errors, resets, timeouts) that eject an
    /// endpoint passively. 3, HAProxy's `fall` and Envoy's outlier-detection habit of a
    /// small number.
    pub eject_after_failures: u32,
    /// Endpoints tried for one L4 connection or one retryable L7 request. 3, nginx's and
    /// Envoy's usual bound: enough to step over a dead node, small enough not to amplify
    /// an outage.
    pub max_attempts: u32,
    /// How an endpoint is chosen among the ready ones.
    pub balancing: Balancing,
    /// Idle keep-alive connections to endpoints are closed after this. 90 s, like the
    /// hyper and Go HTTP client defaults.
    pub upstream_idle_timeout: Duration,
    /// What forwards `tcp` ports: the mesh's own forwarder, or the kernel.
    #[serde(default)]
    pub l4_dataplane: L4Dataplane,
    /// An L4 connection, or an HTTP connection switched to another protocol (a tunnel),
    /// is closed after this long without a byte either way. 10 min, nginx's stream
    /// `proxy_timeout`; long-lived protocols (WebSocket) ping well within it.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// An L4 connection or a tunnel is closed this long after it was accepted, busy or
    /// not, so no client holds a descriptor forever. 24 h.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime: Duration,
    /// Connections the mesh holds open at once over all published ports: the share of
    /// the node's descriptors the daemon grants it (each connection may take two, client
    /// and endpoint). More are accepted and closed at once.
    #[serde(default = "default_max_open_connections")]
    pub max_open_connections: usize,
    /// Connections one published port holds open at once. 10,000.
    #[serde(default = "default_max_connections_per_port")]
    pub max_connections_per_port: usize,
    /// Connections one client address holds open at once over all published ports;
    /// never more than half of `max_open_connections`. 1,000.
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: usize,
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_max_lifetime() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_max_open_connections() -> usize {
    100_000
}

fn default_max_connections_per_port() -> usize {
    10_000
}

fn default_max_connections_per_source() -> usize {
    1_000
}

/// What forwards the connections of `tcp` (L4) ports. `http` ports are always served by
/// the mesh's proxy, which has to read each request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L4Dataplane {
    /// The mesh's forwarder: least connections, a refused connection retried on the
    /// next endpoint, per-endpoint metrics. Needs no privilege.
    #[default]
    Userspace,
    /// nftables DNAT rules (see `kernel`): about twice the request rate of any userspace
    /// proxy on a small machine, round-robin, no retry of a refused connection. Needs
    /// root (CAP_NET_ADMIN) and the `nft` command.
    Nftables,
}

impl std::str::FromStr for L4Dataplane {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "userspace" => Ok(L4Dataplane::Userspace),
            "nftables" => Ok(L4Dataplane::Nftables),
            other => Err(format!(
                "unknown L4 data path {other:?}: expected userspace or nftables"
            )),
        }
    }
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            upstream_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(1),
            ejection_time: Duration::from_secs(5),
            eject_after_failures: 3,
            max_attempts: 3,
            balancing: Balancing::LeastConnections,
            upstream_idle_timeout: Duration::from_secs(90),
            l4_dataplane: L4Dataplane::Userspace,
            idle_timeout: default_idle_timeout(),
            max_lifetime: default_max_lifetime(),
            max_open_connections: default_max_open_connections(),
            max_connections_per_port: default_max_connections_per_port(),
            max_connections_per_source: default_max_connections_per_source(),
        }
    }
}

impl MeshConfig {
    /// Checks the ranges `Mesh::new` relies on.
    pub fn validate(&self) -> Result<(), MeshError> {
        let invalid = |field, reason: &str| {
            Err(MeshError::InvalidConfig {
                field,
                reason: reason.to_string(),
            })
        };
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return invalid("max_header_bytes", "must be at least 8192");
        }
        let zero_checks = [
            ("header_read_timeout", self.header_read_timeout),
            ("upstream_timeout", self.upstream_timeout),
            ("connect_timeout", self.connect_timeout),
            ("idle_timeout", self.idle_timeout),
            ("max_lifetime", self.max_lifetime),
        ];
        for (field, value) in zero_checks {
            if value.is_zero() {
                return invalid(field, "must be greater than zero");
            }
        }
        if self.max_attempts == 0 {
            return invalid("max_attempts", "must be at least 1");
        }
        if self.eject_after_failures == 0 {
            return invalid("eject_after_failures", "must be at least 1");
        }
        let cap_checks = [
            ("max_open_connections", self.max_open_connections),
            ("max_connections_per_port", self.max_connections_per_port),
            (
                "max_connections_per_source",
                self.max_connections_per_source,
            ),
        ];
        for (field, value) in cap_checks {
            if value == 0 {
                return invalid(field, "must be at least 1");
            }
        }
        Ok(())
    }
}

/// How a published port is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// L4: each client connection is forwarded whole to one endpoint.
    Tcp,
    /// L7: each HTTP request is routed by host and path and balanced on its own.
    Http,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
        }
    }
}

/// One routing rule of an HTTP service. Both parts unset matches everything (the port's
/// default service). A `host` of `*.example.com` matches any single-or-deeper subdomain of
/// `example.com`; hosts compare case-insensitively and without the port. A `path_prefix`
/// matches on segment boundaries: `/api` matches `/api` and `/api/x`, not `/apix`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostPathRoute {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
}

/// Active health check of a service's endpoints. For `http` services it is a `GET path`
/// answered with 2xx or 3xx; for `tcp` services a TCP connect (the path is unused).
/// Defaults are HAProxy's: `inter 2s`, `fall 3`, `rise 2`, and the check timeout falls back
/// to `inter` as HAProxy does without `timeout check`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failed checks that take a healthy endpoint out of rotation.
    pub fall: u32,
    /// Consecutive passed checks that put an unhealthy endpoint back.
    pub rise: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/".to_string(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            fall: 3,
            rise: 2,
        }
    }
}

/// Whether an endpoint takes new work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointState {
    /// Gets new connections and requests.
    #[default]
    Active,
    /// Gets nothing new; what it is already serving runs to completion. The daemon sets
    /// this before stopping a task, then removes the endpoint once the task is gone.
    Draining,
}

/// Where one running task serves the service's target port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// The task id; stable for the life of the task, so counters and ejection survive
    /// updates.
    pub id: String,
    pub addr: SocketAddr,
    pub state: EndpointState,
}

/// Everything the mesh needs to serve one published port of one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRoute {
    pub service_id: String,
    pub service_name: String,
    /// The port every node listens on (ingress mode). Several `http` services may share
    /// one published port when their routes tell them apart; a `tcp` port has one service.
    pub published: u16,
    pub protocol: Protocol,
    /// Only for `http`. Empty means "everything on this port" (the port's default).
    pub routes: Vec<HostPathRoute>,
    pub health: Option<HealthCheck>,
    pub endpoints: Vec<Endpoint>,
}

/// Checks a complete set of services before the mesh applies any of it, so an update is
/// applied whole or not at all.
pub fn validate_services(services: &[ServiceRoute]) -> Result<(), MeshError> {
    let mut seen_ids = HashSet::new();
    // Per published port: its protocol, the services on it, and the rules already taken.
    let mut ports: HashMap<u16, (Protocol, &str)> = HashMap::new();
    let mut rules: HashMap<(u16, Option<String>, Option<String>), &str> = HashMap::new();
    for service in services {
        let invalid = |reason: String| MeshError::InvalidRoute {
            service_id: service.service_id.clone(),
            reason,
        };
        if service.service_id.is_empty() {
            return Err(invalid("empty service id".to_string()));
        }
        if !seen_ids.insert(service.service_id.as_str()) {
            return Err(invalid("service id appears twice".to_string()));
        }
        if service.published == 0 {
            return Err(invalid("published port 0".to_string()));
        }
        let mut endpoint_ids = HashSet::new();
        for endpoint in &service.endpoints {
            if !endpoint_ids.insert(endpoint.id.as_str()) {
                return Err(invalid(format!("endpoint {} appears twice", endpoint.id)));
            }
        }
        if let Some(health) = &service.health {
            if health.interval.is_zero() || health.timeout.is_zero() {
                return Err(invalid(
                    "health check interval and timeout must be > 0".into(),
                ));
            }
            if health.fall == 0 || health.rise == 0 {
                return Err(invalid("health check fall and rise must be >= 1".into()));
            }
            if service.protocol == Protocol::Http && !health.path.starts_with('/') {
                return Err(invalid("health check path must start with '/'".into()));
            }
        }
        match (service.protocol, ports.get(&service.published)) {
            (_, None) => {
                ports.insert(
                    service.published,
                    (service.protocol, service.service_id.as_str()),
                );
            }
            (Protocol::Http, Some((Protocol::Http, _))) => {}
            (_, Some((_, other))) => {
                return Err(invalid(format!(
                    "port {} is already published by service {} and only http services \
                     with host/path routes can share a port",
                    service.published, other
                )));
            }
        }
        if service.protocol == Protocol::Tcp {
            if !service.routes.is_empty() {
                return Err(invalid("host/path routes need protocol http".into()));
            }
            continue;
        }
        let service_rules: Vec<(Option<String>, Option<String>)> = if service.routes.is_empty() {
            vec![(None, None)]
        } else {
            service
                .routes
                .iter()
                .map(|route| {
                    (
                        route.host.as_ref().map(|host| host.to_ascii_lowercase()),
                        route.path_prefix.clone(),
                    )
                })
                .collect()
        };
        for (host, path_prefix) in service_rules {
            if let Some(prefix) = &path_prefix {
                if !prefix.starts_with('/') {
                    return Err(invalid(format!(
                        "path prefix {prefix:?} must start with '/'"
                    )));
                }
            }
            if let Some(host) = &host {
                if host.is_empty() || host.contains(['/', ' ']) {
                    return Err(invalid(format!("invalid host {host:?}")));
                }
            }
            let key = (service.published, host, path_prefix);
            if let Some(other) = rules.get(&key) {
                if *other != service.service_id {
                    return Err(invalid(format!(
                        "route host={:?} path={:?} on port {} is already taken by service {}",
                        key.1, key.2, key.0, other
                    )));
                }
            }
            rules.insert(key, service.service_id.as_str());
        }
    }
    Ok(())
}

/// What the mesh can serve of a set of services: the largest prefix-consistent subset,
/// in the order given, and the services left out with the reason.
#[derive(Debug)]
pub struct Servable {
    pub services: Vec<ServiceRoute>,
    pub left_out: Vec<LeftOut>,
}

/// A service [`servable`] left out because its routes clash with those already taken.
#[derive(Debug)]
pub struct LeftOut {
    pub service_name: String,
    pub error: MeshError,
}

/// Keeps each service whose routes agree with those kept before it and leaves out the
/// rest, so one clashing service does not block every other service's update (the
/// whole set would fail [`validate_services`]).
pub fn servable(services: Vec<ServiceRoute>) -> Servable {
    if validate_services(&services).is_ok() {
        return Servable {
            services,
            left_out: Vec::new(),
        };
    }
    let mut accepted: Vec<ServiceRoute> = Vec::new();
    let mut left_out = Vec::new();
    for service in services {
        accepted.push(service);
        if let Err(error) = validate_services(&accepted) {
            if let Some(refused) = accepted.pop() {
                left_out.push(LeftOut {
                    service_name: refused.service_name,
                    error,
                });
            }
        }
    }
    Servable {
        services: accepted,
        left_out,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_clashing_service_is_left_out_instead_of_blocking_the_others() {
        let with_host = |id: &str, host: &str| ServiceRoute {
            routes: vec![HostPathRoute {
                host: Some(host.to_string()),
                path_prefix: None,
            }],
            ..service(id, 8080, Protocol::Http)
        };
        let servable = servable(vec![
            with_host("a", "a.test"),
            with_host("b", "a.test"),
            with_host("c", "c.test"),
            service("d", 8080, Protocol::Tcp),
        ]);
        let served: Vec<&str> = servable
            .services
            .iter()
            .map(|service| service.service_name.as_str())
            .collect();
        assert_eq!(served, ["a", "c"]);
        let left_out: Vec<&str> = servable
            .left_out
            .iter()
            .map(|left_out| left_out.service_name.as_str())
            .collect();
        assert_eq!(left_out, ["b", "d"]);
        assert!(matches!(
            servable.left_out[0].error,
            MeshError::InvalidRoute { .. }
        ));
    }

    #[test]
    fn a_consistent_set_is_served_whole() {
        let services = vec![
            service("a", 8080, Protocol::Tcp),
            service("b", 8081, Protocol::Http),
        ];
        let servable = servable(services.clone());
        assert_eq!(servable.services, services);
        assert!(servable.left_out.is_empty());
    }
    use super::*;

    fn service(id: &str, published: u16, protocol: Protocol) -> ServiceRoute {
        ServiceRoute {
            service_id: id.to_string(),
            service_name: id.to_string(),
            published,
            protocol,
            routes: vec![],
            health: None,
            endpoints: vec![],
        }
    }

    #[test]
    fn default_config_is_valid() {
        MeshConfig::default().validate().unwrap();
        let small = MeshConfig {
            max_header_bytes: 100,
            ..MeshConfig::default()
        };
        assert!(small.validate().is_err());
    }

    #[test]
    fn tcp_port_cannot_be_shared() {
        let services = [
            service("a", 80, Protocol::Tcp),
            service("b", 80, Protocol::Tcp),
        ];
        assert!(validate_services(&services).is_err());
        let mixed = [
            service("a", 80, Protocol::Http),
            service("b", 80, Protocol::Tcp),
        ];
        assert!(validate_services(&mixed).is_err());
    }

    #[test]
    fn http_port_is_shared_by_distinct_routes_only() {
        let mut a = service("a", 80, Protocol::Http);
        a.routes = vec![HostPathRoute {
            host: Some("a.example".into()),
            path_prefix: None,
        }];
        let b = service("b", 80, Protocol::Http);
        validate_services(&[a.clone(), b.clone()]).unwrap();
        // Two default services on one port cannot be told apart.
        let c = service("c", 80, Protocol::Http);
        assert!(validate_services(&[a.clone(), b, c]).is_err());
        let mut a2 = service("a2", 80, Protocol::Http);
        a2.routes = vec![HostPathRoute {
            host: Some("A.EXAMPLE".into()),
            path_prefix: None,
        }];
        assert!(validate_services(&[a, a2]).is_err());
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let services = [
            service("a", 80, Protocol::Tcp),
            service("a", 81, Protocol::Tcp),
        ];
        assert!(validate_services(&services).is_err());
        let mut dup_endpoint = service("b", 82, Protocol::Tcp);
        let endpoint = Endpoint {
            id: "t1".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            state: EndpointState::Active,
        };
        dup_endpoint.endpoints = vec![endpoint.clone(), endpoint];
        assert!(validate_services(&[dup_endpoint]).is_err());
    }
}
