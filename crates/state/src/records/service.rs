//! The stored form of a service and its spec.
//!
//! A spec's fields all have defaults (a stored spec may leave any out); those defaults
//! are what a missing field meant when the spec was written, spelled out here rather than
//! taken from `ServiceSpec::default()`. The driver stays the string that is stored, and
//! constraints the text the operator typed, parsed again on the way in.

use std::collections::BTreeMap;

use hoist_types::service::{
    Constraint, HttpRoute, Mount, MountKind, PlacementPref, PortMode, Protocol, PublishedPort,
    Rebalance, ResourceRequirements, RestartCondition, RestartPolicy, Service, ServiceMode,
    ServiceSpec,
};
use serde::{Deserialize, Serialize};

use super::{mirror_enum, RecordError, ResourcesRecord, ServiceIdRecord};

/// What a missing `driver` meant: the process driver.
const DEFAULT_DRIVER: &str = "process";
/// What a missing `stop_grace_period_ms` meant (Swarm's 10 s).
const DEFAULT_STOP_GRACE_PERIOD_MS: u64 = 10_000;
/// What a missing restart `delay_ms` meant (Swarm's 5 s).
const DEFAULT_RESTART_DELAY_MS: u64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub id: ServiceIdRecord,
    pub spec: ServiceSpecRecord,
    pub version: u64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceSpecRecord {
    pub name: String,
    pub mode: ServiceModeRecord,
    pub driver: String,
    pub command: Vec<String>,
    pub image: Option<String>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub mounts: Vec<MountRecord>,
    pub ports: Vec<PublishedPortRecord>,
    /// As the operator typed them, e.g. `node.labels.zone==a`.
    pub constraints: Vec<String>,
    pub placement_prefs: Vec<PlacementPrefRecord>,
    pub max_replicas_per_node: Option<u64>,
    pub resources: ResourceRequirementsRecord,
    pub restart_policy: RestartPolicyRecord,
    pub stop_grace_period_ms: u64,
    pub rebalance: RebalanceRecord,
    pub health_path: Option<String>,
    pub routes: Vec<HttpRouteRecord>,
    pub user: Option<String>,
    pub health_cmd: Option<String>,
    pub health_interval_ms: Option<u64>,
    pub health_retries: Option<u32>,
    /// Since version 6, as the four below.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_start_period_ms: Option<u64>,
    #[serde(skip_serializing_if = "is_false")]
    pub no_healthcheck: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    pub workdir: Option<String>,
    pub read_only: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl Default for ServiceSpecRecord {
    fn default() -> Self {
        ServiceSpecRecord {
            name: String::new(),
            mode: ServiceModeRecord::default(),
            driver: DEFAULT_DRIVER.to_string(),
            command: Vec::new(),
            image: None,
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            mounts: Vec::new(),
            ports: Vec::new(),
            constraints: Vec::new(),
            placement_prefs: Vec::new(),
            max_replicas_per_node: None,
            resources: ResourceRequirementsRecord::default(),
            restart_policy: RestartPolicyRecord::default(),
            stop_grace_period_ms: DEFAULT_STOP_GRACE_PERIOD_MS,
            rebalance: RebalanceRecord::default(),
            health_path: None,
            routes: Vec::new(),
            user: None,
            health_cmd: None,
            health_interval_ms: None,
            health_retries: None,
            health_timeout_ms: None,
            health_start_period_ms: None,
            no_healthcheck: false,
            hostname: None,
            entrypoint: None,
            workdir: None,
            read_only: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceModeRecord {
    Replicated {
        replicas: u64,
    },
    Global,
    /// Since version 6.
    #[serde(rename = "replicated_job")]
    ReplicatedJob {
        max_concurrent: u64,
        total_completions: u64,
    },
    /// Since version 6.
    #[serde(rename = "global_job")]
    GlobalJob,
}

/// Missing: one replica.
impl Default for ServiceModeRecord {
    fn default() -> Self {
        ServiceModeRecord::Replicated { replicas: 1 }
    }
}

/// Missing: rebalance on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RebalanceRecord {
    #[default]
    Auto,
    Off,
}
mirror_enum!(RebalanceRecord <=> Rebalance { Auto, Off });

/// Missing, whole or in part: nothing reserved, no limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ResourceRequirementsRecord {
    pub reservations: ResourcesRecord,
    pub limits: ResourcesRecord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestartPolicyRecord {
    pub condition: RestartConditionRecord,
    pub delay_ms: u64,
    pub max_attempts: Option<u64>,
    pub window_ms: Option<u64>,
}

/// Missing, whole or in part: restart on any exit after 5 s, without limit.
impl Default for RestartPolicyRecord {
    fn default() -> Self {
        RestartPolicyRecord {
            condition: RestartConditionRecord::Any,
            delay_ms: DEFAULT_RESTART_DELAY_MS,
            max_attempts: None,
            window_ms: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartConditionRecord {
    #[default]
    Any,
    OnFailure,
    None,
}
mirror_enum!(RestartConditionRecord <=> RestartCondition { Any, OnFailure, None });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKindRecord {
    Bind,
    Volume,
    Tmpfs,
}
mirror_enum!(MountKindRecord <=> MountKind { Bind, Volume, Tmpfs });

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    #[serde(rename = "type")]
    pub kind: MountKindRecord,
    #[serde(default)]
    pub source: String,
    pub target: String,
    #[serde(default)]
    pub readonly: bool,
}

/// Missing: tcp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolRecord {
    #[default]
    Tcp,
    Http,
}
mirror_enum!(ProtocolRecord <=> Protocol { Tcp, Http });

/// Missing: ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PortModeRecord {
    #[default]
    Ingress,
    Host,
}
mirror_enum!(PortModeRecord <=> PortMode { Ingress, Host });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPortRecord {
    pub published: u16,
    pub target: u16,
    #[serde(default)]
    pub protocol: ProtocolRecord,
    #[serde(default)]
    pub mode: PortModeRecord,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRouteRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementPrefRecord {
    Spread { label: String },
}

impl From<ServiceMode> for ServiceModeRecord {
    fn from(mode: ServiceMode) -> Self {
        match mode {
            ServiceMode::Replicated { replicas } => ServiceModeRecord::Replicated { replicas },
            ServiceMode::Global => ServiceModeRecord::Global,
            ServiceMode::ReplicatedJob {
                max_concurrent,
                total_completions,
            } => ServiceModeRecord::ReplicatedJob {
                max_concurrent,
                total_completions,
            },
            ServiceMode::GlobalJob => ServiceModeRecord::GlobalJob,
        }
    }
}

impl From<ServiceModeRecord> for ServiceMode {
    fn from(record: ServiceModeRecord) -> Self {
        match record {
            ServiceModeRecord::Replicated { replicas } => ServiceMode::Replicated { replicas },
            ServiceModeRecord::Global => ServiceMode::Global,
            ServiceModeRecord::ReplicatedJob {
                max_concurrent,
                total_completions,
            } => ServiceMode::ReplicatedJob {
                max_concurrent,
                total_completions,
            },
            ServiceModeRecord::GlobalJob => ServiceMode::GlobalJob,
        }
    }
}

impl From<ResourceRequirements> for ResourceRequirementsRecord {
    fn from(resources: ResourceRequirements) -> Self {
        ResourceRequirementsRecord {
            reservations: resources.reservations.into(),
            limits: resources.limits.into(),
        }
    }
}

impl From<ResourceRequirementsRecord> for ResourceRequirements {
    fn from(record: ResourceRequirementsRecord) -> Self {
        ResourceRequirements {
            reservations: record.reservations.into(),
            limits: record.limits.into(),
        }
    }
}

impl From<RestartPolicy> for RestartPolicyRecord {
    fn from(policy: RestartPolicy) -> Self {
        RestartPolicyRecord {
            condition: policy.condition.into(),
            delay_ms: policy.delay_ms,
            max_attempts: policy.max_attempts,
            window_ms: policy.window_ms,
        }
    }
}

impl From<RestartPolicyRecord> for RestartPolicy {
    fn from(record: RestartPolicyRecord) -> Self {
        RestartPolicy {
            condition: record.condition.into(),
            delay_ms: record.delay_ms,
            max_attempts: record.max_attempts,
            window_ms: record.window_ms,
        }
    }
}

impl From<Mount> for MountRecord {
    fn from(mount: Mount) -> Self {
        MountRecord {
            kind: mount.kind.into(),
            source: mount.source,
            target: mount.target,
            readonly: mount.readonly,
        }
    }
}

impl From<MountRecord> for Mount {
    fn from(record: MountRecord) -> Self {
        Mount {
            kind: record.kind.into(),
            source: record.source,
            target: record.target,
            readonly: record.readonly,
        }
    }
}

impl From<PublishedPort> for PublishedPortRecord {
    fn from(port: PublishedPort) -> Self {
        PublishedPortRecord {
            published: port.published,
            target: port.target,
            protocol: port.protocol.into(),
            mode: port.mode.into(),
        }
    }
}

impl From<PublishedPortRecord> for PublishedPort {
    fn from(record: PublishedPortRecord) -> Self {
        PublishedPort {
            published: record.published,
            target: record.target,
            protocol: record.protocol.into(),
            mode: record.mode.into(),
        }
    }
}

impl From<HttpRoute> for HttpRouteRecord {
    fn from(route: HttpRoute) -> Self {
        HttpRouteRecord {
            host: route.host,
            path_prefix: route.path_prefix,
        }
    }
}

impl From<HttpRouteRecord> for HttpRoute {
    fn from(record: HttpRouteRecord) -> Self {
        HttpRoute {
            host: record.host,
            path_prefix: record.path_prefix,
        }
    }
}

impl From<PlacementPref> for PlacementPrefRecord {
    fn from(pref: PlacementPref) -> Self {
        match pref {
            PlacementPref::Spread { label } => PlacementPrefRecord::Spread { label },
        }
    }
}

impl From<PlacementPrefRecord> for PlacementPref {
    fn from(record: PlacementPrefRecord) -> Self {
        match record {
            PlacementPrefRecord::Spread { label } => PlacementPref::Spread { label },
        }
    }
}

fn parse_constraint(text: String) -> Result<Constraint, RecordError> {
    Constraint::parse(&text).map_err(|err| RecordError {
        field: "constraint",
        reason: err.to_string(),
    })
}

impl From<ServiceSpec> for ServiceSpecRecord {
    fn from(spec: ServiceSpec) -> Self {
        ServiceSpecRecord {
            name: spec.name,
            mode: spec.mode.into(),
            driver: spec.driver.to_string(),
            command: spec.command,
            image: spec.image,
            env: spec.env,
            labels: spec.labels,
            mounts: spec.mounts.into_iter().map(Into::into).collect(),
            ports: spec.ports.into_iter().map(Into::into).collect(),
            constraints: spec.constraints.iter().map(ToString::to_string).collect(),
            placement_prefs: spec.placement_prefs.into_iter().map(Into::into).collect(),
            max_replicas_per_node: spec.max_replicas_per_node,
            resources: spec.resources.into(),
            restart_policy: spec.restart_policy.into(),
            stop_grace_period_ms: spec.stop_grace_period_ms,
            rebalance: spec.rebalance.into(),
            health_path: spec.health_path,
            routes: spec.routes.into_iter().map(Into::into).collect(),
            user: spec.user,
            health_cmd: spec.health_cmd,
            health_interval_ms: spec.health_interval_ms,
            health_retries: spec.health_retries,
            health_timeout_ms: spec.health_timeout_ms,
            health_start_period_ms: spec.health_start_period_ms,
            no_healthcheck: spec.no_healthcheck,
            hostname: spec.hostname,
            entrypoint: spec.entrypoint,
            workdir: spec.workdir,
            read_only: spec.read_only,
        }
    }
}

impl TryFrom<ServiceSpecRecord> for ServiceSpec {
    type Error = RecordError;

    fn try_from(record: ServiceSpecRecord) -> Result<Self, RecordError> {
        Ok(ServiceSpec {
            name: record.name,
            mode: record.mode.into(),
            // `parse` so that the domain may hold the driver as a kind of its own.
            driver: record.driver.parse().map_err(|err| RecordError {
                field: "driver",
                reason: format!("{err}"),
            })?,
            command: record.command,
            image: record.image,
            env: record.env,
            labels: record.labels,
            mounts: record.mounts.into_iter().map(Into::into).collect(),
            ports: record.ports.into_iter().map(Into::into).collect(),
            constraints: record
                .constraints
                .into_iter()
                .map(parse_constraint)
                .collect::<Result<_, _>>()?,
            placement_prefs: record.placement_prefs.into_iter().map(Into::into).collect(),
            max_replicas_per_node: record.max_replicas_per_node,
            resources: record.resources.into(),
            restart_policy: record.restart_policy.into(),
            stop_grace_period_ms: record.stop_grace_period_ms,
            rebalance: record.rebalance.into(),
            health_path: record.health_path,
            routes: record.routes.into_iter().map(Into::into).collect(),
            user: record.user,
            health_cmd: record.health_cmd,
            health_interval_ms: record.health_interval_ms,
            health_retries: record.health_retries,
            health_timeout_ms: record.health_timeout_ms,
            health_start_period_ms: record.health_start_period_ms,
            no_healthcheck: record.no_healthcheck,
            hostname: record.hostname,
            entrypoint: record.entrypoint,
            workdir: record.workdir,
            read_only: record.read_only,
        })
    }
}

impl From<Service> for ServiceRecord {
    fn from(service: Service) -> Self {
        ServiceRecord {
            id: service.id.into(),
            spec: service.spec.into(),
            version: service.version,
            created_at_ms: service.created_at_ms,
            updated_at_ms: service.updated_at_ms,
        }
    }
}

impl TryFrom<ServiceRecord> for Service {
    type Error = RecordError;

    fn try_from(record: ServiceRecord) -> Result<Self, RecordError> {
        Ok(Service {
            id: record.id.into(),
            spec: record.spec.try_into()?,
            version: record.version,
            created_at_ms: record.created_at_ms,
            updated_at_ms: record.updated_at_ms,
        })
    }
}
