//! Membership changes that must not split the cluster: demoting the leader, demoting
//! and promoting again the manager that forced a new cluster, and a join that fails.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use hoist_testkit::hoist_bin;
use hoist_testkit::{wait_for, Cluster, ClusterOptions};
use serde_json::Value;

/// Runs a command that must succeed within `limit` (no command may hang).
fn prompt_ok(cluster: &Cluster, index: usize, args: &[&str], limit: Duration) -> String {
    let started = Instant::now();
    let out = cluster.hoist_ok(index, args);
    let took = started.elapsed();
    assert!(
        took < limit,
        "`hoist {}` took {took:?} (limit {limit:?})",
        args.join(" ")
    );
    out
}

/// What every running manager says about the cluster: (is it the leader, its leader's
/// id, its voter count, the node list's summary). `None` for a node that is not a
/// manager or does not answer.
fn manager_view(cluster: &Cluster, index: usize) -> Option<(bool, String, u64, Vec<String>)> {
    let info = cluster.json(index, &["info"])?;
    if info["role"] != "manager" {
        return None;
    }
    let nodes = cluster.node_ls(index)?;
    let mut summary: Vec<String> = nodes
        .iter()
        .map(|node| format!("{} {} {}", node["id"], node["hostname"], node["role"]))
        .collect();
    summary.sort();
    Some((
        info["is_leader"] == true,
        info["leader"].as_str().unwrap_or_default().to_string(),
        info["managers"].as_u64().unwrap_or(0),
        summary,
    ))
}

/// Waits until exactly the managers `managers` answer, exactly one of them leads, all
/// name the same leader, count `managers.len()` voters and list the same nodes.
fn wait_agreement(cluster: &Cluster, managers: &[usize], what: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Vec::new();
    wait_for(what, Duration::from_secs(31), || {
        last = managers
            .iter()
            .map(|index| manager_view(cluster, *index))
            .collect();
        if Instant::now() > deadline {
            let logs: Vec<String> = managers
                .iter()
                .map(|index| {
                    format!(
                        "--- {} ---\n{}",
                        cluster.nodes[*index].name,
                        cluster
                            .log_tail(*index, 2000)
                            .lines()
                            .filter(|line| !line.contains("control connection closed")
                                && !line.contains("assignment stream refused"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    )
                })
                .collect();
            panic!(
                "{what}: the managers' last views: {last:?}\n{}",
                logs.join("\n")
            );
        }
        let views: Vec<_> = last.iter().cloned().collect::<Option<Vec<_>>>()?;
        let leaders: Vec<usize> = managers
            .iter()
            .zip(&views)
            .filter(|(_, view)| view.0)
            .map(|(index, _)| *index)
            .collect();
        let first = &views[0];
        let agree = views
            .iter()
            .all(|view| view.1 == first.1 && view.2 == managers.len() as u64 && view.3 == first.3);
        (leaders.len() == 1 && agree && !first.1.is_empty()).then_some(leaders[0])
    })
}

/// A write through every manager (a label on the first of them), each seen by all.
fn writes_work(cluster: &Cluster, managers: &[usize], label: &str) {
    let target = cluster.nodes[managers[0]].name.clone();
    for (n, index) in managers.iter().enumerate() {
        let value = format!("{label}{n}");
        prompt_ok(
            cluster,
            *index,
            &[
                "node",
                "update",
                "--label-add",
                &format!("w={value}"),
                &target,
            ],
            Duration::from_secs(20),
        );
        for reader in managers {
            let seen = cluster
                .node_ls(*reader)
                .unwrap_or_default()
                .into_iter()
                .find(|node| node["hostname"] == target.as_str())
                .unwrap_or(Value::Null);
            assert_eq!(
                seen["labels"]["w"], value,
                "manager {reader} after a write through {index}: {seen}"
            );
        }
    }
}

fn role_of(cluster: &Cluster, asked: usize, hostname: &str) -> Option<String> {
    cluster
        .node_ls(asked)?
        .iter()
        .find(|node| node["hostname"] == hostname)
        .and_then(|node| node["role"].as_str().map(str::to_string))
}

#[test]
fn demoting_the_leader_hands_leadership_over_and_returns_promptly() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 3,
            heartbeat_period: "500ms",
            ..Default::default()
        },
    );
    let leader = wait_agreement(&cluster, &[0, 1, 2], "three managers agree");
    let name = cluster.nodes[leader].name.clone();
    prompt_ok(
        &cluster,
        leader,
        &["node", "demote", &name],
        Duration::from_secs(20),
    );
    let rest: Vec<usize> = (0..3).filter(|index| *index != leader).collect();
    wait_for(
        "the demoted leader a worker",
        Duration::from_secs(30),
        || (role_of(&cluster, rest[0], &name)? == "worker").then_some(()),
    );
    let next = wait_agreement(&cluster, &rest, "two managers agree after the demotion");
    assert_ne!(next, leader);
    writes_work(&cluster, &rest, "after-demote-");
    // The demoted node is a worker: no control API, no raft of its own.
    let deadline = Instant::now() + Duration::from_secs(30);
    wait_for(
        "the old leader refuses control commands",
        Duration::from_secs(31),
        || {
            let output = cluster.hoist(leader, &["node", "ls"]);
            let stderr = String::from_utf8_lossy(&output.stderr);
            if Instant::now() > deadline {
                panic!(
                    "the old leader still answers: {stderr}{}\n--- its log ---\n{}",
                    String::from_utf8_lossy(&output.stdout),
                    cluster.log_tail(leader, 60)
                );
            }
            (!output.status.success() && stderr.contains("not a manager")).then_some(())
        },
    );

    // Down to two managers, demote the leader again: one manager remains, and leads.
    let name = cluster.nodes[next].name.clone();
    prompt_ok(
        &cluster,
        next,
        &["node", "demote", &name],
        Duration::from_secs(20),
    );
    let last: Vec<usize> = rest.iter().copied().filter(|i| *i != next).collect();
    wait_agreement(&cluster, &last, "one manager left, leading");
    writes_work(&cluster, &last, "one-left-");
    // And the first one comes back as a manager, joining the existing group.
    let first_name = cluster.nodes[leader].name.clone();
    prompt_ok(
        &cluster,
        last[0],
        &["node", "promote", &first_name],
        Duration::from_secs(20),
    );
    let both = [last[0], leader];
    let current = wait_agreement(&cluster, &both, "the re-promoted manager joined the group");
    writes_work(&cluster, &both, "promoted-");

    // Removing the leader itself (`rm --force` run on it) hands over the same way.
    let name = cluster.nodes[current].name.clone();
    prompt_ok(
        &cluster,
        current,
        &["node", "rm", "--force", &name],
        Duration::from_secs(20),
    );
    let survivor: Vec<usize> = both.iter().copied().filter(|i| *i != current).collect();
    wait_agreement(
        &cluster,
        &survivor,
        "the other manager leads after the removal",
    );
    let listed = cluster.node_ls(survivor[0]).unwrap();
    assert!(
        listed.iter().all(|node| node["hostname"] != name.as_str()),
        "{listed:?}"
    );
    writes_work(&cluster, &survivor, "after-rm-");
}

#[test]
fn the_manager_that_forced_a_new_cluster_is_demoted_and_promoted_without_a_split() {
    let mut cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 2,
            workers: 1,
            heartbeat_period: "500ms",
            ..Default::default()
        },
    );
    // The other manager is lost for good: no quorum, so node-1 forces a new cluster.
    cluster.kill(1);
    let out = prompt_ok(
        &cluster,
        0,
        &["init", "--force-new-cluster"],
        Duration::from_secs(30),
    );
    assert!(out.contains("Dropped managers"), "{out}");
    wait_agreement(&cluster, &[0], "the survivor leads alone");

    // A second manager, then the survivor is demoted (it is the leader) and promoted.
    prompt_ok(
        &cluster,
        0,
        &["node", "promote", "node-3"],
        Duration::from_secs(20),
    );
    wait_agreement(&cluster, &[0, 2], "node-3 joined the group");
    prompt_ok(
        &cluster,
        0,
        &["node", "demote", "node-1"],
        Duration::from_secs(20),
    );
    wait_for("node-1 a worker", Duration::from_secs(30), || {
        (role_of(&cluster, 2, "node-1")? == "worker").then_some(())
    });
    wait_agreement(&cluster, &[2], "node-3 leads alone");
    writes_work(&cluster, &[2], "demoted-");
    prompt_ok(
        &cluster,
        2,
        &["node", "promote", "node-1"],
        Duration::from_secs(20),
    );
    wait_agreement(&cluster, &[0, 2], "node-1 rejoined the existing group");
    writes_work(&cluster, &[0, 2], "promoted-");
    // A restart of the re-promoted node keeps it in the same group.
    cluster.restart(0);
    wait_agreement(&cluster, &[0, 2], "node-1 back after a restart");
    writes_work(&cluster, &[0, 2], "restarted-");
}

#[test]
fn a_join_that_fails_leaves_no_node_behind() {
    let cluster = Cluster::spawn(hoist_bin!(), 2);
    cluster.hoist_ok(0, &["init"]);
    let token = cluster
        .hoist_ok(0, &["join-token", "worker", "-q"])
        .trim()
        .to_string();
    let before = cluster.node_ls(0).unwrap().len();
    // Its own address is no manager to join.
    let own = cluster.nodes[1].addr();
    let err = cluster.hoist_err(1, &["join", "--token", &token, &own]);
    assert!(err.contains("this node's own address"), "{err}");
    // Something else holds the joining node's listen address.
    let taken = std::net::TcpListener::bind(cluster.nodes[1].listen_addr()).unwrap();
    let first = cluster.nodes[0].addr();
    let err = cluster.hoist_err(1, &["join", "--token", &token, &first]);
    assert!(err.contains("Address already in use"), "{err}");
    let nodes = cluster.node_ls(0).unwrap();
    assert_eq!(nodes.len(), before, "a failed join left a node: {nodes:?}");
    let info = cluster.json(1, &["info"]).unwrap();
    assert!(info["cluster_id"].is_null(), "{info}");
    // Once the address is free, the same node joins.
    drop(taken);
    cluster.hoist_ok(1, &["join", "--token", &token, &first]);
    cluster.wait_all_ready(0, Duration::from_secs(30));
    // Taking a join back is only for a node that never came: a running member that
    // asks is refused, and stays listed.
    let identity = std::fs::read_to_string(cluster.nodes[1].data_dir.join("identity.json"))
        .expect("identity.json");
    let response = hoist_testkit::tls_request(
        &first,
        "POST",
        "/v1/join/abandon",
        Some("null"),
        Some(&identity),
    );
    assert!(
        response.starts_with("HTTP/1.1 409") && response.contains("already taken part"),
        "{response}"
    );
    assert_eq!(cluster.node_ls(0).unwrap().len(), before + 1);
}
