//! Test fixtures for the mesh's socket tests: small HTTP backends, a keep-alive client,
//! a raw HTTP/1.1 client, and waiting on conditions with deadlines.
//!
//! Knows nothing of the mesh's internals: it talks to the mesh only over sockets and its
//! public API, like the daemon and real clients would.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoist_mesh::{Endpoint, EndpointState, MeshConfig, Protocol, ServiceRoute};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A tiny HTTP backend. `GET /slow/<ms>` answers after `ms` milliseconds, `/health`
/// answers 200 or 500 as `set_healthy` says, `/echo` answers the request body, `/bytes/<n>`
/// answers `n` bytes; anything else answers at once with the backend's name. Every answer
/// carries the name in `x-backend`.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    /// Requests whose head reached the backend (counted before any delay).
    pub hits: Arc<AtomicUsize>,
    /// Headers of every request, in arrival order.
    pub seen: Arc<Mutex<Vec<HashMap<String, String>>>>,
    /// TCP connections accepted.
    pub connections: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let healthy = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let state = (
            name.to_string(),
            hits.clone(),
            seen.clone(),
            healthy.clone(),
        );
        let task = tokio::spawn(async move {
            // Owned by this task: aborting the task drops the set, which aborts every
            // connection and closes its socket, like a killed process.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, SeqCst);
                let state = state.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (name, hits, seen, healthy) = state.clone();
                        async move {
                            let path = request.uri().path().to_string();
                            if path == "/health" {
                                let status = if healthy.load(SeqCst) {
                                    StatusCode::OK
                                } else {
                                    StatusCode::INTERNAL_SERVER_ERROR
                                };
                                let mut response = Response::new(String::new());
                                *response.status_mut() = status;
                                return Ok::<_, Infallible>(response);
                            }
                            hits.fetch_add(1, SeqCst);
                            let headers = request
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.to_string(), v.to_str().unwrap_or_default().to_string())
                                })
                                .collect();
                            seen.lock().unwrap().push(headers);
                            if let Some(ms) = path.strip_prefix("/slow/") {
                                let ms: u64 = ms.parse().unwrap_or(0);
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            let body = if path == "/echo" {
                                read_body(request.into_body()).await.unwrap_or_default()
                            } else if let Some(n) = path.strip_prefix("/bytes/") {
                                "x".repeat(n.parse().unwrap_or(0))
                            } else {
                                name.clone()
                            };
                            let mut response = Response::new(body);
                            response
                                .headers_mut()
                                .insert("x-backend", name.parse().unwrap());
                            Ok(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            hits,
            seen,
            connections,
            healthy,
            task,
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            id: format!("task-{}", self.name),
            addr: self.addr,
            state: EndpointState::Active,
        }
    }

    pub fn draining_endpoint(&self) -> Endpoint {
        Endpoint {
            state: EndpointState::Draining,
            ..self.endpoint()
        }
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, SeqCst);
    }

    /// Stops the backend like a crash: the listener and every connection close.
    pub fn kill(&self) {
        self.task.abort();
    }

    pub fn hits(&self) -> usize {
        self.hits.load(SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port that was free a moment ago and that this process has not handed out
/// before (the kernel may give the same ephemeral port to two consecutive binds).
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// An address that refuses connections: a socket bound but never listening, kept by the
/// returned guard so no one else can take the port meanwhile.
pub fn refused_addr() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap(), socket)
}

pub fn test_config() -> MeshConfig {
    MeshConfig {
        listen_ip: "127.0.0.1".parse().unwrap(),
        header_read_timeout: Duration::from_secs(2),
        upstream_timeout: Duration::from_secs(5),
        ..MeshConfig::default()
    }
}

pub fn http_service(id: &str, published: u16, endpoints: Vec<Endpoint>) -> ServiceRoute {
    ServiceRoute {
        service_id: id.to_string(),
        service_name: format!("{id}-name"),
        published,
        protocol: Protocol::Http,
        routes: vec![],
        health: None,
        endpoints,
    }
}

pub fn tcp_service(id: &str, published: u16, endpoints: Vec<Endpoint>) -> ServiceRoute {
    ServiceRoute {
        protocol: Protocol::Tcp,
        ..http_service(id, published, endpoints)
    }
}

pub type TestClient = Client<HttpConnector, String>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub struct Answer {
    pub status: StatusCode,
    pub backend: String,
    pub body: String,
}

/// One request through a pooled keep-alive client.
pub async fn get(client: &TestClient, addr: SocketAddr, path: &str) -> Result<Answer, String> {
    send(
        client,
        Request::get(format!("http://{addr}{path}"))
            .body(String::new())
            .unwrap(),
    )
    .await
}

pub async fn send(client: &TestClient, request: Request<String>) -> Result<Answer, String> {
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let backend = response
        .headers()
        .get("x-backend")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = read_body(response.into_body()).await?;
    Ok(Answer {
        status,
        backend,
        body,
    })
}

pub async fn read_body(mut body: Incoming) -> Result<String, String> {
    let mut bytes = Vec::new();
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            bytes.extend_from_slice(data);
        }
    }
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

/// A minimal HTTP/1.1 exchange on a raw socket: writes `request`, reads one response with
/// a Content-Length body (or to EOF). Returns (status, body).
pub async fn raw_exchange(
    stream: &mut TcpStream,
    request: &[u8],
) -> std::io::Result<(u16, String)> {
    stream.write_all(request).await?;
    read_raw_response(stream).await
}

pub async fn read_raw_response(stream: &mut TcpStream) -> std::io::Result<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let content_length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    let mut body = buf[head_end..].to_vec();
    match content_length {
        Some(len) => {
            while body.len() < len {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            stream.read_to_end(&mut body).await?;
        }
    }
    Ok((status, String::from_utf8_lossy(&body).to_string()))
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of one sample in Prometheus text, found by metric name and a label
/// substring.
pub fn metric(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(label))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}
