//! Disaster recovery: force-new-cluster on a surviving manager, backup and restore.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use hoist_testkit::hoist_bin;
use hoist_testkit::{wait_for, Cluster, ClusterOptions};
use serde_json::Value;

fn sleeper(cluster: &Cluster, index: usize, name: &str) {
    cluster.hoist_ok(
        index,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            name,
            "--driver",
            "process",
            "sh",
            "-c",
            "sleep 600",
        ],
    );
}

fn services(cluster: &Cluster, index: usize) -> Vec<Value> {
    cluster
        .json(index, &["service", "ls"])
        .and_then(|value| value.as_array().cloned())
        .unwrap_or_default()
}

fn all_converged(listed: &[Value]) -> bool {
    listed
        .iter()
        .all(|service| service["running"] == service["desired"] && service["desired"] != 0)
}

fn service_summary(listed: &[Value]) -> BTreeSet<String> {
    listed
        .iter()
        .map(|service| {
            format!(
                "{} {} {}",
                service["id"], service["spec"]["name"], service["spec"]["mode"]
            )
        })
        .collect()
}

#[test]
fn force_new_cluster_on_a_survivor_keeps_every_service_and_refuses_the_old_managers() {
    let mut cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 3,
            workers: 1,
            ..Default::default()
        },
    );
    for index in 0..20 {
        sleeper(&cluster, 0, &format!("svc-{index:02}"));
    }
    wait_for("20 services running", Duration::from_secs(90), || {
        let listed = services(&cluster, 0);
        (listed.len() == 20 && all_converged(&listed)).then_some(())
    });
    // With the quorum there, forcing is refused.
    let err = cluster.hoist_err(0, &["init", "--force-new-cluster"]);
    assert!(err.contains("a quorum of managers is reachable"), "{err}");
    let before = service_summary(&services(&cluster, 0));
    let tasks_before: usize = services(&cluster, 0)
        .iter()
        .map(|service| service["desired"].as_u64().unwrap() as usize)
        .sum();

    // Two of three managers are lost (their workloads with them).
    for index in [1, 2] {
        cluster.kill(index);
        cluster.kill_tasks_of(index);
    }
    let err = cluster.hoist_err(0, &["node", "update", "--label-add", "x=y", "node-4"]);
    assert!(err.contains("no quorum"), "{err}");

    let out = cluster.hoist_ok(0, &["init", "--force-new-cluster"]);
    assert!(out.contains("20 services"), "{out}");
    assert!(out.contains("Dropped managers"), "{out}");
    let after = wait_for(
        "all 20 services converged on the new cluster",
        Duration::from_secs(60),
        || {
            let listed = services(&cluster, 0);
            (listed.len() == 20 && all_converged(&listed)).then_some(listed)
        },
    );
    assert_eq!(service_summary(&after), before);
    let tasks_after: usize = after
        .iter()
        .map(|service| service["running"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(tasks_after, tasks_before);
    // New changes are accepted.
    sleeper(&cluster, 0, "svc-new");
    cluster.hoist_ok(
        0,
        &["node", "update", "--label-add", "after=force", "node-4"],
    );
    let info = cluster.json(0, &["info"]).unwrap();
    assert_eq!(info["managers"], 1, "{info}");

    // The old managers come back with their old data: refused, and told how to rejoin.
    for index in [1, 2] {
        cluster.start_node(index);
    }
    for index in [1, 2] {
        let err = wait_for("the old manager refused", Duration::from_secs(20), || {
            let output = cluster.hoist(index, &["node", "ls"]);
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            (!output.status.success() && stderr.contains("refused")).then_some(stderr)
        });
        assert!(err.contains("join again with a token"), "{err}");
    }
    // No fork: the survivor is still the only manager and still takes writes.
    cluster.hoist_ok(0, &["node", "update", "--label-add", "still=one", "node-4"]);
    let info = cluster.json(0, &["info"]).unwrap();
    assert_eq!(info["managers"], 1, "{info}");
    assert_eq!(info["is_leader"], true, "{info}");
}

#[test]
fn force_new_cluster_without_local_state_is_refused() {
    let cluster = Cluster::spawn(hoist_bin!(), 1);
    let err = cluster.hoist_err(0, &["init", "--force-new-cluster"]);
    assert!(err.contains("no state to recover"), "{err}");
}

#[test]
fn a_backup_restored_on_a_fresh_daemon_gives_the_same_services_and_nodes() {
    let mut cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 2,
            ..Default::default()
        },
    );
    for name in ["alpha", "beta", "gamma"] {
        sleeper(&cluster, 0, name);
    }
    cluster.hoist_ok(0, &["node", "update", "--label-add", "zone=a", "node-2"]);
    wait_for("services running", Duration::from_secs(60), || {
        let listed = services(&cluster, 0);
        (listed.len() == 3 && all_converged(&listed)).then_some(())
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().display().to_string();
    let out = cluster.hoist_ok(0, &["backup", "--output", &path]);
    assert!(out.contains("3 services"), "{out}");
    let node_summary = |nodes: Vec<Value>| -> BTreeSet<String> {
        nodes
            .iter()
            .map(|node| {
                format!(
                    "{} {} {} {} {}",
                    node["id"],
                    node["hostname"],
                    node["role"],
                    node["availability"],
                    node["labels"]
                )
            })
            .collect()
    };
    let nodes_before = node_summary(cluster.node_ls(0).unwrap());
    let services_before = service_summary(&services(&cluster, 0));

    // The manager's disk is lost: a fresh daemon at the same address restores it.
    cluster.kill(0);
    std::fs::remove_dir_all(&cluster.nodes[0].data_dir).unwrap();
    cluster.start_node(0);
    let out = cluster.hoist_ok(0, &["restore", &path]);
    assert!(out.contains("restored"), "{out}");
    assert_eq!(node_summary(cluster.node_ls(0).unwrap()), nodes_before);
    assert_eq!(service_summary(&services(&cluster, 0)), services_before);
    cluster.wait_all_ready(0, Duration::from_secs(30));
    wait_for(
        "services converged after restore",
        Duration::from_secs(60),
        || {
            let listed = services(&cluster, 0);
            all_converged(&listed).then_some(())
        },
    );
    // A garbage file is refused with its name.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "not a backup").unwrap();
    let other = Cluster::spawn(hoist_bin!(), 1);
    let err = other.hoist_err(0, &["restore", &bad.path().display().to_string()]);
    assert!(err.contains("is not a hoist backup"), "{err}");
}
