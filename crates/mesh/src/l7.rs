//! The L7 (`http`) proxy: serves client connections and forwards each request on its own.
//!
//! Owns: the client side of an HTTP port (HTTP/1.1 and h2c with prior knowledge, the
//! request-head deadline and its `408`, the head size limit and its `431`), host/path
//! routing of each request, per-request balancing, the forwarding headers
//! (`X-Forwarded-For`, `X-Forwarded-Proto`, `Forwarded`), retries, passive ejection, and
//! the mesh's own error answers (`404` no route, `502` endpoint failed, `503` no endpoint,
//! `504` endpoint too slow).
//!
//! Why not hyper-util's `auto` server builder: it reads the HTTP/2 preface with no
//! deadline, so a client that connects and sends nothing would hold its connection
//! forever. We peek the first bytes ourselves under the header deadline and hand the
//! socket to hyper's HTTP/1 or HTTP/2 connection directly.
//!
//! Why our own `408`: hyper's `header_read_timeout` closes the connection without a word.
//! `ClientIo` remembers whether the client sent bytes since our last write; when hyper
//! reports the header timeout and it did, we write a `408` before closing, so a slow
//! client learns why, while an idle keep-alive connection is closed silently.
//!
//! Protocol upgrades (WebSocket; HTTP/1.1 only, never h2c): a request with
//! `Connection: upgrade` keeps its `Upgrade` header; when the endpoint answers `101`, both
//! connections are taken out of HTTP and joined into a byte tunnel for the rest of their
//! lives (or until `idle_timeout` without a byte, or `max_lifetime`). The upstream
//! connection is never pooled again, and the endpoint counts the tunnel as one request
//! in flight until it closes; the tunnel keeps the client connection's place under the
//! connection caps.
//!
//! Does not know: where endpoints come from, or anything of the cluster.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::body::{DownstreamBody, FullBody, UpstreamBody};
use crate::limits::{self, ConnectionSlot, CopyEnd};
use crate::mesh::{ListenerShared, PortRoutes, Shared};
use crate::route;
use crate::table::{EndpointRuntime, InFlight, ServiceRuntime};
use crate::upstream::{self, PooledSender};

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Written raw to a client whose request head did not arrive in time.
const RESPONSE_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\n\
content-length: 53\r\nconnection: close\r\n\r\n\
hoist mesh: the request head did not arrive in time.\n";

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// What the request handlers of one client connection share.
struct ConnectionContext {
    shared: Arc<Shared>,
    listener: Arc<ListenerShared>,
    peer: SocketAddr,
    client: ClientAddress,
    /// The connection's place under the connection caps, shared with an upgrade tunnel
    /// that outlives the HTTP connection.
    slot: Arc<ConnectionSlot>,
}

pub(crate) async fn serve_connection(
    shared: Arc<Shared>,
    listener: Arc<ListenerShared>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
) {
    let header_read_timeout = shared.config.header_read_timeout;
    let sniffed = tokio::select! {
        sniffed = tokio::time::timeout(header_read_timeout, sniff_version(&stream)) => sniffed,
        _ = shared.shutdown.cancelled() => return,
    };
    let version = match sniffed {
        Ok(Ok(Some(version))) => version,
        // Closed before sending anything, or a socket error: nothing to answer.
        Ok(Ok(None)) | Ok(Err(_)) => return,
        Err(_elapsed) => {
            // Nothing at all arrived: a preconnected or abandoned socket, not a slow
            // request. Close it without a 408, which browsers and pooled clients would
            // only misread as the answer to their next request.
            return;
        }
    };

    let flags = Arc::new(TimeoutFlags::default());
    let io = TokioIo::new(ClientIo {
        stream,
        read_since_write: false,
        flags: Arc::clone(&flags),
    });
    let context = Arc::new(ConnectionContext {
        shared: Arc::clone(&shared),
        listener: Arc::clone(&listener),
        peer,
        client: ClientAddress::new(peer.ip()),
        slot: Arc::new(slot),
    });
    let service = service_fn(move |request| {
        let context = Arc::clone(&context);
        async move { Ok::<_, Infallible>(handle_request(&context, request).await) }
    });

    let result = match version {
        Version::HTTP_2 => {
            let mut connection = pin!(shared.http2.serve_connection(io, service));
            tokio::select! {
                result = connection.as_mut() => result,
                _ = shared.shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.as_mut().await
                }
            }
        }
        _ => {
            let mut connection = pin!(shared.http1.serve_connection(io, service).with_upgrades());
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = shared.shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.as_mut().await
                }
            };
            if result.as_ref().is_err_and(hyper::Error::is_timeout) {
                // Set before `connection` (which owns the socket) is dropped at the end
                // of this block; `ClientIo::drop` writes the 408.
                flags.send_408.store(true, Relaxed);
            }
            result
        }
    };
    // The connection, and with it `ClientIo`, is dropped by now.
    if flags.sent_408.load(Relaxed) {
        listener.header_timeouts_total.fetch_add(1, Relaxed);
    }
    if let Err(error) = result {
        tracing::debug!(%peer, published = listener.published, %error, "client connection ended with an error");
    }
}

/// Decides HTTP/1 or HTTP/2 from the first bytes without consuming them. `None` when the
/// client closed first.
async fn sniff_version(stream: &TcpStream) -> io::Result<Option<Version>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n_bytes = stream.peek(&mut buf).await?;
        if n_bytes == 0 {
            return Ok(None);
        }
        if buf[..n_bytes] != H2_PREFACE[..n_bytes] {
            return Ok(Some(Version::HTTP_11));
        }
        if n_bytes == H2_PREFACE.len() {
            return Ok(Some(Version::HTTP_2));
        }
        // A partial preface: peek would return the same bytes at once, so wait a little
        // for the rest. Only h2c clients that split the 24-byte preface come here.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The client socket as hyper sees it, plus the bookkeeping for the `408`.
struct ClientIo {
    stream: TcpStream,
    /// True when the client sent bytes after our last write: a request is (partly) in.
    read_since_write: bool,
    flags: Arc<TimeoutFlags>,
}

/// Shared between `serve_connection` and the `ClientIo` that hyper owns.
#[derive(Default)]
struct TimeoutFlags {
    /// Set by `serve_connection` when hyper reported the header timeout.
    send_408: AtomicBool,
    /// Set by `ClientIo::drop` when it did write the 408 (a request was partly in; an
    /// idle keep-alive connection is closed without one and not counted).
    sent_408: AtomicBool,
}

impl Drop for ClientIo {
    fn drop(&mut self) {
        if self.read_since_write && self.flags.send_408.load(Relaxed) {
            // The send buffer is empty (nothing was answered on this request), so a
            // non-blocking write of a few dozen bytes goes through whole.
            let _ = self.stream.try_write(RESPONSE_408);
            self.flags.sent_408.store(true, Relaxed);
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.read_since_write = true;
        }
        polled
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.read_since_write = false;
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.read_since_write = false;
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

async fn handle_request(
    context: &ConnectionContext,
    request: Request<Incoming>,
) -> Response<DownstreamBody> {
    let routes = context.listener.routes();
    let PortRoutes::Http { rules, services } = &*routes else {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, "not an http port".into());
    };
    let host = request_host(&request);
    let path = request.uri().path();
    let Some(target) = route::select(rules, host, path) else {
        context.listener.unrouted_total.fetch_add(1, Relaxed);
        let message = format!(
            "no service is routed for host {:?} and path {:?} on port {}",
            host.unwrap_or(""),
            path,
            context.listener.published
        );
        return error_response(StatusCode::NOT_FOUND, message);
    };
    forward(context, &services[target], request).await
}

fn request_host(request: &Request<Incoming>) -> Option<&str> {
    // HTTP/2 carries the host in `:authority` (the URI); HTTP/1.1 in the Host header.
    request
        .uri()
        .authority()
        .map(|authority| authority.as_str())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|host| host.to_str().ok())
        })
}

/// Whether a failed attempt may be repeated on another endpoint: only methods that are
/// idempotent by definition (RFC 9110 §9.2.2) and only without a body, which is gone once
/// streamed. Never a POST or PATCH.
fn is_retryable(method: &Method, body: &Incoming) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    ) && body.is_end_stream()
}

/// The request's headers as the endpoint must see them: hop-by-hop ones removed (but
/// an upgrade's kept), a Host for HTTP/2 clients, and the forwarding headers.
fn prepare_upstream_headers(
    parts: &mut hyper::http::request::Parts,
    client_upgrade: Option<&ClientUpgrade>,
    context: &ConnectionContext,
) {
    strip_hop_by_hop(&mut parts.headers);
    if let Some(upgrade) = client_upgrade {
        // Hop-by-hop, but the endpoint must see them to switch protocols.
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts
            .headers
            .insert(header::UPGRADE, upgrade.protocol.clone());
    }
    if !parts.headers.contains_key(header::HOST) {
        // HTTP/2 clients send no Host header; the endpoint speaks HTTP/1.1 and needs one.
        if let Some(authority) = parts.uri.authority() {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(header::HOST, host);
            }
        }
    }
    add_forwarding_headers(&mut parts.headers, &context.client);
}

/// An endpoint's answer, with what it holds until the client has read it.
struct Answer {
    response: Response<Incoming>,
    pooled: PooledSender,
    in_flight: InFlight,
}

/// The endpoint's response as the client gets it: a protocol switch becomes a tunnel
/// (only if the client asked for it), anything else is streamed back holding the
/// endpoint's connection and in-flight count until its body ends.
fn relay_response(
    context: &ConnectionContext,
    service: &Arc<ServiceRuntime>,
    endpoint: &Arc<EndpointRuntime>,
    answer: Answer,
    mut client_upgrade: Option<ClientUpgrade>,
) -> Response<DownstreamBody> {
    let Answer {
        response,
        pooled,
        in_flight,
    } = answer;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = client_upgrade.take() else {
            let message = format!(
                "endpoint {} of service {} switched protocols unasked",
                endpoint.id,
                service.service_name()
            );
            return error_response(StatusCode::BAD_GATEWAY, message);
        };
        return switch_protocols(context, response, pooled, in_flight, client);
    }
    let (mut response_parts, response_body) = response.into_parts();
    strip_hop_by_hop(&mut response_parts.headers);
    // hyper never polls a body that is empty from the start (HEAD, 204, 304, length 0),
    // so give such a connection back now.
    let pooled = if response_body.is_end_stream() {
        pooled.release();
        None
    } else {
        Some(pooled)
    };
    Response::from_parts(
        response_parts,
        DownstreamBody::Upstream {
            body: response_body,
            in_flight: Some(in_flight),
            pooled,
        },
    )
}

/// This node is out of descriptors: not the endpoint's fault, so nothing is ejected,
/// and no other endpoint would do better.
fn out_of_descriptors(
    context: &ConnectionContext,
    service: &Arc<ServiceRuntime>,
    endpoint: &Arc<EndpointRuntime>,
    error: &std::io::Error,
) -> Response<DownstreamBody> {
    tracing::warn!(
        service_id = %service.service_id,
        endpoint = %endpoint.id,
        client = %context.peer,
        %error,
        "no descriptor left on this node to reach an endpoint"
    );
    let message = format!(
        "this node has no file descriptor left to reach service {}",
        service.service_name()
    );
    error_response(StatusCode::SERVICE_UNAVAILABLE, message)
}

/// The endpoint did not answer in time. Not retried: the endpoint may be working on it,
/// and repeating a slow request elsewhere doubles the load exactly when things are slow.
fn timed_out(
    config: &crate::model::MeshConfig,
    service: &Arc<ServiceRuntime>,
    endpoint: &Arc<EndpointRuntime>,
    now_ms: u64,
) -> Response<DownstreamBody> {
    endpoint.record_failure(
        now_ms,
        config.ejection_time,
        config.eject_after_failures,
        false,
    );
    let message = format!(
        "endpoint {} of service {} did not answer within {:?}",
        endpoint.id,
        service.service_name(),
        config.upstream_timeout
    );
    error_response(StatusCode::GATEWAY_TIMEOUT, message)
}

/// The request one attempt sends to an endpoint.
fn upstream_request(
    method: Method,
    path_and_query: &PathAndQuery,
    headers: HeaderMap,
    body: Option<Incoming>,
) -> Request<UpstreamBody> {
    let mut request = Request::new(body.map_or(UpstreamBody::Empty, UpstreamBody::Client));
    *request.method_mut() = method;
    // Origin form (`/path?query`): the connection is already to the endpoint, and the
    // Host header carries the name the client asked for.
    *request.uri_mut() = Uri::from(path_and_query.clone());
    *request.headers_mut() = headers;
    request
}

async fn forward(
    context: &ConnectionContext,
    service: &Arc<ServiceRuntime>,
    request: Request<Incoming>,
) -> Response<DownstreamBody> {
    let shared = &context.shared;
    let config = &shared.config;
    let mut request = request;
    let client_upgrade = ClientUpgrade::of(&mut request);
    let (mut parts, body) = request.into_parts();
    let retryable = is_retryable(&parts.method, &body);
    prepare_upstream_headers(&mut parts, client_upgrade.as_ref(), context);
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));

    let n_attempts = if retryable { config.max_attempts } else { 1 };
    let mut client_body = Some(body);
    let mut tried: Vec<Arc<EndpointRuntime>> = Vec::new();
    for attempt in 1..=n_attempts {
        let now_ms = shared.clock.now_ms();
        let Some(endpoint) = service.pick(config.balancing, now_ms, &tried) else {
            break;
        };
        // The last attempt takes the headers; earlier ones copy them for a possible retry.
        let headers = if attempt < n_attempts {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        let upstream_request = upstream_request(
            parts.method.clone(),
            &path_and_query,
            headers,
            client_body.take(),
        );

        let in_flight = endpoint.begin();
        endpoint.metrics.requests_total.fetch_add(1, Relaxed);
        let started = Instant::now();
        let outcome = tokio::select! {
            biased;
            sent = upstream::send(
                &endpoint,
                upstream_request,
                config.connect_timeout,
                config.upstream_idle_timeout,
            ) => Ok(sent),
            _ = shared.coarse_timer.sleep(config.upstream_timeout) => Err(()),
        };
        match outcome {
            Ok(Ok((response, pooled))) => {
                endpoint.metrics.latency.observe(started.elapsed());
                endpoint.record_success();
                let answer = Answer {
                    response,
                    pooled,
                    in_flight,
                };
                return relay_response(context, service, &endpoint, answer, client_upgrade);
            }
            Ok(Err(upstream::SendError::Connect(error))) if limits::is_local_exhaustion(&error) => {
                return out_of_descriptors(context, service, &endpoint, &error);
            }
            Ok(Err(error)) => {
                // A refused or unanswered connect ejects at once; other failures (reset,
                // closed before the response) count towards `eject_after_failures`.
                let ejected = endpoint.record_failure(
                    now_ms,
                    config.ejection_time,
                    config.eject_after_failures,
                    matches!(error, upstream::SendError::Connect(_)),
                );
                let will_retry = attempt < n_attempts;
                tracing::warn!(
                    service_id = %service.service_id,
                    endpoint = %endpoint.id,
                    addr = %endpoint.addr,
                    client = %context.peer,
                    error = %error_chain(&error),
                    ejected,
                    will_retry,
                    "request to endpoint failed"
                );
                drop(in_flight);
                tried.push(endpoint);
            }
            Err(()) => return timed_out(config, service, &endpoint, now_ms),
        }
    }
    if tried.is_empty() {
        let message = format!(
            "no healthy endpoint for service {} ({})",
            service.service_name(),
            service.service_id
        );
        error_response(StatusCode::SERVICE_UNAVAILABLE, message)
    } else {
        let message = format!(
            "every endpoint tried for service {} failed ({} attempt(s))",
            service.service_name(),
            tried.len()
        );
        error_response(StatusCode::BAD_GATEWAY, message)
    }
}

/// What an HTTP/1.1 client that asked to switch protocols (`Connection: upgrade` and an
/// `Upgrade` header) is waiting for.
struct ClientUpgrade {
    /// The `Upgrade` header it sent, passed on to the endpoint.
    protocol: HeaderValue,
    /// Yields the client's connection once our `101` is written.
    on_upgrade: OnUpgrade,
}

impl ClientUpgrade {
    fn of(request: &mut Request<Incoming>) -> Option<ClientUpgrade> {
        if request.version() != Version::HTTP_11 {
            return None;
        }
        let protocol = request.headers().get(header::UPGRADE)?.clone();
        // Never h2c: a tunnel of HTTP/2 straight to the endpoint would carry requests
        // that no routing rule or forwarding header of ours ever saw ("h2c smuggling").
        // Such a request goes on as a plain one, without the upgrade.
        let h2c = protocol.to_str().map_or(true, |value| {
            value
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("h2c"))
        });
        if h2c {
            return None;
        }
        let asks =
            connection_tokens(request.headers()).any(|token| token.eq_ignore_ascii_case("upgrade"));
        asks.then(|| ClientUpgrade {
            protocol,
            on_upgrade: hyper::upgrade::on(request),
        })
    }
}

/// Answers the client with the endpoint's `101` and joins the two connections once both
/// have switched. The tunnel lives in a task of the mesh's own, which shutdown closes.
fn switch_protocols(
    context: &ConnectionContext,
    mut response: Response<Incoming>,
    pooled: PooledSender,
    in_flight: InFlight,
    client: ClientUpgrade,
) -> Response<DownstreamBody> {
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    let protocol = response
        .headers()
        .get(header::UPGRADE)
        .cloned()
        .unwrap_or(client.protocol);
    let (mut parts, _empty_body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, protocol);

    let shutdown = context.shared.shutdown.clone();
    let peer = context.peer;
    let slot = Arc::clone(&context.slot);
    let idle_timeout = context.shared.config.idle_timeout;
    let max_lifetime = context.shared.config.max_lifetime;
    context.shared.tracker.spawn(async move {
        let tunnel = async {
            let (client_io, upstream_io) =
                tokio::try_join!(client.on_upgrade, upstream_upgrade).map_err(io::Error::other)?;
            // The connection is the tunnel's now, never the pool's.
            drop(pooled);
            let mut client_io = TokioIo::new(client_io);
            let mut upstream_io = TokioIo::new(upstream_io);
            let opened = tokio::time::Instant::now();
            match limits::copy_bounded(
                &mut client_io,
                &mut upstream_io,
                idle_timeout,
                max_lifetime,
                opened,
            )
            .await
            {
                CopyEnd::Closed(result) => result,
                CopyEnd::Idle => {
                    tracing::debug!(%peer, ?idle_timeout, "upgraded connection idle; closed");
                    Ok(())
                }
                CopyEnd::Lifetime => {
                    tracing::debug!(%peer, ?max_lifetime, "upgraded connection reached its maximum lifetime; closed");
                    Ok(())
                }
            }
        };
        tokio::select! {
            result = tunnel => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "upgraded connection ended with an error");
                }
            }
            _ = shutdown.cancelled() => {}
        }
        drop(in_flight);
        drop(slot);
    });
    Response::from_parts(parts, DownstreamBody::Full(FullBody::new(Bytes::new())))
}

/// The headers that describe one hop (RFC 9110 §7.6.1), besides those `Connection`
/// names. `Connection` itself comes first.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Removes the hop-by-hop headers, including any that a `Connection` header names, so
/// they are not passed to the next hop.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds the few present; most requests carry none, and a
    // hash lookup per candidate name cost more than this scan (measured with callgrind).
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        if let Some(hop_idx) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[hop_idx] = true;
        }
    }
    let names_others = |value: &HeaderValue| {
        // By far the most common values name no other header.
        let value = value.as_bytes();
        !(value.eq_ignore_ascii_case(b"keep-alive") || value.eq_ignore_ascii_case(b"close"))
    };
    if present[0] && headers.get_all(header::CONNECTION).iter().any(names_others) {
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (hop_idx, name) in HOP_BY_HOP.iter().enumerate() {
        if present[hop_idx] {
            headers.remove(name);
        }
    }
}

/// The comma-separated tokens of every `Connection` line, trimmed: header names to drop,
/// or `close`, `keep-alive`, `upgrade`.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
}

/// The client's address as the forwarding headers carry it, formatted once per
/// connection rather than on every request.
struct ClientAddress {
    /// `X-Forwarded-For` element: the canonical IP (an IPv4-mapped IPv6 address as IPv4).
    forwarded_for: HeaderValue,
    /// RFC 7239 `Forwarded` element; IPv6 nodes are quoted and bracketed (§6).
    forwarded: HeaderValue,
}

impl ClientAddress {
    fn new(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        let forwarded = match ip {
            IpAddr::V6(_) => format!("for=\"[{ip}]\";proto=http"),
            IpAddr::V4(_) => format!("for={ip};proto=http"),
        };
        ClientAddress {
            // Both strings are made of ASCII digits, dots, colons, brackets and quotes,
            // which are always valid header values.
            forwarded_for: HeaderValue::from_str(&ip.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            forwarded: HeaderValue::from_str(&forwarded)
                .unwrap_or_else(|_| HeaderValue::from_static("for=unknown;proto=http")),
        }
    }
}

/// Appends the client to `X-Forwarded-For` (one comma-separated line, as nginx's
/// `$proxy_add_x_forwarded_for` does), sets `X-Forwarded-Proto: http`, and appends an
/// RFC 7239 `Forwarded` element.
fn add_forwarding_headers(headers: &mut HeaderMap, client: &ClientAddress) {
    let mut existing = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    if existing.peek().is_none() {
        headers.insert(X_FORWARDED_FOR.clone(), client.forwarded_for.clone());
    } else {
        let mut forwarded_for = Vec::new();
        for value in existing {
            forwarded_for.extend_from_slice(value.as_bytes());
            forwarded_for.extend_from_slice(b", ");
        }
        forwarded_for.extend_from_slice(client.forwarded_for.as_bytes());
        if let Ok(value) = HeaderValue::from_bytes(&forwarded_for) {
            headers.insert(X_FORWARDED_FOR.clone(), value);
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    headers.append(header::FORWARDED, client.forwarded.clone());
}

fn error_response(status: StatusCode, message: String) -> Response<DownstreamBody> {
    let body = Bytes::from(format!("hoist mesh: {message}\n"));
    let mut response = Response::new(DownstreamBody::Full(FullBody::new(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The error and its causes on one line: hyper-util's top-level message alone ("client
/// error (Connect)") does not say what happened.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_headers_append() {
        let mut headers = HeaderMap::new();
        headers.insert(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_static("10.0.0.1"),
        );
        headers.insert(header::FORWARDED, HeaderValue::from_static("for=10.0.0.1"));
        add_forwarding_headers(
            &mut headers,
            &ClientAddress::new("127.0.0.1".parse().unwrap()),
        );
        assert_eq!(headers[&X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(headers[&X_FORWARDED_PROTO], "http");
        let forwarded: Vec<_> = headers.get_all(header::FORWARDED).iter().collect();
        assert_eq!(forwarded, ["for=10.0.0.1", "for=127.0.0.1;proto=http"]);

        let mut headers = HeaderMap::new();
        add_forwarding_headers(&mut headers, &ClientAddress::new("::1".parse().unwrap()));
        assert_eq!(headers[header::FORWARDED], "for=\"[::1]\";proto=http");
        let mut headers = HeaderMap::new();
        add_forwarding_headers(
            &mut headers,
            &ClientAddress::new("::ffff:10.1.2.3".parse().unwrap()),
        );
        assert_eq!(headers[&X_FORWARDED_FOR], "10.1.2.3");
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-kept", HeaderValue::from_static("1"));
        // A second Connection line is honoured too.
        headers.append(header::CONNECTION, HeaderValue::from_static("x-other"));
        headers.insert("x-other", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));

        let mut plain = HeaderMap::new();
        plain.insert(header::HOST, HeaderValue::from_static("a"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }
}
