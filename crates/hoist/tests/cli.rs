//! The command line tells the truth: a closed pipe ends a command quietly with status 0,
//! pretty output shows times and durations as people read them, `node inspect self`
//! works, `info` says what it knows on a worker, on a removed node and on a manager
//! without quorum (and how to recover), `--advertise-addr` goes with
//! `--force-new-cluster`, and a process task given a target port its command never
//! reads is warned about.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use hoist_testkit::hoist_bin;
use hoist_testkit::{wait_for, Cluster, ClusterOptions};
use serde_json::Value;

/// Runs `hoist ARGS` against node `index` with stdout a pipe whose reader is already
/// gone (what `| head -0` leaves), and returns (exit code, stderr).
fn into_closed_pipe(cluster: &Cluster, index: usize, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let output = Command::new(hoist_bin!())
        .args(args)
        .env(
            "HOIST_HOST",
            format!("unix://{}", cluster.nodes[index].socket.display()),
        )
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("running the hoist CLI");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn stdout_of(cluster: &Cluster, index: usize, args: &[&str]) -> String {
    String::from_utf8_lossy(&cluster.hoist(index, args).stdout).into_owned()
}

/// Commands that print, each run into a closed pipe.
const PRINTING_COMMANDS: &[&[&str]] = &[
    &["service", "ls"],
    &["service", "ps", "idle"],
    &["service", "inspect", "idle"],
    &["node", "ls"],
    &["node", "inspect", "node-1", "--pretty"],
    &["info"],
    &["cluster", "inspect", "--pretty"],
    &["join-token", "worker"],
    &["--help"],
    &["service", "create", "--help"],
];

#[test]
fn the_cli_tells_the_truth() {
    let mut cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 2,
            workers: 1,
            ..ClusterOptions::default()
        },
    );
    a_closed_pipe_ends_quietly(&cluster);
    self_and_times_read_as_people_read_them(&cluster);
    a_worker_says_what_it_knows(&cluster);
    an_unread_target_port_is_warned_about(&cluster);
    a_removed_node_says_so(&cluster);
    without_quorum_info_shows_the_way_out(&mut cluster);
    force_new_cluster_takes_only_its_own_address(&cluster);
}

/// A closed pipe: every command that prints ends quietly with status 0.
fn a_closed_pipe_ends_quietly(cluster: &Cluster) {
    cluster.hoist_ok(
        0,
        &[
            "service", "create", "--name", "idle", "--detach", "sleep", "3600",
        ],
    );
    for &args in PRINTING_COMMANDS {
        let (code, stderr) = into_closed_pipe(cluster, 0, args);
        assert_eq!(
            (code, stderr.as_str()),
            (Some(0), ""),
            "`hoist {}` into a closed pipe",
            args.join(" ")
        );
    }
}

/// `self`, and times and durations as people read them.
fn self_and_times_read_as_people_read_them(cluster: &Cluster) {
    let info: Value = cluster.json(0, &["info"]).expect("info as JSON");
    let me: Value =
        serde_json::from_str(&cluster.hoist_ok(0, &["node", "inspect", "self"])).expect("JSON");
    assert_eq!(me[0]["id"], info["node_id"], "{me}");
    assert_eq!(me[0]["is_self"], true, "{me}");
    let pretty = cluster.hoist_ok(0, &["node", "inspect", "self", "--pretty"]);
    assert!(pretty.contains("node-1"), "{pretty}");
    assert!(
        pretty.contains(" UTC (") && pretty.contains(" ago)") && !pretty.contains("epoch"),
        "{pretty}"
    );
    let settings = cluster.hoist_ok(0, &["cluster", "inspect", "--pretty"]);
    assert!(
        settings.contains("every 1s, down after 3 missed") && settings.contains("expiry:  90d"),
        "{settings}"
    );
    let manager_info = cluster.hoist_ok(0, &["info"]);
    assert!(
        manager_info.contains("Heartbeat period: 1s")
            && manager_info.contains("Expiry duration: 90d"),
        "{manager_info}"
    );
}

/// A worker says what it knows, and nothing it does not.
fn a_worker_says_what_it_knows(cluster: &Cluster) {
    let worker_info = wait_for(
        "the worker's info to show its heartbeat period",
        Duration::from_secs(30),
        || {
            let text = stdout_of(cluster, 2, &["info"]);
            text.contains("Heartbeat period: 1s").then_some(text)
        },
    );
    assert!(
        worker_info.contains("Cluster: active")
            && worker_info.contains("Role: worker")
            && worker_info.contains("Valid until: ")
            && worker_info.contains("Manager it beats to: ")
            && !worker_info.contains(" 0 ms")
            && !worker_info.contains(" 0 s")
            && !worker_info.contains("Expiry duration"),
        "{worker_info}"
    );
}

/// A process task given a target port its command never reads is warned about; one
/// whose command mentions `$PORT` is not.
fn an_unread_target_port_is_warned_about(cluster: &Cluster) {
    let warned = cluster.hoist(
        0,
        &[
            "service", "create", "--name", "web", "--detach", "-p", "28080:80", "--", "sleep",
            "3600",
        ],
    );
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(warned.status.success(), "{stderr}");
    assert!(
        stderr.contains("$PORT") && stderr.contains("target port 80"),
        "{stderr}"
    );
    let quiet = cluster.hoist(
        0,
        &[
            "service",
            "create",
            "--name",
            "web2",
            "--detach",
            "-p",
            "28081:80",
            "--",
            "sh",
            "-c",
            "exec sleep 3600 # $PORT",
        ],
    );
    assert!(quiet.status.success());
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "");
}

/// A node the cluster removed says so instead of "active".
fn a_removed_node_says_so(cluster: &Cluster) {
    cluster.hoist_ok(0, &["node", "rm", "--force", "node-3"]);
    let removed = wait_for(
        "the removed worker to know it",
        Duration::from_secs(30),
        || {
            let text = stdout_of(cluster, 2, &["info"]);
            text.contains("Cluster: removed").then_some(text)
        },
    );
    assert!(removed.contains("hoist leave --force"), "{removed}");
}

/// Without quorum: what this manager knows, and the way out.
fn without_quorum_info_shows_the_way_out(cluster: &mut Cluster) {
    cluster.kill(1);
    let lost = wait_for(
        "info to report the lost quorum",
        Duration::from_secs(60),
        || {
            let text = stdout_of(cluster, 0, &["info"]);
            text.contains("no quorum").then_some(text)
        },
    );
    assert!(
        lost.contains("hoist init --force-new-cluster")
            && lost.contains("Managers: 2")
            && lost.contains("Heartbeat period: 1s"),
        "{lost}"
    );
    let refused = cluster.hoist_err(0, &["service", "scale", "--detach", "idle=2"]);
    assert!(
        refused.contains("no quorum") && refused.contains("--force-new-cluster"),
        "{refused}"
    );
}

/// `--advertise-addr` with `--force-new-cluster`: another address or an unknown
/// interface is refused by name and changes nothing; the node's own is accepted.
fn force_new_cluster_takes_only_its_own_address(cluster: &Cluster) {
    let elsewhere = cluster.hoist_err(
        0,
        &[
            "init",
            "--force-new-cluster",
            "--advertise-addr",
            "127.0.0.1:1",
        ],
    );
    assert!(
        elsewhere.contains("is not this manager's address"),
        "{elsewhere}"
    );
    let unknown = cluster.hoist_err(
        0,
        &[
            "init",
            "--force-new-cluster",
            "--advertise-addr",
            "nosuchif0:2377",
        ],
    );
    assert!(unknown.contains("nosuchif0"), "{unknown}");
    assert!(stdout_of(cluster, 0, &["info"]).contains("no quorum"));
    let own = cluster.nodes[0].addr();
    cluster.hoist_ok(
        0,
        &["init", "--force-new-cluster", "--advertise-addr", &own],
    );
    cluster.hoist_ok(0, &["service", "scale", "--detach", "idle=2"]);
    let recovered = cluster.hoist_ok(0, &["info"]);
    assert!(
        recovered.contains("Cluster: active") && recovered.contains("Managers: 1"),
        "{recovered}"
    );
}
