//! rustls configurations for node-to-node traffic.
//!
//! Every node certificate carries the same DNS name, [`SERVER_NAME`], and clients verify
//! servers against it rather than against the address dialled: nodes are found by
//! address, but trusted by the cluster CA. A chain to the CA only says "a node of this
//! cluster", so every client also says whom it meant to dial ([`Dialled`]): a manager
//! (the role in the certificate's OU, which only the CA sets) or one given node. A
//! worker's key thus cannot pass for a manager, as in swarmkit. The node's own
//! certificate, and the CAs it trusts, sit behind an [`IdentityHandle`] so that a
//! renewed or re-roled certificate, or a CA rotation, takes effect on the next handshake
//! without rebuilding listeners or clients.

use std::sync::{Arc, Mutex, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use hoist_types::{NodeId, Role};
use rustls::{CertificateError, OtherError};

use crate::ca::digest_der;
use crate::{peer_identity, NodeIdentity, PkiError};

/// The DNS name in every node certificate.
pub const SERVER_NAME: &str = "node.hoist.internal";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CAs a node trusts, swappable at run time (a CA rotation trusts the old and the
/// new CA for a while, then only the new one).
type LiveRoots = Arc<RwLock<Arc<RootCertStore>>>;

fn current_roots(roots: &LiveRoots) -> Arc<RootCertStore> {
    roots
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// The node's current certificate and trusted CAs, swappable at run time.
#[derive(Debug, Clone)]
pub struct IdentityHandle {
    current: Arc<RwLock<Arc<CertifiedKey>>>,
    roots: LiveRoots,
}

impl IdentityHandle {
    pub fn new(identity: &NodeIdentity) -> Result<Self, PkiError> {
        let certified = certified_key(identity)?;
        Ok(IdentityHandle {
            current: Arc::new(RwLock::new(Arc::new(certified))),
            roots: Arc::new(RwLock::new(Arc::new(root_store(&identity.ca_pem)?))),
        })
    }

    /// Trusts exactly the CA certificates in `ca_pem` from the next handshake on.
    pub fn set_trust(&self, ca_pem: &str) -> Result<(), PkiError> {
        let roots = Arc::new(root_store(ca_pem)?);
        if roots.is_empty() {
            return Err(PkiError::Pem("no CA certificate to trust".into()));
        }
        *self
            .roots
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = roots;
        Ok(())
    }

    /// Replaces the certificate used from the next handshake on.
    pub fn replace(&self, identity: &NodeIdentity) -> Result<(), PkiError> {
        let certified = certified_key(identity)?;
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = Arc::new(certified);
        Ok(())
    }

    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for IdentityHandle {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl ResolvesClientCert for IdentityHandle {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn certified_key(identity: &NodeIdentity) -> Result<CertifiedKey, PkiError> {
    let chain = CertificateDer::pem_slice_iter(identity.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| PkiError::Pem(format!("certificate chain: {err}")))?;
    if chain.is_empty() {
        return Err(PkiError::Pem("empty certificate chain".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|err| PkiError::Pem(format!("private key: {err}")))?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(PkiError::Tls)?;
    Ok(CertifiedKey::new(chain, signing_key))
}

fn root_store(ca_pem: &str) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|err| PkiError::Pem(format!("CA certificate: {err}")))?;
        roots.add(cert).map_err(PkiError::Tls)?;
    }
    Ok(roots)
}

/// The TLS listener's configuration. Client certificates are verified when presented
/// but not required at the handshake, so that a joining node (which has none yet) can
/// reach the join endpoint; every other endpoint refuses a connection without one, with
/// a message rather than a bare handshake failure.
pub fn server_config(identity: &IdentityHandle) -> Result<ServerConfig, PkiError> {
    // Fails now, rather than at every handshake, if the roots cannot make a verifier.
    client_verifier(&current_roots(&identity.roots))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(LiveClientVerifier {
            roots: identity.roots.clone(),
            provider: provider(),
        }))
        .with_cert_resolver(Arc::new(identity.clone()));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // A resumed session skips certificate verification: without resumption, every new
    // connection is checked against the CAs trusted now (after a CA rotation too).
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

fn client_verifier(roots: &Arc<RootCertStore>) -> Result<Arc<dyn ClientCertVerifier>, PkiError> {
    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|err| PkiError::Certificate(err.to_string()))
}

/// webpki's client verifier over the roots trusted at the moment of each handshake.
#[derive(Debug)]
struct LiveClientVerifier {
    roots: LiveRoots,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for LiveClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; every node has one certificate to offer anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        client_verifier(&current_roots(&self.roots))
            .map_err(|err| rustls::Error::General(err.to_string()))?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whom a client means to reach, checked on the server's certificate after its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialled {
    /// Any manager of the cluster: joins, heartbeats, renewal, assignments, status
    /// reports, Raft, forwarding to the leader. A worker certificate is refused.
    Manager,
    /// This one node, whatever its role: a manager reading a task's output from the
    /// node that ran it.
    Node(NodeId),
}

/// The server presented a valid certificate of the cluster, but not the one the client
/// meant to dial.
#[derive(thiserror::Error)]
#[error("the server presented the certificate of {role} node {node_id}, but {wanted}")]
struct UnexpectedServer {
    role: Role,
    node_id: NodeId,
    wanted: String,
}

// rustls shows the errors of a verifier with `Debug`: this one reads as its message.
impl std::fmt::Debug for UnexpectedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The configuration for calls to other nodes: trust the cluster CA, present our
/// certificate, and accept only the server `dialled` names.
pub fn client_config(
    identity: &IdentityHandle,
    dialled: Dialled,
) -> Result<ClientConfig, PkiError> {
    server_verifier(&current_roots(&identity.roots))?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ClusterNameVerifier {
            roots: identity.roots.clone(),
            provider: provider(),
            dialled,
        }))
        .with_client_cert_resolver(Arc::new(identity.clone()));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client configuration trusting only `ca_pem` and only a manager's certificate, for
/// a node that has a CA but no certificate yet (the join request itself, which carries
/// the join secret).
pub fn pinned_config(ca_pem: &str) -> Result<ClientConfig, PkiError> {
    let roots = Arc::new(root_store(ca_pem)?);
    server_verifier(&roots)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ClusterNameVerifier {
            roots: Arc::new(RwLock::new(roots)),
            provider: provider(),
            dialled: Dialled::Manager,
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Verifies the chain against the cluster CA, but for [`SERVER_NAME`] whatever address
/// was dialled, then that the certificate is of the node or role `dialled` names.
#[derive(Debug)]
struct ClusterNameVerifier {
    /// Read at each handshake: see [`LiveRoots`].
    roots: LiveRoots,
    provider: Arc<CryptoProvider>,
    dialled: Dialled,
}

fn server_verifier(
    roots: &Arc<RootCertStore>,
) -> Result<Arc<rustls::client::WebPkiServerVerifier>, PkiError> {
    rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|err| PkiError::Certificate(err.to_string()))
}

impl ServerCertVerifier for ClusterNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(SERVER_NAME)
            .map_err(|_| rustls::Error::General("bad server name".into()))?;
        let verified = server_verifier(&current_roots(&self.roots))
            .map_err(|err| rustls::Error::General(err.to_string()))?
            .verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)?;
        // Read only once the chain is verified: the subject is then the CA's word.
        let server = peer_identity(end_entity.as_ref()).map_err(|err| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(err))))
        })?;
        let wanted = match self.dialled {
            Dialled::Manager if server.role == Role::Manager => return Ok(verified),
            Dialled::Manager => "a manager was dialled".to_string(),
            Dialled::Node(node_id) if server.node_id == node_id => return Ok(verified),
            Dialled::Node(node_id) => format!("node {node_id} was dialled"),
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(UnexpectedServer {
                role: server.role,
                node_id: server.node_id,
                wanted,
            })),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The chain a server presented during a join probe.
#[derive(Debug, Clone, Default)]
pub struct CapturedChain(Arc<Mutex<Vec<Vec<u8>>>>);

impl CapturedChain {
    /// What the first certificate presented (the server's own) says, read without any
    /// verification: only for refusing early with a clear message, never for trusting.
    pub fn unverified_leaf(&self) -> Option<Result<crate::PeerIdentity, PkiError>> {
        let chain = self.0.lock().unwrap_or_else(|p| p.into_inner());
        chain.first().map(|der| peer_identity(der))
    }

    /// The digest of the last certificate presented (the CA, as our servers send
    /// leaf then CA), and its PEM.
    pub fn ca(&self) -> Option<(String, String)> {
        let chain = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let last = chain.last()?;
        let pem = pem_encode(last);
        Some((digest_der(last), pem))
    }
}

/// A certificate's DER as PEM, in the form the rest of the cluster stores (LF line
/// endings, 64 columns).
fn pem_encode(der: &[u8]) -> String {
    let block = pem::Pem::new("CERTIFICATE", der);
    pem::encode_config(
        &block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// A client configuration that accepts any server certificate and records the chain,
/// for the first step of a join: the joiner has only a digest, so it reads what the
/// manager presents, compares the CA's digest with the token's, and only then talks to
/// it through [`pinned_config`]. Nothing secret is sent over a probe connection.
pub fn join_probe_config() -> Result<(ClientConfig, CapturedChain), PkiError> {
    let captured = CapturedChain::default();
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CaptureVerifier {
            captured: captured.clone(),
            schemes: provider()
                .signature_verification_algorithms
                .supported_schemes(),
        }))
        .with_no_client_auth();
    Ok((config, captured))
}

#[derive(Debug)]
struct CaptureVerifier {
    captured: CapturedChain,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for CaptureVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = self.captured.0.lock().unwrap_or_else(|p| p.into_inner());
        chain.clear();
        chain.push(end_entity.to_vec());
        chain.extend(intermediates.iter().map(|cert| cert.to_vec()));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_encoding_wraps_at_64_columns_with_lf_and_reads_back() {
        assert_eq!(
            pem_encode(b"hello"),
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n"
        );
        for len in [1, 2, 3, 47, 48, 49, 96, 1000] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let pem = pem_encode(&der);
            assert!(!pem.contains('\r'), "{pem}");
            assert!(pem.lines().all(|line| line.len() <= 64), "{pem}");
            let back = CertificateDer::from_pem_slice(pem.as_bytes()).expect("reads back");
            assert_eq!(back.as_ref(), der.as_slice(), "length {len}");
        }
    }
}
