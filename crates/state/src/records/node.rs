//! The stored form of a node.

use std::collections::BTreeMap;

use hoist_types::node::Resources;
use hoist_types::{Availability, EngineInfo, Node, NodeStatus, Role};
use serde::{Deserialize, Serialize};

use super::{mirror_enum, NodeIdRecord};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeIdRecord,
    pub hostname: String,
    pub addr: String,
    pub role: RoleRecord,
    pub availability: AvailabilityRecord,
    pub status: NodeStatusRecord,
    #[serde(default)]
    pub status_message: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub engine: EngineInfoRecord,
    /// Missing: no resources recorded (zeros).
    #[serde(default)]
    pub resources: ResourcesRecord,
    /// Since version 6; left out when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_faults: Vec<PortFaultRecord>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// A published port a node could not open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortFaultRecord {
    pub port: u16,
    pub reason: String,
}

impl From<hoist_types::node::PortFault> for PortFaultRecord {
    fn from(fault: hoist_types::node::PortFault) -> Self {
        PortFaultRecord {
            port: fault.port,
            reason: fault.reason,
        }
    }
}

impl From<PortFaultRecord> for hoist_types::node::PortFault {
    fn from(record: PortFaultRecord) -> Self {
        hoist_types::node::PortFault {
            port: record.port,
            reason: record.reason,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleRecord {
    Worker,
    Manager,
}
mirror_enum!(RoleRecord <=> Role { Worker, Manager });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AvailabilityRecord {
    Active,
    Pause,
    Drain,
}
mirror_enum!(AvailabilityRecord <=> Availability { Active, Pause, Drain });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatusRecord {
    Unknown,
    Ready,
    Down,
}
mirror_enum!(NodeStatusRecord <=> NodeStatus { Unknown, Ready, Down });

/// Missing (a node that reported nothing yet): no drivers, no Docker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EngineInfoRecord {
    pub drivers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_driver: Option<String>,
    /// Since version 6, as the two below; left out when unknown or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Nano-CPUs and bytes; zero is "not set".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ResourcesRecord {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

impl ResourcesRecord {
    /// Nothing reported: not written, so a change without resources is stored as it
    /// was before version 5.
    pub fn is_unset(&self) -> bool {
        *self == ResourcesRecord::default()
    }
}

impl From<Resources> for ResourcesRecord {
    fn from(resources: Resources) -> Self {
        ResourcesRecord {
            nano_cpus: resources.nano_cpus,
            memory_bytes: resources.memory_bytes,
        }
    }
}

impl From<ResourcesRecord> for Resources {
    fn from(record: ResourcesRecord) -> Self {
        Resources {
            nano_cpus: record.nano_cpus,
            memory_bytes: record.memory_bytes,
        }
    }
}

impl From<EngineInfo> for EngineInfoRecord {
    fn from(engine: EngineInfo) -> Self {
        EngineInfoRecord {
            drivers: engine.drivers,
            docker_version: engine.docker_version,
            storage_driver: engine.storage_driver,
            os: engine.os,
            arch: engine.arch,
            labels: engine.labels,
        }
    }
}

impl From<EngineInfoRecord> for EngineInfo {
    fn from(record: EngineInfoRecord) -> Self {
        EngineInfo {
            drivers: record.drivers,
            docker_version: record.docker_version,
            storage_driver: record.storage_driver,
            os: record.os,
            arch: record.arch,
            labels: record.labels,
        }
    }
}

impl From<Node> for NodeRecord {
    fn from(node: Node) -> Self {
        NodeRecord {
            id: node.id.into(),
            hostname: node.hostname,
            addr: node.addr,
            role: node.role.into(),
            availability: node.availability.into(),
            status: node.status.into(),
            status_message: node.status_message,
            labels: node.labels,
            engine: node.engine.into(),
            resources: node.resources.into(),
            port_faults: node.port_faults.into_iter().map(Into::into).collect(),
            created_at_ms: node.created_at_ms,
            updated_at_ms: node.updated_at_ms,
        }
    }
}

impl From<NodeRecord> for Node {
    fn from(record: NodeRecord) -> Self {
        Node {
            id: record.id.into(),
            hostname: record.hostname,
            addr: record.addr,
            role: record.role.into(),
            availability: record.availability.into(),
            status: record.status.into(),
            status_message: record.status_message,
            labels: record.labels,
            engine: record.engine.into(),
            resources: record.resources.into(),
            port_faults: record.port_faults.into_iter().map(Into::into).collect(),
            created_at_ms: record.created_at_ms,
            updated_at_ms: record.updated_at_ms,
        }
    }
}
