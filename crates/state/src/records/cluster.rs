//! The stored form of the whole cluster state: what a snapshot and a backup hold.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    NodeIdRecord, NodeRecord, RecordError, RoleRecord, ServiceIdRecord, ServiceRecord,
    TaskIdRecord, TaskRecord,
};
use crate::cluster::{
    CaMaterial, CaRotation, ClusterSettings, ClusterState, JoinTokens, RetiredSecret,
};

/// What a missing `max_replicas` meant (settings from before format 3).
const DEFAULT_MAX_REPLICAS: u64 = 10_000;
/// What a missing `join_rate_limit` meant (settings from before format 3).
const DEFAULT_JOIN_RATE_LIMIT: u32 = 5;
/// What a missing `task_history_limit` meant (settings from before format 3).
const DEFAULT_TASK_HISTORY_LIMIT: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStateRecord {
    pub cluster_id: String,
    pub created_at_ms: u64,
    pub ca: Option<CaMaterialRecord>,
    pub tokens: JoinTokensRecord,
    pub settings: ClusterSettingsRecord,
    pub nodes: BTreeMap<NodeIdRecord, NodeRecord>,
    pub removed_nodes: BTreeSet<NodeIdRecord>,
    #[serde(default)]
    pub services: BTreeMap<ServiceIdRecord, ServiceRecord>,
    #[serde(default)]
    pub tasks: BTreeMap<TaskIdRecord, TaskRecord>,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaMaterialRecord {
    pub cert_pem: String,
    pub key_pem: String,
    pub digest: String,
    /// Missing (before format 4): no rotation under way.
    #[serde(default)]
    pub rotation: Option<CaRotationRecord>,
    /// Missing (before format 4): no CA retired.
    #[serde(default)]
    pub retired: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRotationRecord {
    pub previous_cert_pem: String,
    pub previous_digest: String,
    pub cross_signed_pem: String,
    pub started_at_ms: u64,
    pub renewed: BTreeSet<NodeIdRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokensRecord {
    pub worker_secret: String,
    pub manager_secret: String,
    #[serde(default)]
    pub retired: Vec<RetiredSecretRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredSecretRecord {
    pub role: RoleRecord,
    pub secret: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettingsRecord {
    pub heartbeat_period_ms: u64,
    pub heartbeat_grace: u32,
    pub cert_expiry_secs: u64,
    #[serde(default = "default_max_replicas")]
    pub max_replicas: u64,
    #[serde(default = "default_join_rate_limit")]
    pub join_rate_limit: u32,
    #[serde(default = "default_task_history_limit")]
    pub task_history_limit: u32,
}

fn default_max_replicas() -> u64 {
    DEFAULT_MAX_REPLICAS
}

fn default_join_rate_limit() -> u32 {
    DEFAULT_JOIN_RATE_LIMIT
}

fn default_task_history_limit() -> u32 {
    DEFAULT_TASK_HISTORY_LIMIT
}

impl From<ClusterSettings> for ClusterSettingsRecord {
    fn from(settings: ClusterSettings) -> Self {
        ClusterSettingsRecord {
            heartbeat_period_ms: settings.heartbeat_period_ms,
            heartbeat_grace: settings.heartbeat_grace,
            cert_expiry_secs: settings.cert_expiry_secs,
            max_replicas: settings.max_replicas,
            join_rate_limit: settings.join_rate_limit,
            task_history_limit: settings.task_history_limit,
        }
    }
}

impl From<ClusterSettingsRecord> for ClusterSettings {
    fn from(record: ClusterSettingsRecord) -> Self {
        ClusterSettings {
            heartbeat_period_ms: record.heartbeat_period_ms,
            heartbeat_grace: record.heartbeat_grace,
            cert_expiry_secs: record.cert_expiry_secs,
            max_replicas: record.max_replicas,
            join_rate_limit: record.join_rate_limit,
            task_history_limit: record.task_history_limit,
        }
    }
}

impl From<RetiredSecret> for RetiredSecretRecord {
    fn from(retired: RetiredSecret) -> Self {
        RetiredSecretRecord {
            role: retired.role.into(),
            secret: retired.secret,
        }
    }
}

impl From<RetiredSecretRecord> for RetiredSecret {
    fn from(record: RetiredSecretRecord) -> Self {
        RetiredSecret {
            role: record.role.into(),
            secret: record.secret,
        }
    }
}

impl From<JoinTokens> for JoinTokensRecord {
    fn from(tokens: JoinTokens) -> Self {
        JoinTokensRecord {
            worker_secret: tokens.worker_secret,
            manager_secret: tokens.manager_secret,
            retired: tokens.retired.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<JoinTokensRecord> for JoinTokens {
    fn from(record: JoinTokensRecord) -> Self {
        JoinTokens {
            worker_secret: record.worker_secret,
            manager_secret: record.manager_secret,
            retired: record.retired.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<CaRotation> for CaRotationRecord {
    fn from(rotation: CaRotation) -> Self {
        CaRotationRecord {
            previous_cert_pem: rotation.previous_cert_pem,
            previous_digest: rotation.previous_digest,
            cross_signed_pem: rotation.cross_signed_pem,
            started_at_ms: rotation.started_at_ms,
            renewed: rotation.renewed.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<CaRotationRecord> for CaRotation {
    fn from(record: CaRotationRecord) -> Self {
        CaRotation {
            previous_cert_pem: record.previous_cert_pem,
            previous_digest: record.previous_digest,
            cross_signed_pem: record.cross_signed_pem,
            started_at_ms: record.started_at_ms,
            renewed: record.renewed.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<CaMaterial> for CaMaterialRecord {
    fn from(ca: CaMaterial) -> Self {
        CaMaterialRecord {
            cert_pem: ca.cert_pem,
            key_pem: ca.key_pem,
            digest: ca.digest,
            rotation: ca.rotation.map(Into::into),
            retired: ca.retired,
        }
    }
}

impl From<CaMaterialRecord> for CaMaterial {
    fn from(record: CaMaterialRecord) -> Self {
        CaMaterial {
            cert_pem: record.cert_pem,
            key_pem: record.key_pem,
            digest: record.digest,
            rotation: record.rotation.map(Into::into),
            retired: record.retired,
        }
    }
}

impl From<ClusterState> for ClusterStateRecord {
    fn from(state: ClusterState) -> Self {
        ClusterStateRecord {
            cluster_id: state.cluster_id,
            created_at_ms: state.created_at_ms,
            ca: state.ca.map(Into::into),
            tokens: state.tokens.into(),
            settings: state.settings.into(),
            nodes: state
                .nodes
                .into_iter()
                .map(|(id, node)| (id.into(), node.into()))
                .collect(),
            removed_nodes: state.removed_nodes.into_iter().map(Into::into).collect(),
            services: state
                .services
                .into_iter()
                .map(|(id, service)| (id.into(), service.into()))
                .collect(),
            tasks: state
                .tasks
                .into_iter()
                .map(|(id, task)| (id.into(), task.into()))
                .collect(),
            version: state.version,
        }
    }
}

impl TryFrom<ClusterStateRecord> for ClusterState {
    type Error = RecordError;

    fn try_from(record: ClusterStateRecord) -> Result<Self, RecordError> {
        Ok(ClusterState {
            cluster_id: record.cluster_id,
            created_at_ms: record.created_at_ms,
            ca: record.ca.map(Into::into),
            tokens: record.tokens.into(),
            settings: record.settings.into(),
            nodes: record
                .nodes
                .into_iter()
                .map(|(id, node)| (id.into(), node.into()))
                .collect(),
            removed_nodes: record.removed_nodes.into_iter().map(Into::into).collect(),
            services: record
                .services
                .into_iter()
                .map(|(id, service)| Ok((id.into(), service.try_into()?)))
                .collect::<Result<_, RecordError>>()?,
            tasks: record
                .tasks
                .into_iter()
                .map(|(id, task)| Ok((id.into(), task.try_into()?)))
                .collect::<Result<_, RecordError>>()?,
            version: record.version,
        })
    }
}
