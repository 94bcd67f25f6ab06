//! Cluster core acceptance: real daemon processes on loopback addresses, real signals.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hoist_testkit::hoist_bin;
use hoist_testkit::{wait_for, Cluster, ClusterOptions};
use hoist_types::clock::now_ms;
use serde_json::Value;

/// What every manager must agree on about a node.
fn summary(nodes: &[Value]) -> BTreeSet<String> {
    nodes
        .iter()
        .map(|node| {
            format!(
                "{} {} {} {} {} {}",
                node["id"],
                node["hostname"],
                node["status"],
                node["availability"],
                node["role"],
                node["labels"]
            )
        })
        .collect()
}

#[test]
fn three_managers_and_two_workers_agree_on_the_node_list() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 3,
            workers: 2,
            ..Default::default()
        },
    );
    let first = cluster.node_ls(0).expect("node ls on the first manager");
    assert_eq!(first.len(), 5);
    let managers = first
        .iter()
        .filter(|node| node["role"] == "manager")
        .count();
    assert_eq!(managers, 3);
    let leaders = first
        .iter()
        .filter(|node| node["manager_status"] == "Leader")
        .count();
    assert_eq!(leaders, 1, "exactly one leader: {first:?}");
    for index in 1..3 {
        let other = wait_for(
            "the same node list on every manager",
            Duration::from_secs(10),
            || {
                cluster
                    .node_ls(index)
                    .filter(|other| summary(other) == summary(&first))
            },
        );
        assert_eq!(summary(&other), summary(&first));
    }
    // Workers cannot read cluster state, and say so.
    let refused = cluster.hoist_err(3, &["node", "ls"]);
    assert!(refused.contains("not a manager"), "{refused}");
    // --quiet prints ids only.
    let ids = cluster.hoist_ok(0, &["node", "ls", "-q"]);
    assert_eq!(ids.lines().count(), 5);
    assert!(ids.lines().all(|line| line.len() == 16));
}

#[test]
fn a_killed_leader_is_replaced_and_rejoins_with_all_state() {
    let mut cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 3,
            workers: 0,
            ..Default::default()
        },
    );
    let leader = cluster.leader(0).expect("a leader");
    cluster.kill(leader);
    let killed_at = Instant::now();
    let survivor = (leader + 1) % 3;
    let new_leader = wait_for("a new leader", Duration::from_secs(10), || {
        cluster.leader(survivor).filter(|new| *new != leader)
    });
    let elapsed = killed_at.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "failover took {elapsed:?}"
    );
    // Writes keep working.
    let target = cluster.nodes[survivor].name.clone();
    cluster.hoist_ok(
        new_leader,
        &["node", "update", "--label-add", "after=failover", &target],
    );
    cluster.hoist_ok(
        survivor,
        &["node", "update", "--label-add", "via=follower", &target],
    );
    // The old leader comes back as a follower with everything.
    cluster.start_node(leader);
    wait_for(
        "the old leader to catch up",
        Duration::from_secs(20),
        || {
            let nodes = cluster.node_ls(leader)?;
            let node = nodes
                .iter()
                .find(|node| node["hostname"] == target.as_str())?;
            (node["labels"]["after"] == "failover" && node["labels"]["via"] == "follower")
                .then_some(())
        },
    );
    let info = cluster.json(leader, &["info"]).expect("info");
    assert_eq!(info["is_leader"], false, "{info}");
    let old = cluster
        .node_ls(leader)
        .unwrap()
        .into_iter()
        .find(|node| node["hostname"] == cluster.nodes[leader].name.as_str())
        .unwrap();
    wait_for(
        "the old leader Ready and Reachable",
        Duration::from_secs(15),
        || {
            let nodes = cluster.node_ls(new_leader)?;
            let node = nodes.iter().find(|node| node["id"] == old["id"])?;
            (node["status"] == "ready" && node["manager_status"] == "Reachable").then_some(())
        },
    );
}

#[test]
fn killing_every_manager_loses_nothing() {
    let mut cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 3,
            workers: 1,
            ..Default::default()
        },
    );
    cluster.hoist_ok(0, &["node", "update", "--label-add", "disk=ssd", "node-4"]);
    cluster.hoist_ok(0, &["node", "update", "--availability", "drain", "node-2"]);
    cluster.hoist_ok(0, &["join-token", "worker", "--rotate"]);
    let before_nodes = summary(&cluster.node_ls(0).unwrap());
    let worker_token = cluster.hoist_ok(0, &["join-token", "worker", "-q"]);
    let manager_token = cluster.hoist_ok(0, &["join-token", "manager", "-q"]);
    for index in 0..3 {
        cluster.kill(index);
    }
    for index in 0..3 {
        cluster.start_node(index);
    }
    let after_nodes = wait_for(
        "the state back after a full restart",
        Duration::from_secs(30),
        || {
            let nodes = cluster.node_ls(1)?;
            let all_ready = nodes.iter().all(|node| node["status"] == "ready");
            (all_ready && nodes.len() == 4).then(|| summary(&nodes))
        },
    );
    assert_eq!(after_nodes, before_nodes);
    // node-2 answering says nothing of when node-3 and node-1 have their Raft running
    // again; until then they answer "starting, retry in a moment".
    let token_from = |index: usize, role: &str| {
        wait_for(
            &format!("node-{} to serve the {role} token", index + 1),
            Duration::from_secs(30),
            || {
                let output = cluster.hoist(index, &["join-token", role, "-q"]);
                output
                    .status
                    .success()
                    .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
            },
        )
    };
    assert_eq!(token_from(2, "worker"), worker_token);
    assert_eq!(token_from(0, "manager"), manager_token);
}

#[test]
fn a_killed_worker_is_down_within_period_times_grace_and_ready_after_restart() {
    let mut cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 1,
            heartbeat_period: "1s",
            heartbeat_grace: 3,
            ..Default::default()
        },
    );
    let limit_ms = 1_000 * 3 + 1_000;
    cluster.kill(1);
    let killed_at_ms = now_ms();
    let down = wait_for("the worker Down", Duration::from_secs(15), || {
        let nodes = cluster.node_ls(0)?;
        nodes
            .into_iter()
            .find(|node| node["hostname"] == "node-2" && node["status"] == "down")
    });
    // The leader stamps the change with its clock when it decides; that is the moment
    // the node became Down, free of this test's polling delay.
    let down_at_ms = down["updated_at_ms"].as_u64().expect("updated_at_ms");
    let took = down_at_ms.saturating_sub(killed_at_ms);
    assert!(
        took <= limit_ms,
        "Down after {took} ms, limit {limit_ms} ms"
    );
    assert_eq!(down["status_message"], "heartbeat failure");
    cluster.start_node(1);
    cluster.wait_all_ready(0, Duration::from_secs(15));
}

#[test]
fn bad_tokens_forged_cas_and_wrong_certificates_are_refused_and_change_nothing() {
    let cluster = Cluster::start(hoist_bin!(), ClusterOptions::default());
    let outsiders = Cluster::spawn(hoist_bin!(), 2);
    let manager_addr = cluster.nodes[0].addr();
    let before = summary(&cluster.node_ls(0).unwrap());

    let worker_token = cluster
        .hoist_ok(0, &["join-token", "worker", "-q"])
        .trim()
        .to_string();
    let digest = worker_token.split('-').nth(2).unwrap().to_string();

    // Malformed.
    let err = outsiders.hoist_err(0, &["join", "--token", "SWMTKN-1-nope", &manager_addr]);
    assert!(err.contains("HOIST-1-"), "{err}");
    // A secret this cluster never issued.
    let wrong = format!("HOIST-1-{digest}-{}", "z".repeat(32));
    let err = outsiders.hoist_err(0, &["join", "--token", &wrong, &manager_addr]);
    assert!(err.contains("invalid join token"), "{err}");
    // A rotated one.
    cluster.hoist_ok(0, &["join-token", "worker", "--rotate"]);
    let err = outsiders.hoist_err(0, &["join", "--token", &worker_token, &manager_addr]);
    assert!(err.contains("rotated"), "{err}");
    // The wrong role.
    let current = cluster
        .hoist_ok(0, &["join-token", "worker", "-q"])
        .trim()
        .to_string();
    let err = outsiders.hoist_err(
        0,
        &[
            "join",
            "--role",
            "manager",
            "--token",
            &current,
            &manager_addr,
        ],
    );
    assert!(err.contains("worker join token"), "{err}");
    // A CA that is not the one the token names.
    let forged = format!(
        "HOIST-1-{}-{}",
        "ab".repeat(32),
        current.split('-').nth(3).unwrap()
    );
    let err = outsiders.hoist_err(0, &["join", "--token", &forged, &manager_addr]);
    assert!(
        err.contains("presented a CA whose digest does not match the token: refusing to join"),
        "{err}"
    );
    // A client without a certificate on the TLS port.
    let body = raw_tls_get(&manager_addr, "/v1/nodes", None);
    assert!(body.starts_with("HTTP/1.1 401"), "{body}");
    assert!(body.contains("requires a client certificate"), "{body}");
    // A worker's certificate on a manager endpoint.
    outsiders.hoist_ok(1, &["join", "--token", &current, &manager_addr]);
    let worker_identity =
        std::fs::read_to_string(outsiders.nodes[1].data_dir.join("identity.json")).unwrap();
    let body = raw_tls_get(&manager_addr, "/v1/nodes", Some(&worker_identity));
    assert!(body.starts_with("HTTP/1.1 403"), "{body}");
    assert!(body.contains("presented a worker certificate"), "{body}");
    // A certificate from another cluster's CA fails the handshake.
    let other = Cluster::start(hoist_bin!(), ClusterOptions::default());
    let foreign_identity =
        std::fs::read_to_string(other.nodes[0].data_dir.join("identity.json")).unwrap();
    let body = raw_tls_get(&manager_addr, "/v1/nodes", Some(&foreign_identity));
    assert!(body.starts_with("handshake failed"), "{body}");

    // Only the legitimate join changed the node list.
    let after = cluster.node_ls(0).unwrap();
    assert_eq!(after.len(), before.len() + 1);
    assert!(summary(&after).is_superset(&before));
    // The outsider that was refused is still in no cluster.
    let info = outsiders.json(0, &["info"]).unwrap();
    assert!(info["cluster_id"].is_null(), "{info}");
}

fn raw_tls_get(addr: &str, path: &str, identity: Option<&str>) -> String {
    hoist_testkit::tls_get(addr, path, identity)
}

#[test]
fn demoting_or_removing_a_manager_that_would_lose_quorum_is_refused() {
    let mut cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 3,
            workers: 1,
            heartbeat_period: "500ms",
            heartbeat_grace: 3,
            ..Default::default()
        },
    );
    // A Ready worker is not removed without --force.
    let err = cluster.hoist_err(0, &["node", "rm", "node-4"]);
    assert!(err.contains("not down"), "{err}");
    let leader = cluster.leader(0).unwrap();
    let victim = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    cluster.kill(victim);
    let victim_name = cluster.nodes[victim].name.clone();
    wait_for("the killed manager Down", Duration::from_secs(10), || {
        let nodes = cluster.node_ls(leader)?;
        nodes
            .iter()
            .any(|node| node["hostname"] == victim_name.as_str() && node["status"] == "down")
            .then_some(())
    });
    let before = summary(&cluster.node_ls(leader).unwrap());
    let other_name = cluster.nodes[other].name.clone();
    let err = cluster.hoist_err(leader, &["node", "demote", &other_name]);
    assert!(err.contains("lose quorum"), "{err}");
    let err = cluster.hoist_err(leader, &["node", "rm", "--force", &other_name]);
    assert!(err.contains("lose quorum"), "{err}");
    let err = cluster.hoist_err(other, &["node", "rm", &other_name]);
    assert!(err.contains("demote"), "{err}");
    assert_eq!(
        summary(&cluster.node_ls(leader).unwrap()),
        before,
        "a refused command changes nothing"
    );
    // Demoting the unreachable one keeps a reachable majority, so it is allowed.
    cluster.hoist_ok(leader, &["node", "demote", &victim_name]);
    let info = cluster.json(leader, &["info"]).unwrap();
    assert_eq!(info["managers"], 2, "{info}");
}

#[test]
fn a_worker_is_promoted_and_demoted() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 2,
            ..Default::default()
        },
    );
    cluster.hoist_ok(0, &["node", "promote", "node-2"]);
    wait_for("node-2 Reachable", Duration::from_secs(20), || {
        let nodes = cluster.node_ls(0)?;
        nodes
            .iter()
            .any(|node| node["hostname"] == "node-2" && node["manager_status"] == "Reachable")
            .then_some(())
    });
    // The promoted node now answers control commands with the same state.
    let seen = wait_for(
        "node ls on the promoted node",
        Duration::from_secs(10),
        || cluster.node_ls(1),
    );
    assert_eq!(seen.len(), 3);
    cluster.hoist_ok(0, &["node", "demote", "node-2"]);
    wait_for("node-2 a worker again", Duration::from_secs(20), || {
        let output = cluster.hoist(1, &["node", "ls"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        (!output.status.success() && stderr.contains("not a manager")).then_some(())
    });
    let info = cluster.json(0, &["info"]).unwrap();
    assert_eq!(info["managers"], 1, "{info}");
}

#[test]
fn certificates_renew_themselves_before_they_expire() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 2,
            workers: 1,
            extra_init_args: vec!["--cert-expiry".into(), "20s".into()],
            ..Default::default()
        },
    );
    let not_after = |index: usize| -> Option<i64> {
        cluster.json(index, &["info"])?["cert_not_after"].as_i64()
    };
    let first: Vec<i64> = (0..3)
        .map(|index| not_after(index).expect("info"))
        .collect();
    // Renewal happens at half life; wait past the original expiry of every certificate.
    let latest_expiry = *first.iter().max().unwrap();
    wait_for("every certificate renewed", Duration::from_secs(40), || {
        (0..3)
            .all(|index| {
                not_after(index)
                    .map(|now| now > first[index])
                    .unwrap_or(false)
            })
            .then_some(())
    });
    wait_for(
        "the original certificates expired",
        Duration::from_secs(40),
        || {
            let now = (now_ms() / 1000) as i64;
            (now > latest_expiry + 1).then_some(())
        },
    );
    // Everyone still talks to everyone: heartbeats, forwarded writes, reads.
    cluster.hoist_ok(
        1,
        &["node", "update", "--label-add", "renewed=yes", "node-3"],
    );
    cluster.wait_all_ready(1, Duration::from_secs(10));
}

#[test]
fn a_lagging_manager_catches_up_from_a_snapshot_after_log_compaction() {
    let mut cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 3,
            workers: 0,
            extra_daemon_args: vec!["--raft-snapshot-interval".into(), "20".into()],
            ..Default::default()
        },
    );
    let leader = cluster.leader(0).expect("leader");
    let lagging = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    cluster.kill(lagging);
    // Enough changes for several snapshots, and a log compacted past what the lagging
    // manager has.
    let target = cluster.nodes[other].name.clone();
    for value in 0..80 {
        cluster.hoist_ok(
            leader,
            &[
                "node",
                "update",
                "--label-add",
                &format!("counter={value}"),
                &target,
            ],
        );
    }
    let archived = std::fs::read_dir(
        cluster.nodes[leader]
            .data_dir
            .join("raft")
            .join("snapshots"),
    )
    .expect("automatic snapshots archived")
    .count();
    assert!(
        (1..=3).contains(&archived),
        "the last 3 snapshots are kept, found {archived}"
    );
    cluster.start_node(lagging);
    wait_for(
        "the lagging manager caught up",
        Duration::from_secs(30),
        || {
            let nodes = cluster.node_ls(lagging)?;
            let node = nodes
                .iter()
                .find(|node| node["hostname"] == target.as_str())?;
            (node["labels"]["counter"] == "79").then_some(())
        },
    );
    // A full restart rebuilds every manager from its snapshot and log.
    for index in 0..3 {
        cluster.kill(index);
    }
    for index in 0..3 {
        cluster.start_node(index);
    }
    for index in 0..3 {
        wait_for(
            "the state back on every manager",
            Duration::from_secs(30),
            || {
                let nodes = cluster.node_ls(index)?;
                let node = nodes
                    .iter()
                    .find(|node| node["hostname"] == target.as_str())?;
                (node["labels"]["counter"] == "79").then_some(())
            },
        );
    }
}
