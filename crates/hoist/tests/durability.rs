//! What a node keeps on disk: who may read it (file modes, backups), what a new spec may
//! ask for (mount types no driver runs), and what happens when the store is damaged or
//! the disk fills up.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hoist_testkit::{wait_for, Cluster, ClusterOptions};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hoist"))
}

/// Every file and directory under `dir` (links are not followed), with its mode.
fn modes_under(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(metadata) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if metadata.file_type().is_symlink() {
                continue;
            }
            found.push((entry.path(), metadata.permissions().mode() & 0o7777));
            if metadata.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    found
}

fn readable_by_others(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = modes_under(dir)
        .into_iter()
        .filter(|(_, mode)| mode & 0o077 != 0)
        .map(|(path, mode)| format!("{} {mode:o}", path.display()))
        .collect();
    let top = std::fs::metadata(dir).unwrap().permissions().mode() & 0o7777;
    if top & 0o077 != 0 {
        found.push(format!("{} {top:o}", dir.display()));
    }
    found
}

/// One HTTP/1.1 request on the daemon's control socket, for what the CLI would refuse
/// before sending; returns the status line and the body.
fn unix_request(socket: &Path, method: &str, path: &str, body: &str) -> (String, String) {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: hoist\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

fn service_names(cluster: &Cluster, index: usize) -> Vec<String> {
    cluster
        .json(index, &["service", "ls"])
        .and_then(|value| value.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|service| service["spec"]["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn nothing_a_daemon_writes_is_readable_by_others_and_unsupported_mounts_are_refused() {
    // The umask most machines have: without the daemon's own, everything below would
    // come out 0644/0755.
    // SAFETY: umask only swaps a process attribute.
    unsafe {
        libc::umask(0o022);
    }
    let mut cluster = Cluster::start(
        bin(),
        ClusterOptions {
            extra_daemon_args: vec!["--raft-snapshot-interval".into(), "10".into()],
            ..Default::default()
        },
    );
    let data_dir = cluster.nodes[0].data_dir.clone();
    // A task still gets the usual umask, not the daemon's.
    cluster.hoist_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--driver",
            "process",
            "sh",
            "-c",
            "umask; sleep 600",
        ],
    );
    wait_for("the task's output", Duration::from_secs(60), || {
        modes_under(&data_dir.join("tasks"))
            .into_iter()
            .filter(|(path, _)| path.ends_with("output.log"))
            .find_map(|(path, _)| {
                let text = std::fs::read_to_string(path).ok()?;
                (!text.trim().is_empty()).then_some(text)
            })
            .filter(|text| text.trim() == "0022")
    });

    // Mount types no driver runs are refused by name, from the CLI and from the API,
    // and nothing is stored.
    for (mount, kind) in [
        ("type=volume,source=data,target=/data", "volume"),
        ("src=data,dst=/data", "volume"),
        ("type=tmpfs,target=/scratch", "tmpfs"),
    ] {
        let err = cluster.hoist_err(
            0,
            &[
                "service", "create", "--detach", "--name", "mounted", "--mount", mount, "sleep",
                "60",
            ],
        );
        assert!(
            err.contains(&format!("{kind} mounts are not supported yet")),
            "{mount}: {err}"
        );
    }
    let (status, body) = unix_request(
        &cluster.nodes[0].socket,
        "POST",
        "/v1/services",
        r#"{"spec":{"name":"mounted","command":["sleep","60"],"mounts":[{"type":"tmpfs","target":"/scratch"}]}}"#,
    );
    assert!(status.contains(" 400 "), "{status} {body}");
    assert!(
        body.contains("tmpfs mounts are not supported yet"),
        "{body}"
    );
    assert_eq!(service_names(&cluster, 0), vec!["web".to_string()]);

    // Enough changes for a snapshot, archived beside the store.
    let snapshots = data_dir.join("raft/snapshots");
    let mut round = 0;
    wait_for("a raft snapshot archived", Duration::from_secs(60), || {
        round += 1;
        let label = format!("round={round}");
        cluster.hoist_ok(0, &["node", "update", "--label-add", &label, "node-1"]);
        std::fs::read_dir(&snapshots)
            .ok()?
            .flatten()
            .any(|entry| entry.path().extension().is_some_and(|ext| ext == "json"))
            .then_some(())
    });
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("cluster.json");
    cluster.hoist_ok(0, &["backup", "--output", &backup.display().to_string()]);
    assert_eq!(
        std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let must_exist = [
        "identity.json",
        "node.json",
        "raft/raft.redb",
        "raft/snapshots",
        "tasks",
    ];
    for name in must_exist {
        assert!(data_dir.join(name).exists(), "{name} is missing");
    }
    assert_eq!(readable_by_others(&data_dir), Vec::<String>::new());

    // A symbolic link planted at the backup path is refused; its target is untouched.
    let target = backups.path().join("elsewhere");
    std::fs::write(&target, "precious").unwrap();
    let planted = backups.path().join("planted.json");
    std::os::unix::fs::symlink(&target, &planted).unwrap();
    let err = cluster.hoist_err(0, &["backup", "--output", &planted.display().to_string()]);
    assert!(err.contains("is a symbolic link"), "{err}");
    assert!(err.contains("planted.json"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");

    // What an older version left readable is tightened at the next start.
    cluster.kill(0);
    for name in [
        "",
        "identity.json",
        "raft",
        "raft/raft.redb",
        "raft/snapshots",
    ] {
        let path = data_dir.join(name);
        let mode = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    assert!(!readable_by_others(&data_dir).is_empty());
    cluster.start_node(0);
    assert_eq!(readable_by_others(&data_dir), Vec::<String>::new());
    cluster.wait_all_ready(0, Duration::from_secs(30));
    assert_eq!(service_names(&cluster, 0), vec!["web".to_string()]);
}
