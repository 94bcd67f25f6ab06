//! Request and response bodies of the control API, and of the node-to-node endpoints
//! (join, heartbeat, certificate renewal).

use std::collections::BTreeMap;

use hoist_types::{Availability, EngineInfo, Node, NodeId, Role};
use serde::{Deserialize, Serialize};

/// Every error response carries this body, with an HTTP status that says its kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

impl ErrorBody {
    /// What an error response says: its `ErrorBody` message, or the raw text when the
    /// body is not one (a proxy's page, a daemon of another version).
    pub fn message_of(text: String) -> String {
        serde_json::from_str::<ErrorBody>(&text)
            .map(|body| body.message)
            .unwrap_or(text)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct InitRequest {
    /// Address other nodes reach this one at; defaults to the listen address.
    pub advertise_addr: Option<String>,
    pub heartbeat_period_ms: Option<u64>,
    pub heartbeat_grace: Option<u32>,
    pub cert_expiry_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitResponse {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub worker_token: String,
    pub manager_token: String,
    pub advertise_addr: String,
}

/// Asks the local daemon to join a cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinClusterRequest {
    pub token: String,
    pub manager_addr: String,
    pub advertise_addr: Option<String>,
    /// When set, the join is refused unless the token is of this role.
    #[serde(default)]
    pub expected_role: Option<Role>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinClusterResponse {
    pub node_id: NodeId,
    pub role: Role,
}

/// Sent by a joining node to a manager's TLS listener (no client certificate yet).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub secret: String,
    /// When set, the manager refuses unless the secret is of this role.
    #[serde(default)]
    pub expected_role: Option<Role>,
    pub hostname: String,
    pub addr: String,
    pub csr_pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    pub node_id: NodeId,
    pub role: Role,
    pub cluster_id: String,
    pub chain_pem: String,
    pub ca_pem: String,
    /// Addresses of the managers, to find the leader from.
    pub managers: Vec<String>,
    /// Their node ids: the only managers the new node serves task output to until its
    /// first heartbeat answer says otherwise.
    #[serde(default)]
    pub manager_ids: Vec<NodeId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub role: Role,
    pub token: String,
    /// A manager address to put in the printed command.
    pub manager_addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LeaveRequest {
    pub force: bool,
}

/// `node ls` and `node inspect` rows: the stored node plus what only the managers'
/// Raft view knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub node: Node,
    /// Leader, Reachable or Unreachable for managers; absent for workers.
    pub manager_status: Option<ManagerStatus>,
    /// Whether this row is the node that answered.
    pub is_self: bool,
}

/// A manager as the answering manager's Raft view sees it (`docker node ls`'s MANAGER
/// STATUS column, spelled as Docker spells it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManagerStatus {
    /// The Raft leader.
    Leader,
    /// A voter whose node is Ready.
    Reachable,
    /// Not a voter (yet, or any more), or its node is not Ready.
    Unreachable,
}

impl ManagerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ManagerStatus::Leader => "Leader",
            ManagerStatus::Reachable => "Reachable",
            ManagerStatus::Unreachable => "Unreachable",
        }
    }
}

impl std::fmt::Display for ManagerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct NodeUpdateRequest {
    pub availability: Option<Availability>,
    pub label_add: BTreeMap<String, String>,
    pub label_rm: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct InfoResponse {
    pub node_id: Option<NodeId>,
    pub hostname: String,
    pub cluster_id: Option<String>,
    pub role: Option<Role>,
    pub is_leader: bool,
    pub leader: Option<NodeId>,
    pub leader_addr: Option<String>,
    pub managers: usize,
    pub quorum: usize,
    pub nodes: usize,
    pub raft_term: u64,
    pub raft_commit_index: u64,
    pub heartbeat_period_ms: u64,
    pub heartbeat_grace: u32,
    pub cert_expiry_secs: u64,
    pub cert_not_after: Option<i64>,
    /// Set on a manager that cannot reach a majority: why. The other fields are then
    /// this manager's last applied state, which may be out of date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_quorum: Option<String>,
    /// Set when the cluster refused this node (removed, or dropped by a forced new
    /// cluster): what it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
    /// On a worker: whether its last heartbeat reached a manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager_reachable: Option<bool>,
}

/// A node's beat to the leader's dispatcher. The node's id comes from its certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub addr: String,
    pub engine: EngineInfo,
    /// The CPUs and memory the node has (absent from an older node: zero, unknown).
    #[serde(default)]
    pub resources: hoist_types::node::Resources,
    /// Published ports this node's mesh could not open.
    #[serde(default)]
    pub port_faults: Vec<hoist_types::node::PortFault>,
    /// The role the node's current certificate carries.
    pub cert_role: Role,
    /// Whether the node runs a Raft member (managers only).
    pub raft_running: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub period_ms: u64,
    /// The role the cluster wants this node in; the node renews its certificate and
    /// starts or stops Raft to match.
    pub desired_role: Role,
    pub managers: Vec<String>,
    /// The managers' node ids, in the order of `managers`: a worker serves its task
    /// output only to a current manager, whatever certificate a former one still holds.
    #[serde(default)]
    pub manager_ids: Vec<hoist_types::NodeId>,
    pub cert_expiry_secs: u64,
    /// The CA certificates to trust now (PEM): the current CA, and the previous one
    /// while a rotation is under way. Empty from a manager that predates rotation.
    #[serde(default)]
    pub trust_pem: String,
    /// The digest of the CA that signs now: a node whose certificate comes from
    /// another renews it.
    #[serde(default)]
    pub ca_digest: String,
    /// The node runs Raft, the cluster wants it a manager, but the leader's group does
    /// not hold it (it was removed, or demoted and promoted again before it stopped):
    /// its store is stale, so it must start Raft afresh and ask to be added again,
    /// never carry on with the old one.
    #[serde(default)]
    pub raft_rejoin: bool,
}

/// `cluster ca`: the CA that signs, and how far a rotation has come.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaView {
    /// sha256 of the current CA certificate: what join tokens carry.
    pub digest: String,
    pub cert_pem: String,
    /// A rotation is under way: the previous CA is still trusted.
    pub rotating: bool,
    /// Nodes already presenting a certificate of the current CA, during a rotation.
    pub nodes_renewed: usize,
    pub nodes: usize,
    /// Hostnames of the nodes the rotation still waits for.
    pub waiting_for: Vec<String>,
    /// How many CAs this cluster has rotated out.
    pub retired: usize,
}

/// Refusal of a heartbeat sent to a manager that is not the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotLeaderBody {
    pub message: String,
    pub leader_addr: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewRequest {
    pub csr_pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewResponse {
    pub chain_pem: String,
    pub role: Role,
}

/// A manager asking the leader to make it a voter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaftJoinRequest {
    pub addr: String,
    /// The asking manager's Raft store began blank and no leader has confirmed it as a
    /// voter since. From a node that is already a voter this means it lost its store,
    /// and the leader refuses it. Absent (false) from older versions.
    #[serde(default)]
    pub unconfirmed_store: bool,
    /// Drawn at random when Raft started on the asking manager: a retry of a request the
    /// leader granted (its answer lost) carries the same number, a voter that restarted
    /// with a blank store another. 0 from older versions.
    #[serde(default)]
    pub raft_incarnation: u64,
}

/// `service create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateServiceRequest {
    pub spec: hoist_types::service::ServiceSpec,
}

/// A service with its replica counts, as `service ls` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceView {
    #[serde(flatten)]
    pub service: hoist_types::service::Service,
    pub running: u64,
    pub desired: u64,
    /// Slots whose task completed (exit 0): a job's progress.
    #[serde(default)]
    pub completed: u64,
    /// Published ports of the service that a node could not open, one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_faults: Vec<String>,
}

/// `service update`: the whole new spec, with the version it was derived from, so two
/// concurrent updates cannot silently overwrite each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateServiceRequest {
    pub version: u64,
    pub spec: hoist_types::service::ServiceSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleRequest {
    pub replicas: u64,
}

/// A task with its node's name, as `service ps` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskView {
    #[serde(flatten)]
    pub task: hoist_types::task::Task,
    pub node_hostname: Option<String>,
    /// The name shown in `service ps` (`web.3`).
    pub name: String,
}

/// What the dispatcher pushes to a worker: every task the node should know about, and
/// the published ports its mesh must serve.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AssignmentSet {
    pub tasks: Vec<hoist_types::task::Task>,
    #[serde(default)]
    pub routes: Vec<PublishedRoute>,
}

/// One published port of one service, with the endpoints to balance over.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishedRoute {
    pub service_id: String,
    pub service_name: String,
    pub published: u16,
    pub target: u16,
    pub protocol: hoist_types::service::Protocol,
    pub mode: hoist_types::service::PortMode,
    pub health_path: Option<String>,
    /// Host and path rules (http ports); empty takes every request.
    #[serde(default)]
    pub routes: Vec<hoist_types::service::HttpRoute>,
    pub endpoints: Vec<RouteEndpoint>,
}

/// A running task's address for one target port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteEndpoint {
    pub task_id: String,
    pub addr: String,
    /// The task is being stopped: no new connections or requests.
    pub draining: bool,
}

/// A worker's batch of observed task states.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReportRequest {
    pub reports: Vec<hoist_state::TaskReport>,
}

/// Which log lines to return.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LogsQuery {
    #[serde(default)]
    pub tail: Option<usize>,
    #[serde(default)]
    pub follow: bool,
    /// For a node's own endpoint: the task whose logs to read.
    #[serde(default)]
    pub task: Option<String>,
}

/// `hoist init --force-new-cluster`: what the survivor keeps and drops.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ForceNewClusterRequest {
    /// Only report what would be kept; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// `--advertise-addr` given with `--force-new-cluster`: it must name this node's
    /// own address (the recovered cluster keeps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_addr: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForceNewClusterResponse {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub nodes: usize,
    pub services: usize,
    pub tasks: usize,
    /// Hostnames of the other managers, dropped from the cluster.
    pub dropped_managers: Vec<String>,
    pub applied: bool,
}

/// A consistent copy of the cluster state, as `hoist backup` writes it. It holds the
/// CA key: keep it like a secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupFile {
    pub format: u32,
    pub taken_at_ms: u64,
    /// The manager it was taken from; a restore takes over its identity.
    pub from_node: NodeId,
    pub state: hoist_state::ClusterState,
}

impl BackupFile {
    /// A backup of `state` in this build's persisted format.
    pub fn new(taken_at_ms: u64, from_node: NodeId, state: hoist_state::ClusterState) -> Self {
        BackupFile {
            format: hoist_state::persist::FORMAT_VERSION,
            taken_at_ms,
            from_node,
            state,
        }
    }

    /// Reads a backup file of any format up to this build's. The version is checked
    /// before the rest is parsed, so that a newer build's file is refused by its version
    /// rather than by whichever field this build does not know.
    pub fn parse(text: &str) -> Result<BackupFile, BackupParseError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|err| BackupParseError::NotJson(err.to_string()))?;
        let format = value
            .get("format")
            .ok_or(BackupParseError::NoFormat)?
            .as_u64()
            .and_then(|format| u32::try_from(format).ok())
            .ok_or(BackupParseError::NoFormat)?;
        hoist_state::persist::check_version("the backup", format)?;
        serde_json::from_value(value).map_err(|err| BackupParseError::Malformed(err.to_string()))
    }
}

/// Why a file is not a backup this build can restore.
#[derive(Debug, thiserror::Error)]
pub enum BackupParseError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("no format version: not a file `hoist backup` wrote")]
    NoFormat,
    #[error(transparent)]
    Version(#[from] hoist_state::persist::PersistError),
    #[error("damaged: {0}")]
    Malformed(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreRequest {
    pub backup: BackupFile,
    pub advertise_addr: Option<String>,
}

#[cfg(test)]
mod backup_tests {
    use super::*;
    use hoist_state::persist::FORMAT_VERSION;

    const FIXTURE: &str = include_str!("../../hoist/tests/fixtures/a85ac81/backup.json");

    #[test]
    fn a_backup_written_at_a85ac81_parses() {
        let backup = BackupFile::parse(FIXTURE).expect("the old backup parses");
        assert_eq!(backup.format, 1);
        assert_eq!(backup.state.nodes.len(), 4);
        assert_eq!(backup.state.services.len(), 3);
    }

    #[test]
    fn a_backup_from_a_future_version_is_refused_naming_both_versions() {
        let mut value: serde_json::Value = serde_json::from_str(FIXTURE).expect("json");
        value["format"] = serde_json::json!(FORMAT_VERSION + 1);
        // A field this build does not know must not be what the refusal talks about.
        value["state"]["a_field_from_the_future"] = serde_json::json!(true);
        value["state"]
            .as_object_mut()
            .expect("object")
            .remove("nodes");
        let message = BackupFile::parse(&value.to_string())
            .expect_err("refused")
            .to_string();
        assert!(
            message.contains(&format!("format version {}", FORMAT_VERSION + 1))
                && message.contains(&format!("the {FORMAT_VERSION} this build reads")),
            "{message}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_backup_says_why() {
        assert!(matches!(
            BackupFile::parse("not json"),
            Err(BackupParseError::NotJson(_))
        ));
        assert!(matches!(
            BackupFile::parse(r#"{"state":{}}"#),
            Err(BackupParseError::NoFormat)
        ));
        assert!(matches!(
            BackupFile::parse(r#"{"format":1,"state":{}}"#),
            Err(BackupParseError::Malformed(_))
        ));
    }
}

/// `hoist cluster inspect`: the cluster's identity and its settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    pub cluster_id: String,
    pub created_at_ms: u64,
    pub settings: hoist_state::ClusterSettings,
}

/// `hoist cluster update`: the settings to change; `None` leaves one as it is.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ClusterUpdateRequest {
    #[serde(default)]
    pub max_replicas: Option<u64>,
    #[serde(default)]
    pub join_rate_limit: Option<u32>,
    #[serde(default)]
    pub task_history_limit: Option<u32>,
    #[serde(default)]
    pub cert_expiry_secs: Option<u64>,
}

/// Caps on what one node may send in a heartbeat or a status report. A node's reports
/// are written to every manager's log, so their size is bounded by the node's real
/// needs, not by what a compromised node would like to store.
pub mod limits {
    /// Task reports in one status request; the worker sends more in several.
    pub const MAX_REPORTS_PER_REQUEST: usize = 500;
    /// Endpoints of one task (one per published target port).
    pub const MAX_ENDPOINTS_PER_TASK: usize = 64;
    /// A status message or error, in bytes; the worker cuts longer ones.
    pub const MAX_STATUS_TEXT: usize = 2_048;
    /// Drivers a node may offer.
    pub const MAX_DRIVERS: usize = 8;
    /// Ports a heartbeat may report as impossible to open.
    pub const MAX_PORT_FAULTS: usize = 64;
    /// An address, a driver name or an engine version, in bytes.
    pub const MAX_SHORT_TEXT: usize = 256;

    /// Cuts `text` to at most `max` bytes, on a character boundary.
    pub fn truncate(text: &mut String, max: usize) {
        if text.len() > max {
            let mut end = max;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
    }
}

fn too_long(field: &str, text: &str, max: usize) -> Result<(), String> {
    if text.len() > max {
        Err(format!(
            "{field} is {} bytes long (at most {max})",
            text.len()
        ))
    } else if text.chars().any(char::is_control) {
        Err(format!("{field} contains a control character"))
    } else {
        Ok(())
    }
}

impl HeartbeatRequest {
    /// Why this beat is out of bounds, if it is.
    pub fn check(&self) -> Result<(), String> {
        too_long("addr", &self.addr, limits::MAX_SHORT_TEXT)?;
        if self.engine.drivers.len() > limits::MAX_DRIVERS {
            return Err(format!(
                "{} drivers (at most {})",
                self.engine.drivers.len(),
                limits::MAX_DRIVERS
            ));
        }
        for driver in &self.engine.drivers {
            too_long("a driver name", driver, limits::MAX_SHORT_TEXT)?;
        }
        if self.port_faults.len() > limits::MAX_PORT_FAULTS {
            return Err(format!(
                "{} port faults (at most {})",
                self.port_faults.len(),
                limits::MAX_PORT_FAULTS
            ));
        }
        for fault in &self.port_faults {
            too_long("a port fault", &fault.reason, limits::MAX_SHORT_TEXT)?;
        }
        if self.engine.labels.len() > limits::MAX_PORT_FAULTS {
            return Err(format!(
                "{} engine labels (at most {})",
                self.engine.labels.len(),
                limits::MAX_PORT_FAULTS
            ));
        }
        for (key, value) in &self.engine.labels {
            too_long("an engine label", key, limits::MAX_SHORT_TEXT)?;
            too_long("an engine label", value, limits::MAX_SHORT_TEXT)?;
        }
        for (field, value) in [
            ("docker_version", &self.engine.docker_version),
            ("storage_driver", &self.engine.storage_driver),
            ("os", &self.engine.os),
            ("arch", &self.engine.arch),
        ] {
            if let Some(value) = value {
                too_long(field, value, limits::MAX_SHORT_TEXT)?;
            }
        }
        Ok(())
    }
}

impl StatusReportRequest {
    /// Why this batch is out of bounds, if it is.
    pub fn check(&self) -> Result<(), String> {
        if self.reports.len() > limits::MAX_REPORTS_PER_REQUEST {
            return Err(format!(
                "{} task reports in one request (at most {})",
                self.reports.len(),
                limits::MAX_REPORTS_PER_REQUEST
            ));
        }
        for report in &self.reports {
            let status = &report.status;
            if status.message.len() > limits::MAX_STATUS_TEXT
                || status.err.as_ref().map_or(0, String::len) > limits::MAX_STATUS_TEXT
            {
                return Err(format!(
                    "the report of task {} has a message or error over {} bytes",
                    report.task_id,
                    limits::MAX_STATUS_TEXT
                ));
            }
            if status.endpoints.len() > limits::MAX_ENDPOINTS_PER_TASK {
                return Err(format!(
                    "the report of task {} has {} endpoints (at most {})",
                    report.task_id,
                    status.endpoints.len(),
                    limits::MAX_ENDPOINTS_PER_TASK
                ));
            }
            for endpoint in &status.endpoints {
                too_long("an endpoint", &endpoint.addr, limits::MAX_SHORT_TEXT)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn oversized_beats_and_reports_are_named() {
        let beat = HeartbeatRequest {
            addr: "10.0.0.5:2377".into(),
            engine: EngineInfo::default(),
            resources: Default::default(),
            port_faults: Vec::new(),
            cert_role: Role::Worker,
            raft_running: false,
        };
        assert_eq!(beat.check(), Ok(()));
        let mut long = beat.clone();
        long.addr = "1".repeat(300);
        assert!(long.check().unwrap_err().contains("addr"));
        let mut many = beat.clone();
        many.engine.drivers = vec!["process".into(); 9];
        assert!(many.check().is_err());
        let mut escape = beat;
        escape.engine.docker_version = Some("24\u{1b}[2J".into());
        assert!(escape.check().unwrap_err().contains("control"));

        let report = |message: String| hoist_state::TaskReport {
            task_id: hoist_types::TaskId(1),
            status: hoist_types::task::TaskStatus::new(
                hoist_types::task::TaskState::Running,
                message,
                1,
            ),
        };
        let ok = StatusReportRequest {
            reports: vec![report("started".into())],
        };
        assert_eq!(ok.check(), Ok(()));
        let too_many = StatusReportRequest {
            reports: vec![report(String::new()); limits::MAX_REPORTS_PER_REQUEST + 1],
        };
        assert!(too_many.check().is_err());
        let too_long = StatusReportRequest {
            reports: vec![report("x".repeat(limits::MAX_STATUS_TEXT + 1))],
        };
        assert!(too_long.check().is_err());
        let mut text = "ééé".to_string();
        limits::truncate(&mut text, 3);
        assert_eq!(text, "é");
    }
}

#[cfg(test)]
mod view_tests {
    use super::*;

    #[test]
    fn manager_status_is_spelled_as_docker_spells_it() {
        for (status, text) in [
            (ManagerStatus::Leader, "Leader"),
            (ManagerStatus::Reachable, "Reachable"),
            (ManagerStatus::Unreachable, "Unreachable"),
        ] {
            let json = serde_json::to_value(status).expect("serializes");
            assert_eq!(json, serde_json::json!(text));
            assert_eq!(status.to_string(), text);
            let back: ManagerStatus = serde_json::from_value(json).expect("reads back");
            assert_eq!(back, status);
        }
        assert!(serde_json::from_str::<ManagerStatus>("\"leader\"").is_err());
    }
}
