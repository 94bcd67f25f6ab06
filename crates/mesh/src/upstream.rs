//! Keep-alive HTTP/1.1 connections from the mesh to one endpoint, driven inline.
//!
//! Owns: `UpstreamPool` (the idle connections of one endpoint, kept in its
//! `EndpointRuntime`), `send` (reuse an idle connection or open one, then send), and
//! `PooledConnection` (a connection lent to one response, driven by whoever polls that
//! response's body and given back when the body ends).
//!
//! Why not hyper-util's pooled client: the pool is per endpoint already (the balancer
//! chose it), so a global pool keyed by a hashed URI authority, its checkout-or-connect
//! race and its boxing are overhead on every request. And its connections run as tasks
//! of their own, so every request crosses tasks twice (request in, response out) through
//! channels and wake-ups. Here hyper's connection future is polled by the client
//! connection's own task, beside the request and then beside the response body: one
//! task per proxied request, woken by either socket. An idle pooled connection is polled
//! by nobody; checkout polls it once, which is where a close by the endpoint is noticed.
//!
//! hyper's `try_send_request` hands back a request that a reused connection could not
//! send (closed meanwhile), so a stale keep-alive connection costs one more attempt,
//! never a request, even a POST.
//!
//! Does not know: balancing, retries across endpoints, or what the request is.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
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

type ConnectionFuture = http1::Connection<TokioIo<TcpStream>, UpstreamBody>;

/// One HTTP/1.1 connection to an endpoint: the handle requests are sent through, and the
/// future that does the connection's I/O when polled.
pub(crate) struct Connection {
    sender: http1::SendRequest<UpstreamBody>,
    /// Boxed: it is large and moves between the pool and response bodies.
    io: Pin<Box<ConnectionFuture>>,
    /// The I/O future finished: the connection is closed (by either side) or failed.
    closed: bool,
}

impl Connection {
    /// Does whatever I/O is ready; never waits. Returns `false` once the connection is
    /// closed. Polling registers `cx`'s waker, so the caller is woken by this socket too.
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if self.closed {
            return false;
        }
        if let Poll::Ready(result) = self.io.as_mut().poll(cx) {
            self.closed = true;
            if let Err(error) = result {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        }
        !self.closed
    }

    /// Drives the connection until it can take a request; `false` if it closed instead.
    async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            if !self.drive(cx) {
                return Poll::Ready(false);
            }
            self.sender.poll_ready(cx).map(|ready| ready.is_ok())
        })
        .await
    }

    /// Sends `request` and drives the connection until the response head arrives.
    async fn exchange(
        &mut self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<UpstreamBody>>> {
        let Connection {
            sender, io, closed, ..
        } = self;
        let mut response = pin!(sender.try_send_request(request));
        poll_fn(|cx| {
            // Queue the request, then let the connection write it (and read whatever
            // already came back), then look for the response again.
            if let Poll::Ready(result) = response.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            if !*closed {
                if let Poll::Ready(result) = io.as_mut().poll(cx) {
                    *closed = true;
                    if let Err(error) = result {
                        tracing::debug!(%error, "upstream connection ended with an error");
                    }
                }
            }
            // A closed connection has failed the response by now (hyper answers every
            // queued request with an error when its connection ends).
            response.as_mut().poll(cx)
        })
        .await
    }
}

/// The idle keep-alive connections to one endpoint, most recently used last.
#[derive(Default)]
pub(crate) struct UpstreamPool {
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    connection: Connection,
    since: Instant,
}

impl UpstreamPool {
    /// The most recently used idle connection (warmest, least likely closed by the
    /// endpoint's own keep-alive timeout).
    fn checkout(&self) -> Option<Connection> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.pop_back().map(|entry| entry.connection)
    }

    fn give_back(&self, connection: Connection, idle_timeout: Duration) {
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
        idle.push_back(Idle {
            connection,
            since: now,
        });
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
pub(crate) struct PooledConnection {
    connection: Connection,
    endpoint: Arc<EndpointRuntime>,
    idle_timeout: Duration,
}

impl PooledConnection {
    /// Does the connection's ready I/O; the response body calls this before reading, so
    /// the body's data arrives without a task of its own.
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) {
        self.connection.drive(cx);
    }

    /// Called when the response body ended cleanly: the connection can carry another
    /// request. A draining endpoint keeps none, so its connections close as its responses
    /// end. (Dropping a `PooledConnection` instead, on an error or a client that left,
    /// closes the connection, since its state is unknown.)
    pub(crate) fn release(self) {
        if !self.connection.closed && !self.endpoint.is_draining() {
            self.endpoint
                .upstream
                .give_back(self.connection, self.idle_timeout);
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
) -> Result<(Response<Incoming>, PooledConnection), SendError> {
    let lend = |connection| PooledConnection {
        connection,
        endpoint: Arc::clone(endpoint),
        idle_timeout,
    };
    while let Some(mut connection) = endpoint.upstream.checkout() {
        if !connection.ready().await {
            continue;
        }
        match connection.exchange(request).await {
            Ok(response) => return Ok((response, lend(connection))),
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
    let (sender, io) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(SendError::Request)?;
    let mut connection = Connection {
        sender,
        io: Box::pin(io),
        closed: false,
    };
    match connection.exchange(request).await {
        Ok(response) => Ok((response, lend(connection))),
        Err(error) => Err(SendError::Request(error.into_error())),
    }
}
