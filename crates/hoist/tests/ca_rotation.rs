//! `hoist cluster ca --rotate`: every node moves to a new CA through a cross-signed
//! transition and keeps working; afterwards a certificate of the old CA is refused.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hoist_testkit::hoist_bin;
use hoist_testkit::{tls_request, wait_for, Cluster, ClusterOptions};

fn identity(cluster: &Cluster, index: usize) -> serde_json::Value {
    let text = std::fs::read_to_string(cluster.nodes[index].data_dir.join("identity.json"))
        .expect("identity.json");
    serde_json::from_str(&text).expect("identity.json is JSON")
}

/// What the rotation leaves the later steps to check against: the worker token and the
/// identities from before it, and the new CA's certificate.
struct Rotated {
    old_token: String,
    old_identities: Vec<String>,
    new_ca: String,
}

#[test]
fn after_a_ca_rotation_every_node_keeps_working_and_the_old_ca_is_refused() {
    let mut cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 2,
            workers: 1,
            heartbeat_period: "500ms",
            ..Default::default()
        },
    );
    let outsiders = Cluster::spawn(hoist_bin!(), 2);
    create_talker(&cluster);
    let rotated = rotate(&cluster);
    every_node_holds_the_new_ca_only(&cluster, &rotated.new_ca);
    old_certificates_are_refused(&cluster, &rotated.old_identities);
    everything_still_works(&mut cluster);
    join_tokens_carry_the_new_digest(&cluster, &outsiders, &rotated.old_token);
}

/// A task on the worker whose output is read after the rotation.
fn create_talker(cluster: &Cluster) {
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
            "echo said-before-the-rotation; exec sleep 600",
        ],
    );
}

/// Rotates the CA and waits until the rotation has finished.
fn rotate(cluster: &Cluster) -> Rotated {
    let before = cluster.json(0, &["cluster", "ca"]).expect("cluster ca");
    assert_eq!(before["rotating"], false, "{before}");
    let old_token = cluster
        .hoist_ok(0, &["join-token", "worker", "-q"])
        .trim()
        .to_string();
    let old_identities: Vec<String> = (0..3)
        .map(|index| identity(cluster, index).to_string())
        .collect();
    // A second rotation is refused while one is under way; --detach goes with --rotate.
    let err = cluster.hoist_err(0, &["cluster", "ca", "--detach"]);
    assert!(err.contains("--detach goes with --rotate"), "{err}");

    let started = cluster
        .json(0, &["cluster", "ca", "--rotate", "--detach"])
        .expect("cluster ca --rotate");
    assert_ne!(started["digest"], before["digest"], "{started}");
    let err = cluster.hoist_err(1, &["cluster", "ca", "--rotate", "--detach"]);
    assert!(
        err.contains("already under way") || err.contains("already had"),
        "{err}"
    );
    let done = wait_for("the rotation to finish", Duration::from_secs(60), || {
        let view = cluster.json(1, &["cluster", "ca"])?;
        (view["rotating"] == false).then_some(view)
    });
    assert_eq!(done["digest"], started["digest"], "{done}");
    assert_eq!(done["retired"], 1, "{done}");
    let new_ca = done["cert_pem"].as_str().unwrap().to_string();
    Rotated {
        old_token,
        old_identities,
        new_ca,
    }
}

/// Every node trusts the new CA only, and holds a certificate of it.
fn every_node_holds_the_new_ca_only(cluster: &Cluster, new_ca: &str) {
    wait_for(
        "every node trusting only the new CA",
        Duration::from_secs(20),
        || {
            (0..3)
                .all(|index| identity(cluster, index)["ca_pem"] == new_ca)
                .then_some(())
        },
    );
    for index in 0..3 {
        let chain = identity(cluster, index)["chain_pem"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(chain.ends_with(new_ca), "node {index}: {chain}");
    }
}

/// A certificate of the old CA is refused on every node's listener, a manager's and
/// a worker's alike, whoever it belonged to.
fn old_certificates_are_refused(cluster: &Cluster, old_identities: &[String]) {
    for old in old_identities {
        for node in &cluster.nodes {
            let response = tls_request(&node.addr(), "GET", "/v1/nodes", None, Some(old));
            assert!(
                response.starts_with("handshake failed"),
                "{}: {response}",
                node.name
            );
        }
    }
}

/// Reads and writes through the follower (Raft and forwarding between the managers),
/// heartbeats, the worker's task output; then a restarted node comes back on the new CA
/// from its data directory.
fn everything_still_works(cluster: &mut Cluster) {
    cluster.wait_all_ready(1, Duration::from_secs(20));
    cluster.hoist_ok(
        1,
        &["node", "update", "--label-add", "rotated=yes", "node-3"],
    );
    let nodes = cluster.node_ls(0).unwrap();
    let node = nodes
        .iter()
        .find(|node| node["hostname"] == "node-3")
        .unwrap();
    assert_eq!(node["labels"]["rotated"], "yes", "{node}");
    for asked in [0, 1] {
        let logs = cluster.hoist_ok(asked, &["service", "logs", "talker"]);
        assert!(logs.contains("said-before-the-rotation"), "{logs}");
    }
    cluster.restart(2);
    cluster.wait_all_ready(0, Duration::from_secs(30));
}

/// Join tokens carry the new digest: the old token names a CA no manager presents.
fn join_tokens_carry_the_new_digest(cluster: &Cluster, outsiders: &Cluster, old_token: &str) {
    let err = outsiders.hoist_err(0, &["join", "--token", old_token, &cluster.nodes[0].addr()]);
    assert!(err.contains("does not match the token"), "{err}");
    let new_token = cluster
        .hoist_ok(0, &["join-token", "worker", "-q"])
        .trim()
        .to_string();
    assert_ne!(new_token, old_token);
    outsiders.hoist_ok(
        1,
        &["join", "--token", &new_token, &cluster.nodes[1].addr()],
    );
    wait_for("the new node Ready", Duration::from_secs(20), || {
        let nodes = cluster.node_ls(0)?;
        (nodes.len() == 4 && nodes.iter().all(|node| node["status"] == "ready")).then_some(())
    });
}
