//! `hoist hello`: the demo workload, in the spirit of `nginxdemos/hello`.
//!
//! Owns a tiny web server that tells which node, task and service answered, the
//! machine's hostname, the client's address and a request counter: `/` as an HTML
//! page, `/api` as JSON, `/healthz` for health checks, and with `--dir DIR` the
//! files of DIR under `/files/` (listed on the page). It listens on
//! `0.0.0.0:$PORT` when the process driver gave it a `PORT`, else `0.0.0.0:8080`.
//!
//! It learns its identity only from the `HOIST_NODE`, `HOIST_TASK` and
//! `HOIST_SERVICE` environment variables a driver sets, exactly as any user
//! workload would: it must not know the cluster state, the worker or the driver.
//!
//! Crate dependencies (all from the root `[workspace.dependencies]`):
//! `anyhow`, `axum`, `clap`, `serde`, `tokio`, `tracing`;
//! dev-dependencies for its tests: `serde_json`, `tempfile`.

use std::fmt::Write as _;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::serve::IncomingStream;
use axum::{Extension, Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;

/// Port used when neither `--listen` nor `PORT` says otherwise, as nginx's demo.
const DEFAULT_PORT: u16 = 8080;

/// Files above this size are refused: the demo reads a file whole into memory
/// before sending it, and must not be an easy way to exhaust a node's memory.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

pub use hoist_cli::HelloArgs;

/// Who is answering: fixed for the life of the process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub node: Option<String>,
    pub task: Option<String>,
    pub service: Option<String>,
    pub hostname: String,
}

impl Identity {
    /// From the variables a Hoist driver sets, and the kernel's hostname.
    pub fn from_env() -> Identity {
        let var = |name| {
            std::env::var(name)
                .ok()
                .filter(|value: &String| !value.is_empty())
        };
        Identity {
            node: var("HOIST_NODE"),
            task: var("HOIST_TASK"),
            service: var("HOIST_SERVICE"),
            hostname: hostname(),
        }
    }
}

/// The machine's hostname as `gethostname(2)` sees it (the UTS namespace's),
/// with `/etc/hostname` as a fallback where `/proc` is not mounted.
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim().to_owned())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// State shared by all requests.
#[derive(Debug)]
pub struct HelloState {
    identity: Identity,
    /// Page and `/api` requests served so far; health checks and files do not
    /// count, so the number shows how the balancer spreads real visits.
    requests: AtomicU64,
    /// Canonical path of `--dir`, so that a file's canonical path can be checked
    /// to lie inside it.
    dir: Option<PathBuf>,
}

impl HelloState {
    /// Fails when `dir` is given but is not a readable directory.
    pub fn new(identity: Identity, dir: Option<&Path>) -> anyhow::Result<Arc<HelloState>> {
        let dir = match dir {
            None => None,
            Some(dir) => {
                let canonical = std::fs::canonicalize(dir)
                    .with_context(|| format!("cannot serve files of {}", dir.display()))?;
                anyhow::ensure!(canonical.is_dir(), "{} is not a directory", dir.display());
                Some(canonical)
            }
        };
        Ok(Arc::new(HelloState {
            identity,
            requests: AtomicU64::new(0),
            dir,
        }))
    }
}

/// What `/api` returns, and what the page shows.
#[derive(Clone, Debug, Serialize)]
pub struct HelloInfo {
    pub node: Option<String>,
    pub task: Option<String>,
    pub service: Option<String>,
    pub hostname: String,
    /// The peer of the connection (with the L7 mesh in front: the mesh).
    pub client: String,
    /// Requests counted so far, this one included.
    pub requests: u64,
    /// The local address the connection came in on.
    pub server_addr: String,
    /// Names of the files served under `/files/`, when `--dir` is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    /// The `X-Forwarded-For` header, when a proxy (the L7 mesh) is in front.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded_for: Option<String>,
}

/// Both ends of one TCP connection, recorded by axum when it accepts it.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub client: SocketAddr,
    pub server: Option<SocketAddr>,
}

impl Connected<IncomingStream<'_, TcpListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> ConnInfo {
        ConnInfo {
            client: *stream.remote_addr(),
            server: stream.io().local_addr().ok(),
        }
    }
}

/// The connection's addresses, when the router is served with
/// `into_make_service_with_connect_info::<ConnInfo>()` (as [`serve`] does).
type MaybeConn = Option<Extension<ConnectInfo<ConnInfo>>>;

/// The routes, for [`serve`] and for in-process tests.
pub fn router(state: Arc<HelloState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api", get(api))
        .route("/healthz", get(|| async { "ok" }))
        .route("/sleep/{ms}", get(sleep_then_api))
        .route("/files", get(files_index))
        .route("/files/", get(files_index))
        .route("/files/{*path}", get(file))
        .with_state(state)
}

/// Runs `hoist hello` until SIGTERM or Ctrl-C.
pub async fn run(args: HelloArgs) -> anyhow::Result<()> {
    let port_var = std::env::var("PORT").ok();
    let addr = listen_addr(args.listen, port_var.as_deref())?;
    let state = HelloState::new(Identity::from_env(), args.dir.as_deref())?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    serve(listener, state, shutdown_signal()).await
}

/// Serves on `listener` until `shutdown` resolves, then lets requests in flight
/// finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<HelloState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let local_addr = listener.local_addr().context("listener has no address")?;
    tracing::info!(
        addr = %local_addr,
        node = state.identity.node.as_deref().unwrap_or("-"),
        task = state.identity.task.as_deref().unwrap_or("-"),
        "hello listening"
    );
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<ConnInfo>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("hello server failed")?;
    tracing::info!(addr = %local_addr, "hello stopped");
    Ok(())
}

/// `--listen` wins; else `0.0.0.0:$PORT`; else `0.0.0.0:8080`.
fn listen_addr(listen: Option<SocketAddr>, port_var: Option<&str>) -> anyhow::Result<SocketAddr> {
    if let Some(listen) = listen {
        return Ok(listen);
    }
    let port = match port_var {
        None => DEFAULT_PORT,
        Some(text) => text
            .trim()
            .parse::<u16>()
            .with_context(|| format!("PORT={text:?} is not a port number"))?,
    };
    Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
}

/// Resolves on SIGTERM (how drivers stop tasks) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: stopping"),
        _ = terminate => tracing::info!("SIGTERM: stopping"),
    }
}

async fn info(state: &HelloState, conn: MaybeConn, headers: &axum::http::HeaderMap) -> HelloInfo {
    let requests = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let conn = conn.map(|Extension(ConnectInfo(conn))| conn);
    let files = match &state.dir {
        None => None,
        Some(dir) => Some(list_files(dir).await),
    };
    let client = conn.map_or_else(|| "unknown".to_owned(), |conn| conn.client.to_string());
    tracing::debug!(task = ?state.identity.task, %client, requests, "hello request");
    HelloInfo {
        node: state.identity.node.clone(),
        task: state.identity.task.clone(),
        service: state.identity.service.clone(),
        hostname: state.identity.hostname.clone(),
        client,
        requests,
        server_addr: conn
            .and_then(|conn| conn.server)
            .map_or_else(|| "unknown".to_owned(), |addr| addr.to_string()),
        files,
        forwarded_for: headers
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
    }
}

async fn api(
    State(state): State<Arc<HelloState>>,
    conn: MaybeConn,
    headers: axum::http::HeaderMap,
) -> Json<HelloInfo> {
    Json(info(&state, conn, &headers).await)
}

/// A slow answer (at most a minute), to show that long requests survive scaling and
/// draining.
async fn sleep_then_api(
    State(state): State<Arc<HelloState>>,
    UrlPath(ms): UrlPath<u64>,
    conn: MaybeConn,
    headers: axum::http::HeaderMap,
) -> Json<HelloInfo> {
    tokio::time::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
    Json(info(&state, conn, &headers).await)
}

async fn page(
    State(state): State<Arc<HelloState>>,
    conn: MaybeConn,
    headers: axum::http::HeaderMap,
) -> Html<String> {
    Html(render_page(&info(&state, conn, &headers).await))
}

async fn files_index(State(state): State<Arc<HelloState>>) -> Response {
    match &state.dir {
        None => (StatusCode::NOT_FOUND, "no --dir given\n").into_response(),
        Some(dir) => Html(render_file_list(&list_files(dir).await)).into_response(),
    }
}

async fn file(State(state): State<Arc<HelloState>>, UrlPath(path): UrlPath<String>) -> Response {
    let Some(dir) = &state.dir else {
        return (StatusCode::NOT_FOUND, "no --dir given\n").into_response();
    };
    // Only plain names below DIR: no `..`, no absolute paths, no `.`.
    let relative = Path::new(&path);
    let plain = relative
        .components()
        .all(|part| matches!(part, Component::Normal(_)));
    if path.is_empty() || !plain {
        tracing::debug!(path, "rejected file path");
        return (StatusCode::BAD_REQUEST, "bad file path\n").into_response();
    }
    // Canonicalizing resolves symlinks, so a link pointing out of DIR is caught
    // by the prefix check too.
    let full = match tokio::fs::canonicalize(dir.join(relative)).await {
        Ok(full) if full.starts_with(dir) => full,
        _ => return (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    };
    match tokio::fs::metadata(&full).await {
        Ok(meta) if meta.is_file() && meta.len() <= MAX_FILE_BYTES => {}
        Ok(meta) if meta.is_file() => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                "file too large for the demo\n",
            )
                .into_response()
        }
        _ => return (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
    match tokio::fs::read(&full).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type(&full))], bytes).into_response(),
        Err(err) => {
            tracing::warn!(path = %full.display(), error = %err, "cannot read file");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot read file\n").into_response()
        }
    }
}

/// Names of the regular files directly in `dir`, sorted. Read on each request
/// so files added while the task runs show up.
async fn list_files(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(err) => {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot list files");
            return names;
        }
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let is_file = entry.file_type().await.is_ok_and(|kind| kind.is_file());
        if let (true, Some(name)) = (is_file, entry.file_name().to_str()) {
            names.push(name.to_owned());
        }
    }
    names.sort();
    names
}

fn content_type(path: &Path) -> &'static str {
    let extension = path.extension().and_then(|ext| ext.to_str()).unwrap_or("");
    match extension.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" | "md" | "log" => "text/plain; charset=utf-8",
        "css" => "text/css",
        "js" => "text/javascript",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

fn render_page(info: &HelloInfo) -> String {
    let or_dash = |value: &Option<String>| escape_html(value.as_deref().unwrap_or("—"));
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Hello from {hostname}</title>
<style>
body {{ font-family: sans-serif; margin: 3em auto; max-width: 44em; color: #222; }}
h1 {{ font-weight: normal; }}
table {{ border-collapse: collapse; }}
td {{ padding: .3em 1.2em .3em 0; }}
td:first-child {{ color: #777; }}
td:last-child {{ font-family: monospace; font-size: 1.2em; }}
</style>
</head>
<body>
<h1>Hello from Hoist</h1>
<table>
<tr><td>node</td><td>{node}</td></tr>
<tr><td>task</td><td>{task}</td></tr>
<tr><td>service</td><td>{service}</td></tr>
<tr><td>hostname</td><td>{hostname}</td></tr>
<tr><td>server address</td><td>{server_addr}</td></tr>
<tr><td>client address</td><td>{client}</td></tr>
<tr><td>requests</td><td>{requests}</td></tr>
</table>
"#,
        node = or_dash(&info.node),
        task = or_dash(&info.task),
        service = or_dash(&info.service),
        hostname = escape_html(&info.hostname),
        server_addr = escape_html(&info.server_addr),
        client = escape_html(&info.client),
        requests = info.requests,
    );
    if let Some(files) = &info.files {
        html.push_str(&file_list_html(files));
    }
    html.push_str(
        "<p><a href=\"/api\">/api</a> · <a href=\"/healthz\">/healthz</a></p>\n</body>\n</html>\n",
    );
    html
}

fn render_file_list(files: &[String]) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>files</title></head>\n<body>\n{}</body>\n</html>\n",
        file_list_html(files)
    )
}

fn file_list_html(files: &[String]) -> String {
    let mut html = String::from("<h2>Files</h2>\n<ul>\n");
    if files.is_empty() {
        html.push_str("<li><em>none</em></li>\n");
    }
    for name in files {
        let _ = writeln!(
            html,
            "<li><a href=\"/files/{}\">{}</a></li>",
            escape_html(&percent_encode(name)),
            escape_html(name)
        );
    }
    html.push_str("</ul>\n");
    html
}

/// Escapes text for HTML element content and quoted attribute values: names and
/// file names come from outside and must not inject markup.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(ch),
        }
    }
    escaped
}

/// RFC 3986's unreserved characters: everything else is encoded in a path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a file name for one URL path segment (RFC 3986 unreserved
/// characters stay as they are).
fn percent_encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    use super::*;

    /// Long enough for a loaded CI machine; only reached when something hangs.
    const DEADLINE: Duration = Duration::from_secs(20);

    /// A server on 127.0.0.1:0; dropping it (or `stop`) shuts it down.
    struct TestServer {
        addr: SocketAddr,
        stop_tx: Option<oneshot::Sender<()>>,
        task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    }

    impl TestServer {
        async fn start(dir: Option<&Path>) -> TestServer {
            let identity = Identity {
                node: Some("n1".to_owned()),
                task: Some("task-7".to_owned()),
                service: Some("web<&>".to_owned()),
                hostname: "box".to_owned(),
            };
            let state = HelloState::new(identity, dir).expect("state");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, state, async {
                let _ = stop_rx.await;
            }));
            TestServer {
                addr,
                stop_tx: Some(stop_tx),
                task: Some(task),
            }
        }

        async fn stop(mut self) {
            if let Some(stop_tx) = self.stop_tx.take() {
                let _ = stop_tx.send(());
            }
            let task = self.task.take().expect("running");
            let result = tokio::time::timeout(DEADLINE, task)
                .await
                .expect("server stops in time")
                .expect("server task");
            result.expect("server result");
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            if let Some(task) = &self.task {
                task.abort();
            }
        }
    }

    /// A raw HTTP/1.1 GET: (status, lower-cased head, body).
    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        tokio::time::timeout(DEADLINE, async {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.expect("read");
            let raw = String::from_utf8(raw).expect("utf-8 response");
            let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|code| code.parse().ok())
                .expect("status code");
            let head = head.to_ascii_lowercase();
            let body = if head.contains("transfer-encoding: chunked") {
                dechunk(body)
            } else {
                body.to_owned()
            };
            (status, head, body)
        })
        .await
        .expect("response in time")
    }

    fn dechunk(mut body: &str) -> String {
        let mut out = String::new();
        while let Some((size, rest)) = body.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if size == 0 {
                break;
            }
            out.push_str(&rest[..size]);
            body = &rest[size + 2..];
        }
        out
    }

    #[tokio::test]
    async fn api_page_and_health() {
        let server = TestServer::start(None).await;

        let (status, _, body) = get(server.addr, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok"));

        let (status, head, body) = get(server.addr, "/api").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: application/json"), "{head}");
        let info: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(info["node"], "n1");
        assert_eq!(info["task"], "task-7");
        assert_eq!(info["service"], "web<&>");
        assert_eq!(info["hostname"], "box");
        assert_eq!(info["requests"], 1);
        assert_eq!(info["server_addr"], server.addr.to_string());
        let client = info["client"].as_str().expect("client");
        assert!(client.starts_with("127.0.0.1:"), "{client}");
        assert!(info.get("files").is_none());

        let (status, head, page) = get(server.addr, "/").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: text/html"), "{head}");
        assert!(page.contains("<td>n1</td>"), "{page}");
        assert!(page.contains("<td>task-7</td>"), "{page}");
        assert!(
            page.contains("<td>web&lt;&amp;&gt;</td>"),
            "names are escaped: {page}"
        );
        assert!(page.contains("<td>box</td>"), "{page}");
        assert!(page.contains("<td>2</td>"), "the counter moved: {page}");

        let (status, _, _) = get(server.addr, "/files/anything").await;
        assert_eq!(status, 404);
        server.stop().await;
    }

    #[tokio::test]
    async fn serves_files_and_rejects_traversal() {
        let root = tempfile::tempdir().expect("tempdir");
        let served = root.path().join("served");
        std::fs::create_dir(&served).expect("mkdir");
        std::fs::write(served.join("a.txt"), "alpha\n").expect("write");
        std::fs::write(served.join("b c.html"), "<p>beta</p>").expect("write");
        std::fs::create_dir(served.join("subdir")).expect("mkdir");
        std::fs::write(root.path().join("secret"), "do not serve").expect("write");
        std::os::unix::fs::symlink(root.path().join("secret"), served.join("link"))
            .expect("symlink");
        let server = TestServer::start(Some(&served)).await;

        let (status, head, body) = get(server.addr, "/files/a.txt").await;
        assert_eq!((status, body.as_str()), (200, "alpha\n"));
        assert!(head.contains("content-type: text/plain"), "{head}");
        let (status, _, body) = get(server.addr, "/files/b%20c.html").await;
        assert_eq!((status, body.as_str()), (200, "<p>beta</p>"));

        let (_, _, page) = get(server.addr, "/").await;
        assert!(
            page.contains("<a href=\"/files/a.txt\">a.txt</a>"),
            "{page}"
        );
        assert!(
            page.contains("<a href=\"/files/b%20c.html\">b c.html</a>"),
            "{page}"
        );
        assert!(!page.contains("subdir"), "only files are listed: {page}");
        let (_, _, body) = get(server.addr, "/api").await;
        let info: serde_json::Value = serde_json::from_str(&body).expect("json");
        // Symlinks are not listed (only regular files), whatever they point to.
        assert_eq!(info["files"], serde_json::json!(["a.txt", "b c.html"]));
        let (status, _, index) = get(server.addr, "/files/").await;
        assert_eq!(status, 200);
        assert!(index.contains("a.txt"), "{index}");

        for (path, expected) in [
            ("/files/../secret", 400),
            ("/files/..%2Fsecret", 400),
            ("/files/subdir/../../secret", 400),
            ("/files/%2Fetc%2Fpasswd", 400),
            ("/files/link", 404),
            ("/files/subdir", 404),
            ("/files/missing", 404),
        ] {
            let (status, _, body) = get(server.addr, path).await;
            assert_eq!(status, expected, "{path}: {body}");
            assert!(!body.contains("do not serve"), "{path}");
        }
        server.stop().await;
    }

    #[test]
    fn listen_address_comes_from_flag_then_port_then_default() {
        let flag: SocketAddr = "127.0.0.1:9000".parse().expect("addr");
        assert_eq!(listen_addr(Some(flag), Some("1234")).expect("flag"), flag);
        assert_eq!(
            listen_addr(None, Some("1234")).expect("port").to_string(),
            "0.0.0.0:1234"
        );
        assert_eq!(
            listen_addr(None, None).expect("default").to_string(),
            "0.0.0.0:8080"
        );
        assert!(listen_addr(None, Some("http")).is_err());
        assert!(listen_addr(None, Some("70000")).is_err());
    }

    #[test]
    fn args_parse() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            hello: HelloArgs,
        }
        let cli = Cli::try_parse_from(["hello", "--listen", "127.0.0.1:9", "--dir", "/srv"])
            .expect("parse");
        assert_eq!(cli.hello.listen, Some("127.0.0.1:9".parse().expect("addr")));
        assert_eq!(cli.hello.dir, Some(PathBuf::from("/srv")));
        let cli = Cli::try_parse_from(["hello"]).expect("parse");
        assert!(cli.hello.listen.is_none() && cli.hello.dir.is_none());
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape_html("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(percent_encode("a b/ü.txt"), "a%20b%2F%C3%BC.txt");
    }
}
