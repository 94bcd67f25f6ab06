//! The tables of the replicated state, as every manager holds them in memory.
//!
//! Their stored form (snapshots, backups) is `records::ClusterStateRecord`; this file
//! does not decide how anything is written.

use std::collections::{BTreeMap, BTreeSet};

use hoist_types::service::Service;
use hoist_types::task::Task;
use hoist_types::{Node, NodeId, Role, ServiceId, TaskId};
use serde::{Deserialize, Serialize};

use crate::records::ClusterStateRecord;

/// Everything the managers agree on. Serialized whole for Raft snapshots and backups,
/// as a [`ClusterStateRecord`], the persisted form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(into = "ClusterStateRecord", try_from = "ClusterStateRecord")]
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
    pub services: BTreeMap<ServiceId, Service>,
    /// Every task, including the recent history of each slot.
    pub tasks: BTreeMap<TaskId, Task>,
    /// Bumped by every applied change, so watchers can tell a state from the next.
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaMaterial {
    /// The CA that signs every certificate from now on.
    pub cert_pem: String,
    pub key_pem: String,
    /// sha256 of the CA certificate's DER, hex: the digest that join tokens carry.
    pub digest: String,
    /// `cluster ca --rotate` under way: the CA being replaced is still trusted until
    /// every node holds a certificate of this one.
    pub rotation: Option<CaRotation>,
    /// Digests of the CAs rotated out, oldest first: no longer trusted anywhere.
    pub retired: Vec<String>,
}

/// A CA rotation in progress (Swarm's `swarm ca --rotate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaRotation {
    /// The CA being replaced.
    pub previous_cert_pem: String,
    pub previous_digest: String,
    /// The new CA's certificate signed by the previous CA's key: every chain issued
    /// during the rotation carries it, so a node that still trusts only the previous CA
    /// accepts the new certificates.
    pub cross_signed_pem: String,
    pub started_at_ms: u64,
    /// Nodes seen presenting a certificate of the new CA.
    pub renewed: BTreeSet<NodeId>,
}

impl CaMaterial {
    /// The CA certificates every node must trust now: the current one, and the
    /// previous one while a rotation is under way.
    pub fn trust_pem(&self) -> String {
        match &self.rotation {
            Some(rotation) => format!("{}{}", self.cert_pem, rotation.previous_cert_pem),
            None => self.cert_pem.clone(),
        }
    }
}

/// The secrets of the two join tokens. The token text is derived from these and the CA
/// digest; rotating replaces a secret, which invalidates the old token at once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinTokens {
    pub worker_secret: String,
    pub manager_secret: String,
    /// Secrets replaced by a rotation, newest last, so that a join with one of them is
    /// told it was rotated rather than that it never existed.
    pub retired: Vec<RetiredSecret>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredSecret {
    pub role: Role,
    pub secret: String,
}

/// How many rotated secrets are remembered.
pub const RETIRED_SECRETS_KEPT: usize = 16;

/// Cluster-wide settings, changed by `hoist init` and `hoist cluster update`. Stored as a
/// [`ClusterSettingsRecord`](crate::records::ClusterSettingsRecord); this type's own
/// serde form is the API's (`cluster inspect`), where every field added after the first
/// release has a default so that a reply from an older daemon still reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// How often each node beats, in milliseconds (Swarm: 5 s).
    pub heartbeat_period_ms: u64,
    /// A node is Down after `heartbeat_period_ms * heartbeat_grace` without a beat
    /// (Swarm's grace factor is 3).
    pub heartbeat_grace: u32,
    /// Lifetime of node certificates, in seconds (Swarm: 90 days).
    pub cert_expiry_secs: u64,
    /// The most replicas one service may ask for. Every task is a record of a couple
    /// of kilobytes held by every manager and written into every snapshot; 10,000 per
    /// service keeps a full service at tens of megabytes.
    #[serde(default = "default_max_replicas")]
    pub max_replicas: u64,
    /// Join attempts accepted per second from one source IP address, on each manager,
    /// after an initial burst (0: no limit). A plain count, for the join endpoint's
    /// rate limiter; the default is that limiter's built-in rate.
    #[serde(default = "default_join_rate_limit")]
    pub join_rate_limit: u32,
    /// Ended tasks kept per slot, so `service ps` shows why a slot restarted (Swarm's
    /// `--task-history-limit`, default 5).
    #[serde(default = "default_task_history_limit")]
    pub task_history_limit: u32,
}

/// Default of [`ClusterSettings::max_replicas`].
pub const DEFAULT_MAX_REPLICAS: u64 = 10_000;
/// The highest `max_replicas` may be set to: beyond it one service alone would hold
/// gigabytes in every manager.
pub const MAX_REPLICAS_CEILING: u64 = 1_000_000;
/// Default of [`ClusterSettings::join_rate_limit`].
pub const DEFAULT_JOIN_RATE_LIMIT: u32 = 5;
/// Default of [`ClusterSettings::task_history_limit`] (Swarm's).
pub const DEFAULT_TASK_HISTORY_LIMIT: u32 = 5;
/// The most history per slot that may be kept (the orchestrator's own ceiling).
pub const MAX_TASK_HISTORY_LIMIT: u32 = 64;
/// The shortest certificate lifetime `cluster update` accepts (Swarm's minimum is 1 h;
/// `init` allows shorter ones for tests of renewal).
pub const MIN_CERT_EXPIRY_SECS: u64 = 3600;

fn default_max_replicas() -> u64 {
    DEFAULT_MAX_REPLICAS
}

fn default_join_rate_limit() -> u32 {
    DEFAULT_JOIN_RATE_LIMIT
}

fn default_task_history_limit() -> u32 {
    DEFAULT_TASK_HISTORY_LIMIT
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            heartbeat_period_ms: 1_000,
            heartbeat_grace: 3,
            cert_expiry_secs: 90 * 24 * 3600,
            max_replicas: DEFAULT_MAX_REPLICAS,
            join_rate_limit: DEFAULT_JOIN_RATE_LIMIT,
            task_history_limit: DEFAULT_TASK_HISTORY_LIMIT,
        }
    }
}

impl ClusterSettings {
    /// The settings of a new cluster: the defaults, with the heartbeat and certificate
    /// lifetime `hoist init` was given. Why one is refused names the flag.
    pub fn for_init(
        heartbeat_period_ms: Option<u64>,
        heartbeat_grace: Option<u32>,
        cert_expiry_secs: Option<u64>,
    ) -> Result<ClusterSettings, String> {
        let mut settings = ClusterSettings::default();
        if let Some(period) = heartbeat_period_ms {
            if !(50..=60_000).contains(&period) {
                return Err("--heartbeat-period must be between 50ms and 60s".into());
            }
            settings.heartbeat_period_ms = period;
        }
        if let Some(grace) = heartbeat_grace {
            if grace == 0 {
                return Err("--heartbeat-grace must be at least 1".into());
            }
            settings.heartbeat_grace = grace;
        }
        if let Some(expiry) = cert_expiry_secs {
            // Short lifetimes exist for tests of renewal; production keeps the default.
            if expiry < 10 {
                return Err("--cert-expiry must be at least 10s".into());
            }
            settings.cert_expiry_secs = expiry;
        }
        Ok(settings)
    }

    /// Why settings given to `cluster update` cannot replace `current`, naming the flag.
    /// Only changed fields are judged, so a cluster created with a short certificate
    /// lifetime (tests of renewal) can still change its other settings.
    pub fn check_update(&self, current: &ClusterSettings) -> Result<(), String> {
        if self.heartbeat_period_ms != current.heartbeat_period_ms
            || self.heartbeat_grace != current.heartbeat_grace
        {
            return Err("the heartbeat settings are chosen at `hoist init`".into());
        }
        if self.max_replicas != current.max_replicas
            && !(1..=MAX_REPLICAS_CEILING).contains(&self.max_replicas)
        {
            return Err(format!(
                "--max-replicas {} is out of range: it must be between 1 and {MAX_REPLICAS_CEILING}",
                self.max_replicas
            ));
        }
        if self.task_history_limit != current.task_history_limit
            && self.task_history_limit > MAX_TASK_HISTORY_LIMIT
        {
            return Err(format!(
                "--task-history-limit {} is out of range: at most {MAX_TASK_HISTORY_LIMIT}",
                self.task_history_limit
            ));
        }
        if self.cert_expiry_secs == current.cert_expiry_secs {
            return Ok(());
        }
        if self.cert_expiry_secs < MIN_CERT_EXPIRY_SECS {
            return Err(format!(
                "--cert-expiry {}s is too short: at least 1h",
                self.cert_expiry_secs
            ));
        }
        if self.cert_expiry_secs > 10 * 365 * 24 * 3600 {
            return Err(format!(
                "--cert-expiry {}s is too long: at most 10 years",
                self.cert_expiry_secs
            ));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::ClusterSettings;

    #[test]
    fn init_settings_are_the_defaults_with_the_flags_given_in_range() {
        assert_eq!(
            ClusterSettings::for_init(None, None, None),
            Ok(ClusterSettings::default())
        );
        let settings = ClusterSettings::for_init(Some(200), Some(5), Some(30)).unwrap();
        assert_eq!(
            (
                settings.heartbeat_period_ms,
                settings.heartbeat_grace,
                settings.cert_expiry_secs
            ),
            (200, 5, 30)
        );
        for (period, grace, expiry, message) in [
            (
                Some(49),
                None,
                None,
                "--heartbeat-period must be between 50ms and 60s",
            ),
            (
                Some(60_001),
                None,
                None,
                "--heartbeat-period must be between 50ms and 60s",
            ),
            (None, Some(0), None, "--heartbeat-grace must be at least 1"),
            (None, None, Some(9), "--cert-expiry must be at least 10s"),
        ] {
            assert_eq!(
                ClusterSettings::for_init(period, grace, expiry),
                Err(message.to_string())
            );
        }
    }
}
