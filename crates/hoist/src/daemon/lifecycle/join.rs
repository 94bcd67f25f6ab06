//! `hoist join`: this node joins a cluster through one of its managers. It checks the
//! request, binds its listener before asking (a node that cannot serve is never
//! admitted), reads the manager's CA without trusting it and compares it with the
//! token's digest, then sends the secret and a CSR over a connection pinned to that CA
//! and receives its certificate. A manager token also starts Raft empty and asks the
//! leader to make this node a voter. A join that fails after admission is taken back.
//!
//! Does not touch: what the manager decides (`hoist_manager::join`), the TLS details
//! (`tls`), nor Raft once the node is a voter (`roles`).

use std::sync::Arc;
use std::time::Duration;

use hoist_api::{JoinClusterRequest, JoinClusterResponse, JoinRequest, JoinResponse};
use hoist_pki::{IdentityHandle, JoinToken, NodeCsr, NodeIdentity};
use hoist_types::{NodeId, Role};

use crate::daemon::errors::LifecycleError;
use crate::daemon::records::{
    identity_file, node_file, raft_dir, write_json, write_secret_json, NodeRecord,
};
use crate::daemon::settings::validate_addr;
use crate::daemon::tls::{pinned_join_client, probe_ca};
use crate::daemon::Daemon;

/// A join request that passed the checks made before anything is sent.
struct CheckedJoin {
    token: JoinToken,
    advertise_addr: String,
    /// Where the join leaves from: the manager records the address as the node's only
    /// if the join comes from it.
    source_ip: std::net::IpAddr,
}

impl Daemon {
    pub async fn join(
        self: &Arc<Self>,
        request: JoinClusterRequest,
    ) -> Result<JoinClusterResponse, LifecycleError> {
        let _guard = self.lifecycle.lock().await;
        if self.member().is_some() {
            return Err(LifecycleError::AlreadyInCluster {
                hint: "use `hoist leave` before joining another one",
            });
        }
        let checked = self.check_join(&request)?;
        // Taken before the manager records the node: a node that cannot listen must not
        // be left in the cluster's list by a join that then fails.
        let listener = self
            .bind_listener()
            .await
            .map_err(|err| LifecycleError::CannotListen(format!("{err:#}")))?;
        let ca_pem = probe_ca(&request.manager_addr, &checked.token.ca_digest).await?;
        let csr = NodeCsr::generate().map_err(|err| LifecycleError::Internal(err.to_string()))?;
        let joined = self
            .ask_to_join(&request, &checked, &ca_pem, csr.csr_pem)
            .await?;
        let files = NodeIdentity {
            key_pem: csr.key_pem,
            chain_pem: joined.chain_pem.clone(),
            ca_pem: joined.ca_pem.clone(),
        };
        let mut managers = joined.managers.clone();
        if !managers.contains(&request.manager_addr) {
            managers.insert(0, request.manager_addr.clone());
        }
        let record = NodeRecord {
            node_id: joined.node_id,
            cluster_id: joined.cluster_id.clone(),
            hostname: self.config.hostname.clone(),
            advertise_addr: checked.advertise_addr.clone(),
            managers,
            manager_ids: joined.manager_ids.clone(),
            // Set once the leader confirms it as a voter.
            raft_voter: Some(false),
        };
        let admitted = files.clone();
        let result = async {
            write_secret_json(&identity_file(&self.config.data_dir), &files)?;
            write_json(&node_file(&self.config.data_dir), &record)?;
            let member = self.start_member_on(record, files, listener).await?;
            if joined.role == Role::Manager {
                let _ = std::fs::remove_dir_all(raft_dir(&self.config.data_dir));
                self.start_manager(&member).await?;
                self.request_voter(&member).await?;
            }
            self.start_session(&member);
            anyhow::Ok(())
        }
        .await;
        if let Err(err) = result {
            self.abandon_membership().await;
            self.withdraw_join(&admitted, &request.manager_addr, joined.node_id)
                .await;
            return Err(err.into());
        }
        tracing::info!(node = %joined.node_id, role = %joined.role, "joined the cluster");
        Ok(JoinClusterResponse {
            node_id: joined.node_id,
            role: joined.role,
        })
    }

    /// The token, the addresses, and that the manager is not this node itself.
    fn check_join(&self, request: &JoinClusterRequest) -> Result<CheckedJoin, LifecycleError> {
        let token = JoinToken::parse(&request.token)
            .map_err(|err| LifecycleError::BadRequest(err.to_string()))?;
        validate_addr(&request.manager_addr)
            .map_err(|err| LifecycleError::BadRequest(format!("manager address: {err:#}")))?;
        let advertise_addr = self.advertise_addr_of(request.advertise_addr.clone())?;
        let source_ip = hoist_types::node::parse_node_addr(&advertise_addr)
            .map_err(|err| LifecycleError::BadRequest(format!("--advertise-addr: {err}")))?
            .ip();
        if request.manager_addr == advertise_addr
            || request.manager_addr == self.config.listen_addr.to_string()
        {
            return Err(LifecycleError::BadRequest(format!(
                "{} is this node's own address: give the address of a manager of the cluster to join",
                request.manager_addr
            )));
        }
        Ok(CheckedJoin {
            token,
            advertise_addr,
            source_ip,
        })
    }

    /// Sends the secret and the CSR over a connection pinned to the probed CA.
    async fn ask_to_join(
        &self,
        request: &JoinClusterRequest,
        checked: &CheckedJoin,
        ca_pem: &str,
        csr_pem: String,
    ) -> Result<JoinResponse, LifecycleError> {
        let pinned = pinned_join_client(ca_pem, checked.source_ip)?;
        let response = pinned
            .post(hoist_api::endpoint::Join::url(&request.manager_addr, &()))
            .json(&JoinRequest {
                secret: checked.token.secret.clone(),
                expected_role: request.expected_role,
                hostname: self.config.hostname.clone(),
                addr: checked.advertise_addr.clone(),
                csr_pem,
            })
            .send()
            .await
            .map_err(|err| {
                LifecycleError::Unreachable(format!(
                    "joining through {}: {err}",
                    request.manager_addr
                ))
            })?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(LifecycleError::JoinRefused {
                status: status.as_u16(),
                message: hoist_api::ErrorBody::message_of(text),
            });
        }
        response
            .json()
            .await
            .map_err(|err| LifecycleError::Unreachable(format!("bad join response: {err}")))
    }

    /// After a join the manager admitted failed here: asks it to take the node's record
    /// back, so the cluster does not list a node that never came. Best effort: a
    /// manager that cannot be reached leaves a node that goes Down, for `node rm`.
    async fn withdraw_join(&self, files: &NodeIdentity, manager_addr: &str, node_id: NodeId) {
        let source_ip = Some(self.config.listen_addr.ip()).filter(|ip| !ip.is_unspecified());
        let client = IdentityHandle::new(files)
            .and_then(|identity| hoist_pki::client_config(&identity, hoist_pki::Dialled::Manager))
            .map_err(anyhow::Error::from)
            .and_then(|config| {
                reqwest::Client::builder()
                    .use_preconfigured_tls(config)
                    .local_address(source_ip)
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(anyhow::Error::from)
            });
        let outcome = match client {
            Ok(client) => client
                .post(hoist_api::endpoint::JoinAbandon::url(manager_addr, &()))
                .json(&serde_json::Value::Null)
                .send()
                .await
                .map_err(anyhow::Error::from)
                .and_then(|response| {
                    response
                        .error_for_status()
                        .map(|_| ())
                        .map_err(anyhow::Error::from)
                }),
            Err(err) => Err(err),
        };
        match outcome {
            Ok(()) => tracing::info!(node = %node_id, "the failed join was taken back"),
            Err(err) => {
                tracing::warn!(node = %node_id, error = %format!("{err:#}"), "the failed join could not be taken back: remove the node with `hoist node rm`")
            }
        }
    }
}
