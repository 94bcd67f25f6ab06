//! The two listeners. The unix socket is the local operator (root only, by file mode).
//! The TLS listener is other nodes: each connection's verified client certificate, if
//! any, is attached to every request on it as a [`Caller`] for the routes to check,
//! with the connection's source address (`ConnectInfo`, for the join rate limit).
//! Bounded in time: a TLS handshake, each request head, each request body (counted from
//! the end of its head, `limits::body_deadline`) and the pause between two requests on
//! one connection each get `--control-header-timeout`. Bounded in number: connections
//! over the listener's caps (`limits::ControlAdmission`) are closed at once. A failing
//! accept backs off instead of spinning.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hoist_pki::{peer_identity, PeerIdentity};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;
use tower::ServiceExt;

use super::limits::{BodyTimeout, ControlAdmission};
use super::routes;
use super::Daemon;

/// Who sent a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The local unix socket.
    Local,
    /// A TLS peer, with the identity its certificate proved (none if it sent none).
    Peer(Option<PeerIdentity>),
}

pub async fn serve_unix(daemon: Arc<Daemon>, socket: &Path) -> std::io::Result<JoinHandle<()>> {
    if socket.exists() {
        // A socket file left by a killed daemon: connecting tells whether one still runs.
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another daemon is serving {}", socket.display()),
            ));
        }
        std::fs::remove_file(socket)?;
    }
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let listener = UnixListener::bind(socket)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    let app = routes::router(daemon);
    Ok(tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => {
                    backoff.reset();
                    accepted
                }
                Err(err) => {
                    tracing::warn!(error = %err, "unix accept");
                    backoff.wait().await;
                    continue;
                }
            };
            let app = app.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |mut request: hyper::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(Caller::Local);
                        app.clone().oneshot(request)
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}

pub async fn serve_tls(
    daemon: Arc<Daemon>,
    listener: TcpListener,
    mut config: rustls::ServerConfig,
) -> JoinHandle<()> {
    // HTTP/1.1 only: every node speaks it, and hyper's HTTP/1 server bounds the time to
    // a request head (slowloris) and between requests (idle keep-alive) where the
    // `auto` server would first wait for an HTTP/2 preface with no deadline.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let header_timeout = daemon.limits().control_header_timeout;
    let admission = ControlAdmission::new(
        daemon.limits().control_max_connections(),
        daemon.limits().control_max_connections_per_source(),
    );
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let app = routes::router(daemon);
    tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(accepted) => {
                    backoff.reset();
                    accepted
                }
                Err(err) => {
                    // Usually EMFILE/ENFILE: the connections already open keep working.
                    tracing::warn!(error = %err, "tls accept");
                    backoff.wait().await;
                    continue;
                }
            };
            let slot = match admission.admit(remote.ip()) {
                Ok(slot) => slot,
                Err(cap) => {
                    tracing::debug!(%remote, cap, "control connection over the cap; closed");
                    drop(stream);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            set_unacked_timeout(&stream);
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                // Held until the connection ends, TLS refusals included.
                let _slot = slot;
                let tls = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!(%remote, error = %err, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "TLS handshake not finished in time; closed");
                        return;
                    }
                };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(|cert| peer_identity(cert.as_ref()).ok());
                let caller = Caller::Peer(peer);
                let service = hyper::service::service_fn(
                    move |mut request: hyper::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(caller.clone());
                        request.extensions_mut().insert(ConnectInfo(remote));
                        request.extensions_mut().insert(BodyTimeout(header_timeout));
                        app.clone().oneshot(request)
                    },
                );
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
                if let Err(err) = served {
                    tracing::debug!(%remote, error = %err, "control connection closed");
                }
            });
        }
    })
}

/// Data a peer leaves unacknowledged for this long ends the connection. A half-open
/// connection (the peer's machine gone, a link cut without a reset) would otherwise
/// keep its assignment stream, the one a node may hold, for the kernel's fifteen
/// minutes of retransmissions; the stream's keep-alive line each second turns that
/// into this many seconds.
const UNACKED_TIMEOUT: Duration = Duration::from_secs(20);

fn set_unacked_timeout(stream: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let millis = UNACKED_TIMEOUT.as_millis() as libc::c_uint;
    // SAFETY: a valid socket descriptor we own, and an option value of the size given.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            &millis as *const libc::c_uint as *const libc::c_void,
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "TCP_USER_TIMEOUT");
    }
}

/// The pause after a failed accept: 10 ms doubling to 1 s, back to 10 ms after a
/// success. A failing accept (EMFILE) returns at once, so without a pause the loop
/// would spin a core while the descriptors stay taken.
#[derive(Default)]
struct AcceptBackoff {
    next: Option<Duration>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    async fn wait(&mut self) {
        let pause = self.next.unwrap_or(Self::FIRST);
        self.next = Some((pause * 2).min(Self::MAX));
        tokio::time::sleep(pause).await;
    }

    fn reset(&mut self) {
        self.next = None;
    }
}

/// A plain HTTP listener with `/metrics` only, for Prometheus.
pub async fn serve_metrics(
    daemon: Arc<Daemon>,
    addr: std::net::SocketAddr,
) -> std::io::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let daemon = daemon.clone();
            async move {
                let text = daemon
                    .member()
                    .map(|member| member.mesh.render_metrics())
                    .unwrap_or_default();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    text,
                )
            }
        }),
    );
    Ok(tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::warn!(error = %err, "metrics listener stopped");
        }
    }))
}
