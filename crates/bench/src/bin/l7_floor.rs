//! `l7-floor`: the least work an HTTP/1.1 proxy on tokio can do per request, as a
//! reference row in `bench/mesh/run.sh`. It is not part of Hoist and must never become
//! one: it shows how fast any L7 proxy built on the same runtime and the same kernel
//! calls could be on this machine, so the mesh's L7 figures can be read against the
//! machine's limit and not only against nginx and HAProxy.
//!
//! What it does per request: parse the request head (httparse), append the forwarding
//! headers, pick the next backend round-robin, write the head and body to an idle
//! keep-alive connection of that backend (or a new one), parse the response head, and
//! copy the response to the client unchanged. One task per client connection, on a
//! single-threaded runtime; no timers, no metrics, no retries, no routing, no health.
//!
//! What it leaves out, and why that makes it a floor rather than a proxy: bodies framed
//! by anything but `Content-Length` (chunked, close-delimited) and protocol upgrades
//! close the connection; a failed backend fails the request; there is no header deadline
//! (slowloris), no `431`, no hop-by-hop filtering of responses, no h2c. Every one of
//! those costs cycles that a real proxy, Hoist's included, must spend.
//!
//! Usage: `l7-floor --port 8080 --backend 127.0.0.1:9001 [--backend ...]`.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Past this many bytes without a complete head the connection is closed.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

struct Backends {
    addrs: Vec<SocketAddr>,
    idle: Vec<RefCell<Vec<TcpStream>>>,
    next: Cell<usize>,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// The body length a head announces: `Content-Length`, or none. `Err` for framings the
/// floor does not handle.
fn body_length(headers: &[httparse::Header<'_>]) -> io::Result<usize> {
    let mut length = 0;
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("transfer-encoding is not handled"));
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|value| value.trim().parse().ok())
                .ok_or_else(|| invalid("bad content-length"))?;
        }
    }
    Ok(length)
}

/// Reads from `stream` into `buf` until it holds `wanted` bytes; `false` on end of stream.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, wanted: usize) -> io::Result<bool> {
    while buf.len() < wanted {
        if stream.read_buf(buf).await? == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn serve(mut client: TcpStream, peer: SocketAddr, backends: Rc<Backends>) -> io::Result<()> {
    let forwarding = format!(
        "x-forwarded-for: {ip}\r\nx-forwarded-proto: http\r\nforwarded: for={ip};proto=http\r\n\r\n",
        ip = peer.ip().to_canonical()
    );
    let mut from_client = Vec::with_capacity(8192);
    let mut from_backend = Vec::with_capacity(8192);
    let mut upstream_request = Vec::with_capacity(8192);
    loop {
        // The request head, rewritten into `upstream_request` as soon as it is complete.
        let (head_len, request_len, is_head) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut request = httparse::Request::new(&mut headers);
            let status = request
                .parse(&from_client)
                .map_err(|_| invalid("bad request head"))?;
            if let httparse::Status::Complete(head_len) = status {
                let body_len = body_length(request.headers)?;
                upstream_request.clear();
                upstream_request.extend_from_slice(request.method.unwrap_or("GET").as_bytes());
                upstream_request.push(b' ');
                upstream_request.extend_from_slice(request.path.unwrap_or("/").as_bytes());
                upstream_request.extend_from_slice(b" HTTP/1.1\r\n");
                for header in request.headers.iter() {
                    if header.name.eq_ignore_ascii_case("connection")
                        || header.name.eq_ignore_ascii_case("keep-alive")
                    {
                        continue;
                    }
                    upstream_request.extend_from_slice(header.name.as_bytes());
                    upstream_request.extend_from_slice(b": ");
                    upstream_request.extend_from_slice(header.value);
                    upstream_request.extend_from_slice(b"\r\n");
                }
                upstream_request.extend_from_slice(forwarding.as_bytes());
                let is_head = request.method == Some("HEAD");
                break (head_len, head_len + body_len, is_head);
            }
            if from_client.len() > MAX_HEAD {
                return Err(invalid("request head too large"));
            }
            if client.read_buf(&mut from_client).await? == 0 {
                return Ok(());
            }
        };
        if !fill(&mut client, &mut from_client, request_len).await? {
            return Ok(());
        }
        upstream_request.extend_from_slice(&from_client[head_len..request_len]);
        from_client.drain(..request_len);

        let index = backends.next.get() % backends.addrs.len();
        backends.next.set(index + 1);
        let idle = backends.idle[index].borrow_mut().pop();
        let mut upstream = match idle {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect(backends.addrs[index]).await?;
                stream.set_nodelay(true)?;
                stream
            }
        };
        upstream.write_all(&upstream_request).await?;

        from_backend.clear();
        let response_len = loop {
            if upstream.read_buf(&mut from_backend).await? == 0 {
                return Err(invalid("backend closed before its response"));
            }
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            let status = response
                .parse(&from_backend)
                .map_err(|_| invalid("bad response head"))?;
            if let httparse::Status::Complete(head_len) = status {
                let no_body = is_head || matches!(response.code, Some(204 | 304));
                break head_len
                    + if no_body {
                        0
                    } else {
                        body_length(response.headers)?
                    };
            }
            if from_backend.len() > MAX_HEAD {
                return Err(invalid("response head too large"));
            }
        };
        if !fill(&mut upstream, &mut from_backend, response_len).await? {
            return Err(invalid("backend closed in its response body"));
        }
        client.write_all(&from_backend[..response_len]).await?;
        if from_backend.len() == response_len {
            backends.idle[index].borrow_mut().push(upstream);
        }
    }
}

fn parse_args() -> Result<(u16, Vec<SocketAddr>), String> {
    let mut port = None;
    let mut backends = Vec::new();
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => port = Some(value.parse().map_err(|e| format!("--port: {e}"))?),
            "--backend" => backends.push(value.parse().map_err(|e| format!("--backend: {e}"))?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let port = port.ok_or("--port is required")?;
    if backends.is_empty() {
        return Err("at least one --backend is required".into());
    }
    Ok((port, backends))
}

fn main() -> ExitCode {
    let (port, addrs) = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("l7-floor: {message}");
            eprintln!("usage: l7-floor --port PORT --backend ADDR [--backend ADDR ...]");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("l7-floor: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let backends = Rc::new(Backends {
        idle: addrs.iter().map(|_| RefCell::new(Vec::new())).collect(),
        addrs,
        next: Cell::new(0),
    });
    let local = tokio::task::LocalSet::new();
    let result: io::Result<()> = local.block_on(&runtime, async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (stream, peer) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::task::spawn_local(serve(stream, peer, Rc::clone(&backends)));
        }
    });
    if let Err(error) = result {
        eprintln!("l7-floor: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
