//! A node as the cluster records it: identity, role, availability chosen by the operator,
//! status observed by the dispatcher, labels and the engine it offers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// Whether a node takes part in Raft. Every node is a worker; a manager is a worker that
/// also votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Worker,
    Manager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Manager => "manager",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "worker" => Ok(Role::Worker),
            "manager" => Ok(Role::Manager),
            other => Err(format!(
                "unknown role {other:?} (expected worker or manager)"
            )),
        }
    }
}

/// The operator's choice of what the scheduler may do with a node (Swarm's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// Takes new tasks.
    #[default]
    Active,
    /// Keeps its tasks, takes no new ones.
    Pause,
    /// Its tasks move elsewhere.
    Drain,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Active => "Active",
            Availability::Pause => "Pause",
            Availability::Drain => "Drain",
        }
    }
}

impl std::str::FromStr for Availability {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "active" => Ok(Availability::Active),
            "pause" => Ok(Availability::Pause),
            "drain" => Ok(Availability::Drain),
            _ => Err(format!(
                "invalid availability {text:?} (expected active, pause or drain)"
            )),
        }
    }
}

/// What the dispatcher last observed of a node's heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Joined but no heartbeat seen yet by the current leader.
    #[default]
    Unknown,
    Ready,
    Down,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Unknown => "Unknown",
            NodeStatus::Ready => "Ready",
            NodeStatus::Down => "Down",
        }
    }
}

/// The container engine (or its absence) a node reports, so constraints can match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EngineInfo {
    /// Drivers this node can run tasks with, e.g. `["process", "docker"]`.
    pub drivers: Vec<String>,
    /// Docker Engine version, when one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_version: Option<String>,
    /// Docker's storage driver (overlay2, zfs, btrfs, fuse-overlayfs...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_driver: Option<String>,
}

/// A node as stored in the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub hostname: String,
    /// Address other nodes reach this node's TLS listener at.
    pub addr: String,
    /// The role the operator wants; the node renews its certificate to match.
    pub role: Role,
    pub availability: Availability,
    pub status: NodeStatus,
    /// Why the status is what it is, e.g. "heartbeat failure".
    #[serde(default)]
    pub status_message: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub engine: EngineInfo,
    /// CPU cores and memory bytes the node offers to tasks.
    #[serde(default)]
    pub resources: Resources,
    /// Unix milliseconds, from the leader's clock when the change was proposed.
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// CPU (in nano-CPUs, as Docker counts) and memory (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Resources {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

/// Validates a label key as given to `--label-add k=v`.
pub fn validate_label_key(key: &str) -> Result<(), crate::InvalidSpec> {
    if key.is_empty() {
        return Err(crate::InvalidSpec::new("label", "the key is empty"));
    }
    if key.len() > 128 || key.chars().any(|c| c.is_whitespace() || c == '=') {
        return Err(crate::InvalidSpec::new(
            "label",
            format!("{key:?} is not a valid key (no spaces or '=', at most 128 characters)"),
        ));
    }
    Ok(())
}
