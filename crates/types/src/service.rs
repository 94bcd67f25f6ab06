//! Services: what the operator declares (`ServiceSpec`), the record the cluster keeps of
//! it (`Service`), and the parsers that turn CLI text into spec fields (constraints,
//! published ports, mounts, memory sizes, CPU counts).
//!
//! This module knows the *shape* of a valid spec and how to read one from text. It does
//! not know where tasks run, how many are running, or whether a published port is free
//! on a node: placement belongs to the scheduler, replica counting to the orchestrator.
//! The one cluster-wide check it offers, [`ServiceSpec::check_port_conflicts`], takes the
//! other services as a parameter rather than reading any store.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::node::{Resources, Role};
use crate::{DriverKind, InvalidSpec, Node, ServiceId};

/// Swarm's default restart delay (`--restart-delay 5s`).
pub const DEFAULT_RESTART_DELAY_MS: u64 = 5_000;

/// Swarm's default `--stop-grace-period`.
pub const DEFAULT_STOP_GRACE_PERIOD_MS: u64 = 10_000;

/// Docker's limit on container names is 63 characters; service names share it so a task
/// name (`name.slot`) stays usable as a container name and a hostname label.
const MAX_NAME_LEN: usize = 63;

/// A service as the cluster records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: ServiceId,
    pub spec: ServiceSpec,
    /// Bumped on every `service update`. Tasks record the version they were created from,
    /// so `service ps` can tell old tasks from new ones.
    pub version: u64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// Everything the operator declares about a service. Missing JSON fields take their
/// defaults, so a minimal spec is `{"name": "web", "command": ["hoist", "hello"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceSpec {
    pub name: String,
    pub mode: ServiceMode,
    /// `process` or `docker`; the scheduler only places a task on a node offering it.
    pub driver: DriverKind,
    /// Program and arguments, for the process driver (for docker: overrides the image's
    /// command when non-empty).
    pub command: Vec<String>,
    /// Image reference, required by the docker driver.
    pub image: Option<String>,
    /// Environment of every task. A map, so a key is set at most once and the order of
    /// the JSON is stable.
    pub env: BTreeMap<String, String>,
    /// Service labels: metadata for the operator, not matched by constraints.
    pub labels: BTreeMap<String, String>,
    pub mounts: Vec<Mount>,
    pub ports: Vec<PublishedPort>,
    /// Hard placement rules; every one must match a node for a task to land there.
    pub constraints: Vec<Constraint>,
    /// Soft placement preferences, applied in order before the spread over nodes.
    pub placement_prefs: Vec<PlacementPref>,
    /// At most this many tasks of the service on one node (Swarm's
    /// `--replicas-max-per-node`). `None` is no limit.
    pub max_replicas_per_node: Option<u64>,
    pub resources: ResourceRequirements,
    pub restart_policy: RestartPolicy,
    /// How long a task gets between the stop signal and the kill.
    pub stop_grace_period_ms: u64,
    pub rebalance: Rebalance,
    /// HTTP path the mesh probes on `protocol=http` ports, e.g. `/healthz`.
    pub health_path: Option<String>,
    /// Which requests of its `http` ports the service takes, so that several services
    /// can share one published port. Empty: every request (the port's default service).
    pub routes: Vec<HttpRoute>,
    /// User to run as (name or uid), when not the driver's default.
    pub user: Option<String>,
    /// A command run inside each task to judge its health (docker driver,
    /// `--health-cmd`); a task is Running only once healthy and is replaced when it
    /// turns unhealthy.
    pub health_cmd: Option<String>,
    pub health_interval_ms: Option<u64>,
    pub health_retries: Option<u32>,
    /// How long one health probe may take (default: the interval).
    pub health_timeout_ms: Option<u64>,
    /// Probe failures within this time of the start do not count (`--health-start-period`).
    pub health_start_period_ms: Option<u64>,
    /// Disable the image's HEALTHCHECK (docker driver, `--no-healthcheck`).
    pub no_healthcheck: bool,
    /// The container's hostname (docker driver).
    pub hostname: Option<String>,
    /// Overrides the image's ENTRYPOINT (docker driver).
    pub entrypoint: Option<String>,
    /// Working directory of the task, when not the driver's default.
    pub workdir: Option<String>,
    /// Mount the root filesystem read-only (docker driver).
    pub read_only: bool,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        ServiceSpec {
            name: String::new(),
            mode: ServiceMode::default(),
            driver: DriverKind::Process,
            command: Vec::new(),
            image: None,
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            mounts: Vec::new(),
            ports: Vec::new(),
            constraints: Vec::new(),
            placement_prefs: Vec::new(),
            max_replicas_per_node: None,
            resources: ResourceRequirements::default(),
            restart_policy: RestartPolicy::default(),
            stop_grace_period_ms: DEFAULT_STOP_GRACE_PERIOD_MS,
            rebalance: Rebalance::default(),
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

/// A host and/or path prefix an `http` service answers for (`--route host=a.example.com,path=/v1`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct HttpRoute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
}

impl HttpRoute {
    /// Parses `host=api.example.com,path=/v1` (either part may be left out).
    pub fn parse(text: &str) -> Result<HttpRoute, InvalidSpec> {
        let bad = |reason: String| InvalidSpec::new("route", format!("{text:?}: {reason}"));
        let mut route = HttpRoute::default();
        for field in text
            .split(',')
            .map(str::trim)
            .filter(|field| !field.is_empty())
        {
            let Some((key, value)) = field.split_once('=') else {
                return Err(bad(format!(
                    "{field:?} is not KEY=VALUE (keys: host, path)"
                )));
            };
            let value = value.trim();
            match key.trim() {
                "host" if !value.is_empty() && !value.contains(['/', ' ']) => {
                    route.host = Some(value.to_ascii_lowercase())
                }
                "host" => return Err(bad(format!("{value:?} is not a host name"))),
                "path" if value.starts_with('/') => route.path_prefix = Some(value.to_string()),
                "path" => return Err(bad(format!("the path {value:?} must start with /"))),
                other => return Err(bad(format!("unknown key {other:?} (keys: host, path)"))),
            }
        }
        if route.host.is_none() && route.path_prefix.is_none() {
            return Err(bad("give a host, a path, or both".into()));
        }
        Ok(route)
    }
}

impl fmt::Display for HttpRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(host) = &self.host {
            parts.push(format!("host={host}"));
        }
        if let Some(path) = &self.path_prefix {
            parts.push(format!("path={path}"));
        }
        f.write_str(&parts.join(","))
    }
}

/// How many tasks a service wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    /// Slots `1..=replicas`, each wanting one running task, spread by the scheduler.
    Replicated { replicas: u64 },
    /// One task on every eligible node.
    Global,
    /// Tasks that run to completion (Docker's `replicated-job`): `total_completions`
    /// successful runs, at most `max_concurrent` at a time; a task that exits 0 is
    /// never restarted.
    #[serde(rename = "replicated_job")]
    ReplicatedJob {
        max_concurrent: u64,
        total_completions: u64,
    },
    /// One task to completion on every eligible node (Docker's `global-job`).
    #[serde(rename = "global_job")]
    GlobalJob,
}

impl ServiceMode {
    /// Whether the tasks run to completion instead of for ever.
    pub fn is_job(&self) -> bool {
        matches!(
            self,
            ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob
        )
    }
}

impl Default for ServiceMode {
    fn default() -> Self {
        ServiceMode::Replicated { replicas: 1 }
    }
}

/// Whether the orchestrator may move running tasks to even out the spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Rebalance {
    /// Move one task at a time, starting the new task before stopping the old one.
    #[default]
    Auto,
    /// Leave running tasks where they are (Swarm's behaviour).
    Off,
}

/// CPU and memory a task reserves (for placement) and may use at most (enforced by the
/// driver). A zero field means "not set".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ResourceRequirements {
    pub reservations: Resources,
    pub limits: Resources,
}

/// When a task that stopped by itself gets a replacement in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    /// Wait this long after a task ended before starting its replacement.
    pub delay_ms: u64,
    /// Restarts allowed (within `window_ms` when set); `None` is unlimited.
    pub max_attempts: Option<u64>,
    /// Only restarts within this trailing window count toward `max_attempts`.
    pub window_ms: Option<u64>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Any,
            delay_ms: DEFAULT_RESTART_DELAY_MS,
            max_attempts: None,
            window_ms: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    /// Restart whatever the exit (Swarm's default).
    #[default]
    Any,
    /// Restart unless the task completed with exit code 0.
    OnFailure,
    /// Never restart.
    None,
}

impl std::str::FromStr for RestartCondition {
    type Err = InvalidSpec;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "any" => Ok(RestartCondition::Any),
            "on-failure" => Ok(RestartCondition::OnFailure),
            "none" => Ok(RestartCondition::None),
            other => Err(InvalidSpec::new(
                "restart-condition",
                format!("{other:?}: expected any, on-failure or none"),
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Mounts

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host path.
    Bind,
    /// A named volume of the driver.
    Volume,
    /// An in-memory filesystem; it has no source.
    Tmpfs,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        }
    }

    /// Whether a driver can run a task with this kind of mount today. The others parse
    /// (specs stored by older versions hold them) but a new spec may not use them: the
    /// drivers would run the task without the mount, which is worse than a refusal.
    pub fn is_supported(self) -> bool {
        matches!(self, MountKind::Bind)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// Host path (bind), volume name (volume), empty (tmpfs).
    #[serde(default)]
    pub source: String,
    /// Absolute path inside the task.
    pub target: String,
    #[serde(default)]
    pub readonly: bool,
}

impl Mount {
    /// Parses Docker's `--mount` syntax: `type=bind,source=/a,target=/b,readonly`.
    /// `src` and `dst`/`destination` are accepted as aliases, `ro` for `readonly`, and
    /// `readonly=true|false` as well as the bare flag. The type defaults to volume, as
    /// in Docker.
    pub fn parse(text: &str) -> Result<Mount, InvalidSpec> {
        let bad = |reason: String| InvalidSpec::new("mount", format!("{text:?}: {reason}"));
        let mut kind = MountKind::Volume;
        let mut source = String::new();
        let mut target = None;
        let mut readonly = false;
        for field in text.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let (key, value) = match field.split_once('=') {
                Some((key, value)) => (key.trim(), Some(value.trim())),
                None => (field, None),
            };
            match (key, value) {
                ("type", Some(value)) => {
                    kind = match value {
                        "bind" => MountKind::Bind,
                        "volume" => MountKind::Volume,
                        "tmpfs" => MountKind::Tmpfs,
                        other => {
                            return Err(bad(format!(
                                "unknown type {other:?} (expected bind, volume or tmpfs)"
                            )))
                        }
                    }
                }
                ("source" | "src", Some(value)) => source = value.to_string(),
                ("target" | "dst" | "destination", Some(value)) => target = Some(value.to_string()),
                ("readonly" | "ro", None) => readonly = true,
                ("readonly" | "ro", Some(value)) => {
                    readonly = match value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        other => {
                            return Err(bad(format!("readonly={other:?} is not true or false")))
                        }
                    }
                }
                (key, _) => return Err(bad(format!("unknown option {key:?}"))),
            }
        }
        let Some(target) = target else {
            return Err(bad("target is required".to_string()));
        };
        let mount = Mount {
            kind,
            source,
            target,
            readonly,
        };
        mount.validate()?;
        mount.check_supported()?;
        Ok(mount)
    }

    /// Refuses a mount type no driver implements yet, naming it.
    pub fn check_supported(&self) -> Result<(), InvalidSpec> {
        if self.kind.is_supported() {
            return Ok(());
        }
        Err(InvalidSpec::new(
            "mount",
            format!(
                "{}: {} mounts are not supported yet (only type=bind is)",
                self,
                self.kind.as_str()
            ),
        ))
    }

    fn validate(&self) -> Result<(), InvalidSpec> {
        let bad = |reason: String| InvalidSpec::new("mount", format!("{}: {reason}", self));
        if !self.target.starts_with('/') {
            return Err(bad("target must be an absolute path".into()));
        }
        match self.kind {
            MountKind::Bind if !self.source.starts_with('/') => {
                Err(bad("a bind source must be an absolute host path".into()))
            }
            MountKind::Volume if self.source.is_empty() => {
                Err(bad("a volume needs a source (the volume name)".into()))
            }
            MountKind::Volume if self.source.contains('/') => Err(bad(
                "a volume source is a name; use type=bind for a host path".into(),
            )),
            MountKind::Tmpfs if !self.source.is_empty() => {
                Err(bad("a tmpfs mount takes no source".into()))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "type={}", self.kind.as_str())?;
        if !self.source.is_empty() {
            write!(f, ",source={}", self.source)?;
        }
        write!(f, ",target={}", self.target)?;
        if self.readonly {
            f.write_str(",readonly")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Published ports

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// L4: the mesh forwards connections.
    #[default]
    Tcp,
    /// L7: the mesh balances requests, with health checks and retries.
    Http,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    /// Every node listens and routes to the service's endpoints anywhere (the mesh).
    #[default]
    Ingress,
    /// Only nodes running a task listen, straight to that task; so at most one task of
    /// all services using this port per node.
    Host,
}

impl PortMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PortMode::Ingress => "ingress",
            PortMode::Host => "host",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    /// The port on the nodes.
    pub published: u16,
    /// The port the task listens on (the process driver passes it as `PORT`).
    pub target: u16,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub mode: PortMode,
}

/// Where a published port given without a number is picked from, as Swarm does.
pub const AUTO_PUBLISHED_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

impl PublishedPort {
    /// Parses `8080:80`, `8080:80/tcp`, `8080:80/http`, `80` (a published port the
    /// managers pick from [`AUTO_PUBLISHED_PORTS`]; `published` is 0 until then), or the
    /// long form `[published=8080,]target=80[,protocol=tcp|http][,mode=ingress|host]`.
    pub fn parse(text: &str) -> Result<PublishedPort, InvalidSpec> {
        let bad = |reason: String| InvalidSpec::new("port", format!("{text:?}: {reason}"));
        let text = text.trim();
        let port = if text.contains('=') {
            let mut published = None;
            let mut target = None;
            let mut protocol = Protocol::Tcp;
            let mut mode = PortMode::Ingress;
            for field in text.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                let Some((key, value)) = field.split_once('=') else {
                    return Err(bad(format!("{field:?} is not KEY=VALUE")));
                };
                match key.trim() {
                    "published" => published = Some(parse_port_number(value).map_err(bad)?),
                    "target" => target = Some(parse_port_number(value).map_err(bad)?),
                    "protocol" => protocol = parse_protocol(value).map_err(bad)?,
                    "mode" => {
                        mode = match value.trim() {
                            "ingress" => PortMode::Ingress,
                            "host" => PortMode::Host,
                            other => {
                                return Err(bad(format!(
                                    "unknown mode {other:?} (expected ingress or host)"
                                )))
                            }
                        }
                    }
                    other => {
                        return Err(bad(format!(
                            "unknown key {other:?} (expected published, target, protocol, mode)"
                        )))
                    }
                }
            }
            let Some(target) = target else {
                return Err(bad("target= is required".into()));
            };
            PublishedPort {
                published: published.unwrap_or(0),
                target,
                protocol,
                mode,
            }
        } else {
            let (ports, protocol) = match text.split_once('/') {
                Some((ports, protocol)) => (ports, parse_protocol(protocol).map_err(bad)?),
                None => (text, Protocol::Tcp),
            };
            let (published, target) = match ports.split_once(':') {
                Some((published, target)) => (parse_port_number(published).map_err(bad)?, target),
                None if ports.trim().parse::<u16>().is_ok() => (0, ports),
                None => {
                    return Err(bad(
                        "expected [PUBLISHED:]TARGET[/PROTOCOL] or [published=P,]target=T[,protocol=tcp|http][,mode=ingress|host]"
                            .into(),
                    ))
                }
            };
            PublishedPort {
                published,
                target: parse_port_number(target).map_err(bad)?,
                protocol,
                mode: PortMode::Ingress,
            }
        };
        Ok(port)
    }
}

fn parse_port_number(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(0) => Err("port 0 is not allowed".to_string()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("{:?} is not a port number (1-65535)", text.trim())),
    }
}

fn parse_protocol(text: &str) -> Result<Protocol, String> {
    match text.trim() {
        "tcp" => Ok(Protocol::Tcp),
        "http" => Ok(Protocol::Http),
        "udp" => Err("udp is not supported (expected tcp or http)".to_string()),
        other => Err(format!("unknown protocol {other:?} (expected tcp or http)")),
    }
}

impl fmt::Display for PublishedPort {
    /// The short form for ingress ports and the long form for host ports, so the text
    /// always parses back to the same port.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mode {
            PortMode::Ingress if self.published == 0 => {
                write!(f, "{}/{}", self.target, self.protocol.as_str())
            }
            PortMode::Ingress => write!(
                f,
                "{}:{}/{}",
                self.published,
                self.target,
                self.protocol.as_str()
            ),
            PortMode::Host => write!(
                f,
                "published={},target={},protocol={},mode=host",
                self.published,
                self.target,
                self.protocol.as_str()
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Constraints and placement preferences

/// What a constraint looks at on a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConstraintKey {
    /// `node.id`: the 16-digit hex id.
    NodeId,
    /// `node.hostname`, compared without regard to case (hostnames are case-insensitive).
    Hostname,
    /// `node.role`: `manager` or `worker`.
    Role,
    /// `node.labels.KEY`: a label set with `node update --label-add`.
    Label(String),
    /// `engine.storage_driver`: Docker's storage driver, absent without Docker.
    StorageDriver,
    /// `engine.labels.KEY`: a label of the node's Docker Engine.
    EngineLabel(String),
    /// `node.platform.os`: `linux`.
    PlatformOs,
    /// `node.platform.arch`: `x86_64`, `aarch64`...
    PlatformArch,
}

impl ConstraintKey {
    fn parse(text: &str) -> Option<ConstraintKey> {
        match text {
            "node.id" => Some(ConstraintKey::NodeId),
            "node.hostname" => Some(ConstraintKey::Hostname),
            "node.role" => Some(ConstraintKey::Role),
            "engine.storage_driver" => Some(ConstraintKey::StorageDriver),
            "node.platform.os" => Some(ConstraintKey::PlatformOs),
            "node.platform.arch" => Some(ConstraintKey::PlatformArch),
            _ => {
                if let Some(label) = text.strip_prefix("node.labels.") {
                    return (!label.is_empty()).then(|| ConstraintKey::Label(label.to_string()));
                }
                let label = text.strip_prefix("engine.labels.")?;
                (!label.is_empty()).then(|| ConstraintKey::EngineLabel(label.to_string()))
            }
        }
    }

    /// The node's value for this key; `None` when the node has none (no such label, no
    /// Docker engine).
    fn value_of<'n>(&self, node: &'n Node) -> Option<std::borrow::Cow<'n, str>> {
        use std::borrow::Cow;
        match self {
            ConstraintKey::NodeId => Some(Cow::Owned(node.id.to_string())),
            ConstraintKey::Hostname => Some(Cow::Borrowed(node.hostname.as_str())),
            ConstraintKey::Role => Some(Cow::Borrowed(node.role.as_str())),
            ConstraintKey::Label(label) => {
                node.labels.get(label).map(|v| Cow::Borrowed(v.as_str()))
            }
            ConstraintKey::StorageDriver => {
                node.engine.storage_driver.as_deref().map(Cow::Borrowed)
            }
            ConstraintKey::EngineLabel(label) => node
                .engine
                .labels
                .get(label)
                .map(|v| Cow::Borrowed(v.as_str())),
            ConstraintKey::PlatformOs => node.engine.os.as_deref().map(Cow::Borrowed),
            ConstraintKey::PlatformArch => node.engine.arch.as_deref().map(Cow::Borrowed),
        }
    }

    /// Ids, hostnames and roles are case-insensitive words; labels and engine values are
    /// compared exactly, as the operator wrote them.
    fn case_insensitive(&self) -> bool {
        matches!(
            self,
            ConstraintKey::NodeId | ConstraintKey::Hostname | ConstraintKey::Role
        )
    }
}

impl fmt::Display for ConstraintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConstraintKey::NodeId => f.write_str("node.id"),
            ConstraintKey::Hostname => f.write_str("node.hostname"),
            ConstraintKey::Role => f.write_str("node.role"),
            ConstraintKey::Label(label) => write!(f, "node.labels.{label}"),
            ConstraintKey::StorageDriver => f.write_str("engine.storage_driver"),
            ConstraintKey::EngineLabel(label) => write!(f, "engine.labels.{label}"),
            ConstraintKey::PlatformOs => f.write_str("node.platform.os"),
            ConstraintKey::PlatformArch => f.write_str("node.platform.arch"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConstraintOp {
    Eq,
    NotEq,
}

/// A hard placement rule such as `node.labels.zone==a`. Serialized as that text, so the
/// JSON reads the way the operator typed it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Constraint {
    pub key: ConstraintKey,
    pub op: ConstraintOp,
    pub value: String,
}

impl Constraint {
    /// Parses `KEY==VALUE` or `KEY!=VALUE`, with KEY one of `node.id`, `node.hostname`,
    /// `node.role`, `node.labels.<label>`, `engine.storage_driver`.
    pub fn parse(text: &str) -> Result<Constraint, InvalidSpec> {
        let bad = |reason: &str| InvalidSpec::new("constraint", format!("{text:?}: {reason}"));
        let (key, op, value) = if let Some((key, value)) = text.split_once("==") {
            (key, ConstraintOp::Eq, value)
        } else if let Some((key, value)) = text.split_once("!=") {
            (key, ConstraintOp::NotEq, value)
        } else {
            return Err(bad("expected KEY==VALUE or KEY!=VALUE"));
        };
        let (key, value) = (key.trim(), value.trim());
        let Some(key) = ConstraintKey::parse(key) else {
            return Err(bad(&format!(
                "unknown key {key:?} (expected node.id, node.hostname, node.role, \
                 node.labels.<label>, node.platform.os, node.platform.arch, \
                 engine.labels.<label> or engine.storage_driver)"
            )));
        };
        if value.is_empty() {
            return Err(bad("the value is empty"));
        }
        if value.contains("==") || value.contains("!=") {
            return Err(bad("more than one operator"));
        }
        if key == ConstraintKey::Role && value.parse::<Role>().is_err() {
            return Err(bad(&format!(
                "unknown role {value:?} (expected manager or worker)"
            )));
        }
        Ok(Constraint {
            key,
            op,
            value: value.to_string(),
        })
    }

    /// Whether `node` satisfies this constraint. A node without the key (no such label)
    /// fails `==` and passes `!=`, as in Swarm.
    pub fn matches(&self, node: &Node) -> bool {
        let equal = match self.key.value_of(node) {
            None => false,
            Some(actual) if self.key.case_insensitive() => actual.eq_ignore_ascii_case(&self.value),
            Some(actual) => actual == self.value,
        };
        match self.op {
            ConstraintOp::Eq => equal,
            ConstraintOp::NotEq => !equal,
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            ConstraintOp::Eq => "==",
            ConstraintOp::NotEq => "!=",
        };
        write!(f, "{}{}{}", self.key, op, self.value)
    }
}

impl TryFrom<String> for Constraint {
    type Error = InvalidSpec;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Constraint::parse(&text)
    }
}

impl From<Constraint> for String {
    fn from(constraint: Constraint) -> String {
        constraint.to_string()
    }
}

/// A soft placement preference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementPref {
    /// Spread tasks evenly over the values of this node label (nodes without the label
    /// form one more group), before spreading over nodes.
    Spread { label: String },
}

impl PlacementPref {
    /// Parses `spread=node.labels.KEY`.
    pub fn parse(text: &str) -> Result<PlacementPref, InvalidSpec> {
        let bad = |reason: &str| InvalidSpec::new("placement-pref", format!("{text:?}: {reason}"));
        let Some((strategy, descriptor)) = text.split_once('=') else {
            return Err(bad("expected spread=node.labels.KEY"));
        };
        if strategy.trim() != "spread" {
            return Err(bad("the only strategy is spread"));
        }
        match descriptor.trim().strip_prefix("node.labels.") {
            Some(label) if !label.is_empty() => Ok(PlacementPref::Spread {
                label: label.to_string(),
            }),
            _ => Err(bad("expected spread=node.labels.KEY")),
        }
    }
}

impl fmt::Display for PlacementPref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlacementPref::Spread { label } => write!(f, "spread=node.labels.{label}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sizes and CPUs

const KIB: u64 = 1024;

/// Parses a memory size: a number of bytes, or a number with a unit `b`, `k`, `m`, `g`,
/// `t` (case-insensitive, optionally followed by `b` or `ib`). Units are binary as in
/// Docker, so `512M` and `512MiB` are both 512 × 1024² bytes. Decimals are accepted
/// (`1.5G`) and rounded down to whole bytes.
pub fn parse_memory(text: &str) -> Result<u64, InvalidSpec> {
    let bad = |reason: &str| InvalidSpec::new("memory", format!("{text:?}: {reason}"));
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(bad("expected a size such as 512M or 2G"));
    }
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => KIB * KIB,
        "g" | "gb" | "gib" => KIB * KIB * KIB,
        "t" | "tb" | "tib" => KIB * KIB * KIB * KIB,
        _ => return Err(bad("unknown unit (expected B, K, M, G or T)")),
    };
    parse_scaled_decimal(number, scale, 18).map_err(|reason| bad(&reason))
}

/// Parses a number of CPUs such as `0.5` or `2` into nano-CPUs (Docker's unit), with at
/// most 9 decimal places.
pub fn parse_cpus(text: &str) -> Result<u64, InvalidSpec> {
    let bad = |reason: &str| InvalidSpec::new("cpus", format!("{text:?}: {reason}"));
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad("expected a number of CPUs such as 0.5 or 2"));
    }
    parse_scaled_decimal(trimmed, 1_000_000_000, 9).map_err(|reason| bad(&reason))
}

/// `int.frac × scale` in integers, so that "0.1" CPUs is exactly 100,000,000 nano-CPUs
/// (a float would not be). The fraction is truncated to whole units.
fn parse_scaled_decimal(number: &str, scale: u64, max_frac_digits: usize) -> Result<u64, String> {
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    let digits_only = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty())
        || !digits_only(int_part)
        || !digits_only(frac_part)
    {
        return Err("not a number".to_string());
    }
    if frac_part.len() > max_frac_digits {
        return Err(format!("at most {max_frac_digits} decimal places"));
    }
    let overflow = || "too large".to_string();
    let int_value: u64 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| overflow())?
    };
    let mut total = int_value.checked_mul(scale).ok_or_else(overflow)?;
    if !frac_part.is_empty() {
        let frac_value: u128 = frac_part.parse().map_err(|_| overflow())?;
        let denominator = 10u128.pow(frac_part.len() as u32);
        let frac_scaled = (frac_value * scale as u128 / denominator) as u64;
        total = total.checked_add(frac_scaled).ok_or_else(overflow)?;
    }
    Ok(total)
}

/// `536870912` → `"512 MiB"`; whole units where possible, one decimal otherwise.
pub fn format_memory(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut scale = 1u64;
    while unit + 1 < UNITS.len() && bytes >= scale * KIB {
        scale *= KIB;
        unit += 1;
    }
    // Not `is_multiple_of`: it is newer than the workspace's rust-version (1.85).
    let whole = bytes / scale;
    if whole * scale == bytes {
        format!("{whole} {}", UNITS[unit])
    } else {
        let tenths = (bytes as u128 * 10 / scale as u128) as u64;
        format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
    }
}

/// `500_000_000` → `"0.5"`, `2_000_000_000` → `"2"`.
pub fn format_cpus(nano_cpus: u64) -> String {
    let whole = nano_cpus / 1_000_000_000;
    let frac = nano_cpus % 1_000_000_000;
    if frac == 0 {
        whole.to_string()
    } else {
        let digits = format!("{frac:09}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// Parses `KEY=VALUE` as given to `--env` or `--label`; `field` names the flag in errors.
pub fn parse_key_value(field: &str, text: &str) -> Result<(String, String), InvalidSpec> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(InvalidSpec::new(
            field,
            format!("{text:?}: expected KEY=VALUE"),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Validation

/// Checks a service name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 63 characters.
pub fn validate_service_name(name: &str) -> Result<(), InvalidSpec> {
    let bad = |reason: &str| InvalidSpec::new("name", format!("{name:?}: {reason}"));
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(bad("a service needs a name")),
        Some(first) if !first.is_ascii_alphanumeric() => {
            return Err(bad("must start with a letter or a digit"))
        }
        Some(_) => {}
    }
    if chars.any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(bad("may contain only letters, digits, '_', '.' and '-'"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(&format!("longer than {MAX_NAME_LEN} characters")));
    }
    Ok(())
}

impl ServiceSpec {
    /// What a new or updated spec must pass on top of [`Self::validate`]: features that
    /// parse and may be stored (by older versions) but that no driver runs yet. Kept out
    /// of `validate`, which the state machine also runs when it replays the log, so that
    /// a spec stored before a refusal was added is never dropped on replay.
    pub fn check_supported(&self) -> Result<(), InvalidSpec> {
        for mount in &self.mounts {
            mount.check_supported()?;
        }
        Ok(())
    }

    /// Every check that needs only this spec. Cluster-wide checks (names and published
    /// ports unique among services) are the caller's, see [`Self::check_port_conflicts`].
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        validate_service_name(&self.name)?;
        self.validate_driver_fields()?;
        self.validate_lists()?;
        self.validate_limits_and_paths()
    }

    /// What the driver needs, and the fields only one driver honours.
    fn validate_driver_fields(&self) -> Result<(), InvalidSpec> {
        if self.driver == DriverKind::Process {
            let docker_only = [
                ("user", self.user.is_some()),
                ("read-only", self.read_only),
                ("health-cmd", self.health_cmd.is_some()),
                ("no-healthcheck", self.no_healthcheck),
                ("hostname", self.hostname.is_some()),
                ("entrypoint", self.entrypoint.is_some()),
            ];
            if let Some((field, _)) = docker_only.iter().find(|(_, set)| *set) {
                return Err(InvalidSpec::new(
                    *field,
                    "only the docker driver supports it: the process driver runs a task as a plain process of the daemon's user, on the node's own hostname and filesystem",
                ));
            }
        }
        if self.health_retries == Some(0) {
            return Err(InvalidSpec::new("health-retries", "must be at least 1"));
        }
        if self.no_healthcheck && self.health_cmd.is_some() {
            return Err(InvalidSpec::new(
                "no-healthcheck",
                "cannot be used with --health-cmd",
            ));
        }
        if let Some(hostname) = &self.hostname {
            crate::node::validate_hostname(hostname)
                .map_err(|err| InvalidSpec::new("hostname", err.reason))?;
        }
        if !self.routes.is_empty()
            && !self
                .ports
                .iter()
                .any(|port| port.protocol == Protocol::Http)
        {
            return Err(InvalidSpec::new(
                "route",
                "routes apply to http ports: publish one with protocol=http",
            ));
        }
        match self.driver {
            DriverKind::Process
                if self
                    .command
                    .first()
                    .is_none_or(|program| program.is_empty()) =>
            {
                return Err(InvalidSpec::new(
                    "command",
                    "the process driver needs a command to run",
                ))
            }
            DriverKind::Docker
                if self
                    .image
                    .as_deref()
                    .is_none_or(|image| image.trim().is_empty()) =>
            {
                return Err(InvalidSpec::new(
                    "image",
                    "the docker driver needs an image",
                ))
            }
            _ => {}
        }
        Ok(())
    }

    /// Environment, labels, mounts, ports and placement preferences, one by one and
    /// against each other.
    fn validate_lists(&self) -> Result<(), InvalidSpec> {
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(InvalidSpec::new(
                    "env",
                    format!("{key:?} is not a valid variable name"),
                ));
            }
        }
        for (key, value) in &self.labels {
            crate::node::validate_label_key(key)?;
            crate::node::validate_label_value(key, value)?;
        }
        let mut targets = BTreeSet::new();
        for mount in &self.mounts {
            mount.validate()?;
            if !targets.insert(mount.target.as_str()) {
                return Err(InvalidSpec::new(
                    "mount",
                    format!("two mounts target {}", mount.target),
                ));
            }
        }
        let mut published = BTreeSet::new();
        for port in &self.ports {
            if port.target == 0 {
                return Err(InvalidSpec::new(
                    "port",
                    format!("{port}: port 0 is not allowed"),
                ));
            }
            // 0: the managers pick one when the service is created.
            if port.published == 0 {
                continue;
            }
            // Both protocols are TCP underneath, so one published port serves one mapping.
            if !published.insert(port.published) {
                return Err(InvalidSpec::new(
                    "port",
                    format!("published port {} is used twice", port.published),
                ));
            }
        }
        for pref in &self.placement_prefs {
            let PlacementPref::Spread { label } = pref;
            crate::node::validate_label_key(label)
                .map_err(|err| InvalidSpec::new("placement-pref", err.reason))?;
        }
        Ok(())
    }

    /// Limits against reservations, and the paths and names that must be well-formed.
    fn validate_limits_and_paths(&self) -> Result<(), InvalidSpec> {
        if self.max_replicas_per_node == Some(0) {
            return Err(InvalidSpec::new(
                "replicas-max-per-node",
                "must be at least 1 (leave it unset for no limit)",
            ));
        }
        let ResourceRequirements {
            reservations,
            limits,
        } = self.resources;
        if limits.nano_cpus != 0 && limits.nano_cpus < reservations.nano_cpus {
            return Err(InvalidSpec::new(
                "limit-cpu",
                format!(
                    "the limit ({}) is below the reservation ({})",
                    format_cpus(limits.nano_cpus),
                    format_cpus(reservations.nano_cpus)
                ),
            ));
        }
        if limits.memory_bytes != 0 && limits.memory_bytes < reservations.memory_bytes {
            return Err(InvalidSpec::new(
                "limit-memory",
                format!(
                    "the limit ({}) is below the reservation ({})",
                    format_memory(limits.memory_bytes),
                    format_memory(reservations.memory_bytes)
                ),
            ));
        }
        if let Some(path) = &self.health_path {
            if !path.starts_with('/') {
                return Err(InvalidSpec::new(
                    "health-path",
                    format!("{path:?} must start with '/'"),
                ));
            }
        }
        if self.user.as_deref() == Some("") {
            return Err(InvalidSpec::new("user", "the user is empty"));
        }
        if let Some(workdir) = &self.workdir {
            if !workdir.starts_with('/') {
                return Err(InvalidSpec::new(
                    "workdir",
                    format!("{workdir:?} must be an absolute path"),
                ));
            }
        }
        Ok(())
    }

    /// Checks this spec's published ports against the other services of the cluster.
    /// An ingress port listens on every node, so it may not be published by any other
    /// service; two host-mode ports may share a number (the scheduler keeps their tasks
    /// on different nodes). `own_id` is skipped, so an update does not conflict with
    /// the service's current spec.
    pub fn check_port_conflicts<'a>(
        &self,
        own_id: Option<ServiceId>,
        others: impl IntoIterator<Item = &'a Service>,
    ) -> Result<(), InvalidSpec> {
        for other in others {
            if Some(other.id) == own_id {
                continue;
            }
            for mine in &self.ports {
                for theirs in &other.spec.ports {
                    let both_host = mine.mode == PortMode::Host && theirs.mode == PortMode::Host;
                    // Two http services may share an ingress port when their routes tell
                    // their requests apart: at most one takes everything, and no host and
                    // path pair is claimed twice.
                    let routed_apart = mine.protocol == Protocol::Http
                        && theirs.protocol == Protocol::Http
                        && mine.mode == PortMode::Ingress
                        && theirs.mode == PortMode::Ingress
                        && !(self.routes.is_empty() && other.spec.routes.is_empty())
                        && !self
                            .routes
                            .iter()
                            .any(|route| other.spec.routes.contains(route));
                    if mine.published == theirs.published && !both_host && !routed_apart {
                        return Err(InvalidSpec::new(
                            "port",
                            format!(
                                "published port {} is already used by service {}",
                                mine.published, other.spec.name
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The number of replicas, or `None` for a global service.
    pub fn replicas(&self) -> Option<u64> {
        match self.mode {
            ServiceMode::Replicated { replicas } => Some(replicas),
            ServiceMode::ReplicatedJob {
                total_completions, ..
            } => Some(total_completions),
            ServiceMode::Global | ServiceMode::GlobalJob => None,
        }
    }

    /// Whether tasks made from `self` and from `other` would run the same way. Fields
    /// that only steer the orchestrator or the scheduler (mode, placement, restart
    /// policy, rebalance, service labels) are ignored: changing them must not restart
    /// running tasks. The orchestrator replaces a task whose spec differs in any other
    /// field (a rolling update).
    pub fn runs_like(&self, other: &ServiceSpec) -> bool {
        let neutral = |spec: &ServiceSpec| ServiceSpec {
            mode: ServiceMode::Global,
            labels: BTreeMap::new(),
            constraints: Vec::new(),
            placement_prefs: Vec::new(),
            max_replicas_per_node: None,
            restart_policy: RestartPolicy::default(),
            rebalance: Rebalance::Auto,
            ..spec.clone()
        };
        neutral(self) == neutral(other)
    }

    /// Whether any published port of the spec is in host mode. Such a service's tasks
    /// cannot overlap on one node, so updates stop the old task before starting the new.
    pub fn has_host_ports(&self) -> bool {
        self.ports.iter().any(|port| port.mode == PortMode::Host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::EngineInfo;
    use crate::NodeId;

    fn node() -> Node {
        let mut node = Node::new(
            NodeId(0xab),
            "Node-1".into(),
            "10.0.0.1:2377".into(),
            Role::Worker,
            0,
        );
        node.labels = [("zone".to_string(), "a".to_string())].into();
        node.engine = EngineInfo {
            drivers: vec!["process".into()],
            docker_version: None,
            storage_driver: Some("zfs".into()),
            os: None,
            arch: None,
            labels: Default::default(),
        };
        node
    }

    fn web() -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            command: vec!["hoist".into(), "hello".into()],
            ..ServiceSpec::default()
        }
    }

    #[test]
    fn constraints_parse_and_match() {
        let n = node();
        let cases = [
            ("node.hostname==node-1", true),
            ("node.hostname!=node-1", false),
            ("node.id==00000000000000ab", true),
            ("node.role==manager", false),
            ("node.role != manager", true),
            ("node.labels.zone==a", true),
            ("node.labels.zone==A", false),
            ("node.labels.rack==1", false),
            ("node.labels.rack!=1", true),
            ("engine.storage_driver==zfs", true),
            ("node.platform.os==linux", true),
            ("node.platform.arch==x86_64", true),
            ("node.platform.arch!=x86_64", false),
            ("engine.labels.gpu==yes", true),
            ("engine.labels.gpu==no", false),
            ("engine.labels.ssd==yes", false),
        ];
        let mut n = n;
        n.engine.os = Some("linux".into());
        n.engine.arch = Some("x86_64".into());
        n.engine.labels = [("gpu".to_string(), "yes".to_string())].into();
        for (text, expected) in cases {
            let constraint = Constraint::parse(text).unwrap();
            assert_eq!(constraint.matches(&n), expected, "{text}");
            assert_eq!(
                Constraint::parse(&constraint.to_string()).unwrap(),
                constraint,
                "{text} prints as it parses"
            );
        }
        // A node that reported no platform matches no platform constraint.
        assert!(!Constraint::parse("node.platform.os==linux")
            .unwrap()
            .matches(&node()));
        assert_eq!(
            Constraint::parse(" node.labels.zone == a ")
                .unwrap()
                .to_string(),
            "node.labels.zone==a"
        );
    }

    #[test]
    fn bad_constraints_say_what_is_wrong() {
        let err = Constraint::parse("node.foo=bar").unwrap_err();
        assert_eq!(err.field, "constraint");
        assert_eq!(
            err.reason,
            "\"node.foo=bar\": expected KEY==VALUE or KEY!=VALUE"
        );
        assert!(Constraint::parse("node.foo==bar")
            .unwrap_err()
            .reason
            .contains("unknown key \"node.foo\""));
        assert!(Constraint::parse("node.labels.==x").is_err());
        assert!(Constraint::parse("node.hostname==")
            .unwrap_err()
            .reason
            .contains("empty"));
        assert!(Constraint::parse("node.role==boss")
            .unwrap_err()
            .reason
            .contains("unknown role"));
    }

    #[test]
    fn constraints_serialize_as_text() {
        let constraint = Constraint::parse("node.labels.zone!=b").unwrap();
        let json = serde_json::to_string(&constraint).unwrap();
        assert_eq!(json, "\"node.labels.zone!=b\"");
        assert_eq!(
            serde_json::from_str::<Constraint>(&json).unwrap(),
            constraint
        );
        assert!(serde_json::from_str::<Constraint>("\"zone=b\"").is_err());
    }

    #[test]
    fn ports_parse_short_and_long_forms() {
        let short = PublishedPort::parse("8080:80").unwrap();
        assert_eq!(
            short,
            PublishedPort {
                published: 8080,
                target: 80,
                protocol: Protocol::Tcp,
                mode: PortMode::Ingress
            }
        );
        assert_eq!(PublishedPort::parse("8080:80/tcp").unwrap(), short);
        assert_eq!(
            PublishedPort::parse("8080:80/http").unwrap().protocol,
            Protocol::Http
        );
        let long =
            PublishedPort::parse("published=8080,target=80,protocol=http,mode=host").unwrap();
        assert_eq!(
            long,
            PublishedPort {
                published: 8080,
                target: 80,
                protocol: Protocol::Http,
                mode: PortMode::Host
            }
        );
        for port in [short, long] {
            assert_eq!(PublishedPort::parse(&port.to_string()).unwrap(), port);
        }
    }

    #[test]
    fn a_port_without_a_published_number_is_left_for_the_managers() {
        for text in ["80", "80/http", "target=80,protocol=http"] {
            let port = PublishedPort::parse(text).unwrap();
            assert_eq!((port.published, port.target), (0, 80), "{text}");
            assert_eq!(PublishedPort::parse(&port.to_string()).unwrap(), port);
        }
        assert_eq!(
            PublishedPort::parse("80/http").unwrap().protocol,
            Protocol::Http
        );
    }

    #[test]
    fn bad_ports_say_what_is_wrong() {
        let reason = |text: &str| PublishedPort::parse(text).unwrap_err().reason;
        assert!(reason("http").contains("expected [PUBLISHED:]TARGET"));
        assert!(reason("8080:0").contains("port 0"));
        assert!(reason("70000:80").contains("not a port number"));
        assert!(reason("8080:80/udp").contains("udp is not supported"));
        assert!(reason("published=1").contains("target= is required"));
        assert!(reason("published=1,target=2,mode=bridge").contains("unknown mode"));
        assert!(reason("published=1,target=2,foo=3").contains("unknown key"));
    }

    #[test]
    fn mounts_parse() {
        assert_eq!(
            Mount::parse("type=bind,source=/a,target=/b,readonly").unwrap(),
            Mount {
                kind: MountKind::Bind,
                source: "/a".into(),
                target: "/b".into(),
                readonly: true
            }
        );
        let bind = Mount::parse("type=bind,src=/data,dst=/var/lib/data").unwrap();
        assert!(!bind.readonly);
        assert_eq!(Mount::parse(&bind.to_string()).unwrap(), bind);
        let reason = |text: &str| Mount::parse(text).unwrap_err().reason;
        assert!(reason("type=bind,source=rel,target=/b").contains("absolute host path"));
        assert!(reason("type=bind,source=/a").contains("target is required"));
        assert!(reason("type=nfs,target=/b").contains("unknown type"));
        assert!(reason("type=volume,target=/b").contains("needs a source"));
        assert!(reason("type=tmpfs,source=x,target=/b").contains("no source"));
        assert!(reason("type=bind,source=/a,target=b").contains("absolute path"));
    }

    #[test]
    fn mount_types_no_driver_runs_are_refused_by_name() {
        let reason = |text: &str| Mount::parse(text).unwrap_err().reason;
        assert!(reason("type=volume,source=data,target=/d")
            .contains("volume mounts are not supported yet"));
        // Docker's default type is volume: a mount without a type says so too.
        assert!(reason("src=data,dst=/d").contains("volume mounts are not supported yet"));
        assert!(reason("type=tmpfs,target=/tmp").contains("tmpfs mounts are not supported yet"));
        // A spec that reaches a manager without the CLI's parser (the HTTP API, or one
        // stored by an older version) still passes `validate` but not `check_supported`.
        let mut spec = ServiceSpec {
            name: "web".into(),
            command: vec!["sleep".into(), "60".into()],
            ..ServiceSpec::default()
        };
        spec.mounts.push(Mount {
            kind: MountKind::Tmpfs,
            source: String::new(),
            target: "/scratch".into(),
            readonly: false,
        });
        spec.validate().unwrap();
        let err = spec.check_supported().unwrap_err();
        assert_eq!(err.field, "mount");
        assert!(
            err.reason.contains("tmpfs mounts are not supported yet"),
            "{err}"
        );
    }

    #[test]
    fn sizes_and_cpus_parse() {
        assert_eq!(parse_memory("512M").unwrap(), 512 * 1024 * 1024);
        assert_eq!(parse_memory("512mib").unwrap(), 512 * 1024 * 1024);
        assert_eq!(parse_memory("1.5G").unwrap(), 1536 * 1024 * 1024);
        assert_eq!(parse_memory("4096").unwrap(), 4096);
        assert_eq!(parse_memory("2k").unwrap(), 2048);
        assert!(parse_memory("12X")
            .unwrap_err()
            .reason
            .contains("unknown unit"));
        assert!(parse_memory("")
            .unwrap_err()
            .reason
            .contains("expected a size"));
        assert!(parse_memory("-1G").is_err());
        assert!(parse_memory("99999999999T")
            .unwrap_err()
            .reason
            .contains("too large"));
        assert_eq!(parse_cpus("0.5").unwrap(), 500_000_000);
        assert_eq!(parse_cpus("2").unwrap(), 2_000_000_000);
        assert_eq!(parse_cpus(".25").unwrap(), 250_000_000);
        assert!(parse_cpus("half")
            .unwrap_err()
            .reason
            .contains("not a number"));
        assert!(parse_cpus("0.0000000001")
            .unwrap_err()
            .reason
            .contains("decimal places"));
        assert!(parse_cpus("1.2.3").is_err());
        assert_eq!(format_memory(512 * 1024 * 1024), "512 MiB");
        assert_eq!(format_memory(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(format_memory(100), "100 B");
        assert_eq!(format_cpus(500_000_000), "0.5");
        assert_eq!(format_cpus(2_000_000_000), "2");
    }

    #[test]
    fn placement_prefs_parse() {
        assert_eq!(
            PlacementPref::parse("spread=node.labels.zone").unwrap(),
            PlacementPref::Spread {
                label: "zone".into()
            }
        );
        assert!(PlacementPref::parse("spread=node.hostname").is_err());
        assert!(PlacementPref::parse("binpack=node.labels.zone").is_err());
    }

    #[test]
    fn a_minimal_spec_is_valid_and_round_trips_through_json() {
        let spec = web();
        spec.validate().unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<ServiceSpec>(&json).unwrap(), spec);
        let minimal: ServiceSpec =
            serde_json::from_str(r#"{"name":"web","command":["hoist","hello"]}"#).unwrap();
        assert_eq!(minimal, spec);
        let global: ServiceSpec = serde_json::from_str(
            r#"{"name":"g","mode":"global","command":["x"],"constraints":["node.role==worker"]}"#,
        )
        .unwrap();
        assert_eq!(global.mode, ServiceMode::Global);
        assert_eq!(global.constraints.len(), 1);
        let replicated: ServiceSpec = serde_json::from_str(
            r#"{"name":"r","mode":{"replicated":{"replicas":3}},"command":["x"]}"#,
        )
        .unwrap();
        assert_eq!(replicated.replicas(), Some(3));
    }

    #[test]
    fn validation_names_the_field_at_fault() {
        let field = |spec: ServiceSpec| spec.validate().unwrap_err().field;
        assert_eq!(
            field(ServiceSpec {
                name: "".into(),
                ..web()
            }),
            "name"
        );
        assert_eq!(
            field(ServiceSpec {
                name: "-web".into(),
                ..web()
            }),
            "name"
        );
        assert_eq!(
            field(ServiceSpec {
                name: "we b".into(),
                ..web()
            }),
            "name"
        );
        assert!(ServiceSpec {
            name: "web_1.a-b".into(),
            ..web()
        }
        .validate()
        .is_ok());
        assert_eq!(
            field(ServiceSpec {
                command: vec![],
                ..web()
            }),
            "command"
        );
        assert_eq!(
            field(ServiceSpec {
                driver: DriverKind::Docker,
                ..web()
            }),
            "image"
        );
        assert_eq!(
            "lxc"
                .parse::<DriverKind>()
                .map(|driver| field(ServiceSpec { driver, ..web() }))
                .unwrap_or_else(|err| err.field),
            "driver"
        );
        let port = PublishedPort::parse("8080:80").unwrap();
        assert_eq!(
            field(ServiceSpec {
                ports: vec![port, PublishedPort { target: 81, ..port }],
                ..web()
            }),
            "port"
        );
        assert_eq!(
            field(ServiceSpec {
                ports: vec![PublishedPort { target: 0, ..port }],
                ..web()
            }),
            "port"
        );
        let mut spec = web();
        spec.resources.reservations.memory_bytes = 512 << 20;
        spec.resources.limits.memory_bytes = 256 << 20;
        let err = spec.validate().unwrap_err();
        assert_eq!(err.field, "limit-memory");
        assert!(err.reason.contains("256 MiB"), "{}", err.reason);
        spec.resources.limits.memory_bytes = 0;
        assert!(spec.validate().is_ok(), "no limit is fine");
    }

    #[test]
    fn ingress_ports_are_unique_across_services() {
        let existing = Service {
            id: ServiceId(1),
            spec: ServiceSpec {
                ports: vec![PublishedPort::parse("8080:80").unwrap()],
                ..web()
            },
            version: 1,
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        let clash = ServiceSpec {
            name: "api".into(),
            ports: vec![PublishedPort::parse("published=8080,target=9,mode=host").unwrap()],
            ..web()
        };
        let err = clash.check_port_conflicts(None, [&existing]).unwrap_err();
        assert_eq!(
            err.reason,
            "published port 8080 is already used by service web"
        );
        assert!(existing
            .spec
            .check_port_conflicts(Some(ServiceId(1)), [&existing])
            .is_ok());
    }

    #[test]
    fn runs_like_ignores_scale_and_placement() {
        let spec = web();
        let scaled = ServiceSpec {
            mode: ServiceMode::Replicated { replicas: 9 },
            constraints: vec![Constraint::parse("node.role==worker").unwrap()],
            ..web()
        };
        assert!(spec.runs_like(&scaled));
        let changed = ServiceSpec {
            env: [("A".to_string(), "1".to_string())].into(),
            ..web()
        };
        assert!(!spec.runs_like(&changed));
    }
}
