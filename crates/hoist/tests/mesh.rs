//! The routing mesh through real daemons: every node's published port reaches the
//! tasks wherever they run.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hoist_testkit::hoist_bin;
use hoist_testkit::{process_runs_task, wait_for, Cluster, ClusterOptions};
use serde_json::Value;

fn create(cluster: &Cluster, name: &str, replicas: u32, publish: &str) {
    let bin = hoist_bin!().display().to_string();
    let replicas = replicas.to_string();
    cluster.hoist_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            name,
            "--replicas",
            &replicas,
            "-p",
            publish,
            "--driver",
            "process",
            &bin,
            "hello",
        ],
    );
    wait_for(
        &format!("{name} converged"),
        Duration::from_secs(30),
        || {
            let services = cluster.json(0, &["service", "ls"])?;
            let service = services
                .as_array()?
                .iter()
                .find(|view| view["spec"]["name"] == name)?
                .clone();
            (service["running"] == service["desired"]).then_some(())
        },
    );
}

/// One HTTP/1.1 GET on a fresh connection; the body, or an error.
fn get(addr: &str, path: &str) -> Result<String, String> {
    let response = hoist_testkit::http_get(addr, "mesh-test", path)?;
    if !response.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "not 200: {}",
            response.lines().next().unwrap_or_default()
        ));
    }
    Ok(response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string())
}

fn task_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|json| json["task"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn mesh_addr(cluster: &Cluster, index: usize, port: u16) -> String {
    format!("{}:{port}", cluster.nodes[index].ip)
}

/// Waits until the mesh on node `index` answers on `port`.
fn wait_mesh(cluster: &Cluster, index: usize, port: u16) {
    let addr = mesh_addr(cluster, index, port);
    wait_for(
        &format!("the mesh on {addr}"),
        Duration::from_secs(20),
        || get(&addr, "/api").ok().map(|_| ()),
    );
}

fn within_ten_percent(counts: &BTreeMap<String, usize>, total: usize) {
    let even = total as f64 / counts.len() as f64;
    for (task, count) in counts {
        let off = (*count as f64 - even).abs() / even;
        assert!(
            off <= 0.10,
            "task {task} got {count} of {total} ({counts:?})"
        );
    }
}

#[test]
fn any_node_reaches_every_task_and_requests_spread_evenly() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 3,
            ..Default::default()
        },
    );
    cluster.hoist_ok(0, &["node", "update", "--availability", "drain", "node-1"]);
    create(&cluster, "l4", 3, "8080:80");
    create(&cluster, "l7", 3, "published=8081,target=80,protocol=http");
    for (port, name) in [(8080, "l4"), (8081, "l7")] {
        // node-1 runs no task: everything it serves comes from other nodes.
        wait_mesh(&cluster, 0, port);
        let addr = mesh_addr(&cluster, 0, port);
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..3000 {
            let body = get(&addr, "/api").unwrap_or_else(|err| panic!("{name}: {err}"));
            *counts.entry(task_of(&body)).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3, "{name}: {counts:?}");
        within_ten_percent(&counts, 3000);
        // Every other node reaches every task too, not only the one measured above.
        for index in 1..cluster.nodes.len() {
            wait_mesh(&cluster, index, port);
            let addr = mesh_addr(&cluster, index, port);
            let mut reached: BTreeMap<String, usize> = BTreeMap::new();
            for _ in 0..90 {
                let body = get(&addr, "/api").unwrap_or_else(|err| panic!("{name}: {err}"));
                *reached.entry(task_of(&body)).or_insert(0) += 1;
            }
            assert_eq!(
                reached.len(),
                3,
                "{name} through node {index} reached only {reached:?}"
            );
        }
    }
    // The L7 mesh tells the backend who the client was.
    let body = get(&mesh_addr(&cluster, 1, 8081), "/api").unwrap();
    let json: Value = serde_json::from_str(&body).unwrap();
    // The test's connections come from 127.0.0.1; the backend sees the mesh as its peer
    // and the test in X-Forwarded-For.
    assert_eq!(json["forwarded_for"], "127.0.0.1", "{json}");
}

#[test]
fn a_host_mode_port_answers_only_where_a_task_runs() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 2,
            ..Default::default()
        },
    );
    create(&cluster, "edge", 1, "published=9090,target=80,mode=host");
    let tasks = cluster.json(0, &["service", "ps", "edge"]).unwrap();
    let host = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|task| task["status"]["state"] == "running")
        .unwrap()["node_hostname"]
        .as_str()
        .unwrap()
        .to_string();
    let index = cluster.node_index(&host).unwrap();
    wait_mesh(&cluster, index, 9090);
    for other in 0..3 {
        if other == index {
            continue;
        }
        let answer = get(&mesh_addr(&cluster, other, 9090), "/api");
        assert!(
            answer.is_err(),
            "{} answered on a host-mode port without a task",
            cluster.nodes[other].name
        );
    }
}

/// Sends GETs on fresh connections until `stop`, counting failures.
fn load(
    addr: String,
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
    errors: Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            sent.fetch_add(1, Ordering::SeqCst);
            let started = Instant::now();
            if let Err(err) = get(&addr, "/api") {
                failures.fetch_add(1, Ordering::SeqCst);
                errors.lock().unwrap().push((started, err));
            }
        }
    })
}

/// SIGKILLs the task's process group, and fails the test if no live process ran it: a
/// kill that hit nothing would make every later check pass vacuously.
fn kill_task(cluster: &Cluster, task_id: &str) {
    let mut killed = 0;
    for (_, id, pid) in cluster.recorded_tasks() {
        if id == task_id && process_runs_task(pid, &id) {
            // SAFETY: this pid runs the task (checked above); it leads its group.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
            killed += 1;
        }
    }
    assert!(
        killed > 0,
        "no live process ran task {task_id}: nothing was killed"
    );
}

/// Whether node `index`'s mesh still has `endpoint` in its tables: its per-endpoint
/// metrics exist exactly as long as the endpoint does.
fn endpoint_listed(cluster: &Cluster, index: usize, endpoint: &str) -> bool {
    unix_get(&cluster.nodes[index].socket, "/metrics")
        .lines()
        .any(|line| line.contains(&format!("endpoint=\"{endpoint}\"")))
}

/// Polls node 0's metrics from the kill until the control plane has taken `victim` out
/// of the mesh's tables, and returns when connections to it were last attempted. The
/// deadline is what proves the removal: passive ejection alone keeps the endpoint
/// listed, so a control plane that never removes a dead endpoint fails here.
fn last_attempt_before_removal(cluster: &Cluster, victim: &str, killed: Instant) -> Duration {
    let attempts = || {
        metric(cluster, 0, "hoist_mesh_endpoint_connections_total", victim)
            + metric(cluster, 0, "hoist_mesh_endpoint_errors_total", victim)
    };
    let mut seen = attempts();
    let mut last_attempt = Duration::ZERO;
    wait_for(
        &format!("the mesh to drop the killed endpoint {victim}"),
        Duration::from_secs(20),
        || {
            if !endpoint_listed(cluster, 0, victim) {
                return Some(());
            }
            let now = attempts();
            if now > seen {
                seen = now;
                last_attempt = killed.elapsed();
            }
            None
        },
    );
    last_attempt
}

fn metric(cluster: &Cluster, index: usize, name: &str, endpoint: &str) -> u64 {
    let text = unix_get(&cluster.nodes[index].socket, "/metrics");
    text.lines()
        .filter(|line| line.starts_with(name) && line.contains(&format!("endpoint=\"{endpoint}\"")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn unix_get(socket: &Path, path: &str) -> String {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: hoist\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn a_replica_killed_under_load_fails_no_l7_request_and_leaves_l4_within_a_second() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 2,
            ..Default::default()
        },
    );
    create(&cluster, "l7", 3, "published=8081,target=80,protocol=http");
    create(&cluster, "l4", 3, "8080:80");
    for (name, port) in [("l7", 8081u16), ("l4", 8080u16)] {
        wait_mesh(&cluster, 0, port);
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let worker = load(
            mesh_addr(&cluster, 0, port),
            stop.clone(),
            failures.clone(),
            sent.clone(),
            errors.clone(),
        );
        wait_for("some load", Duration::from_secs(10), || {
            (sent.load(Ordering::SeqCst) > 50).then_some(())
        });
        let tasks = cluster.json(0, &["service", "ps", name]).unwrap();
        let victim = tasks
            .as_array()
            .unwrap()
            .iter()
            .find(|task| task["status"]["state"] == "running")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            endpoint_listed(&cluster, 0, &victim),
            "{victim} is not in node 0's mesh before the kill"
        );
        kill_task(&cluster, &victim);
        let killed = Instant::now();
        let last_attempt = last_attempt_before_removal(&cluster, &victim, killed);
        stop.store(true, Ordering::SeqCst);
        worker.join().unwrap();
        let errors = errors.lock().unwrap().clone();
        if name == "l7" {
            // Every request is retried on another endpoint when its connection fails.
            assert_eq!(
                failures.load(Ordering::SeqCst),
                0,
                "l7: failed requests after killing {victim}: {errors:?}"
            );
        } else {
            // A TCP stream that was open to the task when it died cannot be moved; new
            // connections must not fail.
            let late: Vec<_> = errors
                .iter()
                .filter(|(started, _)| *started > killed + Duration::from_millis(100))
                .collect();
            assert!(
                late.is_empty(),
                "l4: connections opened after the kill failed: {late:?}"
            );
            assert!(
                errors.len() <= 1,
                "l4: more failures than connections in flight: {errors:?}"
            );
        }
        if name == "l4" {
            // The first refused connect ejects the endpoint; polling adds up to one
            // metrics round trip of slack.
            assert!(
                last_attempt <= Duration::from_millis(1500),
                "l4: new connections still went to {victim} {last_attempt:?} after it died"
            );
        }
    }
}

#[test]
fn a_long_request_completes_when_its_service_is_scaled_down() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 1,
            ..Default::default()
        },
    );
    create(&cluster, "slow", 2, "8080:80");
    wait_mesh(&cluster, 0, 8080);
    let addr = mesh_addr(&cluster, 0, 8080);
    let request = std::thread::spawn(move || get(&addr, "/sleep/5000"));
    wait_for("the long request in flight", Duration::from_secs(5), || {
        let text = unix_get(&cluster.nodes[0].socket, "/metrics");
        text.lines()
            .filter(|line| line.starts_with("hoist_mesh_endpoint_active"))
            .any(|line| line.rsplit(' ').next() != Some("0"))
            .then_some(())
    });
    cluster.hoist_ok(0, &["service", "scale", "--detach", "slow=0"]);
    // The stop must have reached the tasks while the request was still open.
    wait_for("both tasks told to stop", Duration::from_secs(10), || {
        let tasks = cluster.json(0, &["service", "ps", "slow"])?;
        tasks
            .as_array()?
            .iter()
            .all(|task| task["desired_state"] != "running")
            .then_some(())
    });
    assert!(
        !request.is_finished(),
        "the request ended before the scale-down reached its task: nothing was shown"
    );
    let answer = request.join().unwrap();
    assert!(answer.is_ok(), "the long request failed: {answer:?}");
}

#[test]
fn one_http_port_fronts_several_services_by_host() {
    let cluster = Cluster::start(hoist_bin!(), ClusterOptions::default());
    let bin_text = hoist_bin!().display().to_string();
    for (name, host) in [("site-a", "a.test"), ("site-b", "b.test")] {
        let route = format!("host={host}");
        cluster.hoist_ok(
            0,
            &[
                "service",
                "create",
                "--name",
                name,
                "--replicas",
                "1",
                "-p",
                "published=8082,target=80,protocol=http",
                "--route",
                &route,
                "--driver",
                "process",
                &bin_text,
                "hello",
            ],
        );
    }
    // A third service claiming the same host on the same port is refused.
    let err = cluster.hoist_err(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "site-c",
            "-p",
            "published=8082,target=80,protocol=http",
            "--route",
            "host=a.test",
            "sh",
            "-c",
            "sleep 60",
        ],
    );
    assert!(err.contains("8082"), "{err}");
    let addr = mesh_addr(&cluster, 0, 8082);
    for (name, host) in [("site-a", "a.test"), ("site-b", "b.test")] {
        let response = wait_for(&format!("{host} routed"), Duration::from_secs(20), || {
            hoist_testkit::http_get(&addr, host, "/api")
                .ok()
                .filter(|response| response.starts_with("HTTP/1.1 200"))
        });
        assert!(
            response.contains(&format!("\"service\":\"{name}\"")),
            "{host}: {response}"
        );
    }
    let unrouted = hoist_testkit::http_get(&addr, "c.test", "/api").unwrap();
    assert!(unrouted.starts_with("HTTP/1.1 404"), "{unrouted}");
}

/// Whether the kernel data path can be tried here (root and nft); fails instead of
/// skipping when HOIST_REQUIRE_NFTABLES is set, as `.ci/run` does when it runs as root.
fn nftables_usable() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let nft = std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if root && nft {
        return true;
    }
    let why = format!("needs root and nft (root: {root}, nft: {nft})");
    if !root && std::env::var_os("HOIST_REQUIRE_ROOT").is_some() {
        panic!("HOIST_REQUIRE_ROOT is set but the kernel data path {why}");
    }
    if std::env::var_os("HOIST_REQUIRE_NFTABLES").is_some() {
        panic!("HOIST_REQUIRE_NFTABLES is set but the kernel data path {why}");
    }
    eprintln!("skipping: the kernel data path {why}");
    false
}

fn nft_table_name(ip: std::net::Ipv4Addr) -> String {
    format!("hoist_mesh_{}", ip.to_string().replace('.', "_"))
}

fn nft_table_exists(ip: std::net::Ipv4Addr) -> bool {
    std::process::Command::new("nft")
        .args(["list", "table", "ip", &nft_table_name(ip)])
        .output()
        .is_ok_and(|output| output.status.success())
}

#[test]
fn the_kernel_data_path_reaches_every_task_and_drops_a_killed_one() {
    if !nftables_usable() {
        return;
    }
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 3,
            extra_daemon_args: vec!["--mesh-dataplane".into(), "nftables".into()],
            ..Default::default()
        },
    );
    cluster.hoist_ok(0, &["node", "update", "--availability", "drain", "node-1"]);
    create(&cluster, "l4k", 3, "8080:80");
    wait_mesh(&cluster, 0, 8080);
    let addr = mesh_addr(&cluster, 0, 8080);
    let accepted_by_listener = || -> u64 {
        unix_get(&cluster.nodes[0].socket, "/metrics")
            .lines()
            .filter(|line| {
                line.starts_with("hoist_mesh_port_connections_total{")
                    && line.contains("published=\"8080\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    // Before the tasks ran, wait_mesh's tries reached the listener (the kernel carries
    // only ports with endpoints), and the rules follow the listener's table by one `nft`
    // run; once they hold the three tasks, the kernel must forward everything.
    let table = nft_table_name(cluster.nodes[0].ip);
    wait_for(
        "the kernel rules to carry three endpoints",
        Duration::from_secs(10),
        || {
            let listed = std::process::Command::new("nft")
                .args(["list", "table", "ip", &table])
                .output()
                .ok()?;
            String::from_utf8_lossy(&listed.stdout)
                .contains("numgen inc mod 3")
                .then_some(())
        },
    );
    let accepted_before = accepted_by_listener();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..300 {
        let body = get(&addr, "/api").unwrap_or_else(|err| panic!("l4 kernel: {err}"));
        *counts.entry(task_of(&body)).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    within_ten_percent(&counts, 300);
    assert_eq!(
        accepted_by_listener(),
        accepted_before,
        "the mesh's listener accepted connections the kernel should have forwarded; node log:\n{}",
        cluster.log_tail(0, 40)
    );

    // The kernel's per-endpoint counters reach the node's metrics (on top of what the
    // listener forwarded before the rules were in place).
    wait_for(
        "kernel connection counts in the metrics",
        Duration::from_secs(10),
        || {
            counts
                .keys()
                .all(|task| {
                    metric(&cluster, 0, "hoist_mesh_endpoint_connections_total", task)
                        >= counts[task] as u64
                })
                .then_some(())
        },
    );

    let victim = counts.keys().next().cloned().unwrap();
    kill_task(&cluster, &victim);
    let killed = Instant::now();
    wait_for(
        "new connections avoid the killed task",
        Duration::from_secs(10),
        || {
            let mut bodies = Vec::new();
            for _ in 0..12 {
                bodies.push(get(&addr, "/api").ok()?);
            }
            bodies
                .iter()
                .all(|body| task_of(body) != victim)
                .then_some(())
        },
    );
    eprintln!(
        "kernel path: new connections avoid the killed task {:?} after the kill",
        killed.elapsed()
    );
    // A daemon stopped by SIGTERM takes its rules with it.
    let ip = cluster.nodes[0].ip;
    assert!(nft_table_exists(ip));
    let pid = cluster.nodes[0].pid().expect("node-1 runs") as i32;
    // SAFETY: the pid is the test's own child daemon, still running.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    wait_for(
        "node-1's nftables table to go with its daemon",
        Duration::from_secs(20),
        || (!nft_table_exists(ip)).then_some(()),
    );
}

/// `-p 80`: no published number given, so the managers pick one from Swarm's range,
/// and every node's mesh answers on it.
#[test]
fn a_port_published_without_a_number_gets_one_from_the_range_and_answers() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 1,
            ..Default::default()
        },
    );
    create(&cluster, "auto", 1, "80");
    let inspect = cluster.hoist_ok(0, &["service", "inspect", "auto"]);
    let view: Value = serde_json::from_str(&inspect).expect("inspect is JSON");
    let published = view[0]["spec"]["ports"][0]["published"]
        .as_u64()
        .expect("a published port");
    assert!((30000..=32767).contains(&published), "{inspect}");
    let published = published as u16;
    for index in 0..2 {
        wait_mesh(&cluster, index, published);
        let answer = get(&mesh_addr(&cluster, index, published), "/api");
        assert!(answer.is_ok(), "node {index} on {published}: {answer:?}");
    }
    // A second one gets another port.
    create(&cluster, "auto2", 1, "80");
    let inspect = cluster.hoist_ok(0, &["service", "inspect", "auto2"]);
    let view: Value = serde_json::from_str(&inspect).expect("inspect is JSON");
    let second = view[0]["spec"]["ports"][0]["published"].as_u64();
    assert!(
        second.is_some_and(|port| port != u64::from(published) && (30000..=32767).contains(&port)),
        "{inspect}"
    );
}

/// A published port another process holds on one node: `service create` exits
/// non-zero naming the node and the port, and `service ps` and `service ls` show it.
#[test]
fn a_published_port_taken_on_a_node_is_a_visible_fault() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 1,
            ..Default::default()
        },
    );
    // Someone else's server on node-2's address, on a port the kernel picks.
    let squatter =
        std::net::TcpListener::bind((cluster.nodes[1].ip, 0)).expect("binding a port first");
    let port = squatter.local_addr().expect("its address").port();
    let publish = format!("{port}:80");
    let bin = hoist_bin!().display().to_string();
    let out = cluster.hoist(
        0,
        &[
            "service", "create", "--name", "taken", "-p", &publish, "--driver", "process", &bin,
            "hello",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    let node = cluster.nodes[1].name.as_str();
    assert!(
        stderr.contains(&format!("port {port}")) && stderr.contains(node),
        "{stderr}"
    );
    let ps = cluster.hoist_ok(0, &["service", "ps", "taken"]);
    assert!(
        ps.contains(&format!("port {port} cannot be opened on node {node}")),
        "{ps}"
    );
    let ls = cluster.hoist_ok(0, &["service", "ls"]);
    assert!(ls.contains("unavailable on 1 node"), "{ls}");
    // Once the port is free, the node opens it and the fault goes away.
    drop(squatter);
    wait_for("the fault cleared", Duration::from_secs(30), || {
        let ps = cluster.hoist_ok(0, &["service", "ps", "taken"]);
        (!ps.contains("cannot be opened")).then_some(())
    });
    wait_mesh(&cluster, 1, port);
}
