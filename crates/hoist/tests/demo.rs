//! `hoist demo`: the README's main job, end to end.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Processes whose command line mentions `needle` (the demo's data directory).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

#[test]
fn the_demo_serves_hello_from_three_nodes_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("demo");
    let (mut child, output) = start_demo(&data_dir);
    hello_is_served_from_three_nodes(&output);
    stops_on_ctrl_c(&mut child);
    nothing_is_left_behind(&data_dir);
}

/// Starts `hoist demo` and reads its output until it says it is up: the child and the
/// lines it printed.
fn start_demo(data_dir: &Path) -> (Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hoist"))
        .args(["demo", "--port", "18099", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting hoist demo");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut output = Vec::new();
    let ready = loop {
        match lines_rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let done = line.contains("Press Ctrl-C");
                output.push(line);
                if done {
                    break true;
                }
            }
            Err(_) if Instant::now() > deadline => break false,
            Err(_) => {}
        }
    };
    if !ready {
        let _ = child.kill();
        panic!("the demo did not come up:\n{}", output.join("\n"));
    }
    (child, output)
}

/// The addresses (host:port) of the URLs the demo printed after `prefix`.
fn urls(output: &[String], prefix: &str) -> Vec<String> {
    output
        .iter()
        .filter_map(|line| line.trim().strip_prefix(prefix))
        .map(|rest| rest.split('/').next().unwrap().to_string())
        .collect()
}

/// The node a hello task reached at `addr` says it runs on.
fn node_of(addr: &str) -> String {
    let body = hoist_testkit::http_get(addr, "demo", "/api").expect("a hello task answers");
    let json: serde_json::Value =
        serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap_or_default())
            .unwrap_or_else(|_| panic!("hello /api JSON from {addr}: {body}"));
    json["node"].as_str().unwrap().to_string()
}

/// The demo prints the nodes, the tasks and their URLs; each task answers from its own
/// node, and one node's published port reaches all three.
fn hello_is_served_from_three_nodes(output: &[String]) {
    let text = output.join("\n");
    assert!(text.contains("HOSTNAME"), "node ls is printed: {text}");
    assert!(text.contains("hello.1"), "service ps is printed: {text}");
    assert!(text.contains("export HOIST_HOST=unix://"), "{text}");
    let tasks = urls(output, "task: http://");
    assert_eq!(tasks.len(), 3, "a URL per task: {text}");
    let mesh = urls(output, "mesh: http://");
    assert_eq!(mesh.len(), 5, "a mesh URL per node: {text}");
    let direct: BTreeSet<String> = tasks.iter().map(|addr| node_of(addr)).collect();
    assert_eq!(
        direct.len(),
        3,
        "three tasks on three different nodes: {direct:?}"
    );
    // Through one node's published port, the answers come from all three.
    let mut through_mesh = BTreeSet::new();
    for _ in 0..30 {
        through_mesh.insert(node_of(&mesh[0]));
        if through_mesh.len() == 3 {
            break;
        }
    }
    assert_eq!(
        through_mesh, direct,
        "the mesh on {} reaches every task",
        mesh[0]
    );
}

/// SIGINT, as Ctrl-C sends, makes the demo exit successfully within a minute.
fn stops_on_ctrl_c(child: &mut Child) {
    // SAFETY: signalling the child we started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not stop after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
}

/// No process mentions the demo's data directory and no task it recorded still runs;
/// the data directory itself is kept.
fn nothing_is_left_behind(data_dir: &Path) {
    let left = processes_mentioning(&data_dir.display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:?}");
    for node in std::fs::read_dir(data_dir).unwrap().flatten() {
        if !node.path().is_dir() {
            continue;
        }
        for (task_id, pid) in hoist_testkit::driver_records(&node.path()) {
            assert!(
                !hoist_testkit::process_runs_task(pid, &task_id),
                "task {task_id} (pid {pid}) still runs"
            );
        }
    }
    assert!(Path::new(&data_dir).exists());
}
