//! Upgrading in place: the data directories of a cluster written by main at a85ac81
//! (`tests/fixtures/a85ac81`, before the persisted format had a version) start under
//! this build and the cluster keeps working: the same nodes, services and settings, a
//! leader, writes that commit on every manager, and snapshots in the new format.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hoist_testkit::hoist_bin;
use hoist_testkit::{copy_tree, wait_for, Cluster};
use serde_json::Value;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/a85ac81")
}

fn addr(node: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 77, node], 23770))
}

fn service<'a>(services: &'a Value, name: &str) -> Option<&'a Value> {
    services
        .as_array()?
        .iter()
        .find(|view| view["spec"]["name"] == name)
}

/// `(running, desired)` of `name` as node `asked` sees it.
fn replicas(cluster: &Cluster, asked: usize, name: &str) -> Option<(u64, u64)> {
    let services = cluster.json(asked, &["service", "ls"])?;
    let view = service(&services, name)?;
    Some((view["running"].as_u64()?, view["desired"].as_u64()?))
}

/// The fixture's node certificates were issued on 2026-12-02 for 90 days. Once they are
/// close to expiry, the copies get fresh ones from the fixture's own CA (its key is in
/// the backup), for the same node, role and cluster: what this test is about is the
/// persisted state, and a real cluster renews its certificates at half life.
fn refresh_certificates_if_expiring(dirs: &Path) {
    let backup: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture().join("backup.json")).expect("the fixture backup"),
    )
    .expect("json");
    let ca = &backup["state"]["ca"];
    let ca = hoist_pki::ClusterCa::from_pem(
        ca["cert_pem"].as_str().expect("the CA certificate"),
        ca["key_pem"].as_str().expect("the CA key"),
    )
    .expect("the fixture's CA");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs() as i64;
    for node in ["n1", "n2", "n3", "n4"] {
        let path = dirs.join(node).join("identity.json");
        let mut identity: hoist_pki::NodeIdentity =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("identity.json"))
                .expect("an identity");
        let peer = identity.peer().expect("the fixture's certificate");
        if peer.not_after - now > 7 * 24 * 3600 {
            continue;
        }
        eprintln!("the fixture certificate of {node} expires soon: issuing a fresh one");
        let csr = hoist_pki::NodeCsr::generate().expect("a key");
        identity.chain_pem = ca
            .sign_csr(
                &csr.csr_pem,
                peer.node_id,
                peer.role,
                &peer.cluster_id,
                Duration::from_secs(90 * 24 * 3600),
            )
            .expect("signing");
        identity.key_pem = csr.key_pem;
        std::fs::write(&path, serde_json::to_vec(&identity).expect("json")).expect("writing");
    }
}

#[test]
fn a_cluster_written_by_a85ac81_starts_on_this_build_and_keeps_working() {
    let source = tempfile::tempdir().expect("a temporary directory");
    copy_tree(&fixture(), source.path());
    refresh_certificates_if_expiring(source.path());
    let mut cluster = Cluster::from_data_dirs(
        hoist_bin!(),
        source.path(),
        &[
            ("n1", "fx1", addr(1)),
            ("n2", "fx2", addr(2)),
            ("n3", "fx3", addr(3)),
            ("n4", "fx4", addr(4)),
        ],
        vec!["--raft-snapshot-interval".into(), "20".into()],
    );
    every_node_is_back_under_its_old_id(&cluster);
    the_services_are_as_they_were(&cluster);
    let (leader, follower) = writes_commit_on_every_manager(&cluster);
    snapshots_are_now_versioned(&cluster, leader);
    a_restarted_manager_rejoins_with_the_same_state(&mut cluster, leader, follower);
}

/// Every node back, under the ids the old build gave them.
fn every_node_is_back_under_its_old_id(cluster: &Cluster) {
    let nodes = wait_for("four Ready nodes", Duration::from_secs(60), || {
        let nodes = cluster.node_ls(0)?;
        let ready = nodes
            .iter()
            .filter(|node| node["status"] == "ready")
            .count();
        (nodes.len() == 4 && ready == 4).then_some(nodes)
    });
    let mut ids: Vec<&str> = nodes
        .iter()
        .filter_map(|node| node["id"].as_str())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "0c3b28c00e912a24",
            "13042bc39cc294ae",
            "a0e55d45abbd360d",
            "bd024cc1cffe10d0"
        ]
    );
    let fx3 = nodes
        .iter()
        .find(|node| node["hostname"] == "fx3")
        .expect("fx3 is listed");
    assert_eq!(fx3["availability"], "drain", "{fx3}");
    let fx4 = nodes
        .iter()
        .find(|node| node["hostname"] == "fx4")
        .expect("fx4 is listed");
    assert_eq!(fx4["labels"]["zone"], "a", "{fx4}");
}

/// The services as they were, converging again on the nodes that may run them.
fn the_services_are_as_they_were(cluster: &Cluster) {
    let services = cluster
        .json(1, &["service", "ls"])
        .expect("service ls on fx2");
    let web = service(&services, "web").expect("web survived");
    assert_eq!(web["spec"]["labels"]["tier"], "front", "{web}");
    assert!(
        web["spec"].to_string().contains("28080"),
        "web's published port: {web}"
    );
    assert!(service(&services, "cache").is_some() && service(&services, "batch").is_some());
    for name in ["web", "batch"] {
        wait_for(
            &format!("{name} converged"),
            Duration::from_secs(60),
            || {
                let (running, desired) = replicas(cluster, 0, name)?;
                (running == desired && desired > 0).then_some(())
            },
        );
    }
}

/// Writes commit on every manager, through whichever one is asked: the leader and the
/// follower that was asked.
fn writes_commit_on_every_manager(cluster: &Cluster) -> (usize, usize) {
    let leader = wait_for("a leader", Duration::from_secs(30), || cluster.leader(0));
    let follower = (0..3).find(|index| *index != leader).expect("a follower");
    for replicas_wanted in [4, 2, 5, 3, 4] {
        cluster.hoist_ok(
            follower,
            &[
                "service",
                "scale",
                &format!("web={replicas_wanted}"),
                "--detach",
            ],
        );
    }
    for manager in 0..3 {
        let (_, desired) = replicas(cluster, manager, "web").expect("service ls");
        assert_eq!(desired, 4, "web's replicas as manager {manager} reads them");
    }
    (leader, follower)
}

/// Those writes passed the snapshot interval: snapshots are now versioned.
fn snapshots_are_now_versioned(cluster: &Cluster, leader: usize) {
    let archive = cluster.nodes[leader].data_dir.join("raft/snapshots");
    wait_for(
        "a snapshot in the new format",
        Duration::from_secs(30),
        || {
            let newest = std::fs::read_dir(&archive)
                .ok()?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .max()?;
            let value: Value = serde_json::from_slice(&std::fs::read(newest).ok()?).ok()?;
            (value["format"] == hoist_state::persist::FORMAT_VERSION).then_some(())
        },
    );
}

/// A manager restarted on the new format rejoins with the same state.
fn a_restarted_manager_rejoins_with_the_same_state(
    cluster: &mut Cluster,
    leader: usize,
    follower: usize,
) {
    let restarted = (follower + 1) % 3;
    let restarted = if restarted == leader {
        (restarted + 1) % 3
    } else {
        restarted
    };
    cluster.restart(restarted);
    wait_for(
        "the restarted manager reads web=4",
        Duration::from_secs(60),
        || {
            let (_, desired) = replicas(cluster, restarted, "web")?;
            (desired == 4).then_some(())
        },
    );
}
