//! A node's TLS as a client and as a holder of certificates: the mTLS client it dials
//! other nodes with, the client pinned to the cluster's CA a join sends its secret over,
//! the probe that reads a manager's CA before anything secret is sent, and how a renewed
//! certificate or a new set of trusted CAs is taken in (in memory and in `identity.json`).
//!
//! Does not touch: which role a certificate should carry or when to renew (the worker
//! session decides), nor the server side (`server` and `hoist_pki::server_config`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hoist_pki::{IdentityHandle, NodeIdentity};
use hoist_types::Role;

use super::errors::LifecycleError;
use super::member::Member;
use super::records::{identity_file, write_secret_json};

/// The client for calls to other nodes, presenting this node's certificate.
///
/// Connections leave from the node's own listen address when it has a specific one, so
/// that peers (and a test's fault proxy) can tell nodes sharing a host apart by source.
pub(super) fn mtls_client(
    identity: &IdentityHandle,
    source_ip: Option<std::net::IpAddr>,
    dialled: hoist_pki::Dialled,
) -> anyhow::Result<reqwest::Client> {
    let client_config = hoist_pki::client_config(identity, dialled)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(client_config)
        .local_address(source_ip)
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .context("building the TLS client")
}

/// The client a join sends its secret with: it trusts only the CA the probe checked
/// against the token, and requires a manager's certificate.
pub(super) fn pinned_join_client(
    ca_pem: &str,
    source_ip: std::net::IpAddr,
) -> Result<reqwest::Client, LifecycleError> {
    reqwest::Client::builder()
        .local_address(source_ip)
        .use_preconfigured_tls(
            hoist_pki::pinned_config(ca_pem)
                .map_err(|err| LifecycleError::Internal(err.to_string()))?,
        )
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|err| LifecycleError::Internal(err.to_string()))
}

/// Connects to the manager without trusting it, reads the CA it presents, and checks
/// the digest against the token's before anything secret is sent.
pub(super) async fn probe_ca(addr: &str, expected_digest: &str) -> Result<String, LifecycleError> {
    let (config, captured) =
        hoist_pki::join_probe_config().map_err(|err| LifecycleError::Internal(err.to_string()))?;
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| {
            LifecycleError::Unreachable(format!("cannot reach the manager at {addr}: timed out"))
        })?
        .map_err(|err| {
            LifecycleError::Unreachable(format!("cannot reach the manager at {addr}: {err}"))
        })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(hoist_pki::SERVER_NAME)
        .map_err(|err| LifecycleError::Internal(err.to_string()))?;
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, stream))
        .await
        .map_err(|_| LifecycleError::Unreachable(format!("TLS handshake with {addr} timed out")))?
        .map_err(|err| {
            LifecycleError::Unreachable(format!("TLS handshake with {addr} failed: {err}"))
        })?;
    let Some((digest, pem)) = captured.ca() else {
        return Err(LifecycleError::Unreachable(format!(
            "the manager at {addr} presented no certificate chain: refusing to join"
        )));
    };
    if !digest.eq_ignore_ascii_case(expected_digest) {
        return Err(LifecycleError::Untrusted(format!(
            "the manager at {addr} presented a CA whose digest does not match the token: refusing to join"
        )));
    }
    // Unverified here, so only for the message: the join request's own connection
    // verifies the chain and the role before the secret leaves (`pinned_config`).
    match captured.unverified_leaf() {
        Some(Ok(server)) if server.role != Role::Manager => Err(LifecycleError::Untrusted(format!(
            "the node at {addr} presented a {} certificate (node {}), not a manager's: only a manager admits nodes, so the join secret was not sent",
            server.role, server.node_id
        ))),
        Some(Err(err)) => Err(LifecycleError::Untrusted(format!(
            "the node at {addr} presented no node certificate of a cluster ({err}): the join secret was not sent"
        ))),
        _ => Ok(pem),
    }
}

impl Member {
    /// Takes a renewed certificate: on disk first, then for new handshakes and for the
    /// client to managers (pooled connections keep the identity they were opened with).
    pub(super) fn install_certificate(
        &self,
        key_pem: String,
        chain_pem: String,
    ) -> Result<(), String> {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let renewed = NodeIdentity {
            key_pem,
            chain_pem,
            ca_pem: files.ca_pem.clone(),
        };
        let peer = renewed.peer().map_err(|err| err.to_string())?;
        if peer.node_id != self.node_id {
            return Err(format!(
                "the renewed certificate is for node {}, not this one",
                peer.node_id
            ));
        }
        write_secret_json(&identity_file(&self.data_dir), &renewed)
            .map_err(|err| format!("{err:#}"))?;
        self.identity
            .replace(&renewed)
            .map_err(|err| err.to_string())?;
        let http = mtls_client(&self.identity, self.source_ip, hoist_pki::Dialled::Manager)
            .map_err(|err| format!("{err:#}"))?;
        *self.http.write().unwrap_or_else(|p| p.into_inner()) = http;
        *self.certificate.lock().unwrap_or_else(|p| p.into_inner()) = peer;
        *files = renewed;
        Ok(())
    }

    /// Trusts exactly the CAs in `trust_pem` from the next handshake on.
    pub(super) fn set_trust(&self, trust_pem: &str) -> Result<(), String> {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if files.ca_pem == trust_pem {
            return Ok(());
        }
        let updated = NodeIdentity {
            ca_pem: trust_pem.to_string(),
            ..files.clone()
        };
        self.identity
            .set_trust(trust_pem)
            .map_err(|err| err.to_string())?;
        // Kept on disk too, so a restart does not come back trusting a dropped CA; if it
        // cannot be, the node stays as it was and the next heartbeat tries again.
        if let Err(err) = write_secret_json(&identity_file(&self.data_dir), &updated) {
            let _ = self.identity.set_trust(&files.ca_pem);
            return Err(format!("{err:#}"));
        }
        let cas = trust_pem.matches("BEGIN CERTIFICATE").count();
        tracing::info!(node = %self.node_id, cas, "trusted CAs updated");
        *files = updated;
        Ok(())
    }
}
