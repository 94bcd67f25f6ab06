//! The cluster root CA: generating it, signing node certificates from CSRs, and the
//! cross-signed certificate that carries a cluster from one CA to the next (Swarm's
//! `swarm ca --rotate`).

use std::time::Duration;

use hoist_types::{NodeId, Role};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::tls::SERVER_NAME;
use crate::PkiError;

/// The CA's own lifetime. Swarm's root CA lives 20 years; ours too.
const CA_LIFETIME: Duration = Duration::from_secs(20 * 365 * 24 * 3600);

/// Certificates are back-dated a little so a node whose clock is slightly behind the
/// signer's accepts them at once.
const BACKDATE: Duration = Duration::from_secs(300);

/// The cluster's root of trust, able to sign node certificates.
pub struct ClusterCa {
    /// The CA certificate as rcgen needs it to sign (issuer name and key identifier).
    issuer: rcgen::Certificate,
    key: KeyPair,
    cert_pem: String,
    key_pem: String,
    /// While a rotation is under way: this CA's certificate signed by the previous CA,
    /// sent between each leaf and this CA so that nodes trusting only the previous CA
    /// accept the leaf.
    cross_signed_pem: Option<String>,
}

/// A fresh key pair and the certificate request for it; the key never leaves the node.
pub struct NodeCsr {
    pub key_pem: String,
    pub csr_pem: String,
}

/// sha256 of the DER of the first certificate in `cert_pem`, as lowercase hex.
pub fn ca_digest(cert_pem: &str) -> Result<String, PkiError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|err| PkiError::Pem(err.to_string()))?;
    Ok(digest_der(der.as_ref()))
}

pub(crate) fn digest_der(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

impl ClusterCa {
    /// Creates a new root CA for `cluster_id`.
    pub fn generate(cluster_id: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let issuer = ca_params("hoist-root-ca", cluster_id).self_signed(&key)?;
        let cert_pem = issuer.pem();
        let key_pem = key.serialize_pem();
        Ok(ClusterCa {
            issuer,
            key,
            cert_pem,
            key_pem,
            cross_signed_pem: None,
        })
    }

    /// A new CA to replace this one, and its certificate cross-signed by this one.
    ///
    /// The new CA has a name of its own, so that a certificate's issuer says which CA
    /// signed it and a verifier never confuses the two.
    pub fn successor(&self, cluster_id: &str) -> Result<(ClusterCa, String), PkiError> {
        let key = KeyPair::generate()?;
        let suffix: [u8; 4] = rand::random();
        let name = format!("hoist-root-ca-{}", hex::encode(suffix));
        let params = ca_params(&name, cluster_id);
        let cross_signed = params.clone().signed_by(&key, &self.issuer, &self.key)?;
        let issuer = params.self_signed(&key)?;
        let successor = ClusterCa {
            cert_pem: issuer.pem(),
            key_pem: key.serialize_pem(),
            issuer,
            key,
            cross_signed_pem: None,
        };
        Ok((successor, cross_signed.pem()))
    }

    /// Signs from now on with `cross_signed_pem` in every chain (see the field).
    pub fn with_cross_signed(mut self, cross_signed_pem: Option<String>) -> Self {
        self.cross_signed_pem = cross_signed_pem;
        self
    }

    /// Loads the CA from the replicated state.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem)?;
        // Re-signing the parsed parameters rebuilds an issuer with the same subject and
        // key, which is all rcgen reads from it when signing.
        let issuer = params.self_signed(&key)?;
        Ok(ClusterCa {
            issuer,
            key,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            cross_signed_pem: None,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The digest join tokens carry: of the stored CA certificate, not of the issuer
    /// rebuilt from it (ECDSA signatures differ from one signing to the next).
    pub fn digest(&self) -> Result<String, PkiError> {
        ca_digest(&self.cert_pem)
    }

    /// Signs a node certificate for the public key in `csr_pem`. Everything but the key
    /// comes from the arguments, never from the request: a node cannot ask for a role.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        node_id: NodeId,
        role: Role,
        cluster_id: &str,
        validity: Duration,
    ) -> Result<String, PkiError> {
        let request = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|err| {
            PkiError::Certificate(format!("unreadable certificate request: {err}"))
        })?;
        let csr = CertificateSigningRequestParams {
            params: node_params(node_id, role, cluster_id, validity)?,
            public_key: request.public_key,
        };
        let cert = csr.signed_by(&self.issuer, &self.key)?;
        Ok(format!(
            "{}{}{}",
            cert.pem(),
            self.cross_signed_pem.as_deref().unwrap_or(""),
            self.cert_pem
        ))
    }
}

impl NodeCsr {
    pub fn generate() -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let params = CertificateParams::new(Vec::<String>::new())?;
        let csr = params.serialize_request(&key)?;
        Ok(NodeCsr {
            key_pem: key.serialize_pem(),
            csr_pem: csr.pem()?,
        })
    }
}

fn ca_params(common_name: &str, cluster_id: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, cluster_id);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_LIFETIME;
    params
}

fn node_params(
    node_id: NodeId,
    role: Role,
    cluster_id: &str,
    validity: Duration,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, node_id.to_string());
    name.push(DnType::OrganizationalUnitName, role_ou(role));
    name.push(DnType::OrganizationName, cluster_id);
    params.distinguished_name = name;
    params.subject_alt_names =
        vec![SanType::DnsName(SERVER_NAME.try_into().map_err(|_| {
            PkiError::Certificate("bad server name".into())
        })?)];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    let serial: [u8; 16] = rand::random();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    Ok(params)
}

pub(crate) fn role_ou(role: Role) -> &'static str {
    match role {
        Role::Manager => "hoist-manager",
        Role::Worker => "hoist-worker",
    }
}
