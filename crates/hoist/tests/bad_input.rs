//! Bad input of every kind (flags, specs, HTTP bodies and headers, join tokens, files on
//! disk) against one real cluster: each is refused with a message that names what is
//! wrong, and nothing already stored changes. The table it prints is the one in the
//! hardening issue's note (`cargo test -p hoist --test bad_input -- --nocapture`).

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hoist_testkit::hoist_bin;
use hoist_testkit::{copy_tree, Cluster, ClusterOptions};
use serde_json::Value;

/// What a cluster holds that no refused input may change: the cluster, its settings, its
/// CA, its nodes, each service's spec and the join tokens.
fn stored(cluster: &Cluster) -> Value {
    let info = cluster.json(0, &["info"]).expect("info");
    let nodes: Vec<Value> = cluster
        .node_ls(0)
        .expect("node ls")
        .into_iter()
        .map(|node| {
            serde_json::json!([
                node["id"],
                node["hostname"],
                node["role"],
                node["availability"],
                node["labels"],
                node["addr"]
            ])
        })
        .collect();
    let services: Vec<Value> = cluster
        .json(0, &["service", "ls"])
        .expect("service ls")
        .as_array()
        .expect("an array")
        .iter()
        .map(|service| service["spec"].clone())
        .collect();
    let tokens = ["worker", "manager"].map(|role| cluster.hoist_ok(0, &["join-token", role, "-q"]));
    // `cluster inspect` prints JSON without being asked.
    let inspect: Value = serde_json::from_str(&cluster.hoist_ok(0, &["cluster", "inspect"]))
        .expect("cluster inspect");
    let ca = cluster.json(0, &["cluster", "ca"]).expect("cluster ca");
    assert!(
        inspect["settings"].is_object() && ca["digest"].is_string(),
        "settings and CA digest read: {inspect} {ca}"
    );
    serde_json::json!({
        "cluster": info["cluster_id"],
        "settings": [inspect["cluster_id"], inspect["created_at_ms"], inspect["settings"]],
        "ca": [ca["digest"], ca["cert_pem"], ca["rotating"], ca["retired"]],
        "nodes": nodes,
        "services": services,
        "tokens": tokens,
    })
}

/// One HTTP/1.1 request on the control socket: the status and the body.
fn unix_request(
    socket: &Path,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("the control socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: hoist\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // The server may answer (and close) before it has read a body it refuses: a write
    // that fails then is not the test's concern, the answer is.
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body));
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Starts a daemon on `data_dir` and expects it to exit non-zero: its stderr.
fn daemon_refuses(data_dir: &Path, listen: &str) -> String {
    let mut child = Command::new(hoist_bin!())
        .args(["daemon", "--data-dir"])
        .arg(data_dir)
        .args(["--listen-addr", listen])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a daemon");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a daemon on {} kept running", data_dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(!status.success(), "the daemon exited 0: {stderr}");
    stderr
}

/// Method, path, content type, body, the status expected, and words the answer must
/// contain.
type HttpCase = (
    &'static str,
    &'static str,
    &'static str,
    &'static [u8],
    u16,
    &'static str,
);

struct Row {
    input: String,
    outcome: String,
}

fn one_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("");
    line.chars().take(140).collect()
}

/// Stands for a 300-character name in [`FLAG_CASES`].
const LONG_NAME: &str = "{long-name}";

/// Flags and specs, through the CLI: (arguments, words the error must contain).
const FLAG_CASES: &[(&[&str], &str)] = &[
    (
        &[
            "service",
            "create",
            "--name",
            "x",
            "--replicas",
            "-1",
            "--",
            "sleep",
            "1",
        ],
        "--replicas -1",
    ),
    (
        &[
            "service",
            "create",
            "--name",
            "x",
            "--replicas",
            "abc",
            "--",
            "sleep",
            "1",
        ],
        "'abc'",
    ),
    (
        &[
            "service", "create", "--name", "x", "-p", "99999:80", "--", "sleep", "1",
        ],
        "99999",
    ),
    (
        &[
            "service", "create", "--name", "x", "-p", "8080:0", "--", "sleep", "1",
        ],
        "port 0",
    ),
    (
        &[
            "service",
            "create",
            "--name",
            "x",
            "-p",
            "8080:80/udp",
            "--",
            "sleep",
            "1",
        ],
        "udp",
    ),
    (
        &[
            "service",
            "create",
            "--name",
            "x",
            "--mount",
            "type=volume,source=v,target=/d",
            "--",
            "sleep",
            "1",
        ],
        "volume",
    ),
    (
        &[
            "service",
            "create",
            "--name",
            "x",
            "--mount",
            "type=tmpfs,target=/d",
            "--",
            "sleep",
            "1",
        ],
        "tmpfs",
    ),
    (
        &[
            "service",
            "create",
            "--name",
            "x",
            "--mount",
            "type=bind,source=rel,target=/d",
            "--",
            "sleep",
            "1",
        ],
        "absolute",
    ),
    (
        &[
            "service",
            "create",
            "--name",
            "x",
            "--constraint",
            "node.role==king",
            "--",
            "sleep",
            "1",
        ],
        "king",
    ),
    (
        &[
            "service",
            "create",
            "--name",
            "x",
            "--constraint",
            "garbage",
            "--",
            "sleep",
            "1",
        ],
        "garbage",
    ),
    (
        &[
            "service",
            "create",
            "--name",
            "x",
            "--restart-delay",
            "5 parsecs",
            "--",
            "sleep",
            "1",
        ],
        "parsecs",
    ),
    (
        &[
            "service",
            "create",
            "--name",
            "x",
            "--restart-condition",
            "sometimes",
            "--",
            "sleep",
            "1",
        ],
        "sometimes",
    ),
    (
        &[
            "service",
            "create",
            "--name",
            "x",
            "--reserve-memory",
            "12QB",
            "--",
            "sleep",
            "1",
        ],
        "12QB",
    ),
    (
        &[
            "service", "create", "--name", "x", "-e", "=value", "--", "sleep", "1",
        ],
        "=value",
    ),
    (
        &[
            "service",
            "create",
            "--name",
            "bad name!",
            "--",
            "sleep",
            "1",
        ],
        "bad name!",
    ),
    (
        &["service", "create", "--name", LONG_NAME, "--", "sleep", "1"],
        "63 characters",
    ),
    (
        &["service", "create", "--name", "web", "--", "sleep", "1"],
        "already exists",
    ),
    (
        &[
            "service", "create", "--name", "y", "-p", "28081:80", "--", "sleep", "1",
        ],
        "28081",
    ),
    (
        &[
            "service",
            "create",
            "--name",
            "x",
            "--replicas",
            "10001",
            "--",
            "sleep",
            "1",
        ],
        "maximum of 10000",
    ),
    (
        &["cluster", "update", "--max-replicas", "0"],
        "--max-replicas 0",
    ),
    (
        &["cluster", "update", "--task-history-limit", "65"],
        "--task-history-limit 65",
    ),
    (&["cluster", "update"], "nothing to update"),
    (&["service", "scale", "web=abc"], "web=abc"),
    (&["service", "scale", "nosuch=3"], "nosuch"),
    (
        &["node", "update", "--availability", "sideways", "node-1"],
        "sideways",
    ),
    (&["node", "rm", "nosuch"], "nosuch"),
    (&["node", "promote", "nosuch"], "nosuch"),
    (&["join-token", "admin"], "admin"),
    (&["init"], "already part of a cluster"),
];

/// HTTP bodies, headers and paths on the control socket: (method, path, content type,
/// body, status, words the answer must contain).
const HTTP_CASES: &[HttpCase] = &[
    (
        "POST",
        "/v1/services",
        "application/json",
        b"{",
        400,
        "JSON",
    ),
    (
        "POST",
        "/v1/services",
        "application/json",
        br#"{"name":5}"#,
        422,
        "spec",
    ),
    (
        "POST",
        "/v1/services",
        "text/plain",
        br#"{"name":"z"}"#,
        415,
        "application/json",
    ),
    (
        "GET",
        "/v1/nodes/%ff",
        "application/json",
        b"",
        400,
        "UTF-8",
    ),
    (
        "POST",
        "/v1/services/web/scale",
        "application/json",
        br#"{"replicas":-3}"#,
        422,
        "-3",
    ),
    (
        "POST",
        "/v1/services/web/scale",
        "application/json",
        br#"{"replicas":1e30}"#,
        422,
        "floating point",
    ),
    (
        "POST",
        "/v1/nodes/node-1/update",
        "application/json",
        br#"{"availability":"sideways"}"#,
        422,
        "sideways",
    ),
    (
        "POST",
        "/v1/join-tokens/worker?rotate=maybe",
        "application/json",
        b"",
        400,
        "rotate",
    ),
    (
        "DELETE",
        "/v1/services/%00",
        "application/json",
        b"",
        404,
        "not found",
    ),
];

fn try_flags(cluster: &Cluster, rows: &mut Vec<Row>) {
    let long_name = "a".repeat(300);
    for (args, expect) in FLAG_CASES {
        let args: Vec<&str> = args
            .iter()
            .map(|arg| {
                if *arg == LONG_NAME {
                    long_name.as_str()
                } else {
                    arg
                }
            })
            .collect();
        let err = cluster.hoist_err(0, &args);
        assert!(err.contains(expect), "`hoist {}`: {err}", args.join(" "));
        rows.push(Row {
            input: format!("hoist {}", args.join(" ")),
            outcome: one_line(&err),
        });
    }
}

/// Join tokens, from a daemon in no cluster.
fn try_tokens(cluster: &Cluster, fresh: &Cluster, rows: &mut Vec<Row>) {
    let worker_token = cluster.hoist_ok(0, &["join-token", "worker", "-q"]);
    let worker_token = worker_token.trim();
    let digest = worker_token.split('-').nth(2).expect("a digest");
    let manager = cluster.nodes[0].addr();
    let zeros = "0".repeat(64);
    let wrong_digest = format!("HOIST-1-{zeros}-abcdefghijklmnopqrstuvwxyz012345");
    let wrong_secret = format!("HOIST-1-{digest}-abcdefghijklmnopqrstuvwxyz012345");
    let token_cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["join", "--token", "garbage", &manager], "HOIST-1-"),
        (
            vec!["join", "--token", &wrong_digest, &manager],
            "does not match",
        ),
        (vec!["join", "--token", &wrong_secret, &manager], "neither"),
        (
            vec!["join", "--token", worker_token, "127.0.0.1:1"],
            "127.0.0.1:1",
        ),
        (
            vec![
                "join",
                "--token",
                worker_token,
                "--role",
                "manager",
                &manager,
            ],
            "worker join token",
        ),
    ];
    for (args, expect) in token_cases {
        let err = fresh.hoist_err(0, &args);
        assert!(err.contains(expect), "`hoist {}`: {err}", args.join(" "));
        rows.push(Row {
            input: format!("hoist {}", args.join(" ")).replace(worker_token, "WORKER-TOKEN"),
            outcome: one_line(&err),
        });
    }
    assert!(
        fresh
            .json(0, &["info"])
            .is_none_or(|info| info["cluster_id"].as_str().unwrap_or("").is_empty()),
        "a refused join left the daemon in a cluster"
    );
}

fn try_backups(fresh: &Cluster, dir: &Path, rows: &mut Vec<Row>) {
    let garbage = dir.join("garbage.json");
    std::fs::write(&garbage, "garbage").expect("writing");
    let future = dir.join("future.json");
    let mut backup: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/a85ac81/backup.json"),
        )
        .expect("the fixture backup"),
    )
    .expect("json");
    backup["format"] = serde_json::json!(hoist_state::persist::FORMAT_VERSION + 1);
    std::fs::write(&future, backup.to_string()).expect("writing");
    for (file, expect) in [(&garbage, "not a hoist backup"), (&future, "newer than")] {
        let path = file.display().to_string();
        let err = fresh.hoist_err(0, &["restore", &path]);
        assert!(err.contains(expect), "restore {path}: {err}");
        rows.push(Row {
            input: format!(
                "hoist restore {}",
                file.file_name().and_then(|n| n.to_str()).unwrap_or("")
            ),
            outcome: one_line(&err),
        });
    }
}

fn try_http(cluster: &Cluster, rows: &mut Vec<Row>) {
    let socket = &cluster.nodes[0].socket;
    for &(method, path, content_type, body, status, expect) in HTTP_CASES {
        let (got, answer) = unix_request(socket, method, path, content_type, body);
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert!(answer.contains(expect), "{method} {path}: {answer}");
        rows.push(Row {
            input: format!(
                "{method} {path} ({content_type}) {}",
                String::from_utf8_lossy(body)
            ),
            outcome: format!("{got} {}", one_line(&answer)),
        });
    }
}

/// Files on disk: a copy of the manager's data directory with one file damaged.
fn try_damaged_files(cluster: &Cluster, dir: &Path, rows: &mut Vec<Row>) {
    for (file, content) in [
        ("node.json", "{\"garbage\":"),
        ("identity.json", "{\"garbage\":"),
        ("node.json", ""),
    ] {
        let copy = dir.join(format!("copy-{file}-{}", content.len()));
        copy_tree(&cluster.nodes[0].data_dir, &copy);
        let _ = std::fs::remove_file(copy.join("hoist.sock"));
        std::fs::write(copy.join(file), content).expect("damaging the copy");
        let err = daemon_refuses(&copy, "127.0.0.1:0");
        assert!(err.contains(file), "a damaged {file}: {err}");
        rows.push(Row {
            input: format!("daemon on a data directory whose {file} is {content:?}"),
            outcome: one_line(err.lines().last().unwrap_or("")),
        });
    }
}

#[test]
fn bad_input_is_refused_by_name_and_changes_nothing_stored() {
    let cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 1,
            ..Default::default()
        },
    );
    let fresh = Cluster::spawn(hoist_bin!(), 1);
    cluster.hoist_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "2",
            "-p",
            "28081:8080",
            "--",
            "sleep",
            "3600",
        ],
    );
    let before = stored(&cluster);
    let mut rows = Vec::new();

    try_flags(&cluster, &mut rows);
    try_tokens(&cluster, &fresh, &mut rows);
    let dir = tempfile::tempdir().expect("a temporary directory");
    try_backups(&fresh, dir.path(), &mut rows);
    try_http(&cluster, &mut rows);
    try_damaged_files(&cluster, dir.path(), &mut rows);

    assert_eq!(
        stored(&cluster),
        before,
        "a refused input changed the stored state"
    );

    println!("| input | outcome |\n|---|---|");
    for row in &rows {
        let input: String = row.input.chars().take(100).collect();
        println!(
            "| `{}` | {} |",
            input.replace('|', "\\|"),
            row.outcome.replace('|', "\\|")
        );
    }
    assert!(rows.len() >= 30, "only {} bad inputs tried", rows.len());
}
