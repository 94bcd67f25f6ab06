//! Real resources through real daemons: every node reports the CPUs and memory its
//! kernel has, a reservation no node can hold leaves the task pending with the reason,
//! and a process-driver task over its memory limit is killed by the kernel (its
//! cgroup) and shown as out of memory.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hoist_testkit::hoist_bin;
use hoist_testkit::{wait_for, Cluster, ClusterOptions};
use serde_json::Value;

fn tasks(cluster: &Cluster, service: &str) -> Vec<Value> {
    cluster
        .json(0, &["service", "ps", service])
        .and_then(|tasks| tasks.as_array().cloned())
        .unwrap_or_default()
}

/// Cgroups need root: without it this test cannot run, and says so (a failure under
/// `HOIST_REQUIRE_ROOT`, which `.ci/run` sets as root).
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("HOIST_REQUIRE_ROOT").is_none(),
        "HOIST_REQUIRE_ROOT is set but this test does not run as root"
    );
    eprintln!("skipping: memory limits need root (set HOIST_REQUIRE_ROOT to make this a failure)");
    false
}

#[test]
fn nodes_report_memory_reservations_hold_and_a_task_over_its_limit_is_killed() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 1,
            ..Default::default()
        },
    );
    let nodes = wait_for("every node's resources", Duration::from_secs(20), || {
        let nodes = cluster.node_ls(0)?;
        nodes
            .iter()
            .all(|node| {
                node["resources"]["memory_bytes"].as_u64().unwrap_or(0) > 0
                    && node["resources"]["nano_cpus"].as_u64().unwrap_or(0) >= 1_000_000_000
            })
            .then_some(nodes)
    });
    let most_memory = nodes
        .iter()
        .filter_map(|node| node["resources"]["memory_bytes"].as_u64())
        .max()
        .unwrap_or(0);
    let pretty = cluster.hoist_ok(0, &["node", "inspect", "--pretty", "self"]);
    assert!(pretty.contains("Memory:"), "{pretty}");
    assert!(!pretty.contains("unknown"), "{pretty}");

    // More memory than any node has: placed nowhere, and the reason says why.
    let reserve = format!("{}", most_memory.saturating_mul(2));
    cluster.hoist_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "big",
            "--reserve-memory",
            &reserve,
            "--",
            "sleep",
            "60",
        ],
    );
    let reason = wait_for(
        "the big task pending with a reason",
        Duration::from_secs(20),
        || {
            let task = tasks(&cluster, "big").into_iter().next()?;
            let reason = task["pending_reason"].as_str()?.to_owned();
            (task["status"]["state"] == "pending" && reason.contains("memory")).then_some(reason)
        },
    );
    assert!(reason.contains("2 nodes lack"), "{reason}");

    if !is_root() {
        return;
    }
    // Ten times its limit: the kernel kills it, and the task says so.
    cluster.hoist_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "hog",
            "--limit-memory",
            "20M",
            "--restart-condition",
            "none",
            "--",
            "sh",
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived; sleep 60",
        ],
    );
    let failed = wait_for("the hog killed", Duration::from_secs(30), || {
        tasks(&cluster, "hog")
            .into_iter()
            .find(|task| task["status"]["state"] == "failed")
    });
    let err = failed["status"]["err"].as_str().unwrap_or("");
    assert!(err.contains("out of memory"), "{failed}");
    let ps = cluster.hoist_ok(0, &["service", "ps", "--no-trunc", "hog"]);
    assert!(ps.contains("out of memory"), "{ps}");
}
