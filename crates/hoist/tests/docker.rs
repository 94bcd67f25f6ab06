//! The Docker Engine driver through real daemons on the local engine. Skipped (with a
//! note) where no engine runs, unless HOIST_REQUIRE_DOCKER=1, which `.ci/run` sets when
//! /var/run/docker.sock exists: then a missing engine fails the test.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use hoist_testkit::hoist_bin;
use hoist_testkit::{wait_for, Cluster, ClusterOptions};
use serde_json::Value;

fn docker_available() -> bool {
    let answers = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    if !answers && std::env::var("HOIST_REQUIRE_DOCKER").as_deref() == Ok("1") {
        panic!("HOIST_REQUIRE_DOCKER=1 but no Docker Engine answers");
    }
    if !answers {
        eprintln!("note: no Docker Engine here; docker tests skipped");
    }
    answers
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("running docker");
    assert!(
        output.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A HEALTHCHECK that never passes: the container turns unhealthy within a second.
const FAILING_HEALTHCHECK: &str =
    "HEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD [\"/hoist\", \"no-such-command\"]";

/// An image of `hoist hello` built with no registry: `FROM scratch` plus this build's
/// `hoist` binary and the shared libraries it needs (`images/build-hello.sh` makes the
/// static `hoist-hello:local` the same way, from a musl build). Removed on drop, with
/// every container the cluster's nodes made.
struct Image {
    tag: String,
    node_ids: Vec<String>,
}

impl Image {
    fn build(tag: &str, healthcheck: Option<&str>) -> Image {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::copy(hoist_bin!(), root.join("hoist")).unwrap();
        let ldd = Command::new("ldd").arg(hoist_bin!()).output().expect("ldd");
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let path = line
                .split_whitespace()
                .find(|word| word.starts_with('/'))
                .map(str::to_string);
            if let Some(path) = path {
                let target = root.join(path.trim_start_matches('/'));
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::copy(&path, &target).unwrap();
            }
        }
        let mut dockerfile =
            String::from("FROM scratch\nCOPY root/ /\nENTRYPOINT [\"/hoist\"]\nCMD [\"hello\"]\n");
        if let Some(check) = healthcheck {
            dockerfile.push_str(check);
            dockerfile.push('\n');
        }
        std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
        docker(&["build", "-q", "-t", tag, &dir.path().display().to_string()]);
        Image {
            tag: tag.to_string(),
            node_ids: Vec::new(),
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        for node_id in &self.node_ids {
            let ids = Command::new("docker")
                .args([
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=hoist.node={node_id}"),
                ])
                .output()
                .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
                .unwrap_or_default();
            for id in ids.split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

fn node_ids(cluster: &Cluster) -> Vec<String> {
    cluster
        .node_ls(0)
        .unwrap()
        .iter()
        .map(|node| node["id"].as_str().unwrap().to_string())
        .collect()
}

fn containers_of(node_id: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=hoist.node={node_id}"),
    ])
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

fn tasks(cluster: &Cluster, service: &str) -> Vec<Value> {
    cluster
        .json(0, &["service", "ps", service])
        .and_then(|value| value.as_array().cloned())
        .unwrap_or_default()
}

fn converged(cluster: &Cluster, service: &str) -> bool {
    cluster
        .json(0, &["service", "ls"])
        .and_then(|value| {
            let service = value
                .as_array()?
                .iter()
                .find(|view| view["spec"]["name"] == service)?
                .clone();
            Some(service["running"] == service["desired"] && service["desired"] != 0)
        })
        .unwrap_or(false)
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let response = hoist_testkit::http_get(addr, "docker-test", path).ok()?;
    response.starts_with("HTTP/1.1 200").then(|| {
        response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string()
    })
}

#[test]
fn containers_answer_through_the_mesh_are_replaced_and_adopted() {
    if !docker_available() {
        return;
    }
    let tag = format!("hoist-hello:test-{}", std::process::id());
    let mut image = Image::build(&tag, None);
    let mut cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 2,
            ..Default::default()
        },
    );
    image.node_ids = node_ids(&cluster);
    // The engine is reported.
    let nodes = cluster.node_ls(0).unwrap();
    assert!(
        nodes
            .iter()
            .all(|node| node["engine"]["docker_version"].is_string()),
        "{nodes:?}"
    );
    let shown = cluster.hoist_ok(0, &["node", "ls"]);
    assert!(shown.contains("docker "), "{shown}");

    cluster.hoist_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "3",
            "-p",
            "8080:8080",
            &tag,
        ],
    );
    wait_for("3 containers running", Duration::from_secs(60), || {
        converged(&cluster, "web").then_some(())
    });
    let addr = format!("{}:8080", cluster.nodes[0].ip);
    let mut seen = std::collections::BTreeSet::new();
    wait_for(
        "every replica answering through the mesh",
        Duration::from_secs(30),
        || {
            let body = http_get(&addr, "/api")?;
            let json: Value = serde_json::from_str(&body).ok()?;
            seen.insert(json["task"].as_str()?.to_string());
            (seen.len() == 3).then_some(())
        },
    );

    // docker kill: the task fails and is replaced.
    let victim = tasks(&cluster, "web")
        .into_iter()
        .find(|task| task["status"]["state"] == "running")
        .unwrap();
    let victim_id = victim["id"].as_str().unwrap().to_string();
    docker(&["kill", &format!("hoist-web.{victim_id}")]);
    wait_for("a replacement running", Duration::from_secs(60), || {
        let listed = tasks(&cluster, "web");
        let victim_ended = listed
            .iter()
            .any(|task| task["id"] == victim_id.as_str() && task["status"]["state"] != "running");
        (victim_ended && converged(&cluster, "web")).then_some(())
    });

    // A restarted worker daemon adopts its containers: no duplicates, no orphans.
    a_restarted_worker_adopts_its_containers(&mut cluster);
}

fn a_restarted_worker_adopts_its_containers(cluster: &mut Cluster) {
    let worker_id = cluster
        .node_ls(0)
        .unwrap()
        .iter()
        .find(|node| node["hostname"] == "node-2")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = containers_of(&worker_id);
    // Adoption is only shown if there is something to adopt.
    assert!(
        !before.is_empty(),
        "node-2 runs no container of web: nothing to adopt"
    );
    let tasks_before = tasks(cluster, "web").len();
    cluster.kill(1);
    cluster.start_node(1);
    cluster.wait_all_ready(0, Duration::from_secs(20));
    wait_for(
        "converged after the restart",
        Duration::from_secs(30),
        || converged(cluster, "web").then_some(()),
    );
    let mut after = containers_of(&worker_id);
    let mut expected = before.clone();
    after.sort();
    expected.sort();
    assert_eq!(after, expected, "the same containers, adopted");
    assert_eq!(
        tasks(cluster, "web").len(),
        tasks_before,
        "no task was created anew"
    );
    let running_on_worker = tasks(cluster, "web")
        .iter()
        .filter(|task| task["node_hostname"] == "node-2" && task["status"]["state"] == "running")
        .count();
    assert_eq!(after.len(), running_on_worker, "no orphan containers");
}

#[test]
fn a_bind_mounted_folder_is_served_by_every_replica() {
    if !docker_available() {
        return;
    }
    let tag = format!("hoist-hello:test-mount-{}", std::process::id());
    let mut image = Image::build(&tag, None);
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            workers: 1,
            ..Default::default()
        },
    );
    image.node_ids = node_ids(&cluster);
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(
        shared.path().join("index.txt"),
        "served from the shared folder\n",
    )
    .unwrap();
    let mount = format!(
        "type=bind,source={},target=/srv,readonly",
        shared.path().display()
    );
    cluster.hoist_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "files",
            "--replicas",
            "2",
            "-p",
            "8080:8080",
            "--mount",
            &mount,
            &tag,
            "hello",
            "--dir",
            "/srv",
        ],
    );
    wait_for("2 replicas", Duration::from_secs(60), || {
        converged(&cluster, "files").then_some(())
    });
    for task in tasks(&cluster, "files") {
        if task["status"]["state"] != "running" {
            continue;
        }
        let addr = task["status"]["endpoints"][0]["addr"]
            .as_str()
            .unwrap()
            .to_string();
        let body = wait_for("the file", Duration::from_secs(10), || {
            http_get(&addr, "/files/index.txt")
        });
        assert!(body.contains("served from the shared folder"), "{body}");
    }
}

#[test]
fn an_image_that_cannot_be_pulled_is_a_clear_task_error() {
    if !docker_available() {
        return;
    }
    let cluster = Cluster::start(hoist_bin!(), ClusterOptions::default());
    let image = Image {
        tag: "hoist-no-such-image:nowhere".into(),
        node_ids: node_ids(&cluster),
    };
    cluster.hoist_ok(
        0,
        &[
            "service", "create", "--detach", "--name", "ghost", &image.tag,
        ],
    );
    let err = wait_for("the pull error", Duration::from_secs(60), || {
        tasks(&cluster, "ghost")
            .iter()
            .find_map(|task| task["status"]["err"].as_str().map(str::to_string))
    });
    assert!(
        err.contains("is not on node") && err.contains("could not be pulled"),
        "{err}"
    );
    let shown = cluster.hoist_ok(0, &["service", "ps", "ghost"]);
    assert!(shown.contains("could not be pulled"), "{shown}");
}

#[test]
fn an_unhealthy_container_is_replaced() {
    if !docker_available() {
        return;
    }
    let tag = format!("hoist-hello:test-unhealthy-{}", std::process::id());
    let mut image = Image::build(&tag, Some(FAILING_HEALTHCHECK));
    let cluster = Cluster::start(hoist_bin!(), ClusterOptions::default());
    image.node_ids = node_ids(&cluster);
    cluster.hoist_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "sick",
            "--restart-delay",
            "200ms",
            "-p",
            "8080:8080",
            &tag,
        ],
    );
    wait_for(
        "an unhealthy task replaced by another attempt",
        Duration::from_secs(90),
        || {
            let listed = tasks(&cluster, "sick");
            let unhealthy = listed
                .iter()
                .filter(|task| {
                    task["status"]["err"]
                        .as_str()
                        .map(|err| err.contains("healthy"))
                        .unwrap_or(false)
                })
                .count();
            (unhealthy >= 1 && listed.len() >= 2).then_some(())
        },
    );
}

/// `--no-healthcheck` turns off the image's failing HEALTHCHECK (the service converges
/// instead of being replaced for ever), and `--hostname` and `--entrypoint` reach the
/// container.
#[test]
fn no_healthcheck_hostname_and_entrypoint_reach_the_container() {
    if !docker_available() {
        return;
    }
    let tag = format!("hoist-hello:test-flags-{}", std::process::id());
    let mut image = Image::build(&tag, Some(FAILING_HEALTHCHECK));
    let cluster = Cluster::start(hoist_bin!(), ClusterOptions::default());
    image.node_ids = node_ids(&cluster);
    cluster.hoist_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "flags",
            "--no-healthcheck",
            "--hostname",
            "web-box",
            "--entrypoint",
            "/hoist",
            &tag,
            "hello",
        ],
    );
    wait_for("the service running", Duration::from_secs(60), || {
        converged(&cluster, "flags").then_some(())
    });
    let container = containers_of(&image.node_ids[0])
        .into_iter()
        .next()
        .expect("the task's container");
    let config = docker(&[
        "inspect",
        "-f",
        "{{.Config.Hostname}} {{json .Config.Entrypoint}} {{json .Config.Healthcheck.Test}}",
        &container,
    ]);
    assert_eq!(config.trim(), r#"web-box ["/hoist"] ["NONE"]"#, "{config}");
}
