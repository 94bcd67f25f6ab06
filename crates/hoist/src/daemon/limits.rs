//! Bounds on what a caller may send before any handler sees it: the largest request
//! body each route accepts (answered with `413`), and how often one source address may
//! try to join (answered with `429`).
//!
//! Why here and not in the handlers: the body is read by the handlers' extractors, so
//! the limit has to be in place before they run; and `/v1/join` is open to anyone who
//! can reach the port, so its attempts are counted before the manager is asked.
//!
//! Does not know: who the caller is (that is `routes::authorize`), or what a body means.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use governor::{DefaultKeyedRateLimiter, Quota};

use super::routes::ApiError;

/// The join request is a secret, a hostname, an address and a CSR: about 1 KiB.
pub const JOIN_BODY_LIMIT: usize = 64 * 1024;

/// Heartbeats, status reports and control requests (service specs) are a few KiB;
/// 1 MiB leaves room for large specs and many task reports at once.
pub const NODE_BODY_LIMIT: usize = 1024 * 1024;

/// Raft snapshots travel in one request (and `restore` carries a whole backup): a
/// cluster state of many thousand tasks is a few megabytes of JSON, so this leaves a
/// wide margin. Only managers of the Raft group (and the local operator) reach it.
pub const RAFT_BODY_LIMIT: usize = 256 * 1024 * 1024;

/// Join attempts one source address may make at once, and per second after that. A
/// join costs a certificate signature and a Raft write; 20 at once lets a script join
/// a rack of nodes behind one NAT address, and 5 a second keeps a guesser at about
/// 430,000 tries a day against a 128-bit secret. The rate per second is the cluster's
/// `join_rate_limit` setting once the node is a manager; this is its default.
pub const JOIN_BURST: u32 = 20;
pub const JOIN_PER_SECOND: u32 = hoist_state::DEFAULT_JOIN_RATE_LIMIT;

/// Source addresses remembered by the join limiter before idle ones are forgotten.
const JOIN_LIMITER_MAX_KEYS: usize = 10_000;

/// The daemon's bounds on time and size that an operator may set (`hoist daemon`
/// flags; the README lists their defaults).
#[derive(Debug, Clone)]
pub struct Limits {
    /// TLS handshake, each request head, and idle keep-alive on the control listener.
    pub control_header_timeout: std::time::Duration,
    /// Each task's output kept by the process driver.
    pub log_limits: hoist_driver::LogLimits,
    /// The soft open-files limit in force after raising it to the hard one.
    pub open_files: u64,
    /// Published ports: idle and lifetime timeouts of L4 connections and tunnels.
    pub mesh_idle_timeout: std::time::Duration,
    pub mesh_max_lifetime: std::time::Duration,
    /// Published ports: open connections per port and per client address.
    pub mesh_max_connections_per_port: usize,
    pub mesh_max_connections_per_source: usize,
}

impl Limits {
    /// The connections the mesh may hold open over all published ports: half of the
    /// descriptors left after a reserve for the control plane (the TLS listener and its
    /// clients, Raft, the store, task output files), since a forwarded connection takes
    /// two (client and endpoint). The reserve is 256 descriptors, or half of the limit
    /// when that is smaller: with 256, the mesh may hold 64 connections.
    pub fn mesh_max_open_connections(&self) -> usize {
        let reserve = (self.open_files / 2).min(256);
        let for_mesh = self.open_files.saturating_sub(reserve) / 2;
        usize::try_from(for_mesh).unwrap_or(usize::MAX).max(1)
    }
}

/// Raises the soft open-files limit to the hard one (a daemon holds a descriptor per
/// connection, task output file and store) and returns the limit then in force.
pub fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the open-files limit");
            return 1024;
        }
    };
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!(from = soft, to = hard, "raised the open-files limit");
                return hard;
            }
            Err(err) => {
                tracing::warn!(soft, hard, error = %err, "cannot raise the open-files limit")
            }
        }
    }
    soft
}

/// The largest body `path` accepts.
pub fn body_limit(path: &str) -> usize {
    match path {
        "/v1/join" => JOIN_BODY_LIMIT,
        "/v1/restore" => RAFT_BODY_LIMIT,
        _ if path.starts_with("/raft/") => RAFT_BODY_LIMIT,
        _ => NODE_BODY_LIMIT,
    }
}

fn human(bytes: usize) -> String {
    if bytes >= 1024 * 1024 {
        format!("{} MiB", bytes / (1024 * 1024))
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

/// Per-source-address join attempts, at the rate the cluster's `join_rate_limit`
/// setting (`hoist cluster update --join-rate-limit`) asks for.
pub struct JoinLimiter {
    /// Where the rate in force comes from (the manager's applied settings).
    rate: Box<dyn Fn() -> u32 + Send + Sync>,
    /// The rate the limiter was built for, and the limiter: rebuilt (its counts start
    /// over) when the setting changes, which is rare and operator-driven.
    current: Mutex<(u32, Arc<DefaultKeyedRateLimiter<IpAddr>>)>,
}

fn keyed_limiter(per_second: u32) -> Arc<DefaultKeyedRateLimiter<IpAddr>> {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(JOIN_BURST).unwrap_or(NonZeroU32::MIN);
    Arc::new(DefaultKeyedRateLimiter::hashmap(
        Quota::per_second(per_second).allow_burst(burst),
    ))
}

impl Default for JoinLimiter {
    fn default() -> Self {
        JoinLimiter::new(|| JOIN_PER_SECOND)
    }
}

impl JoinLimiter {
    /// A limiter whose rate per second is `rate()` at each attempt (0: no limit).
    pub fn new(rate: impl Fn() -> u32 + Send + Sync + 'static) -> Self {
        JoinLimiter {
            rate: Box::new(rate),
            current: Mutex::new((JOIN_PER_SECOND, keyed_limiter(JOIN_PER_SECOND))),
        }
    }

    /// The rate in force now.
    pub fn per_second(&self) -> u32 {
        (self.rate)()
    }

    /// Whether `source` may try once more now.
    pub fn allow(&self, source: IpAddr) -> bool {
        let per_second = self.per_second();
        if per_second == 0 {
            return true;
        }
        let limiter = {
            let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            if current.0 != per_second {
                *current = (per_second, keyed_limiter(per_second));
            }
            current.1.clone()
        };
        if limiter.len() > JOIN_LIMITER_MAX_KEYS {
            // Addresses whose bucket has refilled carry no information any more.
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter.check_key(&source).is_ok()
    }
}

/// Refuses a body over the route's limit: at once when `Content-Length` says so, and
/// otherwise as soon as the streamed body passes the limit (the extractor then answers
/// `413`). Join attempts over the source address's rate get `429`.
pub async fn bound_input(
    State(limiter): State<Arc<JoinLimiter>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = request.uri().path().to_owned();
    let limit = body_limit(&path);
    if path == "/v1/join" {
        // The local socket carries no address and is the operator: not counted.
        if let Some(ConnectInfo(source)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
            if !limiter.allow(source.ip()) {
                tracing::warn!(source = %source.ip(), "join attempts over the rate limit");
                return Err(ApiError::new(
                    429,
                    format!(
                        "too many join attempts from {}: at most {JOIN_BURST} at once and {} per second; wait a moment and retry",
                        source.ip(),
                        limiter.per_second()
                    ),
                ));
            }
        }
    }
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(declared) = declared {
        if declared > limit as u64 {
            tracing::warn!(path, declared, limit, "request body over the limit refused");
            return Err(ApiError::new(
                413,
                format!(
                    "request body too large: {path} accepts at most {} and this one declares {declared} bytes",
                    human(limit)
                ),
            ));
        }
    }
    let (parts, body) = request.into_parts();
    let body = Body::new(http_body_util::Limited::new(body, limit));
    let response = next.run(Request::from_parts(parts, body)).await;
    if response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        // The extractor's own answer to a streamed body over the limit is plain text:
        // say the same in the API's JSON shape, naming the route and its limit.
        tracing::warn!(path, limit, "streamed request body over the limit refused");
        return Err(ApiError::new(
            413,
            format!(
                "request body too large: {path} accepts at most {}",
                human(limit)
            ),
        ));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_get_their_limits() {
        assert_eq!(body_limit("/v1/join"), 64 * 1024);
        assert_eq!(body_limit("/v1/dispatcher/heartbeat"), 1024 * 1024);
        assert_eq!(body_limit("/v1/services"), 1024 * 1024);
        assert_eq!(body_limit("/raft/snapshot"), 256 * 1024 * 1024);
        assert_eq!(body_limit("/v1/restore"), 256 * 1024 * 1024);
    }

    #[test]
    fn one_source_is_limited_and_others_are_not() {
        let limiter = JoinLimiter::default();
        let noisy: IpAddr = "192.0.2.1".parse().expect("ip");
        let quiet: IpAddr = "192.0.2.2".parse().expect("ip");
        let allowed = (0..JOIN_BURST * 2).filter(|_| limiter.allow(noisy)).count();
        // The burst, plus whatever refilled while the loop ran (well under a second).
        assert!(
            (JOIN_BURST as usize..JOIN_BURST as usize + 3).contains(&allowed),
            "{allowed}"
        );
        assert!(limiter.allow(quiet));
    }

    #[test]
    fn the_rate_follows_the_setting_and_zero_lifts_it() {
        let rate = Arc::new(std::sync::atomic::AtomicU32::new(1));
        let setting = rate.clone();
        let limiter = JoinLimiter::new(move || setting.load(std::sync::atomic::Ordering::SeqCst));
        let source: IpAddr = "192.0.2.3".parse().expect("ip");
        let burst = (0..JOIN_BURST * 2)
            .filter(|_| limiter.allow(source))
            .count();
        assert!(burst < JOIN_BURST as usize + 3, "{burst}");
        assert!(!limiter.allow(source));
        rate.store(0, std::sync::atomic::Ordering::SeqCst);
        assert!((0..100).all(|_| limiter.allow(source)), "0 is no limit");
        rate.store(2, std::sync::atomic::Ordering::SeqCst);
        assert!(limiter.allow(source), "a new rate starts its counts over");
    }
}
