//! Disaster recovery: `hoist backup` (a linearizable copy of the state from a manager),
//! `hoist restore FILE` (a fresh daemon takes over the identity of the manager the backup
//! came from and leads a new one-voter group with its state), and
//! `hoist init --force-new-cluster` (a surviving manager's log becomes a new one-voter
//! group; the other managers are dropped).
//!
//! Does not touch: how a store is read whole and reseeded (`hoist_raft::recovery`), nor
//! what `ForceNewCluster` changes in the state (`hoist_state`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hoist_api::{BackupFile, ForceNewClusterResponse, RestoreRequest};
use hoist_pki::{NodeCsr, NodeIdentity};
use hoist_state::ClusterState;
use hoist_types::{NodeId, Role};

use crate::daemon::errors::LifecycleError;
use crate::daemon::member::Member;
use crate::daemon::records::{
    identity_file, node_file, raft_dir, write_json, write_secret_json, NodeRecord,
};
use crate::daemon::Daemon;

impl Daemon {
    /// `hoist init --force-new-cluster`: this manager's log becomes a new one-voter
    /// group with every node, service and task kept; the other managers are dropped.
    pub async fn force_new_cluster(
        self: &Arc<Self>,
        dry_run: bool,
    ) -> Result<ForceNewClusterResponse, LifecycleError> {
        let _guard = self.lifecycle.lock().await;
        let member = self.member().ok_or(LifecycleError::NotInCluster(
            "this node is not part of a cluster: it has no state to recover (use `hoist init`, or `hoist restore FILE`)",
        ))?;
        let manager = member.manager().ok_or(LifecycleError::NotManager(
            "this node is not a manager: it holds no copy of the cluster state to recover from",
        ))?;
        let quorum =
            tokio::time::timeout(Duration::from_secs(3), manager.raft().linearizable_read()).await;
        if let Ok(Ok(())) = quorum {
            let leader = manager.raft().leader_addr().unwrap_or_default();
            return Err(LifecycleError::QuorumReachable { leader });
        }
        let node_id = member.node_id;
        if dry_run {
            return Ok(manager.local(|state| recovery_summary(state, node_id, false)));
        }
        self.halt_manager(&member).await;
        let dir = raft_dir(&member.data_dir);
        let addr = member.advertise_addr.clone();
        let recovered = tokio::task::spawn_blocking(move || {
            let recovered = hoist_raft::read_full_state(&dir)?;
            hoist_raft::reseed_single_voter(&dir, node_id.0, &addr, &recovered)?;
            Ok::<_, hoist_raft::StoreError>(recovered)
        })
        .await
        .map_err(|err| LifecycleError::Internal(err.to_string()))?
        .map_err(|err| LifecycleError::Internal(format!("rewriting the raft store: {err}")))?;
        let response = recovery_summary(&recovered.state, node_id, true);
        self.start_leading_alone(&member, other_managers(&recovered.state, node_id))
            .await?;
        tracing::warn!(node = %node_id, dropped = ?response.dropped_managers, "forced a new cluster from this manager's state");
        Ok(response)
    }

    /// Starts Raft on a reseeded store, waits to lead, and records the dropped managers.
    async fn start_leading_alone(
        &self,
        member: &Arc<Member>,
        dropped: Vec<NodeId>,
    ) -> Result<(), LifecycleError> {
        let manager = self.start_manager(member).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !manager.is_leader() {
            if tokio::time::Instant::now() > deadline {
                return Err(LifecycleError::Internal(
                    "this manager did not become the leader of the new group".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        manager
            .propose(hoist_state::Change::ForceNewCluster {
                survivor: member.node_id,
                dropped,
                at_ms: hoist_manager::now_ms(),
            })
            .await
            .map_err(|err| {
                LifecycleError::Internal(format!("recording the new membership: {err}"))
            })?;
        member.voter_confirmed.store(true, Ordering::SeqCst);
        member.raft_voter.store(true, Ordering::SeqCst);
        *member.managers.lock().unwrap_or_else(|p| p.into_inner()) =
            vec![member.advertise_addr.clone()];
        *member.manager_ids.lock().unwrap_or_else(|p| p.into_inner()) = vec![member.node_id];
        member.save_record()?;
        Ok(())
    }

    /// A consistent copy of the cluster state, from any manager.
    pub async fn backup(&self) -> Result<BackupFile, LifecycleError> {
        let member = self.member().ok_or_else(|| {
            LifecycleError::Unavailable("this node is not part of a cluster".into())
        })?;
        let manager = member.manager().ok_or_else(|| {
            LifecycleError::Unavailable(
                "this node is not a manager: run the backup on a manager".into(),
            )
        })?;
        let state = manager
            .read(ClusterState::clone)
            .await
            .map_err(|err| LifecycleError::Unavailable(err.to_string()))?;
        Ok(BackupFile::new(
            hoist_manager::now_ms(),
            member.node_id,
            state,
        ))
    }

    /// `hoist restore FILE` on a daemon in no cluster: it takes over the identity of the
    /// manager the backup came from and leads a new one-voter group with its state.
    pub async fn restore(
        self: &Arc<Self>,
        request: RestoreRequest,
    ) -> Result<ForceNewClusterResponse, LifecycleError> {
        let _guard = self.lifecycle.lock().await;
        if self.member().is_some() {
            return Err(LifecycleError::AlreadyInCluster {
                hint: "restore on a fresh daemon (or `hoist leave` first)",
            });
        }
        let backup = request.backup;
        if let Err(err) = hoist_state::persist::check_version("the backup", backup.format) {
            return Err(LifecycleError::BadRequest(err.to_string()));
        }
        let state = backup.state;
        let node_id = backup.from_node;
        let node = state.nodes.get(&node_id).cloned().ok_or_else(|| {
            LifecycleError::BadRequest(format!(
                "the backup's manager {node_id} is not in its own state: the file is damaged"
            ))
        })?;
        let ca = state.ca.clone().ok_or_else(|| {
            LifecycleError::BadRequest("the backup holds no CA: the file is damaged".into())
        })?;
        let advertise_addr = match request.advertise_addr {
            Some(addr) => addr,
            None => self.default_advertise()?,
        };
        let files = restored_identity(&state, &ca, node_id)?;
        let record = NodeRecord {
            node_id,
            cluster_id: state.cluster_id.clone(),
            hostname: node.hostname.clone(),
            advertise_addr: advertise_addr.clone(),
            managers: vec![advertise_addr.clone()],
            manager_ids: vec![node_id],
            // Set once it leads the restored group (`start_leading_alone`).
            raft_voter: Some(false),
        };
        let response = recovery_summary(&state, node_id, true);
        if let Err(err) = self.install_restored(state, record, files).await {
            self.abandon_membership().await;
            return Err(err.into());
        }
        tracing::warn!(node = %node_id, "restored the cluster from a backup");
        Ok(response)
    }

    /// Reseeds the store with the backup's state, writes the node's files, and leads.
    async fn install_restored(
        self: &Arc<Self>,
        state: ClusterState,
        record: NodeRecord,
        files: NodeIdentity,
    ) -> anyhow::Result<()> {
        let node_id = record.node_id;
        let dropped = other_managers(&state, node_id);
        let dir = raft_dir(&self.config.data_dir);
        let _ = std::fs::remove_dir_all(&dir);
        let recovered = hoist_raft::RecoveredState {
            state,
            last_log_id: None,
            term: 0,
        };
        let addr = record.advertise_addr.clone();
        tokio::task::spawn_blocking(move || {
            hoist_raft::reseed_single_voter(&dir, node_id.0, &addr, &recovered)
        })
        .await??;
        write_secret_json(&identity_file(&self.config.data_dir), &files)?;
        write_json(&node_file(&self.config.data_dir), &record)?;
        let member = self.start_member(record, files).await?;
        self.start_leading_alone(&member, dropped)
            .await
            .map_err(|err| anyhow::anyhow!(err.to_string()))?;
        self.start_session(&member);
        Ok(())
    }
}

/// A new manager certificate for the backup's manager, from the CA in the backup.
fn restored_identity(
    state: &ClusterState,
    ca: &hoist_state::CaMaterial,
    node_id: NodeId,
) -> Result<NodeIdentity, LifecycleError> {
    let internal = |err: hoist_pki::PkiError| LifecycleError::Internal(err.to_string());
    let authority = hoist_pki::ClusterCa::from_pem(&ca.cert_pem, &ca.key_pem).map_err(internal)?;
    let csr = NodeCsr::generate().map_err(internal)?;
    let chain_pem = authority
        .sign_csr(
            &csr.csr_pem,
            node_id,
            Role::Manager,
            &state.cluster_id,
            Duration::from_secs(state.settings.cert_expiry_secs),
        )
        .map_err(internal)?;
    Ok(NodeIdentity {
        key_pem: csr.key_pem,
        chain_pem,
        ca_pem: ca.cert_pem.clone(),
    })
}

/// The managers other than the survivor, which a recovery drops.
fn other_managers(state: &ClusterState, survivor: NodeId) -> Vec<NodeId> {
    state
        .managers()
        .filter(|node| node.id != survivor)
        .map(|node| node.id)
        .collect()
}

/// What a recovery keeps (counts) and drops (the other managers), for the operator.
fn recovery_summary(
    state: &hoist_state::ClusterState,
    survivor: NodeId,
    applied: bool,
) -> ForceNewClusterResponse {
    ForceNewClusterResponse {
        node_id: survivor,
        cluster_id: state.cluster_id.clone(),
        nodes: state.nodes.len(),
        services: state.services.len(),
        tasks: state.tasks.len(),
        dropped_managers: state
            .managers()
            .filter(|node| node.id != survivor)
            .map(|node| node.hostname.clone())
            .collect(),
        applied,
    }
}
