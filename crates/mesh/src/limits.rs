//! Bounds on the connections of published ports: how many may be open (mesh-wide, per
//! published port, per client address), how long an L4 connection or an upgrade tunnel
//! may sit idle or live at all, and which connect errors are the node's own fault.
//!
//! Why mesh-wide: published ports share the daemon's file descriptors with its control
//! plane (the TLS listener, Raft, the store). `MeshConfig::max_open_connections` is what
//! the daemon grants the mesh out of its open-files limit; a connection over any cap is
//! accepted and closed at once (rather than left in the kernel's backlog, where its
//! client would wait without an answer), so the descriptors held in reserve keep
//! `hoist node ls`, heartbeats and Raft working under a flood.
//!
//! Does not know: what the connections carry.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
// tokio's clock (not std's), so that tests with paused time see idle time pass.
use tokio::time::Instant;

use crate::mesh::ListenerShared;
use crate::model::MeshConfig;

/// Open connections, mesh-wide and per client address.
pub(crate) struct Admission {
    max_total: usize,
    max_per_source: usize,
    open_total: AtomicUsize,
    per_source: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The mesh holds all the connections the node's descriptors allow.
    Node,
    /// The published port holds `max_connections_per_port`.
    Port,
    /// The client address holds its share.
    Source,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Node => "node",
            Refusal::Port => "port",
            Refusal::Source => "source",
        }
    }
}

impl Admission {
    pub(crate) fn new(config: &MeshConfig) -> Self {
        let max_total = config.max_open_connections.max(1);
        Admission {
            max_total,
            // One client address never takes more than half of what the mesh may open,
            // so another client always finds room.
            max_per_source: config.max_connections_per_source.min(max_total / 2).max(1),
            open_total: AtomicUsize::new(0),
            per_source: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a new connection from `source` on `listener`, or says which cap it is over.
    pub(crate) fn admit(
        self: &Arc<Self>,
        listener: &Arc<ListenerShared>,
        max_per_port: usize,
        source: IpAddr,
    ) -> Result<ConnectionSlot, Refusal> {
        let mut per_source = self
            .per_source
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.open_total.load(Relaxed) >= self.max_total {
            return Err(Refusal::Node);
        }
        if listener.open.load(Relaxed) >= max_per_port {
            return Err(Refusal::Port);
        }
        let held = per_source.entry(source).or_insert(0);
        if *held >= self.max_per_source {
            return Err(Refusal::Source);
        }
        *held += 1;
        self.open_total.fetch_add(1, Relaxed);
        listener.open.fetch_add(1, Relaxed);
        Ok(ConnectionSlot {
            admission: Arc::clone(self),
            listener: Arc::clone(listener),
            source,
        })
    }

    pub(crate) fn open_total(&self) -> usize {
        self.open_total.load(Relaxed)
    }
}

/// One admitted connection; its counts go when it is dropped.
pub(crate) struct ConnectionSlot {
    admission: Arc<Admission>,
    listener: Arc<ListenerShared>,
    source: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut per_source = self
            .admission
            .per_source
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(held) = per_source.get_mut(&self.source) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                per_source.remove(&self.source);
            }
        }
        self.admission.open_total.fetch_sub(1, Relaxed);
        self.listener.open.fetch_sub(1, Relaxed);
    }
}

/// Whether a connect error means this node is out of descriptors (or buffers) rather
/// than that the endpoint is gone: such an error must never eject the endpoint.
pub(crate) fn is_local_exhaustion(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc_errno::EMFILE | libc_errno::ENFILE | libc_errno::ENOBUFS | libc_errno::ENOMEM)
    )
}

/// The errno values of `is_local_exhaustion` (Linux), without a libc dependency.
mod libc_errno {
    pub const ENOMEM: i32 = 12;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const ENOBUFS: i32 = 105;
}

/// How a bounded copy ended.
#[derive(Debug)]
pub(crate) enum CopyEnd {
    /// Either side closed (or failed, with the error).
    Closed(io::Result<()>),
    /// No byte either way for the idle timeout.
    Idle,
    /// The maximum lifetime passed.
    Lifetime,
}

/// Copies both ways between `a` and `b` until either closes, neither sends a byte for
/// `idle`, or `lifetime` has passed since `opened`.
pub(crate) async fn copy_bounded<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
    lifetime: Duration,
    opened: Instant,
) -> CopyEnd
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let activity = Arc::new(Activity::new());
    let mut a = Touching {
        inner: a,
        activity: Arc::clone(&activity),
    };
    let mut b = Touching {
        inner: b,
        activity: Arc::clone(&activity),
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::select! {
        copied = copy => CopyEnd::Closed(copied.map(drop)),
        () = activity.idle_for(idle) => CopyEnd::Idle,
        () = tokio::time::sleep_until(opened + lifetime) => CopyEnd::Lifetime,
    }
}

/// When a connection last moved a byte, in ms since it was made.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Relaxed);
    }

    /// Resolves once no byte has moved for `idle`. Sleeps until the earliest moment that
    /// could be true, so a busy connection costs one timer per `idle`, not per read.
    async fn idle_for(&self, idle: Duration) {
        let idle_ms = idle.as_millis() as u64;
        loop {
            let now_ms = self.epoch.elapsed().as_millis() as u64;
            let quiet_ms = now_ms.saturating_sub(self.last_ms.load(Relaxed));
            if quiet_ms >= idle_ms {
                return;
            }
            tokio::time::sleep(Duration::from_millis(idle_ms - quiet_ms)).await;
        }
    }
}

/// An I/O object that records activity on every byte read or written.
struct Touching<'a, T: ?Sized> {
    inner: &'a mut T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin + ?Sized> AsyncRead for Touching<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin + ?Sized> AsyncWrite for Touching<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut *self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_copy_ends_after_the_idle_timeout_and_a_busy_one_at_its_lifetime() {
        let (mut a, mut a_peer) = tokio::io::duplex(64);
        let (mut b, _b_peer) = tokio::io::duplex(64);
        let opened = Instant::now();
        let ended = copy_bounded(
            &mut a,
            &mut b,
            Duration::from_secs(5),
            Duration::from_secs(3600),
            opened,
        )
        .await;
        assert!(matches!(ended, CopyEnd::Idle), "{ended:?}");

        // Bytes every second keep it open until its lifetime.
        let opened = Instant::now();
        let chatter = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            loop {
                if a_peer.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let (mut b2, mut b2_peer) = tokio::io::duplex(1 << 16);
        let drain = tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut b2_peer, &mut sink).await;
        });
        let ended = copy_bounded(
            &mut a,
            &mut b2,
            Duration::from_secs(5),
            Duration::from_secs(30),
            opened,
        )
        .await;
        assert!(matches!(ended, CopyEnd::Lifetime), "{ended:?}");
        chatter.abort();
        drain.abort();
    }

    #[test]
    fn descriptor_exhaustion_is_told_apart_from_a_dead_endpoint() {
        assert!(is_local_exhaustion(&io::Error::from_raw_os_error(24)));
        assert!(is_local_exhaustion(&io::Error::from_raw_os_error(23)));
        assert!(!is_local_exhaustion(&io::Error::from(
            io::ErrorKind::ConnectionRefused
        )));
        assert!(!is_local_exhaustion(&io::Error::from_raw_os_error(111)));
    }
}
