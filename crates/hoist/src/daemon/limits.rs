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
/// 430,000 tries a day against a 128-bit secret.
pub const JOIN_BURST: u32 = 20;
pub const JOIN_PER_SECOND: u32 = 5;

/// Source addresses remembered by the join limiter before idle ones are forgotten.
const JOIN_LIMITER_MAX_KEYS: usize = 10_000;

/// The daemon's bounds on time and size that an operator may set (`hoist daemon`
/// flags; the README lists their defaults).
#[derive(Debug, Clone)]
pub struct Limits {
    /// TLS handshake, each request head, and idle keep-alive on the control listener.
    pub control_header_timeout: std::time::Duration,
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

/// Per-source-address join attempts.
pub struct JoinLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl Default for JoinLimiter {
    fn default() -> Self {
        let per_second = NonZeroU32::new(JOIN_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(JOIN_BURST).unwrap_or(NonZeroU32::MIN);
        JoinLimiter {
            limiter: DefaultKeyedRateLimiter::hashmap(
                Quota::per_second(per_second).allow_burst(burst),
            ),
        }
    }
}

impl JoinLimiter {
    /// Whether `source` may try once more now.
    pub fn allow(&self, source: IpAddr) -> bool {
        if self.limiter.len() > JOIN_LIMITER_MAX_KEYS {
            // Addresses whose bucket has refilled carry no information any more.
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(&source).is_ok()
    }
}

/// Refuses a body over the route's limit: at once when `Content-Length` says so, and
/// otherwise as soon as the streamed body passes the limit (the extractor then answers
/// `413`). Join attempts over the source address's rate get `429`.
pub async fn bound_input(
    State(limiter): State<std::sync::Arc<JoinLimiter>>,
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
                        "too many join attempts from {}: at most {JOIN_BURST} at once and {JOIN_PER_SECOND} per second; wait a moment and retry",
                        source.ip()
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
    Ok(next.run(Request::from_parts(parts, body)).await)
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
}
