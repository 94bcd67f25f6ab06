//! A bare TLS client for probing a node's listener the way an attacker or a confused
//! client would: with no certificate, or with any certificate at all, and trusting
//! whatever the server presents (the point is what the *server* accepts); and a fake
//! TLS server presenting any node's certificate, recording what clients send it (the
//! point is what the *client* refuses).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

#[derive(Debug)]
struct AcceptAnything(Vec<SignatureScheme>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}

/// The certificate chain and key in a node's `identity.json`.
fn identity_parts(json: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let identity: serde_json::Value = serde_json::from_str(json).expect("identity json");
    let chain = CertificateDer::pem_slice_iter(
        identity["chain_pem"]
            .as_str()
            .expect("chain_pem")
            .as_bytes(),
    )
    .collect::<Result<Vec<_>, _>>()
    .expect("certificate chain");
    let key =
        PrivateKeyDer::from_pem_slice(identity["key_pem"].as_str().expect("key_pem").as_bytes())
            .expect("private key");
    (chain, key)
}

/// GETs `path` from `addr` over TLS, presenting the identity in `identity_json` (a
/// node's `identity.json`) if given. Returns the raw HTTP response, or
/// `"handshake failed: ..."` when the TLS session could not be used.
pub fn tls_get(addr: &str, path: &str, identity_json: Option<&str>) -> String {
    tls_request(addr, "GET", path, None, identity_json)
}

/// A client that trusts whatever the server presents and presents the certificate of a
/// node's `identity.json` (none with `None`).
fn trusting_client_as(identity_json: Option<&str>) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything(schemes)));
    Ok(match identity_json {
        None => builder.with_no_client_auth(),
        Some(json) => {
            let (chain, key) = identity_parts(json);
            builder.with_client_auth_cert(chain, key)?
        }
    })
}

/// Sends one request (`body` as JSON when given) to `addr` over TLS, presenting the
/// identity in `identity_json` if given; the raw response as [`tls_get`] returns it.
pub fn tls_request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    identity_json: Option<&str>,
) -> String {
    let config = trusting_client_as(identity_json).expect("a client configuration");
    let stream = match TcpStream::connect(addr) {
        Ok(stream) => stream,
        Err(err) => return format!("connect failed: {err}"),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let name = ServerName::try_from("node.hoist.internal").expect("server name");
    let connection = match rustls::ClientConnection::new(Arc::new(config), name) {
        Ok(connection) => connection,
        Err(err) => return format!("handshake failed: {err}"),
    };
    let mut tls = rustls::StreamOwned::new(connection, stream);
    let body = body.unwrap_or("");
    let content = if body.is_empty() && method == "GET" {
        String::new()
    } else {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: hoist\r\nConnection: close\r\n{content}\r\n{body}"
    );
    if let Err(err) = tls.write_all(request.as_bytes()) {
        return format!("handshake failed: {err}");
    }
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        Err(err) if response.is_empty() => return format!("handshake failed: {err}"),
        Err(_) => {}
    }
    String::from_utf8_lossy(&response).into_owned()
}

/// A TLS server on a loopback port presenting the certificate of a node's
/// `identity.json`, recording every byte clients send after a handshake. Stopped when
/// dropped.
pub struct FakeTlsServer {
    pub addr: String,
    connections: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeTlsServer {
    pub fn start(identity_json: &str) -> FakeTlsServer {
        let (chain, key) = identity_parts(identity_json);
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server identity");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address").to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (connections, received, stop) =
                (connections.clone(), received.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        Err(_) => {
                            // Polled so that dropping the server ends the thread.
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (config, received) = (config.clone(), received.clone());
                    std::thread::spawn(move || record_connection(stream, config, received));
                }
            })
        };
        FakeTlsServer {
            addr,
            connections,
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every byte any client sent inside a TLS session.
    pub fn received(&self) -> Vec<u8> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn record_connection(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    received: Arc<Mutex<Vec<u8>>>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(connection) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(connection, stream);
    let mut buffer = [0u8; 4096];
    while let Ok(n) = tls.read(&mut buffer) {
        if n == 0 {
            return;
        }
        received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(&buffer[..n]);
    }
}

impl Drop for FakeTlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A TLS session to `addr` with no client certificate, trusting whatever the server
/// presents: for tests that write raw requests (oversized bodies, slow heads).
pub fn tls_stream(
    addr: &str,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    tls_stream_as(addr, None)
}

/// A TLS session to `addr` presenting the certificate of a node's `identity.json` (none
/// with `None`), trusting whatever the server presents: for tests that hold a response
/// open (an assignment stream) while they do something else.
pub fn tls_stream_as(
    addr: &str,
    identity_json: Option<&str>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let config = trusting_client_as(identity_json).map_err(std::io::Error::other)?;
    let stream = TcpStream::connect(addr)?;
    let name = ServerName::try_from("node.hoist.internal").map_err(std::io::Error::other)?;
    let mut connection =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let mut stream = stream;
    while connection.is_handshaking() {
        connection.complete_io(&mut stream)?;
    }
    Ok(rustls::StreamOwned::new(connection, stream))
}
