//! A node's own identity (its key and certificate chain) and what a peer's certificate
//! says about the peer.

use hoist_types::{NodeId, Role};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::PkiError;

/// What a verified peer certificate says: who, in which role, of which cluster, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub node_id: NodeId,
    pub role: Role,
    pub cluster_id: String,
    /// Unix seconds.
    pub not_after: i64,
    /// The distinguished name of the CA that signed it (each CA of a cluster has its
    /// own, see [`ca_subject`]): which CA a node's certificate comes from during a
    /// rotation.
    pub issuer: String,
}

/// The distinguished name of the first certificate in `cert_pem`, as [`PeerIdentity`]'s
/// `issuer` shows a certificate it signed.
pub fn ca_subject(cert_pem: &str) -> Result<String, PkiError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|err| PkiError::Pem(err.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|err| PkiError::Certificate(err.to_string()))?;
    Ok(cert.subject().to_string())
}

/// Reads the identity out of a certificate that rustls has already verified.
pub fn peer_identity(der: &[u8]) -> Result<PeerIdentity, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|err| PkiError::Certificate(err.to_string()))?;
    let subject = cert.subject();
    let first = |values: Vec<&str>, what: &str| -> Result<String, PkiError> {
        values
            .first()
            .map(|value| value.to_string())
            .ok_or_else(|| PkiError::Certificate(format!("the certificate has no {what}")))
    };
    let common_name = first(
        subject
            .iter_common_name()
            .filter_map(|attr| attr.as_str().ok())
            .collect(),
        "common name",
    )?;
    let unit = first(
        subject
            .iter_organizational_unit()
            .filter_map(|attr| attr.as_str().ok())
            .collect(),
        "organizational unit",
    )?;
    let cluster_id = first(
        subject
            .iter_organization()
            .filter_map(|attr| attr.as_str().ok())
            .collect(),
        "organization",
    )?;
    let node_id = common_name
        .parse::<NodeId>()
        .map_err(|err| PkiError::Certificate(format!("common name: {err}")))?;
    let role = match unit.as_str() {
        "hoist-manager" => Role::Manager,
        "hoist-worker" => Role::Worker,
        other => {
            return Err(PkiError::Certificate(format!(
                "unknown role {other:?} in the certificate"
            )))
        }
    };
    Ok(PeerIdentity {
        node_id,
        role,
        cluster_id,
        not_after: cert.validity().not_after.timestamp(),
        issuer: cert.issuer().to_string(),
    })
}

/// This node's key, its certificate chain (leaf then CA) and the CA it trusts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeIdentity {
    pub key_pem: String,
    /// Leaf certificate followed by the CA certificate.
    pub chain_pem: String,
    pub ca_pem: String,
}

impl NodeIdentity {
    /// The identity the leaf certificate carries.
    pub fn peer(&self) -> Result<PeerIdentity, PkiError> {
        let leaf = CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
            .next()
            .ok_or_else(|| PkiError::Pem("no certificate in the chain".into()))?
            .map_err(|err| PkiError::Pem(err.to_string()))?;
        peer_identity(leaf.as_ref())
    }

    /// Whether the chain holds the CA certificate whose digest is `ca_digest`, i.e. the
    /// leaf was issued by that CA (chains are leaf, then any cross-signed certificate,
    /// then the signing CA).
    pub fn issued_by(&self, ca_digest: &str) -> bool {
        CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
            .skip(1)
            .filter_map(Result::ok)
            .any(|cert| crate::ca::digest_der(cert.as_ref()).eq_ignore_ascii_case(ca_digest))
    }
}
