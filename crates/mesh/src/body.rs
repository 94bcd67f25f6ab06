//! The HTTP body types the proxy hands to hyper, in both directions.
//!
//! Owns: `FullBody` (a small in-memory body: error pages, health probes), `UpstreamBody`
//! (what is sent to an endpoint: the client's streamed body, or nothing on a retry) and
//! `DownstreamBody` (what is sent to the client: the endpoint's streamed body, which holds
//! the endpoint's in-flight count and its connection until it ends, or a `FullBody`).
//!
//! Does not know: routing, balancing or retries.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::table::InFlight;
use crate::upstream::PooledSender;

/// A body held whole in memory, sent as one frame.
pub(crate) struct FullBody {
    data: Option<Bytes>,
}

impl FullBody {
    pub(crate) fn new(data: Bytes) -> Self {
        FullBody {
            data: (!data.is_empty()).then_some(data),
        }
    }
}

impl Body for FullBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Poll::Ready(self.get_mut().data.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |data| data.len() as u64))
    }
}

/// The body of a request sent to an endpoint.
pub(crate) enum UpstreamBody {
    /// The client's body, streamed through as it arrives.
    Client(Incoming),
    /// No body: a retry, which only bodiless requests get.
    Empty,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Client(incoming) => Pin::new(incoming).poll_frame(cx),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Client(incoming) => incoming.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Client(incoming) => incoming.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// The body of a response sent to the client.
pub(crate) enum DownstreamBody {
    /// The endpoint's body. `in_flight` is dropped when the body ends or fails (or when
    /// hyper drops the body because the client left), so least-connections counts a
    /// request until its last byte, not just until its head.
    Upstream {
        body: Incoming,
        in_flight: Option<InFlight>,
        /// The connection the body arrives on; back to its pool when the body ends
        /// cleanly, closed (dropped) otherwise.
        pooled: Option<PooledSender>,
    },
    Full(FullBody),
}

impl Body for DownstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            DownstreamBody::Upstream {
                body,
                in_flight,
                pooled,
            } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                // hyper stops polling as soon as `is_end_stream` says the body is done (a
                // Content-Length body never yields the final `None`), so check after every
                // frame too.
                let ended = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                    Poll::Ready(Some(Err(_))) => {
                        in_flight.take();
                        pooled.take();
                        false
                    }
                    Poll::Pending => false,
                };
                if ended {
                    in_flight.take();
                    if let Some(pooled) = pooled.take() {
                        pooled.release();
                    }
                }
                polled
            }
            DownstreamBody::Full(full) => Pin::new(full).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DownstreamBody::Upstream { body, .. } => body.is_end_stream(),
            DownstreamBody::Full(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DownstreamBody::Upstream { body, .. } => body.size_hint(),
            DownstreamBody::Full(full) => full.size_hint(),
        }
    }
}
