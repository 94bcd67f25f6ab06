//! A bare TLS client for probing a node's listener the way an attacker or a confused
//! client would: with no certificate, or with any certificate at all, and trusting
//! whatever the server presents (the point is what the *server* accepts).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
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

/// GETs `path` from `addr` over TLS, presenting the identity in `identity_json` (a
/// node's `identity.json`) if given. Returns the raw HTTP response, or
/// `"handshake failed: ..."` when the TLS session could not be used.
pub fn tls_get(addr: &str, path: &str, identity_json: Option<&str>) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything(schemes)));
    let config = match identity_json {
        None => builder.with_no_client_auth(),
        Some(json) => {
            let identity: serde_json::Value = serde_json::from_str(json).expect("identity json");
            let chain = CertificateDer::pem_slice_iter(
                identity["chain_pem"]
                    .as_str()
                    .expect("chain_pem")
                    .as_bytes(),
            )
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate chain");
            let key = PrivateKeyDer::from_pem_slice(
                identity["key_pem"].as_str().expect("key_pem").as_bytes(),
            )
            .expect("private key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client identity")
        }
    };
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
    let request = format!("GET {path} HTTP/1.1\r\nHost: hoist\r\nConnection: close\r\n\r\n");
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
