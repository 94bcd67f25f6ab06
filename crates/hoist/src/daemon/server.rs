//! The two listeners. The unix socket is the local operator (root only, by file mode).
//! The TLS listener is other nodes: each connection's verified client certificate, if
//! any, is attached to every request on it as a [`Caller`] for the routes to check.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hoist_pki::{peer_identity, PeerIdentity};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;
use tower::ServiceExt;

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

/// A handshake that has not finished in this time is dropped, so idle sockets cannot
/// pile up on the listener.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "unix accept");
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
    config: rustls::ServerConfig,
) -> JoinHandle<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let app = routes::router(daemon);
    tokio::spawn(async move {
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "tls accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let tls =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(err)) => {
                            tracing::debug!(%remote, error = %err, "TLS handshake refused");
                            return;
                        }
                        Err(_) => return,
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
                        app.clone().oneshot(request)
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .await;
            });
        }
    })
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
