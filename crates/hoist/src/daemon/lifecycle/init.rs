//! `hoist init`: this node creates a cluster (its CA, tokens and manager certificate),
//! starts its listener and a one-voter Raft group, and proposes `InitCluster`.
//!
//! Does not touch: what the cluster's first state holds (`hoist_manager::bootstrap_cluster`),
//! nor which settings are in range (`ClusterSettings::for_init` says).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::anyhow;
use hoist_api::{InitRequest, InitResponse};
use hoist_manager::{bootstrap_cluster, BootstrapConfig};
use hoist_state::ClusterSettings;

use crate::daemon::errors::LifecycleError;
use crate::daemon::records::{
    identity_file, node_file, raft_dir, write_json, write_secret_json, NodeRecord,
};
use crate::daemon::Daemon;

impl Daemon {
    pub async fn init(
        self: &Arc<Self>,
        request: InitRequest,
    ) -> Result<InitResponse, LifecycleError> {
        let _guard = self.lifecycle.lock().await;
        if self.member().is_some() {
            return Err(LifecycleError::AlreadyInCluster {
                hint: "use `hoist leave` before creating a new one",
            });
        }
        let advertise_addr = self.advertise_addr_of(request.advertise_addr)?;
        let settings = ClusterSettings::for_init(
            request.heartbeat_period_ms,
            request.heartbeat_grace,
            request.cert_expiry_secs,
        )
        .map_err(LifecycleError::BadRequest)?;
        let bootstrap = bootstrap_cluster(&BootstrapConfig {
            hostname: self.config.hostname.clone(),
            advertise_addr: advertise_addr.clone(),
            settings,
        })
        .map_err(|err| LifecycleError::Internal(err.to_string()))?;
        let record = NodeRecord {
            node_id: bootstrap.node_id,
            cluster_id: bootstrap.cluster_id.clone(),
            hostname: self.config.hostname.clone(),
            advertise_addr: advertise_addr.clone(),
            managers: vec![advertise_addr.clone()],
            manager_ids: vec![bootstrap.node_id],
            // Written only once this node leads the new group.
            raft_voter: Some(true),
        };
        let result = async {
            let _ = std::fs::remove_dir_all(raft_dir(&self.config.data_dir));
            let member = self
                .start_member(record.clone(), bootstrap.identity.clone())
                .await?;
            let manager = self.start_manager(&member).await?;
            manager
                .raft()
                .initialize(&advertise_addr)
                .await
                .map_err(|err| anyhow!("starting raft: {err}"))?;
            manager
                .propose(bootstrap.change.clone())
                .await
                .map_err(|err| anyhow!("recording the new cluster: {err}"))?;
            member.voter_confirmed.store(true, Ordering::SeqCst);
            // Written last: a crash before this point leaves a node that is not in a
            // cluster, which `init` can simply be run on again.
            write_secret_json(&identity_file(&self.config.data_dir), &bootstrap.identity)?;
            write_json(&node_file(&self.config.data_dir), &record)?;
            self.start_session(&member);
            anyhow::Ok(())
        }
        .await;
        if let Err(err) = result {
            self.abandon_membership().await;
            return Err(err.into());
        }
        tracing::info!(node = %bootstrap.node_id, cluster = %bootstrap.cluster_id, "cluster initialized");
        Ok(bootstrap.response)
    }

    /// The address this node advertises: the one given (checked), or the default.
    pub(super) fn advertise_addr_of(
        &self,
        given: Option<String>,
    ) -> Result<String, LifecycleError> {
        match given {
            Some(addr) => {
                crate::daemon::settings::validate_addr(&addr).map_err(|err| {
                    LifecycleError::BadRequest(format!("--advertise-addr: {err:#}"))
                })?;
                Ok(addr)
            }
            None => self.default_advertise(),
        }
    }
}
