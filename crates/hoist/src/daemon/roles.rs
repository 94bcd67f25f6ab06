//! Role switching: starting Raft and the manager's loops when the cluster wants this
//! node as a manager (and having the leader confirm it as a voter), stopping them and
//! dropping the store when it wants a worker, and the host the worker session drives
//! this through (`SessionHost`), which also takes renewed certificates and trust.
//!
//! Does not touch: joining or leaving the cluster (`lifecycle`), how a certificate is
//! installed (`tls`), nor what the manager decides (`hoist_manager`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use hoist_api::{NotLeaderBody, RaftJoinRequest};
use hoist_manager::Manager;
use hoist_raft::RaftNode;
use hoist_types::{EngineInfo, NodeId, Role};
use hoist_worker::{run_session, SessionHost};
use tokio::sync::watch;

use super::member::{ManagerRuntime, Member};
use super::records::raft_dir;
use super::Daemon;

/// How long a stopping manager's loops and background proposals may take to finish.
const MANAGER_LOOPS_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl Daemon {
    /// Starts the worker session, through which the cluster says which role it wants.
    pub(super) fn start_session(self: &Arc<Self>, member: &Arc<Member>) {
        let host = Arc::new(SessionHandle {
            daemon: self.clone(),
            member: member.clone(),
        });
        let handle = tokio::spawn(run_session(
            host,
            member.session_state.clone(),
            member.stop.subscribe(),
        ));
        member.track([handle]);
    }

    /// Starts Raft and the manager's loops on this member.
    pub(super) async fn start_manager(&self, member: &Arc<Member>) -> anyhow::Result<Manager> {
        if let Some(runtime) = member
            .manager
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(runtime.manager.clone());
        }
        let raft = RaftNode::start(
            member.node_id.0,
            &raft_dir(&member.data_dir),
            self.config.raft,
            member.http(),
        )
        .await?;
        let manager = Manager::new(member.node_id, raft);
        let (stop, stop_rx) = watch::channel(false);
        {
            let watcher = manager.clone();
            let stop_rx = stop_rx.clone();
            tokio::spawn(async move { watcher.run_node_watch(stop_rx).await });
        }
        {
            let raft = manager.raft().clone();
            let fatal = self.fatal.clone();
            let node_id = member.node_id;
            let mut stop_rx = stop_rx.clone();
            tokio::spawn(async move {
                tokio::select! {
                    reason = raft.fatal() => {
                        tracing::error!(node = %node_id, %reason, "raft stopped on a fatal error");
                        fatal.send_replace(Some(reason));
                    }
                    _ = stop_rx.changed() => {}
                }
            });
        }
        {
            let orchestrator = manager.clone();
            tokio::spawn(async move { orchestrator.run_orchestrator(stop_rx).await });
        }
        *member.manager.write().unwrap_or_else(|p| p.into_inner()) = Some(ManagerRuntime {
            manager: manager.clone(),
            stop,
        });
        tracing::info!(node = %member.node_id, "manager started");
        Ok(manager)
    }

    /// Stops the manager's loops (waiting for them up to a grace), then Raft, keeping the
    /// store.
    pub(super) async fn halt_manager(&self, member: &Arc<Member>) -> bool {
        let runtime = member
            .manager
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match runtime {
            Some(runtime) => {
                let _ = runtime.stop.send(true);
                // The leader's loops and background proposals end before Raft does, so
                // none is cut off halfway through a write.
                runtime.manager.shutdown(MANAGER_LOOPS_GRACE).await;
                runtime.manager.raft().shutdown().await;
                member.voter_confirmed.store(false, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Stops Raft here and forgets its store: a demoted manager that comes back later
    /// joins afresh, never with a stale membership.
    pub(super) async fn stop_manager(&self, member: &Arc<Member>) {
        if self.halt_manager(member).await {
            // Recorded before the store goes, so a crash in between never leaves a
            // node that believes it is a voter without its store.
            member.raft_voter.store(false, Ordering::SeqCst);
            if let Err(err) = member.save_record() {
                tracing::warn!(error = %err, "recording that this node is no longer a raft voter");
            }
            if let Err(err) = std::fs::remove_dir_all(raft_dir(&member.data_dir)) {
                tracing::warn!(error = %err, "removing the raft store");
            }
            tracing::info!(node = %member.node_id, "manager stopped: this node is now a worker");
        }
    }

    /// Asks the leader to make this manager a voter, following redirects.
    pub(super) async fn request_voter(&self, member: &Arc<Member>) -> anyhow::Result<()> {
        let raft = member
            .manager()
            .map(|manager| manager.raft().clone())
            .context("raft is not running on this node")?;
        if let Some(message) = member
            .raft_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            bail!("{message}");
        }
        let body = RaftJoinRequest {
            addr: member.advertise_addr.clone(),
            unconfirmed_store: !raft.may_vote(),
            raft_incarnation: raft.incarnation(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut candidates = member.known_managers();
        let mut last_error = String::from("no manager known");
        while tokio::time::Instant::now() < deadline {
            let Some(addr) = candidates.pop() else {
                candidates = member.known_managers();
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            if addr == member.advertise_addr {
                continue;
            }
            let response = member
                .http()
                .post(hoist_api::endpoint::RaftJoinMe::url(&addr, &()))
                .json(&body)
                .timeout(Duration::from_secs(20))
                .send()
                .await;
            match response {
                Ok(response) if response.status().is_success() => {
                    member.confirm_voter(&raft)?;
                    tracing::info!(node = %member.node_id, leader = %addr, "this manager is now a raft voter");
                    return Ok(());
                }
                Ok(response) if response.status() == reqwest::StatusCode::CONFLICT => {
                    // The leader refused this voter for good (it came back with a blank
                    // store): asking again on every heartbeat cannot change that.
                    let text = response.text().await.unwrap_or_default();
                    let message = format!(
                        "the leader at {addr} refused this manager: {}",
                        hoist_api::ErrorBody::message_of(text)
                    );
                    tracing::error!(node = %member.node_id, %message, "not a raft voter; this node does not vote");
                    *member
                        .raft_refused
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
                    bail!("{message}");
                }
                Ok(response) if response.status() == reqwest::StatusCode::FORBIDDEN => {
                    // The cluster no longer wants this node as a manager (a demotion
                    // committed meanwhile): the next heartbeat answer says so, and asking
                    // again until the deadline would only hold up the session.
                    let text = response.text().await.unwrap_or_default();
                    bail!(
                        "the manager at {addr} did not add this node: {}",
                        hoist_api::ErrorBody::message_of(text)
                    );
                }
                Ok(response) if response.status() == reqwest::StatusCode::MISDIRECTED_REQUEST => {
                    let body: Option<NotLeaderBody> = response.json().await.ok();
                    if let Some(leader) = body.and_then(|body| body.leader_addr) {
                        candidates.push(leader);
                    } else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    last_error = format!(
                        "{addr}: {status}: {}",
                        response.text().await.unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => last_error = format!("{addr}: {err}"),
            }
        }
        bail!("could not become a raft voter: {last_error}")
    }

    /// Runs Raft here as a confirmed voter, as the cluster wants: starts it if it is not
    /// running, then has the leader confirm this manager unless it already has.
    async fn become_manager(&self, member: &Arc<Member>) -> Result<(), String> {
        if member.is_manager() && member.voter_confirmed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _guard = self.lifecycle.lock().await;
        if !member.is_manager() {
            let _ = std::fs::remove_dir_all(raft_dir(&member.data_dir));
            self.start_manager(member)
                .await
                .map_err(|err| format!("{err:#}"))?;
        }
        let Some(raft) = member.manager().map(|manager| manager.raft().clone()) else {
            return Err("raft is not running on this node".into());
        };
        // A voter in the membership whose store began blank here is not
        // confirmed by that: it may be a voter that lost its store, which only
        // the leader can tell apart (and refuses).
        if raft.may_vote() && raft.membership().voters.contains_key(&member.node_id.0) {
            return member
                .confirm_voter(&raft)
                .map_err(|err| format!("{err:#}"));
        }
        self.request_voter(member)
            .await
            .map_err(|err| format!("{err:#}"))
    }

    /// Stops Raft here, as the cluster wants of a worker.
    async fn become_worker(&self, member: &Arc<Member>) {
        if !member.is_manager() {
            return;
        }
        let _guard = self.lifecycle.lock().await;
        self.stop_manager(member).await;
    }
}

/// Asks the other known managers whether they still accept this node; returns the
/// refusal if one says no. Unreachable managers say nothing.
pub(super) async fn refused_by_peers(member: &Arc<Member>) -> Option<String> {
    let request = hoist_api::HeartbeatRequest {
        addr: member.advertise_addr.clone(),
        engine: EngineInfo::default(),
        resources: Default::default(),
        port_faults: Vec::new(),
        cert_role: member.cert_role(),
        raft_running: false,
    };
    for addr in member.managers() {
        if addr == member.advertise_addr {
            continue;
        }
        let response = member
            .http()
            .post(hoist_api::endpoint::Heartbeat::url(&addr, &()))
            .json(&request)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if let Ok(response) = response {
            if response.status() == reqwest::StatusCode::FORBIDDEN {
                let text = response.text().await.unwrap_or_default();
                let message = hoist_api::ErrorBody::message_of(text);
                return Some(message);
            }
        }
    }
    None
}

/// The daemon as the worker session sees it.
struct SessionHandle {
    daemon: Arc<Daemon>,
    member: Arc<Member>,
}

impl SessionHost for SessionHandle {
    fn node_id(&self) -> NodeId {
        self.member.node_id
    }

    fn http(&self) -> reqwest::Client {
        self.member.http()
    }

    fn advertise_addr(&self) -> String {
        self.member.advertise_addr.clone()
    }

    fn engine(&self) -> EngineInfo {
        let mut engine = self.member.engine.clone();
        engine.drivers = self.member.agent.driver_names();
        engine
    }

    fn port_faults(&self) -> Vec<hoist_types::node::PortFault> {
        self.member.port_faults.borrow().clone()
    }

    fn certificate(&self) -> hoist_worker::HeldCertificate {
        let certificate = self
            .member
            .certificate
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        hoist_worker::HeldCertificate {
            role: certificate.role,
            not_after: certificate.not_after,
            lifetime_secs: None,
        }
    }

    fn raft_running(&self) -> bool {
        self.member.is_manager()
    }

    fn managers(&self) -> Vec<String> {
        self.member.known_managers()
    }

    fn set_managers(&self, managers: Vec<String>, manager_ids: Vec<NodeId>) {
        let changed = {
            let mut current = self
                .member
                .managers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut current_ids = self
                .member
                .manager_ids
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let changed = *current != managers || *current_ids != manager_ids;
            *current = managers;
            *current_ids = manager_ids;
            changed
        };
        if changed {
            if let Err(err) = self.member.save_record() {
                tracing::warn!(error = %err, "saving the manager list");
            }
        }
    }

    fn install_certificate(&self, key_pem: String, chain_pem: String) -> Result<(), String> {
        self.member.install_certificate(key_pem, chain_pem)
    }

    fn set_trust(&self, trust_pem: &str) -> Result<(), String> {
        self.member.set_trust(trust_pem)
    }

    fn issued_by(&self, ca_digest: &str) -> bool {
        self.member
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .issued_by(ca_digest)
    }

    async fn become_role(&self, role: Role) -> Result<(), String> {
        match role {
            Role::Manager => self.daemon.become_manager(&self.member).await,
            Role::Worker => {
                self.daemon.become_worker(&self.member).await;
                Ok(())
            }
        }
    }

    fn removed(&self, message: String) {
        *self
            .member
            .removed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(message);
        // As Swarm does when a node leaves: the cluster has given this node's tasks to
        // others, so copies left running, or a mesh still answering on published ports
        // from routes that no longer update, would only serve stale versions.
        let member = Arc::clone(&self.member);
        tokio::spawn(async move {
            // Side by side: a long request still streaming through the mesh must not keep
            // the tasks running.
            tokio::join!(member.mesh.shutdown(), member.agent.stop_all());
            tracing::warn!(node = %member.node_id, "removed from the cluster: the mesh and every task are stopped");
        });
    }
}
