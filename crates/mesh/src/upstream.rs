//! Keep-alive HTTP/1.1 connections from the mesh to one endpoint.
//!
//! Owns: `UpstreamPool` (the idle connections of one endpoint, kept in its
//! `EndpointRuntime`), `send` (reuse an idle connection or open one, then send), and
//! `PooledSender` (a connection lent to one response, given back when its body ends).
//!
//! Why not hyper-util's pooled client: the pool is per endpoint already (the balancer
//! chose it), so a global pool keyed by a hashed URI authority, its checkout-or-connect
//! race and its boxing are pure overhead on every request. And hyper's `try_send_request`
//! hands back a request that a reused connection could not send (closed meanwhile), so a
//! stale keep-alive connection costs one more attempt, never a request, even a POST.
//!
//! Does not know: balancing, retries across endpoints, or what the request is.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::UpstreamBody;
use crate::table::EndpointRuntime;

/// Idle connections kept per endpoint; more than the concurrency one node sends to one
/// task in practice, and a bound on file descriptors if a burst opened many.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// The idle keep-alive connections to one endpoint, most recently used last.
#[derive(Default)]
pub(crate) struct UpstreamPool {
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

impl UpstreamPool {
    /// The most recently used idle connection (warmest, least likely closed by the
    /// endpoint's own keep-alive timeout).
    fn checkout(&self) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(entry) = idle.pop_back() {
            if !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    fn give_back(&self, sender: http1::SendRequest<UpstreamBody>, idle_timeout: Duration) {
        let now = Instant::now();
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The oldest sit at the front: drop those idle too long, and the oldest when full.
        while idle
            .front()
            .is_some_and(|entry| now.duration_since(entry.since) > idle_timeout)
        {
            idle.pop_front();
        }
        if idle.len() >= MAX_IDLE_PER_ENDPOINT {
            idle.pop_front();
        }
        idle.push_back(Idle { sender, since: now });
    }

    /// Closes every idle connection (the endpoint is draining or gone).
    pub(crate) fn clear(&self) {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }
}

/// A connection lent to one in-flight response.
pub(crate) struct PooledSender {
    sender: http1::SendRequest<UpstreamBody>,
    endpoint: Arc<EndpointRuntime>,
    idle_timeout: Duration,
}

impl PooledSender {
    /// Called when the response body ended cleanly: the connection can carry another
    /// request. A draining endpoint keeps none, so its connections close as its responses
    /// end. (Dropping a `PooledSender` instead, on an error or a client that left, closes
    /// the connection, since its state is unknown.)
    pub(crate) fn release(self) {
        if !self.endpoint.is_draining() {
            self.endpoint
                .upstream
                .give_back(self.sender, self.idle_timeout);
        }
    }
}

/// Why `send` got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be opened (refused, unreachable, timed out): the endpoint is
    /// not there, and the request was certainly not sent.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The request failed on an open connection; it may have reached the endpoint.
    #[error("request: {0}")]
    Request(#[source] hyper::Error),
}

/// Sends `request` (origin-form URI, Host header set) to `endpoint` on an idle
/// connection, or on a new one when none is idle.
pub(crate) async fn send(
    endpoint: &Arc<EndpointRuntime>,
    mut request: Request<UpstreamBody>,
    connect_timeout: Duration,
    idle_timeout: Duration,
) -> Result<(Response<Incoming>, PooledSender), SendError> {
    let lend = |sender| PooledSender {
        sender,
        endpoint: Arc::clone(endpoint),
        idle_timeout,
    };
    while let Some(mut sender) = endpoint.upstream.checkout() {
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(request).await {
            Ok(response) => return Ok((response, lend(sender))),
            Err(mut error) => match error.take_message() {
                // Not sent (the connection closed under us): try the next one.
                Some(unsent) => request = unsent,
                None => return Err(SendError::Request(error.into_error())),
            },
        }
    }
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(endpoint.addr))
        .await
        .map_err(|_elapsed| SendError::Connect(std::io::ErrorKind::TimedOut.into()))?
        .map_err(SendError::Connect)?;
    // Small requests must not wait for Nagle's delayed ACK.
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(SendError::Request)?;
    // The connection task ends when its last `SendRequest` is dropped (pool cleared,
    // endpoint gone) or the endpoint closes the connection.
    tokio::spawn(async move {
        // With upgrades: after a `101` the connection hands its socket to the tunnel.
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(SendError::Request)?;
    Ok((response, lend(sender)))
}
