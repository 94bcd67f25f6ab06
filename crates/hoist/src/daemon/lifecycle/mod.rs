//! The node's lifecycle: not in a cluster, then a member (after `init`, `join`,
//! `restore`, or a restart with a data directory), possibly a manager, and back out on
//! `leave`; `force-new-cluster` and `backup` for disaster recovery. Here: picking a node
//! up from its data directory (`resume`) and `leave`; `init` and `join` in [`init`] and
//! [`join`], backup, restore and force-new-cluster in [`recovery`].
//!
//! Lifecycle steps are serialized by one async mutex (`Daemon::lifecycle`). What a node
//! must find again after a restart is in `node.json` (who it is, where the managers are)
//! and `identity.json` (its key and certificates, mode 0600); a manager also has its Raft
//! store, without which a node that `node.json` records as a Raft voter refuses to start.
//!
//! Does not touch: what a member runs (`member`), Raft after the step (`roles`), nor HTTP
//! statuses (each failure is a `LifecycleError` variant; `errors` maps it).

mod init;
mod join;
mod recovery;

use std::sync::Arc;

use anyhow::bail;
use hoist_pki::NodeIdentity;
use hoist_types::Role;

use super::errors::LifecycleError;
use super::records::{identity_file, node_file, raft_dir, read_json, NodeRecord};
use super::roles::refused_by_peers;
use super::Daemon;

impl Daemon {
    /// Picks the node up where it was: a member if its data directory says so.
    pub async fn resume(self: &Arc<Self>) -> anyhow::Result<()> {
        let dir = &self.config.data_dir;
        let record_path = node_file(dir);
        if !record_path.exists() {
            return Ok(());
        }
        let record: NodeRecord = read_json(&record_path)?;
        let files: NodeIdentity = read_json(&identity_file(dir))?;
        let is_manager_cert = files.peer()?.role == Role::Manager;
        // A voter without its store could vote twice in one term (it forgot whom it
        // voted for) and would hand the leader a log that went back: it must not run.
        if record.raft_voter.unwrap_or(is_manager_cert) {
            if let Err(err) = hoist_raft::check_store(&raft_dir(dir)) {
                bail!(
                    "{err}: node {} ({}) is a raft voter according to {}, and a voter must not start without its store, or it could vote twice in one term. To bring it back, restore {} from a backup of this node's data directory; or, on a manager, run `hoist node demote {}` and `hoist node rm --force {}`, then empty {} and join this node again with a manager token",
                    record.node_id,
                    record.hostname,
                    record_path.display(),
                    raft_dir(dir).display(),
                    record.hostname,
                    record.hostname,
                    dir.display(),
                );
            }
        }
        let _guard = self.lifecycle.lock().await;
        let member = self.start_member(record, files).await?;
        let raft_exists = raft_dir(dir).join("raft.redb").exists();
        if member.cert_role() == Role::Manager && raft_exists {
            // A manager dropped while it was away (force-new-cluster, removal) must not
            // start Raft with its old membership: with another dropped manager it could
            // elect a leader and fork the cluster. Ask the others first.
            if let Some(message) = refused_by_peers(&member).await {
                tracing::error!(node = %member.node_id, %message, "this manager was dropped from the cluster; not starting raft");
                *member.removed.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
                return Ok(());
            }
            self.start_manager(&member).await?;
        }
        self.start_session(&member);
        tracing::info!(node = %member.node_id, role = %member.cert_role(), "resumed cluster membership");
        Ok(())
    }

    pub async fn leave(self: &Arc<Self>, force: bool) -> Result<(), LifecycleError> {
        let _guard = self.lifecycle.lock().await;
        let Some(member) = self.member() else {
            return Err(LifecycleError::NotInCluster(
                "this node is not part of a cluster",
            ));
        };
        if member.is_manager() && !force {
            let managers = member
                .manager()
                .map(|manager| manager.raft().membership().voters.len())
                .unwrap_or(1);
            return Err(LifecycleError::ManagerLeaving {
                managers,
                hostname: member.hostname.clone(),
            });
        }
        self.abandon_membership().await;
        tracing::info!(node = %member.node_id, "left the cluster");
        Ok(())
    }
}
