//! Cluster PKI: the root CA, node certificates that carry the node's id and role, join
//! tokens that pin the CA, and the rustls configurations every node-to-node connection
//! uses.
//!
//! This crate owns the certificate formats (CN = node id, OU = role, O = cluster id, as
//! Swarm does) and nothing else: it does not know where the CA key is stored (the
//! replicated state holds it), nor which endpoints need which role (the API decides).

mod ca;
mod identity;
mod tls;
mod token;

pub use ca::{ca_digest, ClusterCa, NodeCsr};
pub use identity::{peer_identity, NodeIdentity, PeerIdentity};
pub use tls::{
    client_config, join_probe_config, pinned_config, server_config, CapturedChain, IdentityHandle,
    SERVER_NAME,
};
pub use token::JoinToken;

/// What went wrong with a certificate, a key or a token.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("invalid PEM: {0}")]
    Pem(String),
    #[error("invalid certificate: {0}")]
    Certificate(String),
    #[error("invalid join token: {0}")]
    Token(String),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hoist_types::{NodeId, Role};

    use super::*;

    #[test]
    fn a_signed_node_certificate_carries_id_role_and_cluster() {
        let ca = ClusterCa::generate("cluster-a").unwrap();
        let csr = NodeCsr::generate().unwrap();
        let chain = ca
            .sign_csr(
                &csr.csr_pem,
                NodeId(42),
                Role::Worker,
                "cluster-a",
                Duration::from_secs(3600),
            )
            .unwrap();
        let identity = NodeIdentity {
            key_pem: csr.key_pem,
            chain_pem: chain,
            ca_pem: ca.cert_pem().to_string(),
        };
        let peer = identity.peer().unwrap();
        assert_eq!(peer.node_id, NodeId(42));
        assert_eq!(peer.role, Role::Worker);
        assert_eq!(peer.cluster_id, "cluster-a");
        assert_eq!(ca_digest(ca.cert_pem()).unwrap(), ca.digest().unwrap());
        // The CA reloaded from its PEM signs certificates the same roots accept.
        let reloaded = ClusterCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(reloaded.digest().unwrap(), ca.digest().unwrap());
        let handle = IdentityHandle::new(&identity).unwrap();
        server_config(&handle).unwrap();
        client_config(&handle).unwrap();
    }

    #[test]
    fn tokens_parse_and_refuse_garbage() {
        let digest = "a".repeat(64);
        let secret = JoinToken::new_secret();
        let text = JoinToken::format(&digest, &secret);
        let token = JoinToken::parse(&text).unwrap();
        assert_eq!(token.ca_digest, digest);
        assert_eq!(token.secret, secret);
        assert!(JoinToken::parse("SWMTKN-1-abc").is_err());
        assert!(JoinToken::parse("HOIST-1-abc-defdefdefdefdefdef").is_err());
        assert!(JoinToken::parse(&format!("HOIST-1-{digest}-short")).is_err());
    }
}
