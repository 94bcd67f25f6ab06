//! The persisted records reproduce what managers stored before the records existed.
//!
//! The files under `tests/golden/` were written by the build just before the records
//! (commit d14df23, FORMAT_VERSION 4) from the samples below and from the a85ac81
//! fixture's snapshot, one compact JSON value a line, as the Raft store and the snapshots
//! hold them.
//! Each one must read, convert to the domain types and back, and write the same bytes.
//! Never regenerate them to make a test pass: a difference is a change of the format,
//! which bumps `FORMAT_VERSION` and gets a golden file of its own.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use hoist_state::{
    CaMaterial, CaRotation, Change, ClusterSettings, ClusterState, JoinTokens, RetiredSecret,
    TaskEdit, TaskReport,
};
use hoist_types::node::Resources;
use hoist_types::service::{
    Constraint, HttpRoute, Mount, MountKind, PlacementPref, PortMode, Protocol, PublishedPort,
    Rebalance, ResourceRequirements, RestartCondition, RestartPolicy, Service, ServiceMode,
    ServiceSpec,
};
use hoist_types::task::{DesiredState, Task, TaskEndpoint, TaskOrigin, TaskState, TaskStatus};
use hoist_types::{Availability, EngineInfo, Node, NodeId, NodeStatus, Role, ServiceId, TaskId};

const FIXTURE_SNAPSHOT: &[u8] = include_bytes!(
    "../../hoist/tests/fixtures/a85ac81/n1/raft/snapshots/snapshot-00000000000000000039.json"
);

fn node() -> Node {
    Node {
        id: NodeId(0x0123_4567_89ab_cdef),
        hostname: "fx9".into(),
        addr: "127.0.77.9:23770".into(),
        role: Role::Manager,
        availability: Availability::Pause,
        status: NodeStatus::Down,
        status_message: "heartbeat failure".into(),
        labels: [("zone".to_string(), "b".to_string())].into(),
        engine: EngineInfo {
            drivers: vec!["process".into(), "docker".into()],
            docker_version: Some("27.1.0".into()),
            storage_driver: Some("overlay2".into()),
            os: None,
            arch: None,
            labels: Default::default(),
        },
        resources: Resources {
            nano_cpus: 4_000_000_000,
            memory_bytes: 8 << 30,
        },
        // None: the golden node was written before version 6.
        port_faults: Vec::new(),
        created_at_ms: 1_700_000_000_000,
        updated_at_ms: 1_700_000_000_500,
    }
}

/// A bare node: every optional part left out.
fn bare_node() -> Node {
    Node {
        id: NodeId(7),
        hostname: "fx7".into(),
        addr: "127.0.77.7:23770".into(),
        role: Role::Worker,
        availability: Availability::Drain,
        status: NodeStatus::Unknown,
        status_message: String::new(),
        labels: BTreeMap::new(),
        engine: EngineInfo::default(),
        resources: Resources::default(),
        port_faults: Vec::new(),
        created_at_ms: 1,
        updated_at_ms: 2,
    }
}

fn spec() -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        mode: ServiceMode::Replicated { replicas: 3 },
        driver: hoist_types::DriverKind::Docker,
        command: vec!["sleep".into(), "3600".into()],
        image: Some("nginx:1.27".into()),
        env: [("A".to_string(), "1".to_string())].into(),
        labels: [("team".to_string(), "edge".to_string())].into(),
        mounts: vec![
            Mount {
                kind: MountKind::Bind,
                source: "/tmp".into(),
                target: "/data".into(),
                readonly: true,
            },
            Mount {
                kind: MountKind::Tmpfs,
                source: String::new(),
                target: "/scratch".into(),
                readonly: false,
            },
            Mount {
                kind: MountKind::Volume,
                source: "cache".into(),
                target: "/cache".into(),
                readonly: false,
            },
        ],
        ports: vec![
            PublishedPort {
                published: 28080,
                target: 8080,
                protocol: Protocol::Http,
                mode: PortMode::Ingress,
            },
            PublishedPort {
                published: 29000,
                target: 9000,
                protocol: Protocol::Tcp,
                mode: PortMode::Host,
            },
        ],
        constraints: vec![
            Constraint::parse("node.role!=manager").expect("a constraint"),
            Constraint::parse("node.labels.zone==a").expect("a constraint"),
            Constraint::parse("engine.storage_driver==overlay2").expect("a constraint"),
        ],
        placement_prefs: vec![PlacementPref::Spread {
            label: "zone".into(),
        }],
        max_replicas_per_node: Some(2),
        resources: ResourceRequirements {
            reservations: Resources {
                nano_cpus: 500_000_000,
                memory_bytes: 1 << 20,
            },
            limits: Resources {
                nano_cpus: 1_000_000_000,
                memory_bytes: 64 << 20,
            },
        },
        restart_policy: RestartPolicy {
            condition: RestartCondition::OnFailure,
            delay_ms: 1_500,
            max_attempts: Some(3),
            window_ms: Some(60_000),
        },
        stop_grace_period_ms: 2_000,
        rebalance: Rebalance::Off,
        health_path: Some("/healthz".into()),
        routes: vec![
            HttpRoute {
                host: Some("a.example.com".into()),
                path_prefix: Some("/app".into()),
            },
            HttpRoute {
                host: None,
                path_prefix: Some("/static".into()),
            },
        ],
        user: Some("1000".into()),
        health_cmd: Some("curl -f localhost:8080".into()),
        health_interval_ms: Some(5_000),
        health_retries: Some(3),
        // Unset: the golden spec was written before version 6.
        health_timeout_ms: None,
        health_start_period_ms: None,
        no_healthcheck: false,
        hostname: None,
        entrypoint: None,
        workdir: Some("/srv".into()),
        read_only: true,
    }
}

fn global_spec() -> ServiceSpec {
    ServiceSpec {
        name: "cache".into(),
        mode: ServiceMode::Global,
        command: vec!["sleep".into(), "3600".into()],
        ..ServiceSpec::default()
    }
}

fn service() -> Service {
    Service {
        id: ServiceId(0x00ab_cdef_0000_0001),
        spec: spec(),
        version: 4,
        created_at_ms: 10,
        updated_at_ms: 40,
    }
}

fn task() -> Task {
    Task {
        id: TaskId(0xfeed_0000_0000_0001),
        service_id: service().id,
        slot: 2,
        node_id: Some(node().id),
        service_version: 4,
        spec: spec(),
        desired_state: DesiredState::Shutdown,
        status: TaskStatus {
            state: TaskState::Failed,
            message: "exit code 1".into(),
            err: Some("the task exited with 1".into()),
            timestamp_ms: 55,
            exit_code: Some(1),
            endpoints: vec![TaskEndpoint {
                target_port: 8080,
                addr: "127.0.77.9:41000".into(),
            }],
        },
        created_at_ms: 50,
        updated_at_ms: 55,
        attempt: 2,
        origin: TaskOrigin::Restart,
        pending_reason: Some("no node offers the docker driver".into()),
    }
}

/// A global task still waiting, with nothing optional set.
fn bare_task() -> Task {
    Task {
        id: TaskId(0xfeed_0000_0000_0002),
        service_id: ServiceId(0x00ab_cdef_0000_0002),
        slot: 0,
        node_id: None,
        service_version: 1,
        spec: global_spec(),
        desired_state: DesiredState::Running,
        status: TaskStatus::new(TaskState::Pending, "", 60),
        created_at_ms: 60,
        updated_at_ms: 60,
        attempt: 0,
        origin: TaskOrigin::Created,
        pending_reason: None,
    }
}

fn ca() -> CaMaterial {
    CaMaterial {
        cert_pem: "-----BEGIN CERTIFICATE-----\nnew\n-----END CERTIFICATE-----\n".into(),
        key_pem: "-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n".into(),
        digest: "d2".into(),
        rotation: Some(CaRotation {
            previous_cert_pem: "-----BEGIN CERTIFICATE-----\nold\n-----END CERTIFICATE-----\n"
                .into(),
            previous_digest: "d1".into(),
            cross_signed_pem: "cross".into(),
            started_at_ms: 70,
            renewed: [node().id].into(),
        }),
        retired: vec!["d0".into()],
    }
}

fn tokens() -> JoinTokens {
    JoinTokens {
        worker_secret: "w".repeat(32),
        manager_secret: "m".repeat(32),
        retired: vec![
            RetiredSecret {
                role: Role::Worker,
                secret: "o".repeat(32),
            },
            RetiredSecret {
                role: Role::Manager,
                secret: "p".repeat(32),
            },
        ],
    }
}

fn settings() -> ClusterSettings {
    ClusterSettings {
        heartbeat_period_ms: 500,
        heartbeat_grace: 4,
        cert_expiry_secs: 7200,
        max_replicas: 50,
        join_rate_limit: 0,
        task_history_limit: 2,
    }
}

/// One of every change, and every task edit, in the order of the golden file.
fn changes() -> Vec<Change> {
    [node_changes(), service_and_cluster_changes()].concat()
}

/// The changes of the cluster's identity and its nodes.
fn node_changes() -> Vec<Change> {
    vec![
        Change::InitCluster {
            cluster_id: "1560c103ec6a6c33".into(),
            ca: ca(),
            tokens: tokens(),
            settings: settings(),
            first_manager: node(),
            at_ms: 1,
        },
        Change::AddNode { node: bare_node() },
        Change::UpdateNode {
            node_id: node().id,
            availability: Some(Availability::Drain),
            label_add: [("zone".to_string(), "c".to_string())].into(),
            label_rm: vec!["rack".into()],
            at_ms: 2,
        },
        Change::UpdateNode {
            node_id: node().id,
            availability: None,
            label_add: BTreeMap::new(),
            label_rm: vec![],
            at_ms: 3,
        },
        Change::SetNodeRole {
            node_id: node().id,
            role: Role::Worker,
            at_ms: 4,
        },
        Change::SetNodeStatus {
            node_id: node().id,
            status: NodeStatus::Ready,
            message: String::new(),
            at_ms: 5,
        },
        Change::SetNodeDescription {
            node_id: node().id,
            addr: "127.0.77.9:23771".into(),
            engine: node().engine,
            // Not reported: the change is stored as before version 5.
            resources: Resources::default(),
            port_faults: Vec::new(),
            at_ms: 6,
        },
        Change::RemoveNode {
            node_id: bare_node().id,
            at_ms: 7,
        },
        Change::RotateToken {
            role: Role::Manager,
            new_secret: "q".repeat(32),
        },
    ]
}

/// The changes of services, tasks and the cluster as a whole.
fn service_and_cluster_changes() -> Vec<Change> {
    vec![
        Change::CreateService { service: service() },
        Change::UpdateService {
            service_id: service().id,
            spec: global_spec(),
            at_ms: 8,
        },
        Change::RemoveService {
            service_id: service().id,
        },
        Change::EditTasks {
            edits: vec![
                TaskEdit::Create {
                    task: Box::new(task()),
                },
                TaskEdit::Create {
                    task: Box::new(bare_task()),
                },
                TaskEdit::SetDesired {
                    task_id: task().id,
                    desired: DesiredState::Remove,
                },
                TaskEdit::Delete { task_id: task().id },
                TaskEdit::Assign {
                    task_id: bare_task().id,
                    node_id: node().id,
                },
                TaskEdit::SetPendingReason {
                    task_id: bare_task().id,
                    reason: "no suitable node".into(),
                },
            ],
            at_ms: 9,
        },
        Change::ReportTaskStatus {
            node_id: node().id,
            reports: vec![
                TaskReport {
                    task_id: task().id,
                    status: task().status,
                },
                TaskReport {
                    task_id: bare_task().id,
                    status: bare_task().status,
                },
            ],
        },
        Change::ForceNewCluster {
            survivor: node().id,
            dropped: vec![bare_node().id, NodeId(8)],
            at_ms: 10,
        },
        Change::Noop,
        Change::UpdateSettings {
            settings: settings(),
        },
        Change::RotateCa {
            cert_pem: "cert".into(),
            key_pem: "key".into(),
            digest: "d3".into(),
            cross_signed_pem: "cross".into(),
            at_ms: 11,
        },
        Change::NoteCaRenewal {
            node_id: node().id,
            digest: "d3".into(),
        },
    ]
}

/// The fixture's state with one of everything added.
fn cluster_state() -> ClusterState {
    let mut state: ClusterState = hoist_state::persist::decode_snapshot(FIXTURE_SNAPSHOT)
        .expect("the fixture's snapshot loads");
    state.ca = Some(ca());
    state.tokens = tokens();
    state.settings = settings();
    for node in [node(), bare_node()] {
        state.nodes.insert(node.id, node);
    }
    state.removed_nodes.extend([NodeId(8), NodeId(9)]);
    state.services.insert(service().id, service());
    for task in [task(), bare_task()] {
        state.tasks.insert(task.id, task);
    }
    state
}

/// The golden file's lines, one value each, as stored (compact JSON).
fn golden_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|line| !line.is_empty()).collect()
}

/// Writes `value` as the persisted form and checks it is the golden line, and that the
/// line reads back as the same value.
fn same_as_stored<T>(value: &T, golden: &str)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let written = serde_json::to_string(value).expect("writes");
    assert_eq!(written, golden, "written differs from the stored form");
    let read: T = serde_json::from_str(golden).expect("the stored form reads");
    assert_eq!(&read, value, "the stored form reads as another value");
}

#[test]
fn changes_are_written_as_they_were_stored() {
    let golden = golden_lines(include_str!("golden/changes.jsonl"));
    let changes = changes();
    assert_eq!(golden.len(), changes.len());
    for (change, line) in changes.iter().zip(golden) {
        same_as_stored(change, line);
    }
}

#[test]
fn a_cluster_state_is_written_as_it_was_stored() {
    let golden = golden_lines(include_str!("golden/cluster_state.json"));
    same_as_stored(&cluster_state(), golden[0]);
}

#[test]
fn the_a85ac81_snapshot_is_written_as_the_previous_build_wrote_it() {
    let golden = golden_lines(include_str!("golden/a85ac81_snapshot_39.json"));
    let state = hoist_state::persist::decode_snapshot(FIXTURE_SNAPSHOT).expect("loads");
    let bytes = hoist_state::persist::encode_snapshot(&state).expect("encodes");
    // Written in version 4; since then only the version member says otherwise.
    let current = format!("{{\"format\":{},", hoist_state::persist::FORMAT_VERSION);
    let expected = golden[0].replacen("{\"format\":4,", &current, 1);
    assert_eq!(String::from_utf8_lossy(&bytes), expected);
}

/// Names each change, with no catch-all: a new variant does not compile until it is
/// given a sample here and a golden line of its own.
fn kind(change: &Change) -> &'static str {
    match change {
        Change::InitCluster { .. } => "InitCluster",
        Change::AddNode { .. } => "AddNode",
        Change::UpdateNode { .. } => "UpdateNode",
        Change::SetNodeRole { .. } => "SetNodeRole",
        Change::SetNodeStatus { .. } => "SetNodeStatus",
        Change::SetNodeDescription { .. } => "SetNodeDescription",
        Change::RemoveNode { .. } => "RemoveNode",
        Change::RotateToken { .. } => "RotateToken",
        Change::CreateService { .. } => "CreateService",
        Change::UpdateService { .. } => "UpdateService",
        Change::RemoveService { .. } => "RemoveService",
        Change::EditTasks { .. } => "EditTasks",
        Change::ReportTaskStatus { .. } => "ReportTaskStatus",
        Change::ForceNewCluster { .. } => "ForceNewCluster",
        Change::Noop => "Noop",
        Change::UpdateSettings { .. } => "UpdateSettings",
        Change::RotateCa { .. } => "RotateCa",
        Change::NoteCaRenewal { .. } => "NoteCaRenewal",
    }
}

#[test]
fn every_change_has_a_golden_line() {
    let kinds: BTreeSet<&str> = changes().iter().map(kind).collect();
    assert_eq!(kinds.len(), 18, "{kinds:?}");
}

/// Reads `golden` as the record `R`, converts it to the domain type `D` and back, and
/// checks that it writes the same JSON; returns the domain value.
fn through_records<R, D>(golden: &serde_json::Value) -> D
where
    R: serde::Serialize + serde::de::DeserializeOwned + From<D>,
    D: TryFrom<R> + Clone,
    <D as TryFrom<R>>::Error: std::fmt::Debug,
{
    let record: R = serde_json::from_value(golden.clone()).expect("the record reads");
    let domain = D::try_from(record).expect("the record converts");
    let again = R::from(domain.clone());
    assert_eq!(
        &serde_json::to_value(&again).expect("writes"),
        golden,
        "the record changed on its way through the domain type"
    );
    domain
}

#[test]
fn every_record_kind_round_trips_through_its_domain_type() {
    use hoist_state::records::{
        ChangeRecord, ClusterStateRecord, NodeRecord, ServiceRecord, ServiceSpecRecord, TaskRecord,
    };
    let lines = golden_lines(include_str!("golden/changes.jsonl"));
    for (line, sample) in lines.iter().zip(changes()) {
        let record: ChangeRecord = serde_json::from_str(line).expect("a change record");
        let change = Change::try_from(record).expect("converts");
        assert_eq!(change, sample);
        let written = serde_json::to_string(&ChangeRecord::from(change)).expect("writes");
        assert_eq!(&written, line);
    }
    let value = |line: &str| -> serde_json::Value { serde_json::from_str(line).expect("json") };
    let (init, add, create) = (value(lines[0]), value(lines[1]), value(lines[9]));
    let (update, edits) = (value(lines[10]), value(lines[12]));
    assert_eq!(
        through_records::<NodeRecord, Node>(&init["first_manager"]),
        node()
    );
    assert_eq!(
        through_records::<NodeRecord, Node>(&add["node"]),
        bare_node()
    );
    assert_eq!(
        through_records::<ServiceRecord, Service>(&create["service"]),
        service()
    );
    assert_eq!(
        through_records::<ServiceSpecRecord, ServiceSpec>(&create["service"]["spec"]),
        spec()
    );
    assert_eq!(
        through_records::<ServiceSpecRecord, ServiceSpec>(&update["spec"]),
        global_spec()
    );
    assert_eq!(
        through_records::<TaskRecord, Task>(&edits["edits"][0]["task"]),
        task()
    );
    assert_eq!(
        through_records::<TaskRecord, Task>(&edits["edits"][1]["task"]),
        bare_task()
    );
    let state = golden_lines(include_str!("golden/cluster_state.json"))[0];
    let record: ClusterStateRecord = serde_json::from_str(state).expect("a state record");
    let domain = ClusterState::try_from(record).expect("converts");
    assert_eq!(domain, cluster_state());
    let written = serde_json::to_string(&ClusterStateRecord::from(domain)).expect("writes");
    assert_eq!(written, state);
}

/// A missing field means what it meant when the record was written, whatever the
/// domain's defaults say today.
#[test]
fn missing_fields_take_the_stored_defaults() {
    let spec: ServiceSpec =
        match serde_json::from_str::<Change>(r#"{"type":"UpdateService","service_id":"00abcdef00000001","spec":{"name":"web"},"at_ms":1}"#)
            .expect("a minimal spec reads")
        {
            Change::UpdateService { spec, .. } => spec,
            other => panic!("{other:?}"),
        };
    assert_eq!(spec.driver.to_string(), "process");
    assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 1 });
    assert_eq!(spec.stop_grace_period_ms, 10_000);
    assert_eq!(spec.restart_policy.condition, RestartCondition::Any);
    assert_eq!(spec.restart_policy.delay_ms, 5_000);
    assert_eq!(spec.rebalance, Rebalance::Auto);
}

#[test]
fn a_stored_constraint_that_no_longer_parses_is_refused_by_name() {
    let line = r#"{"type":"UpdateService","service_id":"00abcdef00000001","spec":{"name":"web","constraints":["zone=b"]},"at_ms":1}"#;
    let err = serde_json::from_str::<Change>(line).expect_err("refused");
    assert!(err.to_string().contains("constraint"), "{err}");
}

/// Version 5: a node's description carries its CPUs and memory.
#[test]
fn a_node_description_with_resources_is_written_as_version_5_stores_it() {
    let golden = golden_lines(include_str!("golden/changes_v5.jsonl"));
    let change = Change::SetNodeDescription {
        node_id: node().id,
        addr: "127.0.77.9:23771".into(),
        engine: EngineInfo {
            drivers: vec!["process".into()],
            docker_version: None,
            storage_driver: None,
            os: None,
            arch: None,
            labels: Default::default(),
        },
        resources: Resources {
            nano_cpus: 2_000_000_000,
            memory_bytes: 8 << 30,
        },
        port_faults: Vec::new(),
        at_ms: 8,
    };
    same_as_stored(&change, golden[0]);
}

/// Version 6: job modes are stored by name, with their counts.
#[test]
fn job_modes_are_written_as_version_6_stores_them() {
    use hoist_types::service::ServiceMode;
    for (mode, stored) in [
        (
            ServiceMode::ReplicatedJob {
                max_concurrent: 2,
                total_completions: 6,
            },
            r#""mode":{"replicated_job":{"max_concurrent":2,"total_completions":6}}"#,
        ),
        (ServiceMode::GlobalJob, r#""mode":"global_job""#),
    ] {
        let mut service = service();
        service.spec.mode = mode;
        let change = Change::CreateService { service };
        let written = serde_json::to_string(&change).expect("writes");
        assert!(written.contains(stored), "{written}");
        let read: Change = serde_json::from_str(&written).expect("reads");
        assert_eq!(read, change);
    }
}

/// Version 6: a node's description may carry the ports its mesh could not open.
#[test]
fn port_faults_are_written_as_version_6_stores_them() {
    let change = Change::SetNodeDescription {
        node_id: node().id,
        addr: "127.0.77.9:23771".into(),
        engine: EngineInfo::default(),
        resources: Resources::default(),
        port_faults: vec![hoist_types::node::PortFault {
            port: 2024,
            reason: "Address already in use (os error 98)".into(),
        }],
        at_ms: 9,
    };
    let written = serde_json::to_string(&change).expect("writes");
    assert!(
        written.contains(
            r#""port_faults":[{"port":2024,"reason":"Address already in use (os error 98)"}]"#
        ),
        "{written}"
    );
    let read: Change = serde_json::from_str(&written).expect("reads");
    assert_eq!(read, change);
}
