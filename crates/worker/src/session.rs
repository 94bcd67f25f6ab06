//! The heartbeat session loop.

use crate::backoff::Backoff;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hoist_api::endpoint::{Heartbeat, Renew};
use hoist_api::{
    ErrorBody, HeartbeatRequest, HeartbeatResponse, NotLeaderBody, RenewRequest, RenewResponse,
};
use hoist_pki::NodeCsr;
use hoist_types::clock::now_secs as unix_now;
use hoist_types::{EngineInfo, NodeId, Role};
use tokio::sync::watch;

/// The node's current certificate, as far as the session needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldCertificate {
    pub role: Role,
    /// Expiry, unix seconds.
    pub not_after: i64,
    /// How long it was issued for, in seconds, when the node knows; otherwise the
    /// cluster's current certificate lifetime (from the heartbeat answer) stands in.
    pub lifetime_secs: Option<u64>,
}

/// What the session needs from the node that runs it.
pub trait SessionHost: Send + Sync + 'static {
    fn node_id(&self) -> NodeId;
    /// The current mutual-TLS client (it follows certificate renewals).
    fn http(&self) -> reqwest::Client;
    fn advertise_addr(&self) -> String;
    fn engine(&self) -> EngineInfo;
    /// Published ports this node's mesh could not open, for the managers to show.
    fn port_faults(&self) -> Vec<hoist_types::node::PortFault> {
        Vec::new()
    }
    /// What the current certificate says about itself.
    fn certificate(&self) -> HeldCertificate;
    fn raft_running(&self) -> bool;
    fn managers(&self) -> Vec<String>;
    /// The managers' addresses (where to beat) and node ids (who may call this node).
    fn set_managers(&self, managers: Vec<String>, manager_ids: Vec<NodeId>);
    /// Installs a renewed certificate for `key_pem`.
    fn install_certificate(&self, key_pem: String, chain_pem: String) -> Result<(), String>;
    /// Trusts exactly the CA certificates in `trust_pem` from now on (a CA rotation).
    fn set_trust(&self, trust_pem: &str) -> Result<(), String>;
    /// Whether the current certificate was signed by the CA whose digest is `ca_digest`.
    fn issued_by(&self, ca_digest: &str) -> bool;
    /// Starts or stops being a manager to match `role`.
    fn become_role(&self, role: Role) -> impl Future<Output = Result<(), String>> + Send;
    /// The cluster no longer knows this node.
    fn removed(&self, message: String);
}

/// What the session last learned, for `info` and for tests.
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    pub leader_addr: Option<String>,
    pub last_beat_ok: bool,
    /// The heartbeat period the managers last asked for (0 until the first beat).
    pub heartbeat_period_ms: u64,
}

/// How long before the end of a certificate's life it is renewed: at half its life, as
/// Swarm does, so a node that is down for a while still has time to renew.
fn should_renew(not_after: i64, lifetime_secs: u64, now: i64) -> bool {
    let remaining = not_after - now;
    remaining < (lifetime_secs / 2) as i64
}

enum BeatOutcome {
    Ok(HeartbeatResponse),
    NotLeader(Option<String>),
    Refused(String),
    Unreachable(String),
}

async fn beat<H: SessionHost>(host: &H, addr: &str) -> BeatOutcome {
    let cert_role = host.certificate().role;
    let request = HeartbeatRequest {
        addr: host.advertise_addr(),
        engine: host.engine(),
        resources: crate::host::resources(),
        port_faults: host.port_faults(),
        cert_role,
        raft_running: host.raft_running(),
    };
    let url = Heartbeat::url(addr, &());
    let response = match host
        .http()
        .post(&url)
        .json(&request)
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(response) => response,
        Err(err) => return BeatOutcome::Unreachable(err.to_string()),
    };
    let status = response.status();
    if status.is_success() {
        return match response.json().await {
            Ok(body) => BeatOutcome::Ok(body),
            Err(err) => BeatOutcome::Unreachable(format!("bad heartbeat response: {err}")),
        };
    }
    let text = response.text().await.unwrap_or_default();
    if status == reqwest::StatusCode::MISDIRECTED_REQUEST {
        let leader = serde_json::from_str::<NotLeaderBody>(&text)
            .ok()
            .and_then(|body| body.leader_addr);
        return BeatOutcome::NotLeader(leader);
    }
    let message = ErrorBody::message_of(text);
    if status == reqwest::StatusCode::FORBIDDEN {
        BeatOutcome::Refused(message)
    } else {
        BeatOutcome::Unreachable(format!("{status}: {message}"))
    }
}

async fn renew<H: SessionHost>(host: &H, addr: &str) -> Result<Role, String> {
    let csr = NodeCsr::generate().map_err(|err| err.to_string())?;
    let url = Renew::url(addr, &());
    let response = host
        .http()
        .post(&url)
        .json(&RenewRequest {
            csr_pem: csr.csr_pem,
        })
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|err| err.to_string())?;
    if !response.status().is_success() {
        let status = response.status();
        return Err(format!(
            "{status}: {}",
            response.text().await.unwrap_or_default()
        ));
    }
    let renewed: RenewResponse = response.json().await.map_err(|err| err.to_string())?;
    host.install_certificate(csr.key_pem, renewed.chain_pem)?;
    Ok(renewed.role)
}

/// Runs until `shutdown` turns true or the cluster says this node was removed.
pub async fn run_session<H: SessionHost>(
    host: Arc<H>,
    state: watch::Sender<SessionState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let node_id = host.node_id();
    let mut period = Duration::from_secs(1);
    let mut target: Option<String> = None;
    let mut next_manager = 0usize;
    // Retries after a failed or redirected beat: jittered, so the workers of a cluster
    // do not all knock on the new leader in the same instant.
    let mut retry = Backoff::new(period / 4, period);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let addr = match target.clone() {
            Some(addr) => addr,
            None => {
                let managers = host.managers();
                if managers.is_empty() {
                    tracing::warn!(node = %node_id, "no manager address known");
                    String::new()
                } else {
                    next_manager = (next_manager + 1) % managers.len();
                    managers[next_manager].clone()
                }
            }
        };
        let mut retry_now = false;
        if !addr.is_empty() {
            match beat(host.as_ref(), &addr).await {
                BeatOutcome::Ok(response) => {
                    state.send_modify(|state| {
                        state.leader_addr = Some(addr.clone());
                        state.last_beat_ok = true;
                    });
                    target = Some(addr.clone());
                    period = Duration::from_millis(response.period_ms.max(50));
                    retry = Backoff::new(period / 4, period);
                    state.send_modify(|state| state.heartbeat_period_ms = response.period_ms);
                    if !response.managers.is_empty() {
                        host.set_managers(response.managers.clone(), response.manager_ids.clone());
                    }
                    follow_up(host.as_ref(), &addr, &response).await;
                }
                BeatOutcome::NotLeader(leader) => {
                    tracing::debug!(node = %node_id, from = %addr, leader = ?leader, "redirected to the leader");
                    retry_now = leader.as_deref() != Some(addr.as_str()) && leader.is_some();
                    target = leader;
                }
                BeatOutcome::Refused(message) => {
                    tracing::error!(node = %node_id, %message, "the cluster refused this node");
                    state.send_modify(|state| state.last_beat_ok = false);
                    host.removed(message);
                    return;
                }
                BeatOutcome::Unreachable(reason) => {
                    tracing::debug!(node = %node_id, manager = %addr, %reason, "heartbeat failed");
                    state.send_modify(|state| state.last_beat_ok = false);
                    target = None;
                    retry_now = true;
                }
            }
        }
        let wait = if retry_now {
            // Try the next manager quickly, but not in a hot loop when all are down.
            retry.next()
        } else {
            period
        };
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Brings the node's trusted CAs, certificate and role in line with what the leader
/// said.
async fn follow_up<H: SessionHost>(host: &H, leader: &str, response: &HeartbeatResponse) {
    let node_id = host.node_id();
    // Trust first: a rotation's new CA must be trusted before certificates of it arrive
    // (the cross-signed certificate covers nodes that have not heard yet).
    if !response.trust_pem.is_empty() {
        if let Err(err) = host.set_trust(&response.trust_pem) {
            tracing::warn!(node = %node_id, error = %err, "updating the trusted CAs");
        }
    }
    let other_ca = !response.ca_digest.is_empty() && !host.issued_by(&response.ca_digest);
    let certificate = host.certificate();
    let lifetime = certificate
        .lifetime_secs
        .unwrap_or(response.cert_expiry_secs);
    if certificate.role != response.desired_role
        || other_ca
        || should_renew(certificate.not_after, lifetime, unix_now())
    {
        match renew(host, leader).await {
            Ok(role) => tracing::info!(node = %node_id, %role, "certificate renewed"),
            Err(err) => {
                tracing::warn!(node = %node_id, error = %err, "certificate renewal failed");
                return;
            }
        }
    }
    let cert_role = host.certificate().role;
    let wants_raft = response.desired_role == Role::Manager && cert_role == Role::Manager;
    if wants_raft && response.raft_rejoin && host.raft_running() {
        // Outside the leader's group, this store is stale: it must not carry on (with a
        // membership of its own it could elect itself), so it goes, and the node joins
        // the group afresh just below.
        tracing::warn!(node = %node_id, "this manager is not in the raft group: restarting raft with an empty store");
        if let Err(err) = host.become_role(Role::Worker).await {
            tracing::warn!(node = %node_id, error = %err, "stopping raft");
            return;
        }
    }
    if wants_raft != host.raft_running() || (wants_raft && cert_role == Role::Manager) {
        if let Err(err) = host
            .become_role(if wants_raft {
                Role::Manager
            } else {
                Role::Worker
            })
            .await
        {
            tracing::warn!(node = %node_id, error = %err, "changing role");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::should_renew;

    #[test]
    fn certificates_renew_at_half_life() {
        let lifetime = 90 * 24 * 3600;
        let now = 1_000_000;
        assert!(!should_renew(now + lifetime as i64, lifetime, now));
        assert!(!should_renew(now + lifetime as i64 / 2 + 10, lifetime, now));
        assert!(should_renew(now + lifetime as i64 / 2 - 10, lifetime, now));
        assert!(should_renew(now - 1, lifetime, now));
    }
}
