//! The tables of the replicated state.

use std::collections::{BTreeMap, BTreeSet};

use hoist_types::service::Service;
use hoist_types::task::Task;
use hoist_types::{Node, NodeId, Role, ServiceId, TaskId};
use serde::{Deserialize, Serialize};

/// Everything the managers agree on. Serialized whole for Raft snapshots and backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClusterState {
    /// Empty until `hoist init` has been applied.
    pub cluster_id: String,
    pub created_at_ms: u64,
    /// The root CA; its key lives here so that any manager can sign after a failover.
    pub ca: Option<CaMaterial>,
    pub tokens: JoinTokens,
    pub settings: ClusterSettings,
    pub nodes: BTreeMap<NodeId, Node>,
    /// Nodes removed from the cluster: their certificates are refused even though they
    /// are still within their validity.
    pub removed_nodes: BTreeSet<NodeId>,
    #[serde(default)]
    pub services: BTreeMap<ServiceId, Service>,
    /// Every task, including the recent history of each slot.
    #[serde(default)]
    pub tasks: BTreeMap<TaskId, Task>,
    /// Bumped by every applied change, so watchers can tell a state from the next.
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaMaterial {
    pub cert_pem: String,
    pub key_pem: String,
    /// sha256 of the CA certificate's DER, hex: the digest that join tokens carry.
    pub digest: String,
}

/// The secrets of the two join tokens. The token text is derived from these and the CA
/// digest; rotating replaces a secret, which invalidates the old token at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JoinTokens {
    pub worker_secret: String,
    pub manager_secret: String,
    /// Secrets replaced by a rotation, newest last, so that a join with one of them is
    /// told it was rotated rather than that it never existed.
    #[serde(default)]
    pub retired: Vec<RetiredSecret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredSecret {
    pub role: Role,
    pub secret: String,
}

/// How many rotated secrets are remembered.
pub const RETIRED_SECRETS_KEPT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// How often each node beats, in milliseconds (Swarm: 5 s).
    pub heartbeat_period_ms: u64,
    /// A node is Down after `heartbeat_period_ms * heartbeat_grace` without a beat
    /// (Swarm's grace factor is 3).
    pub heartbeat_grace: u32,
    /// Lifetime of node certificates, in seconds (Swarm: 90 days).
    pub cert_expiry_secs: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            heartbeat_period_ms: 1_000,
            heartbeat_grace: 3,
            cert_expiry_secs: 90 * 24 * 3600,
        }
    }
}

impl ClusterState {
    pub fn is_initialized(&self) -> bool {
        !self.cluster_id.is_empty()
    }

    pub fn managers(&self) -> impl Iterator<Item = &Node> {
        self.nodes
            .values()
            .filter(|node| node.role == Role::Manager)
    }

    /// Finds a node by full id, unique id prefix, or hostname (as `docker node` does).
    pub fn find_node(&self, reference: &str) -> Result<&Node, String> {
        if let Ok(id) = reference.parse::<NodeId>() {
            if let Some(node) = self.nodes.get(&id) {
                return Ok(node);
            }
        }
        let by_name: Vec<&Node> = self
            .nodes
            .values()
            .filter(|node| node.hostname == reference)
            .collect();
        if by_name.len() == 1 {
            return Ok(by_name[0]);
        }
        if by_name.len() > 1 {
            return Err(format!(
                "node name {reference:?} is ambiguous ({} nodes carry it): use an id",
                by_name.len()
            ));
        }
        let by_prefix: Vec<&Node> = self
            .nodes
            .values()
            .filter(|node| !reference.is_empty() && node.id.to_string().starts_with(reference))
            .collect();
        match by_prefix.len() {
            1 => Ok(by_prefix[0]),
            0 => Err(format!("node {reference} not found")),
            n => Err(format!(
                "node id prefix {reference:?} is ambiguous ({n} nodes match)"
            )),
        }
    }

    /// Finds a service by full id, unique id prefix, or name.
    pub fn find_service(&self, reference: &str) -> Result<&Service, String> {
        if let Some(service) = self
            .services
            .values()
            .find(|service| service.spec.name == reference)
        {
            return Ok(service);
        }
        let by_prefix: Vec<&Service> = self
            .services
            .values()
            .filter(|service| {
                !reference.is_empty() && service.id.to_string().starts_with(reference)
            })
            .collect();
        match by_prefix.len() {
            1 => Ok(by_prefix[0]),
            0 => Err(format!("service {reference} not found")),
            n => Err(format!(
                "service id prefix {reference:?} is ambiguous ({n} services match)"
            )),
        }
    }

    /// Tasks of one service, in slot order then newest first.
    pub fn service_tasks(&self, service_id: ServiceId) -> Vec<&Task> {
        let mut tasks: Vec<&Task> = self
            .tasks
            .values()
            .filter(|task| task.service_id == service_id)
            .collect();
        tasks.sort_by(|a, b| {
            // A global task's slot is its node; a replicated task's slot is its number,
            // whatever node each attempt ran on.
            let global_a = if a.slot == 0 { a.node_id } else { None };
            let global_b = if b.slot == 0 { b.node_id } else { None };
            a.slot
                .cmp(&b.slot)
                .then(global_a.cmp(&global_b))
                .then(b.created_at_ms.cmp(&a.created_at_ms))
        });
        tasks
    }

    /// Whether a certificate for `node_id` should still be honoured.
    pub fn node_is_member(&self, node_id: NodeId) -> bool {
        self.nodes.contains_key(&node_id) && !self.removed_nodes.contains(&node_id)
    }
}
