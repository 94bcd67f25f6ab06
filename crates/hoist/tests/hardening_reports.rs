//! Hardening (issue 12): what workers send is checked before it is stored, and the
//! cluster's limits hold. A worker here is played by the test with the real worker's
//! own certificate (its data directory's `identity.json`), sending what a compromised
//! node could: crafted status reports, heartbeats, extra streams.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hoist_testkit::hoist_bin;
use hoist_testkit::{tls_request, tls_stream_as, wait_for, Cluster, ClusterOptions};
use serde_json::{json, Value};

/// The status code of a raw HTTP response ("HTTP/1.1 409 Conflict" -> 409).
fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// GET `path` on a daemon's control socket; the body.
fn socket_get(socket: &Path, path: &str) -> String {
    let mut stream = UnixStream::connect(socket).expect("the control socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: hoist\r\nConnection: close\r\n\r\n"
    )
    .expect("writing the request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// Counts the connections made to a listener the test owns, where crafted addresses
/// point: any connection means someone dialled an address a worker made up.
struct Trap {
    addr: String,
    hits: Arc<AtomicUsize>,
}

impl Trap {
    fn new(ip: std::net::Ipv4Addr) -> Trap {
        let listener = TcpListener::bind((ip, 0)).expect("binding the trap");
        let addr = listener.local_addr().expect("trap address").to_string();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stream.is_ok() {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Trap { addr, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn tasks_of(cluster: &Cluster, service: &str) -> Vec<Value> {
    cluster
        .json(0, &["service", "ps", service])
        .and_then(|tasks| tasks.as_array().cloned())
        .unwrap_or_default()
}

fn log_of(cluster: &Cluster, index: usize) -> String {
    std::fs::read_to_string(&cluster.nodes[index].log).unwrap_or_default()
}

/// Who the test plays in the crafted-reports test, and where crafted addresses point.
struct Forger {
    manager_addr: String,
    worker_identity: String,
    manager_identity: String,
    /// An unused address of this cluster's block.
    trap: Trap,
    /// One on the manager's own IP: "another node's address".
    manager_trap: Trap,
}

impl Forger {
    fn new(cluster: &Cluster) -> Forger {
        let manager_addr = cluster.nodes[0].addr();
        let worker_ip = cluster.nodes[1].ip;
        let worker_identity =
            std::fs::read_to_string(cluster.nodes[1].data_dir.join("identity.json"))
                .expect("the worker's identity");
        let manager_identity =
            std::fs::read_to_string(cluster.nodes[0].data_dir.join("identity.json"))
                .expect("the manager's identity");
        let [_, a, b, _] = worker_ip.octets();
        let trap = Trap::new(std::net::Ipv4Addr::new(127, a, b, 9));
        let manager_trap = Trap::new(cluster.nodes[0].ip);
        Forger {
            manager_addr,
            worker_identity,
            manager_identity,
            trap,
            manager_trap,
        }
    }
}

/// The web service's task on each node, as the crafted reports name them.
struct WebTasks {
    worker_task_id: String,
    real_endpoint: Value,
    real_addr: String,
    manager_task: Value,
}

/// What the manager logs for each kind of crafted input it drops or refuses.
const DROPPED_AND_LOGGED: &[&str] = &[
    "reported endpoint dropped",
    "status report about a task of another node dropped",
    "heartbeat address dropped",
    "heartbeat refused",
    "status report refused",
    "second assignment stream refused",
    "join refused: address is not the source",
];

#[test]
fn crafted_worker_reports_are_dropped_and_never_dialled() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 1,
            ..Default::default()
        },
    );
    let forger = Forger::new(&cluster);
    let web = web_running_on_both_nodes(&cluster);
    let token_before = cluster.hoist_ok(0, &["join-token", "worker", "-q"]);
    crafted_endpoints_are_reported(&cluster, &forger, &web);
    cluster.pause(1);
    a_crafted_heartbeat_address_is_not_stored(&cluster, &forger);
    a_second_assignment_stream_is_refused(&forger);
    cluster.resume(1);
    oversized_messages_are_refused(&cluster, &forger, &web);
    a_rotating_get_and_a_misplaced_join_are_refused(&cluster, &forger, &token_before);
    only_the_real_endpoint_is_stored(&cluster, &web);
    crafted_addresses_are_never_dialled(&cluster, &forger, &web);
    // Dropped and logged, before anything was proposed.
    let log = log_of(&cluster, 0);
    for line in DROPPED_AND_LOGGED {
        assert!(log.contains(line), "the manager's log lacks {line:?}");
    }
    control_characters_are_refused(&cluster);
}

/// Starts web on both nodes and waits until each node's task runs with an endpoint.
fn web_running_on_both_nodes(cluster: &Cluster) -> WebTasks {
    let worker_ip = cluster.nodes[1].ip;
    let hello = hoist_bin!().display().to_string();
    cluster.hoist_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "2",
            "-p",
            "8080:80",
            "--driver",
            "process",
            &hello,
            "hello",
        ],
    );
    let (worker_task, manager_task) =
        wait_for("web running on both nodes", Duration::from_secs(30), || {
            let tasks = tasks_of(cluster, "web");
            Some((
                running_with_endpoints(&tasks, &cluster.nodes[1].name)?,
                running_with_endpoints(&tasks, &cluster.nodes[0].name)?,
            ))
        });
    let worker_task_id = worker_task["id"].as_str().expect("task id").to_string();
    let real_endpoint = worker_task["status"]["endpoints"][0].clone();
    let real_addr = real_endpoint["addr"]
        .as_str()
        .expect("endpoint")
        .to_string();
    assert!(
        real_addr.starts_with(&format!("{worker_ip}:")),
        "{real_addr}"
    );
    WebTasks {
        worker_task_id,
        real_endpoint,
        real_addr,
        manager_task,
    }
}

/// The task on `host` that runs and has endpoints, if any.
fn running_with_endpoints(tasks: &[Value], host: &str) -> Option<Value> {
    tasks
        .iter()
        .find(|task| {
            task["node_hostname"] == host
                && task["status"]["state"] == "running"
                && task["status"]["endpoints"]
                    .as_array()
                    .is_some_and(|e| !e.is_empty())
        })
        .cloned()
}

/// An endpoint of port 80 at `addr`, as a status report carries it.
fn crafted(addr: &str) -> Value {
    json!({"target_port": 80, "addr": addr})
}

/// A heartbeat body claiming `addr`, with `drivers` engine drivers.
fn beat(addr: &str, drivers: usize) -> String {
    json!({"addr": addr, "engine": {"drivers": vec!["process"; drivers]},
           "cert_role": "worker", "raft_running": false})
    .to_string()
}

/// The worker's address as the cluster records it.
fn recorded_addr(cluster: &Cluster) -> Value {
    cluster
        .node_ls(0)
        .expect("node ls")
        .iter()
        .find(|node| node["hostname"] == cluster.nodes[1].name.as_str())
        .expect("the worker")["addr"]
        .clone()
}

/// 1. A status report naming loopback, another node, and a made-up address as the
///    worker task's endpoints, plus a report about the manager's task.
fn crafted_endpoints_are_reported(cluster: &Cluster, forger: &Forger, web: &WebTasks) {
    let Forger {
        manager_addr,
        worker_identity,
        trap,
        manager_trap,
        ..
    } = forger;
    let report = json!({"reports": [
        {"task_id": web.worker_task_id, "status": {
            "state": "running", "message": "started", "timestamp_ms": 1,
            "endpoints": [
                crafted("127.0.0.1:22"),
                crafted(&manager_trap.addr),
                crafted(&cluster.nodes[1].addr()),
                crafted(&trap.addr),
                crafted("169.254.169.254:80"),
                web.real_endpoint,
            ]}},
        {"task_id": web.manager_task["id"], "status": {
            "state": "failed", "message": "crafted", "timestamp_ms": 1, "exit_code": 1}},
    ]});
    let response = tls_request(
        manager_addr,
        "POST",
        "/v1/dispatcher/status",
        Some(&report.to_string()),
        Some(worker_identity),
    );
    assert_eq!(status_of(&response), 200, "{response}");
}

/// 2. A heartbeat claiming the trap's address (the worker's beats come from its own
///    IP, the test's from another), sent while the worker is frozen: its own next
///    beat cannot put the real address back before the stored one is read. The pause
///    (around this step and the next) lasts well under the heartbeat grace (3 beats),
///    so the worker is not taken for down.
fn a_crafted_heartbeat_address_is_not_stored(cluster: &Cluster, forger: &Forger) {
    let Forger {
        manager_addr,
        worker_identity,
        trap,
        ..
    } = forger;
    let response = tls_request(
        manager_addr,
        "POST",
        "/v1/dispatcher/heartbeat",
        Some(&beat(&trap.addr, 1)),
        Some(worker_identity),
    );
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(
        recorded_addr(cluster),
        cluster.nodes[1].addr(),
        "the crafted heartbeat address was stored"
    );
}

/// 3. A second assignment stream for the worker. The worker is frozen, so whether
///    its own stream is open cannot change meanwhile: if it is, the test's first one
///    is the second; if not, the test opens the first and holds it, then a second.
fn a_second_assignment_stream_is_refused(forger: &Forger) {
    /// Opens an assignment stream with the worker's certificate: the status, the
    /// response as far as it was read, and the stream (held open by the caller).
    fn open_stream(
        forger: &Forger,
    ) -> (
        u16,
        String,
        rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    ) {
        let Forger {
            manager_addr,
            worker_identity,
            ..
        } = forger;
        let mut stream = tls_stream_as(manager_addr, Some(worker_identity))
            .expect("a TLS session with the worker's certificate");
        stream
            .get_mut()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let request = "POST /v1/dispatcher/assignments HTTP/1.1\r\nHost: hoist\r\n\
                       Connection: close\r\n\
                       Content-Type: application/json\r\nContent-Length: 4\r\n\r\nnull";
        stream.write_all(request.as_bytes()).expect("the request");
        // Only the head (and what came with it): a granted stream never ends.
        let mut head = Vec::new();
        let mut buffer = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buffer[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        // A refusal is short: read its body too, for the message.
        let mut response = head.clone();
        if status_of(&head) != 200 {
            let mut rest = String::new();
            let _ = stream.read_to_string(&mut rest);
            response.push_str(&rest);
        }
        (status_of(&head), response, stream)
    }
    let (first, first_response, held) = open_stream(forger);
    let refusal = match first {
        409 => {
            eprintln!("the worker's own stream was open: the test's first was the second");
            first_response
        }
        200 => {
            eprintln!("the worker's own stream was closed: the test held the first");
            let (second, second_response, _) = open_stream(forger);
            assert_eq!(second, 409, "{second_response}");
            second_response
        }
        _ => panic!("the first assignment stream: {first_response}"),
    };
    assert!(refusal.contains("one per node"), "{refusal}");
    drop(held);
}

/// An oversized heartbeat and an oversized status batch are each refused whole.
fn oversized_messages_are_refused(cluster: &Cluster, forger: &Forger, web: &WebTasks) {
    let Forger {
        manager_addr,
        worker_identity,
        ..
    } = forger;
    let worker_task_id = &web.worker_task_id;
    // An oversized heartbeat is refused whole.
    let response = tls_request(
        manager_addr,
        "POST",
        "/v1/dispatcher/heartbeat",
        Some(&beat(&cluster.nodes[1].addr(), 9)),
        Some(worker_identity),
    );
    assert_eq!(status_of(&response), 400, "{response}");
    assert!(response.contains("drivers"), "{response}");
    // An oversized status batch is refused whole.
    let many: Vec<Value> = (0..501)
        .map(|_| json!({"task_id": worker_task_id, "status": {"state": "running", "timestamp_ms": 1}}))
        .collect();
    let response = tls_request(
        manager_addr,
        "POST",
        "/v1/dispatcher/status",
        Some(&json!({ "reports": many }).to_string()),
        Some(worker_identity),
    );
    assert_eq!(status_of(&response), 400, "{response}");
}

/// 4. A GET that asks to rotate rotates nothing; a join from an address that is not
///    the one claimed is refused.
fn a_rotating_get_and_a_misplaced_join_are_refused(
    cluster: &Cluster,
    forger: &Forger,
    token_before: &str,
) {
    let Forger {
        manager_addr,
        worker_identity,
        manager_identity,
        trap,
        ..
    } = forger;
    let response = tls_request(
        manager_addr,
        "GET",
        "/v1/join-tokens/worker?rotate=true",
        None,
        Some(manager_identity),
    );
    assert_eq!(status_of(&response), 405, "{response}");
    assert_eq!(
        cluster.hoist_ok(0, &["join-token", "worker", "-q"]),
        token_before
    );
    let secret = token_before.trim().rsplit('-').next().unwrap().to_string();
    let join = json!({"secret": secret, "hostname": "intruder", "addr": trap.addr, "csr_pem": "x"});
    let response = tls_request(
        manager_addr,
        "POST",
        "/v1/join",
        Some(&join.to_string()),
        Some(worker_identity),
    );
    assert_eq!(status_of(&response), 403, "{response}");
    assert!(
        response.contains("joins from its own advertise address"),
        "{response}"
    );
}

/// What is stored: the worker's task keeps only its real endpoint, the manager's task
/// still runs, the worker's address is unchanged, nobody joined.
fn only_the_real_endpoint_is_stored(cluster: &Cluster, web: &WebTasks) {
    let tasks = tasks_of(cluster, "web");
    let stored = tasks
        .iter()
        .find(|task| task["id"] == web.worker_task_id.as_str())
        .expect("the worker's task");
    let endpoints: Vec<&str> = stored["status"]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|endpoint| endpoint["addr"].as_str())
        .collect();
    assert_eq!(endpoints, vec![web.real_addr.as_str()]);
    let manager_task_now = tasks
        .iter()
        .find(|task| task["id"] == web.manager_task["id"])
        .expect("the manager's task");
    assert_eq!(manager_task_now["status"]["state"], "running");
    let nodes = cluster.node_ls(0).expect("node ls");
    assert_eq!(nodes.len(), 2, "nobody joined: {nodes:?}");
    let worker = nodes
        .iter()
        .find(|node| node["hostname"] == cluster.nodes[1].name.as_str())
        .expect("the worker");
    assert_eq!(worker["addr"], cluster.nodes[1].addr());
}

/// Never dialled: traffic through the mesh on both nodes and the service's logs (the
/// manager fetches the worker's from its recorded address) reach only real tasks.
fn crafted_addresses_are_never_dialled(cluster: &Cluster, forger: &Forger, web: &WebTasks) {
    let Forger {
        trap, manager_trap, ..
    } = forger;
    for index in 0..2 {
        let addr = format!("{}:8080", cluster.nodes[index].ip);
        for _ in 0..10 {
            let response = hoist_testkit::http_get(&addr, "reports-test", "/api")
                .expect("a request through the mesh");
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        }
        let metrics = socket_get(&cluster.nodes[index].socket, "/metrics");
        assert!(metrics.contains(&web.real_addr), "{metrics}");
        for crafted in [
            "127.0.0.1:22",
            trap.addr.as_str(),
            manager_trap.addr.as_str(),
            "169.254.169.254:80",
            &format!("\"{}\"", cluster.nodes[1].addr()),
        ] {
            assert!(
                !metrics.contains(crafted),
                "{crafted} in the mesh of node {index}"
            );
        }
    }
    let logs = cluster.hoist(0, &["service", "logs", "web"]);
    assert!(logs.status.success());
    assert_eq!(trap.hits(), 0, "a crafted address was dialled");
    assert_eq!(manager_trap.hits(), 0, "another node's address was dialled");
}

/// Names and labels with control characters are refused, nothing changes.
fn control_characters_are_refused(cluster: &Cluster) {
    let err = cluster.hoist_err(
        0,
        &[
            "node",
            "update",
            "--label-add",
            "zone=a\u{1b}[2J",
            &cluster.nodes[1].name,
        ],
    );
    assert!(err.contains("control character"), "{err}");
    let err = cluster.hoist_err(
        0,
        &[
            "node",
            "update",
            "--label-add",
            &format!("zone={}", "v".repeat(2000)),
            &cluster.nodes[1].name,
        ],
    );
    assert!(err.contains("at most 1024"), "{err}");
    let labels = cluster.node_ls(0).expect("node ls");
    assert!(
        labels.iter().all(|node| node["labels"] == json!({})),
        "{labels:?}"
    );
    let daemon = std::process::Command::new(hoist_bin!())
        .args(["daemon", "--data-dir"])
        .arg(cluster.nodes[1].data_dir.join("never"))
        .args(["--hostname", "evil\u{7}name"])
        .output()
        .expect("running hoist daemon");
    assert!(!daemon.status.success());
    let stderr = String::from_utf8_lossy(&daemon.stderr);
    assert!(stderr.contains("hostname"), "{stderr}");
}

/// A memory figure of a process from /proc (`VmHWM`: the peak resident set, `VmRSS`:
/// the current one), in KiB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| {
            rest.trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{field} of {pid}"))
}

/// The largest number of replicas this test scales to: the maximum it sets.
const MAX: u64 = 3_000;

/// Settings `cluster update` refuses, each with what its message names.
const BAD_SETTINGS: &[(&[&str], &str)] = &[
    (&["--max-replicas", "0"], "--max-replicas"),
    (&["--max-replicas", "1000000001"], "--max-replicas"),
    (&["--task-history-limit", "65"], "--task-history-limit"),
    (&["--cert-expiry", "10s"], "--cert-expiry"),
    (&[], "nothing to update"),
];

/// The cluster settings, as `cluster inspect` prints them.
fn settings(cluster: &Cluster) -> Value {
    let view: Value =
        serde_json::from_str(&cluster.hoist_ok(0, &["cluster", "inspect"])).expect("json");
    view["settings"].clone()
}

/// The leader's commit index, polled instead of listing thousands of tasks while they
/// are created (which would itself add to the leader's peak).
fn commit_index(cluster: &Cluster) -> Option<u64> {
    cluster
        .json(0, &["info"])
        .and_then(|info| info["raft_commit_index"].as_u64())
}

/// What the large scale-up measured on the leader, and the tasks it ended with.
struct ScaleUp {
    peak_before: u64,
    peak_after: u64,
    rss_before: u64,
    rss_after: u64,
    commit_before: u64,
    commit_after: u64,
    tasks: Vec<Value>,
}

#[test]
fn replicas_are_capped_and_a_large_scale_up_commits_in_bounded_batches() {
    let mut cluster = Cluster::start(hoist_bin!(), ClusterOptions::default());
    let name = cluster.nodes[0].name.clone();
    let defaults = settings(&cluster);
    assert_eq!(defaults["max_replicas"], 10_000);
    assert_eq!(defaults["task_history_limit"], 5);
    assert_eq!(defaults["join_rate_limit"], 5);
    the_default_maximum_holds(&cluster);
    bad_settings_are_refused(&cluster, &defaults);
    settings_change(&cluster, &name, &defaults);
    the_join_limiter_follows_the_setting(&cluster);
    the_new_maximum_is_shown_and_enforced(&cluster);
    let scale_up = scale_to_the_maximum(&cluster);
    passes_and_memory_are_bounded(&scale_up);
    // The maximum cannot drop below what a service asks for.
    let err = cluster.hoist_err(0, &["cluster", "update", "--max-replicas", "100"]);
    assert!(err.contains("scale it down first"), "{err}");
    let kept = settings(&cluster);
    assert_eq!(kept["max_replicas"], MAX);
    settings_survive_a_restart(&mut cluster, &kept);
}

/// Under the default maximum (10,000), a larger scale or a larger new service is
/// refused and nothing is stored.
fn the_default_maximum_holds(cluster: &Cluster) {
    cluster.hoist_ok(
        0,
        &[
            "service", "create", "--detach", "--name", "web", "--driver", "process", "sleep",
            "3600",
        ],
    );
    let err = cluster.hoist_err(0, &["service", "scale", "--detach", "web=1000000000"]);
    assert!(err.contains("10000"), "{err}");
    let err = cluster.hoist_err(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "big",
            "--replicas",
            "10001",
            "sleep",
            "1",
        ],
    );
    assert!(err.contains("maximum of 10000"), "{err}");
    let services = cluster.json(0, &["service", "ls"]).expect("service ls");
    assert_eq!(services.as_array().map(Vec::len), Some(1), "{services}");
    let inspect: Value =
        serde_json::from_str(&cluster.hoist_ok(0, &["service", "inspect", "web"])).expect("json");
    assert_eq!(inspect[0]["spec"]["mode"]["replicated"]["replicas"], 1);
}

/// Bad settings are refused by name; nothing changes.
fn bad_settings_are_refused(cluster: &Cluster, defaults: &Value) {
    for &(args, expected) in BAD_SETTINGS {
        let mut command = vec!["cluster", "update"];
        command.extend(args);
        let err = cluster.hoist_err(0, &command);
        assert!(err.contains(expected), "{command:?}: {err}");
    }
    assert_eq!(settings(cluster), *defaults);
}

/// Drains the only node (so that nothing can run) and changes every setting but the
/// heartbeat.
fn settings_change(cluster: &Cluster, name: &str, defaults: &Value) {
    cluster.hoist_ok(0, &["node", "update", "--availability", "drain", name]);
    cluster.hoist_ok(
        0,
        &[
            "cluster",
            "update",
            "--max-replicas",
            &MAX.to_string(),
            "--task-history-limit",
            "3",
        ],
    );
    cluster.hoist_ok(
        0,
        &[
            "cluster",
            "update",
            "--join-rate-limit",
            "2",
            "--cert-expiry",
            "720h",
        ],
    );
    let changed = settings(cluster);
    assert_eq!(changed["max_replicas"], MAX);
    assert_eq!(changed["task_history_limit"], 3);
    assert_eq!(changed["join_rate_limit"], 2);
    assert_eq!(changed["cert_expiry_secs"], 720 * 3600);
    assert_eq!(
        changed["heartbeat_period_ms"],
        defaults["heartbeat_period_ms"]
    );
}

/// The join endpoint's limiter follows the setting: 0 lifts it, 1 a second holds a
/// source to its burst.
fn the_join_limiter_follows_the_setting(cluster: &Cluster) {
    /// 30 joins with a wrong secret, one after the other: the responses.
    fn join_attempts(cluster: &Cluster) -> Vec<String> {
        let body = json!({"secret": "not-the-secret", "hostname": "guesser",
                          "addr": "127.0.0.1:2377", "csr_pem": "x"})
        .to_string();
        (0..30)
            .map(|_| {
                tls_request(
                    &cluster.nodes[0].addr(),
                    "POST",
                    "/v1/join",
                    Some(&body),
                    None,
                )
            })
            .collect()
    }
    cluster.hoist_ok(0, &["cluster", "update", "--join-rate-limit", "0"]);
    let unlimited = join_attempts(cluster);
    assert!(
        unlimited.iter().all(|response| status_of(response) == 403),
        "{unlimited:?}"
    );
    cluster.hoist_ok(0, &["cluster", "update", "--join-rate-limit", "1"]);
    let limited = join_attempts(cluster);
    let refused: Vec<&String> = limited
        .iter()
        .filter(|response| status_of(response) == 429)
        .collect();
    assert!(refused.len() >= 5, "{limited:?}");
    assert!(refused[0].contains("1 per second"), "{}", refused[0]);
    cluster.hoist_ok(0, &["cluster", "update", "--join-rate-limit", "2"]);
}

/// The new maximum is what `cluster inspect --pretty` shows and what a scale meets.
fn the_new_maximum_is_shown_and_enforced(cluster: &Cluster) {
    let pretty = cluster.hoist_ok(0, &["cluster", "inspect", "--pretty"]);
    assert!(
        pretty.contains("Max replicas:        3000 per service"),
        "{pretty}"
    );
    let err = cluster.hoist_err(
        0,
        &["service", "scale", "--detach", &format!("web={}", MAX + 1)],
    );
    assert!(err.contains(&format!("maximum of {MAX}")), "{err}");
}

/// A scale to the maximum on a drained cluster: nothing can run, every task is
/// created anyway. Waits until the commit index has settled; the leader's memory
/// figures and commit index before and after.
fn scale_to_the_maximum(cluster: &Cluster) -> ScaleUp {
    let pid = cluster.nodes[0].pid().expect("the leader's pid");
    let peak_before = proc_kib(pid, "VmHWM");
    let rss_before = proc_kib(pid, "VmRSS");
    let commit_before = cluster.json(0, &["info"]).expect("info")["raft_commit_index"]
        .as_u64()
        .expect("commit index");
    cluster.hoist_ok(0, &["service", "scale", "--detach", &format!("web={MAX}")]);
    let mut last = (commit_before, std::time::Instant::now());
    wait_for("the scale-up to settle", Duration::from_secs(120), || {
        let index = commit_index(cluster)?;
        if index != last.0 {
            last = (index, std::time::Instant::now());
            return None;
        }
        (index > commit_before && last.1.elapsed() > Duration::from_secs(2)).then_some(())
    });
    let peak_after = proc_kib(pid, "VmHWM");
    let rss_after = proc_kib(pid, "VmRSS");
    let commit_after = commit_index(cluster).expect("commit index");
    let tasks = tasks_of(cluster, "web");
    ScaleUp {
        peak_before,
        peak_after,
        rss_before,
        rss_after,
        commit_before,
        commit_after,
        tasks,
    }
}

/// Every slot has its task, created in passes of at most 500, and the leader's peak
/// memory grew by less than creating them in one change would take.
fn passes_and_memory_are_bounded(scale_up: &ScaleUp) {
    let ScaleUp {
        peak_before,
        peak_after,
        rss_before,
        rss_after,
        commit_before,
        commit_after,
        tasks,
    } = scale_up;
    let live = tasks
        .iter()
        .filter(|task| task["desired_state"] == "running")
        .count();
    assert_eq!(live as u64, MAX, "every slot has its task");

    // Tasks created by one pass share its timestamp.
    let mut per_pass: BTreeMap<u64, usize> = BTreeMap::new();
    for task in tasks {
        *per_pass
            .entry(task["created_at_ms"].as_u64().expect("created_at_ms"))
            .or_default() += 1;
    }
    let biggest = per_pass.values().copied().max().unwrap_or(0);
    // What the tasks weigh as JSON, the unit of the bound below.
    let tasks_json: usize = tasks.iter().map(|task| task.to_string().len()).sum();
    let growth_kib = peak_after.saturating_sub(*peak_before);
    eprintln!(
        "scale to {MAX}: {} passes, largest {biggest}; VmHWM {peak_before} -> {peak_after} KiB (+{growth_kib}); VmRSS {rss_before} -> {rss_after} KiB; all tasks as JSON: {} KiB",
        per_pass.len(),
        tasks_json / 1024
    );
    assert!(
        biggest <= 500,
        "a pass created {biggest} tasks: {per_pass:?}"
    );
    assert!(
        per_pass.len() >= (MAX as usize).div_ceil(500),
        "{per_pass:?}"
    );
    assert!(commit_after - commit_before >= per_pass.len() as u64);
    // The leader keeps every task, so its peak grows with them whatever the batching;
    // creating them all in one change adds the change on top, several copies of every
    // task at once (the actions, the log entry and its JSON, the apply). Measured on
    // this test with the batch lifted to 500,000: +30 MB, about 10 times the tasks'
    // JSON; in passes of 500: +15 MB, about 5 times. The bound sits between the two.
    assert!(
        (growth_kib as usize) * 1024 < tasks_json * 15 / 2,
        "the leader's peak grew by {growth_kib} KiB for {} KiB of tasks as JSON",
        tasks_json / 1024
    );
}

/// The settings are persisted state: a restarted manager has them.
fn settings_survive_a_restart(cluster: &mut Cluster, kept: &Value) {
    cluster.restart(0);
    let after_restart = wait_for("the manager back", Duration::from_secs(30), || {
        let output = cluster.hoist(0, &["cluster", "inspect"]);
        output
            .status
            .success()
            .then(|| serde_json::from_slice::<Value>(&output.stdout).ok())
            .flatten()
    });
    assert_eq!(after_restart["settings"], *kept);
}
