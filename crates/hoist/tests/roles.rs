//! Roles bound to certificates: a worker's key never passes for a manager's, a node
//! dialling a manager refuses anything else before sending a byte, and the role that
//! authorizes a call is the one the cluster records now, not the one a certificate
//! still carries.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hoist_testkit::hoist_bin;
use hoist_testkit::{tls_request, wait_for, Cluster, ClusterOptions, FakeTlsServer};

fn identity(cluster: &Cluster, index: usize) -> String {
    std::fs::read_to_string(cluster.nodes[index].data_dir.join("identity.json"))
        .expect("identity.json")
}

/// Who is in the cluster, in which role and availability.
fn nodes(cluster: &Cluster) -> Vec<String> {
    let mut nodes: Vec<String> = cluster
        .node_ls(0)
        .expect("node ls")
        .iter()
        .map(|node| format!("{} {} {}", node["id"], node["role"], node["availability"]))
        .collect();
    nodes.sort();
    nodes
}

/// A task id no node ran: a node-logs call that passes authorization gets a 404.
const UNKNOWN_TASK: &str = "00000000000000aa";

/// Every route only a manager may call, with a body it would accept in form.
fn manager_only_routes() -> Vec<(&'static str, String, Option<&'static str>)> {
    let routes: Vec<(&str, &str, Option<&str>)> = vec![
        ("GET", "/v1/info", None),
        ("GET", "/metrics", None),
        ("GET", "/v1/backup", None),
        ("GET", "/v1/nodes", None),
        ("GET", "/v1/nodes/node-1", None),
        (
            "POST",
            "/v1/nodes/node-1/update",
            Some(r#"{"availability":"drain"}"#),
        ),
        ("POST", "/v1/nodes/node-2/promote", Some("null")),
        ("POST", "/v1/nodes/node-1/demote", Some("null")),
        ("DELETE", "/v1/nodes/node-2?force=true", None),
        ("GET", "/v1/join-tokens/manager", None),
        ("POST", "/v1/join-tokens/manager?rotate=true", Some("null")),
        ("GET", "/v1/services", None),
        ("POST", "/v1/services", Some(r#"{"spec":{}}"#)),
        ("GET", "/v1/services/web", None),
        ("DELETE", "/v1/services/web", None),
        (
            "POST",
            "/v1/services/web/update",
            Some(r#"{"version":1,"spec":{}}"#),
        ),
        ("POST", "/v1/services/web/scale", Some(r#"{"replicas":3}"#)),
        ("GET", "/v1/services/web/tasks", None),
        ("GET", "/v1/services/web/logs", None),
        (
            "POST",
            "/v1/raft/join-me",
            Some(r#"{"addr":"127.0.0.1:1"}"#),
        ),
        ("POST", "/raft/append", Some("{}")),
        ("POST", "/raft/vote", Some("{}")),
        ("POST", "/raft/snapshot", Some("{}")),
        ("POST", "/raft/write", Some("{}")),
        ("POST", "/raft/read-index", Some("{}")),
        ("GET", "/v1/join-tokens/worker", None),
        ("POST", "/v1/join-tokens/worker?rotate=true", Some("null")),
        ("GET", "/v1/cluster", None),
        ("POST", "/v1/cluster/update", Some(r#"{"max_replicas":5}"#)),
        ("GET", "/v1/cluster/ca", None),
        ("POST", "/v1/cluster/ca/rotate", Some("null")),
        ("GET", "/v1/no-such-route", None),
    ];
    let mut routes: Vec<_> = routes
        .into_iter()
        .map(|(method, path, body)| (method, path.to_string(), body))
        .collect();
    routes.push(("GET", format!("/v1/node-logs?task={UNKNOWN_TASK}"), None));
    routes
}

/// The routes a worker's certificate may reach (or that no certificate reaches), each with
/// why; every other route the router mounts is for managers only.
const NOT_MANAGER_ONLY: [(&str, &str, &str); 11] = [
    ("POST", "/v1/init", "local socket only"),
    ("POST", "/v1/join-cluster", "local socket only"),
    ("POST", "/v1/leave", "local socket only"),
    ("POST", "/v1/force-new-cluster", "local socket only"),
    ("POST", "/v1/restore", "local socket only"),
    (
        "POST",
        "/v1/join",
        "open: a joining node has no certificate yet",
    ),
    ("POST", "/v1/dispatcher/heartbeat", "any member"),
    ("POST", "/v1/node/renew", "any member"),
    (
        "POST",
        "/v1/join/abandon",
        "any member: a joined node takes its admission back",
    ),
    ("POST", "/v1/dispatcher/assignments", "any member"),
    ("POST", "/v1/dispatcher/status", "any member"),
];

/// Every (method, path pattern) `routes::router` mounts: the endpoint definitions it
/// mounts each route from.
fn mounted_routes() -> Vec<(String, String)> {
    hoist_api::ENDPOINTS
        .iter()
        .map(|route| (route.method.to_string(), route.path.to_string()))
        .collect()
}

/// Whether a concrete request path (query ignored) falls under a router pattern with
/// `{param}` and `{*rest}` segments.
fn pattern_matches(pattern: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let mut wanted = pattern.trim_start_matches('/').split('/');
    let mut given = path.trim_start_matches('/').split('/');
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return true,
            (Some(part), Some(value)) if part.starts_with("{*") => {
                return !value.is_empty();
            }
            (Some(part), Some(value)) if part.starts_with('{') => {
                if value.is_empty() {
                    return false;
                }
            }
            (Some(part), Some(value)) if part == value => {}
            _ => return false,
        }
    }
}

#[test]
fn every_mounted_manager_only_route_is_in_the_table() {
    let mounted = mounted_routes();
    // The reading of the source works: routes of every kind are found.
    for (method, path) in [
        ("POST", "/v1/init"),
        ("GET", "/v1/nodes/{node}"),
        ("DELETE", "/v1/nodes/{node}"),
        ("POST", "/raft/{*rest}"),
        ("GET", "/v1/cluster"),
    ] {
        assert!(
            mounted.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} not among the mounted endpoints: {mounted:?}"
        );
    }
    assert!(mounted.len() >= 30, "{mounted:?}");
    for (method, path, _) in NOT_MANAGER_ONLY {
        assert!(
            mounted.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} is listed as not manager-only but no longer mounted"
        );
    }
    assert!(pattern_matches(
        "/v1/nodes/{node}",
        "/v1/nodes/node-2?force=true"
    ));
    assert!(!pattern_matches(
        "/v1/nodes/{node}",
        "/v1/nodes/node-2/update"
    ));
    assert!(!pattern_matches("/v1/cluster", "/v1/cluster/ca"));

    let table = manager_only_routes();
    let missing: Vec<String> = mounted
        .iter()
        .filter(|(method, path)| {
            !NOT_MANAGER_ONLY
                .iter()
                .any(|(m, p, _)| m == method && p == path)
        })
        .filter(|(method, pattern)| {
            !table
                .iter()
                .any(|(m, path, _)| m == method && pattern_matches(pattern, path))
        })
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    assert!(
        missing.is_empty(),
        "manager-only routes the worker-certificate table does not try: {missing:?}"
    );
}

#[test]
fn a_worker_certificate_passes_for_no_manager_neither_to_a_joining_node_nor_on_any_manager_route() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 1,
            ..Default::default()
        },
    );
    let outsiders = Cluster::spawn(hoist_bin!(), 1);
    let manager_addr = cluster.nodes[0].addr();
    let worker_identity = identity(&cluster, 1);
    let token = cluster
        .hoist_ok(0, &["join-token", "manager", "-q"])
        .trim()
        .to_string();
    let secret = token.rsplit('-').next().unwrap().to_string();
    let nodes_before = nodes(&cluster);

    // A fake manager with a valid worker certificate of this cluster: its CA matches the
    // token's digest, so only the role can tell it apart.
    let fake = FakeTlsServer::start(&worker_identity);
    let err = outsiders.hoist_err(0, &["join", "--token", &token, &fake.addr]);
    assert!(
        err.contains("presented a worker certificate") && err.contains("not sent"),
        "{err}"
    );
    assert!(
        fake.connections() >= 1,
        "the joining node never dialled the fake"
    );
    let received = fake.received();
    assert!(
        !String::from_utf8_lossy(&received).contains(&secret),
        "the fake received the join secret"
    );
    assert!(
        received.is_empty(),
        "the fake received {} bytes: {}",
        received.len(),
        String::from_utf8_lossy(&received)
    );
    let info = outsiders.json(0, &["info"]).unwrap();
    assert!(info["cluster_id"].is_null(), "{info}");

    // The worker certificate on every manager-only route of the manager: all refused.
    for (method, path, body) in manager_only_routes() {
        let response = tls_request(&manager_addr, method, &path, body, Some(&worker_identity));
        assert!(
            response.starts_with("HTTP/1.1 403"),
            "{method} {path} with a worker certificate: {response}"
        );
    }
    // Another node's task output is for managers only, on the worker's listener too.
    let response = tls_request(
        &cluster.nodes[1].addr(),
        "GET",
        &format!("/v1/node-logs?task={UNKNOWN_TASK}"),
        None,
        Some(&worker_identity),
    );
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    // The same certificate is good where a worker belongs (so the refusals above are
    // about the role, not a broken client).
    let response = tls_request(
        &manager_addr,
        "POST",
        "/v1/dispatcher/status",
        Some(r#"{"reports":[]}"#),
        Some(&worker_identity),
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // Nothing the refused calls named changed.
    assert_eq!(
        cluster.hoist_ok(0, &["join-token", "manager", "-q"]).trim(),
        token
    );
    assert_eq!(nodes(&cluster), nodes_before);
}

/// Where node-2's certificates are tried: the leader's listener (the control API and
/// the routes of members), and the worker's, whose task output is for managers only.
struct Listeners {
    leader_addr: String,
    worker_addr: String,
    /// A node-logs path for a task no node ran: a call that passes authorization
    /// gets a 404.
    node_logs: String,
}

#[test]
fn a_demoted_manager_loses_the_control_api_at_once_and_a_removed_node_every_listener() {
    let mut cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 2,
            workers: 1,
            heartbeat_period: "500ms",
            ..Default::default()
        },
    );
    let leader_addr = cluster.nodes[0].addr();
    let worker_addr = cluster.nodes[2].addr();
    let node_logs = format!("/v1/node-logs?task={UNKNOWN_TASK}");
    let manager_certificate = identity(&cluster, 1);
    let listeners = Listeners {
        leader_addr,
        worker_addr,
        node_logs,
    };
    managers_read_the_workers_output(&cluster);
    a_manager_certificate_is_accepted(&listeners, &manager_certificate);
    let worker_certificate =
        demotion_refuses_it_at_once(&cluster, &listeners, &manager_certificate);
    a_removed_node_is_refused_everywhere(
        &mut cluster,
        &listeners,
        &manager_certificate,
        &worker_certificate,
    );
    the_cluster_carries_on_without_it(&cluster);
}

/// A task on the worker: managers read its output from the worker's listener, with a
/// client that accepts that node's certificate (a worker's) and no other.
fn managers_read_the_workers_output(cluster: &Cluster) {
    cluster.hoist_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "talker",
            "--constraint",
            "node.hostname==node-3",
            "--driver",
            "process",
            "sh",
            "-c",
            "echo said-by-the-worker; exec sleep 600",
        ],
    );
    for asked in [0, 1] {
        wait_for(
            "the worker's output through a manager",
            Duration::from_secs(30),
            || {
                let output = cluster.hoist(asked, &["service", "logs", "talker"]);
                String::from_utf8_lossy(&output.stdout)
                    .contains("said-by-the-worker")
                    .then_some(())
            },
        );
    }
}

/// While node-2 is a manager, its certificate reaches the control API and the
/// worker's task output.
fn a_manager_certificate_is_accepted(listeners: &Listeners, manager_certificate: &str) {
    let Listeners {
        leader_addr,
        worker_addr,
        node_logs,
    } = listeners;
    let response = tls_request(
        leader_addr,
        "GET",
        "/v1/nodes",
        None,
        Some(manager_certificate),
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let response = tls_request(
        worker_addr,
        "GET",
        node_logs,
        None,
        Some(manager_certificate),
    );
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
}

/// Demoted, node-2's certificate is refused by the control API on the very next call
/// and by the worker after its next heartbeat; the node renews as a worker, whose
/// certificate this returns.
fn demotion_refuses_it_at_once(
    cluster: &Cluster,
    listeners: &Listeners,
    manager_certificate: &str,
) -> String {
    let Listeners {
        leader_addr,
        worker_addr,
        node_logs,
    } = listeners;
    cluster.hoist_ok(0, &["node", "demote", "node-2"]);
    // The very next control call with the certificate it still holds is refused.
    for path in ["/v1/join-tokens/manager", "/v1/nodes"] {
        let response = tls_request(leader_addr, "GET", path, None, Some(manager_certificate));
        assert!(
            response.starts_with("HTTP/1.1 403") && response.contains("demoted"),
            "GET {path}: {response}"
        );
    }
    // The worker hears of it with its next heartbeat answer.
    wait_for(
        "the worker refusing the demoted manager",
        Duration::from_secs(20),
        || {
            tls_request(
                worker_addr,
                "GET",
                node_logs,
                None,
                Some(manager_certificate),
            )
            .starts_with("HTTP/1.1 403")
            .then_some(())
        },
    );
    wait_for("node-2 a worker", Duration::from_secs(30), || {
        let output = cluster.hoist(1, &["node", "ls"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        (!output.status.success() && stderr.contains("not a manager")).then_some(())
    });
    let worker_certificate = identity(cluster, 1);
    assert_ne!(
        worker_certificate, manager_certificate,
        "renewed as a worker"
    );
    worker_certificate
}

/// Removed: both its certificates are refused on every listener and route class.
fn a_removed_node_is_refused_everywhere(
    cluster: &mut Cluster,
    listeners: &Listeners,
    manager_certificate: &str,
    worker_certificate: &str,
) {
    let Listeners {
        leader_addr,
        worker_addr,
        node_logs,
    } = listeners;
    cluster.kill(1);
    cluster.hoist_ok(0, &["node", "rm", "--force", "node-2"]);
    // Every route class: a member's, the control API's, Raft's.
    const REMOVED_NODE_CALLS: &[(&str, &str, Option<&str>)] = &[
        ("POST", "/v1/dispatcher/heartbeat", Some("{}")),
        ("POST", "/v1/node/renew", Some(r#"{"csr_pem":""}"#)),
        ("POST", "/v1/dispatcher/assignments", Some("{}")),
        ("POST", "/v1/dispatcher/status", Some(r#"{"reports":[]}"#)),
        ("GET", "/v1/nodes", None),
        (
            "POST",
            "/v1/raft/join-me",
            Some(r#"{"addr":"127.0.0.1:1"}"#),
        ),
        ("POST", "/raft/append", Some("{}")),
    ];
    for certificate in [manager_certificate, worker_certificate] {
        for &(method, path, body) in REMOVED_NODE_CALLS {
            let response = tls_request(leader_addr, method, path, body, Some(certificate));
            assert!(
                response.starts_with("HTTP/1.1 403") && response.contains("removed"),
                "{method} {path} from the removed node: {response}"
            );
        }
        let response = tls_request(worker_addr, "GET", node_logs, None, Some(certificate));
        assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    }
}

/// The cluster carries on without it: the leader and the worker, both Ready, and
/// the worker's output still reaches the leader.
fn the_cluster_carries_on_without_it(cluster: &Cluster) {
    wait_for(
        "the two remaining nodes Ready",
        Duration::from_secs(20),
        || {
            let nodes = cluster.node_ls(0)?;
            (nodes.len() == 2 && nodes.iter().all(|node| node["status"] == "ready")).then_some(())
        },
    );
    let logs = cluster.hoist_ok(0, &["service", "logs", "talker"]);
    assert!(logs.contains("said-by-the-worker"), "{logs}");
}
