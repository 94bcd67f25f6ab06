//! Bounds on what a caller may send before any handler sees it: the largest request
//! body each route accepts (answered with `413`), the time a body on the TLS listener
//! may take to arrive (`408`), how often one source address may try to join (answered
//! with `429`), and how many connections the TLS listener holds, in total and per
//! source address.
//!
//! Why here and not in the handlers: the body is read by the handlers' extractors, so
//! the limit has to be in place before they run; and the join endpoint is open to
//! anyone who can reach the port, so its attempts are counted before the manager is
//! asked. Each route's bound comes from its endpoint definition (`hoist_api::MaxBody`,
//! and the open class for the join rate), applied where `routes.rs` mounts it.
//!
//! Does not know: who the caller is (that is `access.rs`), or what a body means.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use governor::{DefaultKeyedRateLimiter, Quota};

use hoist_api::{Access, MaxBody, Route};

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

/// How long a Raft snapshot or a restore (up to [`RAFT_BODY_LIMIT`]) may take to arrive
/// on the TLS listener. Only managers (and the local operator, whose socket has no
/// deadline) may send one: the routes' authorization runs before the body is read.
pub const LARGE_BODY_DEADLINE: Duration = Duration::from_secs(300);

/// How long the body of a request to a route accepting `max_body` may take to arrive
/// whole on the TLS listener, counted from the end of its head: the head's own bound
/// (`header_timeout`, `--control-header-timeout`), so a slow body holds a connection no
/// longer than a slow head; Raft snapshots and restores get [`LARGE_BODY_DEADLINE`].
pub fn body_deadline(max_body: MaxBody, header_timeout: Duration) -> Duration {
    if body_limit(max_body) > NODE_BODY_LIMIT {
        LARGE_BODY_DEADLINE.max(header_timeout)
    } else {
        header_timeout
    }
}

/// Put on each request of the TLS listener (`server::serve_tls`): `--control-header-timeout`,
/// which also bounds the body (see [`body_deadline`]). The unix socket puts none.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// A request body that fails once its deadline passes, however the bytes trickle in.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        // The deadline first: a client that keeps a byte ready at every poll must not
        // escape it.
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.expired.store(true, Ordering::SeqCst);
            return Poll::Ready(Some(Err("request body not received in time".into())));
        }
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map(|frame| frame.map(|result| result.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Open connections on the TLS listener, in total and per source address. A
/// connection over a cap is accepted and closed at once (as the mesh does with
/// published ports, `mesh/src/limits.rs`), so a client that opens many and sends
/// nothing cannot take the descriptors heartbeats and Raft need.
pub struct ControlAdmission {
    max_total: usize,
    max_per_source: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it frees its place.
pub struct ControlSlot {
    admission: Arc<ControlAdmission>,
    source: IpAddr,
}

impl ControlAdmission {
    pub fn new(max_total: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(ControlAdmission {
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// Counts a new connection from `source`, or names the cap it is over.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<ControlSlot, &'static str> {
        let source = source.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.0 >= self.max_total {
            return Err("total");
        }
        let from_source = open.1.entry(source).or_insert(0);
        if *from_source >= self.max_per_source {
            return Err("source");
        }
        *from_source += 1;
        open.0 += 1;
        Ok(ControlSlot {
            admission: self.clone(),
            source,
        })
    }
}

impl Drop for ControlSlot {
    fn drop(&mut self) {
        let mut open = self
            .admission
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(count) = open.1.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.1.remove(&self.source);
            }
        }
    }
}

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

    /// Connections the TLS listener holds at once: a quarter of the open-files limit,
    /// at least 64. Each node holds a few (heartbeats, its assignment stream, Raft).
    pub fn control_max_connections(&self) -> usize {
        usize::try_from(self.open_files / 4)
            .unwrap_or(usize::MAX)
            .max(64)
    }

    /// Connections one source address may hold on the TLS listener: half of the total,
    /// at most 128 (a node has its own address and needs far fewer), so other nodes
    /// always find room.
    pub fn control_max_connections_per_source(&self) -> usize {
        (self.control_max_connections() / 2).clamp(1, 128)
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

/// The largest body a route of kind `max_body` accepts.
pub fn body_limit(max_body: MaxBody) -> usize {
    match max_body {
        MaxBody::Join => JOIN_BODY_LIMIT,
        MaxBody::Standard => NODE_BODY_LIMIT,
        MaxBody::Bulk => RAFT_BODY_LIMIT,
    }
}

/// One route's input bounds, from its endpoint definition.
#[derive(Clone)]
pub struct InputBound {
    joins: Arc<JoinLimiter>,
    max_body: MaxBody,
    /// The open endpoint (the join request) counts attempts per source address.
    rate_limited: bool,
}

impl InputBound {
    pub fn new(joins: Arc<JoinLimiter>, route: &Route) -> Self {
        InputBound {
            joins,
            max_body: route.max_body,
            rate_limited: route.access == Access::Open,
        }
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
    State(bound): State<InputBound>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = request.uri().path().to_owned();
    let limit = body_limit(bound.max_body);
    let timeout = request.extensions().get::<BodyTimeout>().copied();
    let limiter = &bound.joins;
    if bound.rate_limited {
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
    let mut body = Body::new(http_body_util::Limited::new(body, limit));
    let expired = Arc::new(AtomicBool::new(false));
    let deadline = timeout.map(|BodyTimeout(header)| body_deadline(bound.max_body, header));
    if let Some(deadline) = deadline {
        body = Body::new(DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(deadline)),
            expired: expired.clone(),
        });
    }
    let response = next.run(Request::from_parts(parts, body)).await;
    if expired.load(Ordering::SeqCst) {
        let within = deadline.unwrap_or_default();
        tracing::warn!(
            path,
            ?within,
            "request body not received in time; connection closed"
        );
        let mut response = axum::response::IntoResponse::into_response(ApiError::new(
            408,
            format!("request body not received within {within:?}: {path} closes slow senders"),
        ));
        // The rest of the body is never read: the connection ends with this answer.
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        return Ok(response);
    }
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
    use hoist_api::endpoint::{Endpoint, Heartbeat, Join, RaftRpc, Restore, ServiceCreate};

    #[test]
    fn connections_are_capped_per_source_and_in_total() {
        let admission = ControlAdmission::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let first = admission.admit(a).expect("first");
        let _second = admission.admit(a).expect("second");
        assert_eq!(admission.admit(a).err(), Some("source"));
        let _other = admission.admit(b).expect("another source");
        assert_eq!(admission.admit(b).err(), Some("total"));
        drop(first);
        assert!(
            admission.admit(a).is_ok(),
            "a closed connection frees its place"
        );
    }

    #[tokio::test]
    async fn a_body_trickling_in_fails_at_its_deadline() {
        use http_body_util::BodyExt;
        let (sender, trickle) = {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
            (tx, Body::from_stream(tokio_stream_from(rx)))
        };
        let expired = Arc::new(AtomicBool::new(false));
        let body = DeadlineBody {
            inner: trickle,
            deadline: Box::pin(tokio::time::sleep(Duration::from_millis(300))),
            expired: expired.clone(),
        };
        let feeder = tokio::spawn(async move {
            // One byte every 50 ms, forever (until the reader is gone).
            while sender.send(Ok(Bytes::from_static(b"x"))).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let started = std::time::Instant::now();
        let collected = tokio::time::timeout(Duration::from_secs(10), body.collect()).await;
        assert!(
            matches!(collected, Ok(Err(_))),
            "the body must fail, not finish"
        );
        assert!(expired.load(Ordering::SeqCst));
        assert!(started.elapsed() >= Duration::from_millis(250));
        feeder.abort();
        assert_eq!(
            body_deadline(Join::MAX_BODY, Duration::from_secs(10)),
            Duration::from_secs(10)
        );
        assert_eq!(
            body_deadline(RaftRpc::MAX_BODY, Duration::from_secs(10)),
            LARGE_BODY_DEADLINE
        );
    }

    /// A stream of what `rx` receives.
    fn tokio_stream_from<T: Send + 'static>(
        rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures::Stream<Item = T> + Send + 'static {
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
    }

    #[test]
    fn routes_get_their_limits() {
        assert_eq!(body_limit(Join::MAX_BODY), 64 * 1024);
        assert_eq!(body_limit(Heartbeat::MAX_BODY), 1024 * 1024);
        assert_eq!(body_limit(ServiceCreate::MAX_BODY), 1024 * 1024);
        assert_eq!(body_limit(RaftRpc::MAX_BODY), 256 * 1024 * 1024);
        assert_eq!(body_limit(Restore::MAX_BODY), 256 * 1024 * 1024);
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
