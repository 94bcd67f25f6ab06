//! Cluster PKI: the root CA, node certificates that carry the node's id and role, join
//! tokens that pin the CA, and the rustls configurations every node-to-node connection
//! uses (a client's says whom it dialled: a manager, or one node).
//!
//! This crate owns the certificate formats (CN = node id, OU = role, O = cluster id, as
//! Swarm does) and nothing else: it does not know where the CA key is stored (the
//! replicated state holds it), nor which endpoints need which role (the API decides).

mod ca;
mod identity;
mod tls;
mod token;

pub use ca::{ca_digest, ClusterCa, NodeCsr};
pub use identity::{ca_subject, peer_identity, NodeIdentity, PeerIdentity};
pub use tls::{
    client_config, join_probe_config, pinned_config, server_config, CapturedChain, Dialled,
    IdentityHandle, SERVER_NAME,
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
    use std::sync::Arc;
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
        client_config(&handle, Dialled::Manager).unwrap();
    }

    fn identity_of(ca: &ClusterCa, node_id: u64, role: Role) -> IdentityHandle {
        let csr = NodeCsr::generate().unwrap();
        let chain_pem = ca
            .sign_csr(
                &csr.csr_pem,
                NodeId(node_id),
                role,
                "cluster-a",
                Duration::from_secs(3600),
            )
            .unwrap();
        IdentityHandle::new(&NodeIdentity {
            key_pem: csr.key_pem,
            chain_pem,
            ca_pem: ca.cert_pem().to_string(),
        })
        .unwrap()
    }

    /// Runs a TLS handshake in memory; the error is the first side's refusal.
    fn handshake(client: rustls::ClientConfig, server: &IdentityHandle) -> Result<(), String> {
        let name = rustls_pki_types::ServerName::try_from("10.0.0.9").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut server =
            rustls::ServerConnection::new(Arc::new(server_config(server).unwrap())).unwrap();
        for _ in 0..10 {
            let mut bytes = Vec::new();
            client.write_tls(&mut bytes).unwrap();
            server.read_tls(&mut bytes.as_slice()).unwrap();
            server
                .process_new_packets()
                .map_err(|err| err.to_string())?;
            let mut bytes = Vec::new();
            server.write_tls(&mut bytes).unwrap();
            client.read_tls(&mut bytes.as_slice()).unwrap();
            client
                .process_new_packets()
                .map_err(|err| err.to_string())?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        Err("the handshake made no progress".into())
    }

    #[test]
    fn a_client_dialling_a_manager_refuses_a_worker_certificate_of_the_same_cluster() {
        let ca = ClusterCa::generate("cluster-a").unwrap();
        let manager = identity_of(&ca, 1, Role::Manager);
        let worker = identity_of(&ca, 2, Role::Worker);
        let other_worker = identity_of(&ca, 3, Role::Worker);

        handshake(client_config(&worker, Dialled::Manager).unwrap(), &manager).unwrap();
        let err =
            handshake(client_config(&manager, Dialled::Manager).unwrap(), &worker).unwrap_err();
        assert!(
            err.contains(&format!("worker node {}", NodeId(2)))
                && err.contains("a manager was dialled"),
            "{err}"
        );
        // The join request's configuration (it carries the join secret) refuses it too.
        handshake(pinned_config(ca.cert_pem()).unwrap(), &manager).unwrap();
        let err = handshake(pinned_config(ca.cert_pem()).unwrap(), &worker).unwrap_err();
        assert!(err.contains("a manager was dialled"), "{err}");
        // Reading a node's task output: that node, whatever its role, and no other.
        handshake(
            client_config(&manager, Dialled::Node(NodeId(2))).unwrap(),
            &worker,
        )
        .unwrap();
        let err = handshake(
            client_config(&manager, Dialled::Node(NodeId(2))).unwrap(),
            &other_worker,
        )
        .unwrap_err();
        assert!(
            err.contains(&format!("node {} was dialled", NodeId(2))),
            "{err}"
        );
    }

    fn files_of(ca: &ClusterCa, node_id: u64, trust: &str) -> NodeIdentity {
        let csr = NodeCsr::generate().unwrap();
        let chain_pem = ca
            .sign_csr(
                &csr.csr_pem,
                NodeId(node_id),
                Role::Manager,
                "cluster-a",
                Duration::from_secs(3600),
            )
            .unwrap();
        NodeIdentity {
            key_pem: csr.key_pem,
            chain_pem,
            ca_pem: trust.to_string(),
        }
    }

    #[test]
    fn a_cross_signed_successor_is_accepted_by_old_trust_and_the_old_ca_refused_after() {
        let old = ClusterCa::generate("cluster-a").unwrap();
        let (new, cross_signed) = old.successor("cluster-a").unwrap();
        assert_ne!(new.digest().unwrap(), old.digest().unwrap());
        let new = ClusterCa::from_pem(new.cert_pem(), new.key_pem())
            .unwrap()
            .with_cross_signed(Some(cross_signed));
        let both = format!("{}{}", new.cert_pem(), old.cert_pem());

        // Mid-rotation: a node still on the old CA and trusting only it, and a node
        // renewed by the new CA (its chain carries the cross-signed certificate).
        let stale = files_of(&old, 1, old.cert_pem());
        let renewed = files_of(&new, 2, &both);
        assert!(renewed.issued_by(&new.digest().unwrap()));
        assert!(!renewed.issued_by(&old.digest().unwrap()));
        assert!(stale.issued_by(&old.digest().unwrap()));
        assert_eq!(
            renewed.peer().unwrap().issuer,
            ca_subject(new.cert_pem()).unwrap()
        );
        assert_ne!(
            stale.peer().unwrap().issuer,
            ca_subject(new.cert_pem()).unwrap()
        );
        let stale = IdentityHandle::new(&stale).unwrap();
        let renewed = IdentityHandle::new(&renewed).unwrap();
        handshake(client_config(&stale, Dialled::Manager).unwrap(), &renewed).unwrap();
        handshake(client_config(&renewed, Dialled::Manager).unwrap(), &stale).unwrap();

        // Done: trusting only the new CA, a certificate of the old one is refused, both
        // as a server's and as a client's, from the next handshake on.
        renewed.set_trust(new.cert_pem()).unwrap();
        let err =
            handshake(client_config(&renewed, Dialled::Manager).unwrap(), &stale).unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
        let err =
            handshake(client_config(&stale, Dialled::Manager).unwrap(), &renewed).unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
        assert!(renewed.set_trust("").is_err());
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
