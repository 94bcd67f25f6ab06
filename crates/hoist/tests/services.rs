//! Services that heal themselves: real daemons on loopback addresses running real
//! processes through the process driver.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hoist_testkit::hoist_bin;
use hoist_testkit::{wait_for, Cluster, ClusterOptions};
use serde_json::Value;

fn hello(cluster: &Cluster, name: &str, replicas: u32, extra: &[&str]) {
    let bin = hoist_bin!().display().to_string();
    let replicas = replicas.to_string();
    let mut args = vec![
        "service",
        "create",
        "--detach",
        "--name",
        name,
        "--replicas",
        &replicas,
        "--driver",
        "process",
    ];
    args.extend_from_slice(extra);
    // Published, so the driver gives each replica a port of its own.
    if !extra.contains(&"-p") {
        args.extend(["-p", "8080:80"]);
    }
    args.extend([bin.as_str(), "hello"]);
    cluster.hoist_ok(0, &args);
}

fn tasks(cluster: &Cluster, service: &str) -> Vec<Value> {
    cluster
        .json(0, &["service", "ps", service])
        .and_then(|value| value.as_array().cloned())
        .unwrap_or_default()
}

/// Running tasks per node hostname (observed running and still wanted).
fn spread(tasks: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for task in tasks {
        if task["desired_state"] == "running" && task["status"]["state"] == "running" {
            *counts
                .entry(
                    task["node_hostname"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
                .or_insert(0) += 1;
        }
    }
    counts
}

fn running_and_desired(cluster: &Cluster, asked: usize, service: &str) -> Option<(u64, u64)> {
    let services = cluster.json(asked, &["service", "ls"])?;
    let service = services
        .as_array()?
        .iter()
        .find(|view| view["spec"]["name"] == service)?
        .clone();
    Some((service["running"].as_u64()?, service["desired"].as_u64()?))
}

fn wait_converged(cluster: &Cluster, asked: usize, service: &str, timeout: Duration) {
    wait_for(&format!("{service} converged"), timeout, || {
        let (running, desired) = running_and_desired(cluster, asked, service)?;
        (running == desired).then_some(())
    });
}

/// Slots with more than one live task process, across all nodes.
fn slots_running_twice(cluster: &Cluster, asked: usize, service: &str) -> Vec<String> {
    let listed = cluster
        .json(asked, &["service", "ps", service])
        .and_then(|value| value.as_array().cloned())
        .unwrap_or_default();
    let slot_of: HashMap<String, String> = listed
        .iter()
        .map(|task| {
            (
                task["id"].as_str().unwrap_or_default().to_string(),
                task["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let mut per_slot: BTreeMap<String, usize> = BTreeMap::new();
    for (_, task_id) in cluster.live_task_processes() {
        if let Some(slot) = slot_of.get(&task_id) {
            *per_slot.entry(slot.clone()).or_insert(0) += 1;
        }
    }
    per_slot
        .into_iter()
        .filter(|(_, count)| *count > 1)
        .map(|(slot, count)| format!("{slot} x{count}"))
        .collect()
}

fn max_minus_min(counts: &BTreeMap<String, usize>, nodes: &[&str]) -> usize {
    let values: Vec<usize> = nodes
        .iter()
        .map(|node| counts.get(*node).copied().unwrap_or(0))
        .collect();
    values.iter().max().unwrap() - values.iter().min().unwrap()
}

#[test]
fn replicas_spread_over_distinct_nodes_and_stay_even_when_scaled() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 4,
            ..Default::default()
        },
    );
    // Keep the manager out, so the four workers take the tasks.
    cluster.hoist_ok(0, &["node", "update", "--availability", "drain", "node-1"]);
    hello(&cluster, "web", 3, &[]);
    wait_converged(&cluster, 0, "web", Duration::from_secs(30));
    let counts = spread(&tasks(&cluster, "web"));
    assert_eq!(
        counts.len(),
        3,
        "3 replicas on 3 distinct nodes: {counts:?}"
    );
    assert!(counts.values().all(|count| *count == 1), "{counts:?}");
    cluster.hoist_ok(0, &["service", "scale", "--detach", "web=8"]);
    wait_converged(&cluster, 0, "web", Duration::from_secs(30));
    let counts = spread(&tasks(&cluster, "web"));
    let workers = ["node-2", "node-3", "node-4", "node-5"];
    assert_eq!(counts.values().sum::<usize>(), 8);
    assert!(max_minus_min(&counts, &workers) <= 1, "{counts:?}");
    // Every replica answers its page.
    for task in tasks(&cluster, "web") {
        if task["status"]["state"] != "running" {
            continue;
        }
        let addr = task["status"]["endpoints"][0]["addr"]
            .as_str()
            .unwrap()
            .to_string();
        let body = hoist_testkit::http_get(&addr, "test", "/api").expect("a task answers");
        assert!(body.contains(task["id"].as_str().unwrap()), "{body}");
    }
}

#[test]
fn an_unsatisfiable_constraint_waits_with_its_reason_until_a_matching_node_joins() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 1,
            ..Default::default()
        },
    );
    hello(
        &cluster,
        "picky",
        1,
        &["--constraint", "node.labels.zone==blue"],
    );
    let reason = wait_for("a pending reason", Duration::from_secs(20), || {
        let listed = tasks(&cluster, "picky");
        let task = listed.first()?;
        (task["status"]["state"] == "pending")
            .then(|| task["pending_reason"].as_str().map(str::to_string))
            .flatten()
    });
    assert!(reason.contains("no suitable node"), "{reason}");
    assert!(reason.contains("2 nodes"), "{reason}");
    let shown = cluster.hoist_ok(0, &["service", "ps", "picky"]);
    assert!(shown.contains("no suitable node"), "{shown}");
    // A node with the label joins: the task starts there.
    let token = cluster
        .hoist_ok(0, &["join-token", "worker", "-q"])
        .trim()
        .to_string();
    let mut extra = Cluster::spawn(hoist_bin!(), 1);
    extra.hoist_ok(0, &["join", "--token", &token, &cluster.nodes[0].addr()]);
    let joined = extra.nodes[0].name.clone();
    let joined_id = wait_for("the new node listed", Duration::from_secs(20), || {
        cluster
            .node_ls(0)?
            .into_iter()
            .find(|node| node["addr"] == extra.nodes[0].addr().as_str())
            .and_then(|node| node["id"].as_str().map(str::to_string))
    });
    cluster.hoist_ok(
        0,
        &["node", "update", "--label-add", "zone=blue", &joined_id],
    );
    wait_converged(&cluster, 0, "picky", Duration::from_secs(30));
    let counts = spread(&tasks(&cluster, "picky"));
    assert_eq!(counts.get(&joined), Some(&1), "{counts:?}");
    // Tidy the extra node's tasks when `extra` drops.
    extra.kill(0);
}

#[test]
fn a_killed_worker_is_replaced_and_the_spread_comes_back_without_dropping_below_desired() {
    let mut cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 3,
            heartbeat_period: "500ms",
            heartbeat_grace: 3,
            ..Default::default()
        },
    );
    cluster.hoist_ok(0, &["node", "update", "--availability", "drain", "node-1"]);
    hello(&cluster, "web", 6, &[]);
    wait_converged(&cluster, 0, "web", Duration::from_secs(30));
    let workers = ["node-2", "node-3", "node-4"];
    assert!(max_minus_min(&spread(&tasks(&cluster, "web")), &workers) == 0);

    // The worker and its workloads die together, as a machine would.
    cluster.kill(3);
    cluster.kill_tasks_of(3);
    wait_for(
        "replacements on the other workers",
        Duration::from_secs(30),
        || {
            let counts = spread(&tasks(&cluster, "web"));
            let on_dead = counts.get("node-4").copied().unwrap_or(0);
            (on_dead == 0 && counts.values().sum::<usize>() == 6).then_some(())
        },
    );

    cluster.start_node(3);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut samples = 0;
    loop {
        let (running, desired) = running_and_desired(&cluster, 0, "web").expect("service ls");
        assert!(
            running >= desired,
            "only {running} of {desired} running during the rebalance"
        );
        samples += 1;
        let counts = spread(&tasks(&cluster, "web"));
        if max_minus_min(&counts, &workers) == 0 && counts.values().sum::<usize>() == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the spread did not even out: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(samples > 1, "the rebalance was sampled");
    wait_for("no slot running twice", Duration::from_secs(20), || {
        slots_running_twice(&cluster, 0, "web")
            .is_empty()
            .then_some(())
    });
}

#[test]
fn a_drained_node_empties_and_gets_its_share_back_when_active() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 2,
            ..Default::default()
        },
    );
    hello(&cluster, "web", 6, &[]);
    wait_converged(&cluster, 0, "web", Duration::from_secs(30));
    assert_eq!(spread(&tasks(&cluster, "web")).get("node-2"), Some(&2));
    cluster.hoist_ok(0, &["node", "update", "--availability", "drain", "node-2"]);
    wait_for("node-2 empty", Duration::from_secs(30), || {
        let counts = spread(&tasks(&cluster, "web"));
        (!counts.contains_key("node-2") && counts.values().sum::<usize>() == 6).then_some(())
    });
    cluster.hoist_ok(0, &["node", "update", "--availability", "active", "node-2"]);
    wait_for(
        "node-2 gets its share back",
        Duration::from_secs(60),
        || {
            let counts = spread(&tasks(&cluster, "web"));
            (counts.get("node-2") == Some(&2) && counts.values().sum::<usize>() == 6).then_some(())
        },
    );
}

#[test]
fn a_failing_command_is_tried_three_times_under_on_failure_with_two_attempts() {
    let cluster = Cluster::start(hoist_bin!(), ClusterOptions::default());
    cluster.hoist_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "crash",
            "--replicas",
            "1",
            "--restart-condition",
            "on-failure",
            "--restart-max-attempts",
            "2",
            "--restart-delay",
            "100ms",
            "--driver",
            "process",
            "sh",
            "-c",
            "echo trying; exit 1",
        ],
    );
    let listed = wait_for("three failed attempts", Duration::from_secs(40), || {
        let listed = tasks(&cluster, "crash");
        let failed = listed
            .iter()
            .filter(|task| task["status"]["state"] == "failed")
            .count();
        (failed == 3).then_some(listed)
    });
    // And no fourth.
    std::thread::sleep(Duration::from_secs(2));
    let again = tasks(&cluster, "crash");
    assert_eq!(again.len(), 3, "{again:?}");
    assert!(listed.iter().all(|task| task["status"]["exit_code"] == 1));
    let shown = cluster.hoist_ok(0, &["service", "ps", "crash"]);
    assert_eq!(shown.matches("crash.1").count(), 3, "{shown}");
    assert!(
        shown.contains("\\_ crash.1"),
        "history is shown under the slot: {shown}"
    );
    assert!(shown.contains("non-zero exit (1)"), "{shown}");
    let logs = cluster.hoist_ok(0, &["service", "logs", "crash"]);
    assert!(logs.matches("trying").count() >= 3, "{logs}");
}

#[test]
fn killing_the_leader_during_a_scale_converges_with_no_slot_running_twice() {
    let mut cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 3,
            workers: 2,
            ..Default::default()
        },
    );
    hello(&cluster, "web", 2, &[]);
    wait_converged(&cluster, 0, "web", Duration::from_secs(30));
    let leader = cluster.leader(0).expect("leader");
    let other = (leader + 1) % 3;
    cluster.hoist_ok(other, &["service", "scale", "--detach", "web=10"]);
    cluster.kill(leader);
    cluster.kill_tasks_of(leader);
    wait_converged(&cluster, other, "web", Duration::from_secs(60));
    wait_for("no slot running twice", Duration::from_secs(20), || {
        slots_running_twice(&cluster, other, "web")
            .is_empty()
            .then_some(())
    });
    let (running, desired) = running_and_desired(&cluster, other, "web").unwrap();
    assert_eq!((running, desired), (10, 10));
}

#[test]
fn a_worker_cut_off_beyond_the_grace_stops_its_replaced_tasks_when_it_returns() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 2,
            heartbeat_period: "500ms",
            heartbeat_grace: 2,
            ..Default::default()
        },
    );
    cluster.hoist_ok(0, &["node", "update", "--availability", "drain", "node-1"]);
    hello(&cluster, "web", 4, &["--rebalance", "off"]);
    wait_converged(&cluster, 0, "web", Duration::from_secs(30));
    cluster.pause(2);
    wait_for(
        "node-3 Down and its tasks replaced",
        Duration::from_secs(30),
        || {
            let nodes = cluster.node_ls(0)?;
            let down = nodes
                .iter()
                .any(|node| node["hostname"] == "node-3" && node["status"] == "down");
            let counts = spread(&tasks(&cluster, "web"));
            (down && counts.get("node-2") == Some(&4)).then_some(())
        },
    );
    // While cut off, its old processes still run: the slots run twice for now.
    assert!(!slots_running_twice(&cluster, 0, "web").is_empty());
    cluster.resume(2);
    wait_for(
        "node-3 back and its replaced tasks stopped",
        Duration::from_secs(30),
        || {
            slots_running_twice(&cluster, 0, "web")
                .is_empty()
                .then_some(())
        },
    );
    wait_converged(&cluster, 0, "web", Duration::from_secs(30));
}

#[test]
fn bad_service_input_is_refused_and_stores_nothing() {
    let cluster = Cluster::start(hoist_bin!(), ClusterOptions::default());
    hello(&cluster, "web", 1, &["-p", "18080:80"]);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--replicas", "-1"], "--replicas"),
        (vec!["--constraint", "node.labels.zone=blue"], "constraint"),
        (vec!["--mode", "sideways"], "--mode"),
        (vec!["-p", "18080:80"], "18080"),
        (
            vec!["--restart-condition", "sometimes"],
            "restart-condition",
        ),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["service", "create", "--detach", "--name", "other"];
        args.extend(flags.iter().copied());
        args.extend(["sh", "-c", "sleep 60"]);
        let err = cluster.hoist_err(0, &args);
        assert!(err.contains(needle), "{flags:?}: {err}");
    }
    let err = cluster.hoist_err(
        0,
        &[
            "service", "create", "--name", "web", "--detach", "sh", "-c", "sleep 60",
        ],
    );
    assert!(err.contains("already exists"), "{err}");
    let err = cluster.hoist_err(0, &["service", "create", "--bogus", "--name", "x", "sh"]);
    assert!(err.contains("--bogus"), "{err}");
    let services = cluster.json(0, &["service", "ls"]).unwrap();
    assert_eq!(services.as_array().unwrap().len(), 1, "{services}");
}

#[test]
fn a_restarted_worker_adopts_its_running_tasks_instead_of_duplicating_them() {
    let mut cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 1,
            ..Default::default()
        },
    );
    cluster.hoist_ok(0, &["node", "update", "--availability", "drain", "node-1"]);
    hello(&cluster, "web", 2, &[]);
    wait_converged(&cluster, 0, "web", Duration::from_secs(30));
    let before: Vec<String> = cluster
        .live_task_processes()
        .into_iter()
        .map(|(_, task)| task)
        .collect();
    assert_eq!(before.len(), 2);
    // The daemon dies, its workloads do not; it comes back before it is declared Down.
    cluster.kill(1);
    cluster.start_node(1);
    cluster.wait_all_ready(0, Duration::from_secs(20));
    wait_converged(&cluster, 0, "web", Duration::from_secs(20));
    let listed = tasks(&cluster, "web");
    assert_eq!(listed.len(), 2, "no task was created anew: {listed:?}");
    let mut after: Vec<String> = cluster
        .live_task_processes()
        .into_iter()
        .map(|(_, task)| task)
        .collect();
    let mut expected = before.clone();
    after.sort();
    expected.sort();
    assert_eq!(after, expected, "the same processes still serve, adopted");
    // Adopted tasks are still managed: scaling down stops one of them.
    cluster.hoist_ok(0, &["service", "scale", "--detach", "web=1"]);
    wait_for("one process left", Duration::from_secs(30), || {
        (cluster.live_task_processes().len() == 1).then_some(())
    });
}

#[test]
fn a_worker_removed_by_force_stops_its_tasks_and_its_mesh() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 2,
            ..Default::default()
        },
    );
    hello(&cluster, "web", 4, &[]);
    wait_converged(&cluster, 0, "web", Duration::from_secs(30));
    let live_on_node_3 = || {
        cluster
            .live_task_processes()
            .into_iter()
            .filter(|(index, _)| *index == 2)
            .count()
    };
    assert!(live_on_node_3() > 0, "node-3 runs no task to begin with");
    let mesh_on_node_3 = std::net::SocketAddr::from((cluster.nodes[2].ip, 8080));
    assert!(std::net::TcpStream::connect(mesh_on_node_3).is_ok());

    cluster.hoist_ok(0, &["node", "rm", "--force", "node-3"]);
    // As Swarm does when a node leaves: the cluster has given its tasks to others, so
    // copies left running would only serve stale versions and hold ports.
    wait_for(
        "the removed node's task processes to stop",
        Duration::from_secs(30),
        || (live_on_node_3() == 0).then_some(()),
    );
    wait_for(
        "the removed node's published port to close",
        Duration::from_secs(10),
        || {
            std::net::TcpStream::connect(mesh_on_node_3)
                .is_err()
                .then_some(())
        },
    );
    wait_converged(&cluster, 0, "web", Duration::from_secs(30));
    let counts = spread(&tasks(&cluster, "web"));
    assert!(!counts.contains_key("node-3"), "{counts:?}");
}

/// A command that cannot start: the progress display shows the task's error, and
/// `service create` gives up with it once the restart policy allows no more attempts,
/// or once `--progress-deadline` passes.
#[test]
fn create_gives_up_with_the_tasks_error() {
    let cluster = Cluster::start(hoist_bin!(), ClusterOptions::default());
    let started = Instant::now();
    let out = cluster.hoist(
        0,
        &[
            "service",
            "create",
            "--name",
            "broken",
            "--driver",
            "process",
            "--restart-condition",
            "none",
            "--",
            "/no/such/program",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("restart policy allows no more"), "{stderr}");
    assert!(stderr.contains("/no/such/program"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );

    let out = cluster.hoist(
        0,
        &[
            "service",
            "create",
            "--name",
            "retried",
            "--driver",
            "process",
            "--restart-delay",
            "100ms",
            "--progress-deadline",
            "3s",
            "--",
            "/no/such/program",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("--progress-deadline"), "{stderr}");
    assert!(stderr.contains("/no/such/program"), "{stderr}");
    assert!(stdout.contains("last attempt: "), "{stdout}");
}

/// `service logs -f` shows the output of a task that starts while it follows (a
/// scale-up), and `service logs TASK_ID` reads one task.
#[test]
fn logs_follow_new_tasks_and_take_a_task_id() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 1,
            ..Default::default()
        },
    );
    cluster.hoist_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "talk",
            "--driver",
            "process",
            "--",
            "sh",
            "-c",
            "echo hello from $HOIST_TASK; exec sleep 600",
        ],
    );
    wait_converged(&cluster, 0, "talk", Duration::from_secs(30));
    let first = tasks(&cluster, "talk");
    let first_id = first[0]["id"].as_str().expect("a task id").to_string();

    // One task, by its id (and by a prefix of it).
    for reference in [first_id.as_str(), &first_id[..8]] {
        let logs = cluster.hoist_ok(0, &["service", "logs", reference]);
        assert!(logs.contains(&format!("hello from {first_id}")), "{logs}");
    }
    let err = cluster.hoist_err(0, &["service", "logs", "nosuchthing"]);
    assert!(err.contains("no such task or service"), "{err}");

    // Following, then a second replica: its line arrives on the same stream.
    let mut follower = std::process::Command::new(hoist_bin!())
        .env(
            "HOIST_HOST",
            format!("unix://{}", cluster.nodes[0].socket.display()),
        )
        .args(["service", "logs", "-f", "talk"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("hoist service logs -f");
    let stdout = follower.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_line = |what: &str, needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200)) {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return;
                }
            }
        }
        panic!("{what}: no line with {needle:?} in {seen:?}");
    };
    wait_line("the first task", &first_id);
    cluster.hoist_ok(0, &["service", "scale", "--detach", "talk=2"]);
    let second_id = wait_for("a second task", Duration::from_secs(30), || {
        tasks(&cluster, "talk")
            .iter()
            .filter_map(|task| task["id"].as_str())
            .find(|id| *id != first_id)
            .map(str::to_string)
    });
    wait_line(
        "the task started after following began",
        &format!("hello from {second_id}"),
    );
    let _ = follower.kill();
    let _ = follower.wait();
}

/// A replicated job of 6 completions, 2 at a time: 6 tasks run to completion, never
/// more than 2 at once (as the tasks themselves recorded), and none is restarted.
#[test]
fn a_replicated_job_completes_six_tasks_two_at_a_time() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 1,
            ..Default::default()
        },
    );
    let marks = tempfile::tempdir().expect("a directory for the tasks' marks");
    let script = format!(
        "date +%s%N > {dir}/$HOIST_TASK.start; sleep 0.4; date +%s%N > {dir}/$HOIST_TASK.end",
        dir = marks.path().display()
    );
    let out = cluster.hoist_ok(
        0,
        &[
            "service",
            "create",
            "--name",
            "batch",
            "--mode",
            "replicated-job",
            "--replicas",
            "6",
            "--max-concurrent",
            "2",
            "--driver",
            "process",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert!(out.contains("Job complete"), "{out}");
    let read = |path: std::path::PathBuf| -> u128 {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
            .trim()
            .parse()
            .expect("nanoseconds")
    };
    let listed = tasks(&cluster, "batch");
    assert_eq!(
        listed.len(),
        6,
        "one task per completion, none restarted: {listed:?}"
    );
    let mut spans = Vec::new();
    for task in &listed {
        assert_eq!(task["status"]["state"], "complete", "{task}");
        let id = task["id"].as_str().expect("id");
        spans.push((
            read(marks.path().join(format!("{id}.start"))),
            read(marks.path().join(format!("{id}.end"))),
        ));
    }
    let most_at_once = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(other_start, other_end)| other_start <= start && start < other_end)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(most_at_once <= 2, "{most_at_once} ran at once: {spans:?}");
    assert!(
        most_at_once == 2,
        "the job never ran two at once: {spans:?}"
    );
    let ls = cluster.hoist_ok(0, &["service", "ls"]);
    assert!(ls.contains("(6/6 completed)"), "{ls}");
    // Nothing starts again.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(tasks(&cluster, "batch").len(), 6);
}

/// `--replicas-max-per-node 1` on two nodes: two tasks run, the third waits and says why.
#[test]
fn replicas_max_per_node_leaves_the_rest_pending_with_the_reason() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 1,
            ..Default::default()
        },
    );
    cluster.hoist_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "spread",
            "--replicas",
            "3",
            "--replicas-max-per-node",
            "1",
            "--driver",
            "process",
            "--",
            "sleep",
            "600",
        ],
    );
    let reason = wait_for(
        "two running and one pending",
        Duration::from_secs(30),
        || {
            let listed = tasks(&cluster, "spread");
            let running = listed
                .iter()
                .filter(|task| task["status"]["state"] == "running")
                .count();
            let pending = listed
                .iter()
                .find(|task| task["status"]["state"] == "pending")?;
            (running == 2).then(|| pending["pending_reason"].as_str().unwrap_or("").to_string())
        },
    );
    assert!(reason.contains("maximum of 1 task per node"), "{reason}");
    let nodes: std::collections::BTreeSet<String> = tasks(&cluster, "spread")
        .iter()
        .filter(|task| task["status"]["state"] == "running")
        .filter_map(|task| task["node_hostname"].as_str().map(str::to_string))
        .collect();
    assert_eq!(nodes.len(), 2, "one per node: {nodes:?}");
}

/// Nodes report their platform: `node.platform.os` places a task, a platform no node
/// has leaves it pending, naming the constraint.
#[test]
fn platform_constraints_place_by_what_the_nodes_report() {
    let cluster = Cluster::start(hoist_bin!(), ClusterOptions::default());
    let nodes = cluster.node_ls(0).expect("node ls");
    assert_eq!(nodes[0]["engine"]["os"], std::env::consts::OS, "{nodes:?}");
    assert_eq!(
        nodes[0]["engine"]["arch"],
        std::env::consts::ARCH,
        "{nodes:?}"
    );
    for (name, constraint) in [
        (
            "here",
            format!("node.platform.os=={}", std::env::consts::OS),
        ),
        ("nowhere", "node.platform.arch==sparc".to_string()),
    ] {
        cluster.hoist_ok(
            0,
            &[
                "service",
                "create",
                "--detach",
                "--name",
                name,
                "--constraint",
                &constraint,
                "--driver",
                "process",
                "--",
                "sleep",
                "600",
            ],
        );
    }
    wait_converged(&cluster, 0, "here", Duration::from_secs(30));
    let reason = wait_for(
        "the other pending with a reason",
        Duration::from_secs(30),
        || {
            let task = tasks(&cluster, "nowhere").into_iter().next()?;
            let reason = task["pending_reason"].as_str()?.to_string();
            (task["status"]["state"] == "pending").then_some(reason)
        },
    );
    assert!(reason.contains("node.platform.arch==sparc"), "{reason}");
}
