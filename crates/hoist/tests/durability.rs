//! What a node keeps on disk: who may read it (file modes, backups), what a new spec may
//! ask for (mount types no driver runs), and what happens when the store is damaged or
//! the disk fills up.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hoist_testkit::hoist_bin;
use hoist_testkit::{wait_for, Cluster, ClusterOptions};

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

/// Mount specs the CLI refuses by name, with the kind of mount each names: no driver
/// runs volumes or tmpfs yet.
const UNSUPPORTED_MOUNTS: &[(&str, &str)] = &[
    ("type=volume,source=data,target=/data", "volume"),
    ("src=data,dst=/data", "volume"),
    ("type=tmpfs,target=/scratch", "tmpfs"),
];

#[test]
fn nothing_a_daemon_writes_is_readable_by_others_and_unsupported_mounts_are_refused() {
    // The umask most machines have: without the daemon's own, everything below would
    // come out 0644/0755.
    // SAFETY: umask only swaps a process attribute.
    unsafe {
        libc::umask(0o022);
    }
    let mut cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            extra_daemon_args: vec!["--raft-snapshot-interval".into(), "10".into()],
            ..Default::default()
        },
    );
    let data_dir = cluster.nodes[0].data_dir.clone();
    a_task_gets_the_usual_umask(&cluster, &data_dir);
    unsupported_mounts_are_refused(&cluster);
    a_snapshot_is_archived(&cluster, &data_dir);
    let backups = tempfile::tempdir().unwrap();
    the_backup_and_the_data_dir_are_private(&cluster, &data_dir, backups.path());
    a_link_at_the_backup_path_is_refused(&cluster, backups.path());
    older_modes_are_tightened_at_start(&mut cluster, &data_dir);
}

/// A task still gets the usual umask, not the daemon's.
fn a_task_gets_the_usual_umask(cluster: &Cluster, data_dir: &Path) {
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
}

/// Mount types no driver runs are refused by name, from the CLI and from the API,
/// and nothing is stored.
fn unsupported_mounts_are_refused(cluster: &Cluster) {
    for &(mount, kind) in UNSUPPORTED_MOUNTS {
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
    assert_eq!(service_names(cluster, 0), vec!["web".to_string()]);
}

/// Enough changes for a snapshot, archived beside the store.
fn a_snapshot_is_archived(cluster: &Cluster, data_dir: &Path) {
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
}

/// A backup is written 0600, and nothing in the data directory is readable by others.
fn the_backup_and_the_data_dir_are_private(cluster: &Cluster, data_dir: &Path, backups: &Path) {
    let backup = backups.join("cluster.json");
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
    assert_eq!(readable_by_others(data_dir), Vec::<String>::new());
}

/// A symbolic link planted at the backup path is refused; its target is untouched.
fn a_link_at_the_backup_path_is_refused(cluster: &Cluster, backups: &Path) {
    let target = backups.join("elsewhere");
    std::fs::write(&target, "precious").unwrap();
    let planted = backups.join("planted.json");
    std::os::unix::fs::symlink(&target, &planted).unwrap();
    let err = cluster.hoist_err(0, &["backup", "--output", &planted.display().to_string()]);
    assert!(err.contains("is a symbolic link"), "{err}");
    assert!(err.contains("planted.json"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
}

/// What an older version left readable is tightened at the next start.
fn older_modes_are_tightened_at_start(cluster: &mut Cluster, data_dir: &Path) {
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
    assert!(!readable_by_others(data_dir).is_empty());
    cluster.start_node(0);
    assert_eq!(readable_by_others(data_dir), Vec::<String>::new());
    cluster.wait_all_ready(0, Duration::from_secs(30));
    assert_eq!(service_names(cluster, 0), vec!["web".to_string()]);
}

/// Runs node `index`'s daemon on its data directory outside the kit (it is expected
/// to refuse to start) and returns its exit status and everything it printed.
fn start_refused(cluster: &Cluster, index: usize) -> (std::process::ExitStatus, String) {
    let node = &cluster.nodes[index];
    let mut child = std::process::Command::new(hoist_bin!())
        .args(["daemon", "--data-dir"])
        .arg(&node.data_dir)
        .args([
            "--listen-addr",
            &node.listen_addr(),
            "--hostname",
            &node.name,
        ])
        .env("HOIST_LOG", "info,openraft=off")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(
        &format!("{} to exit", node.name),
        Duration::from_secs(30),
        || child.try_wait().ok().flatten(),
    );
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (status, text)
}

fn raft_voters(cluster: &Cluster, index: usize) -> Option<usize> {
    let info = cluster.json(index, &["info"])?;
    info["managers"].as_u64().map(|n| n as usize)
}

#[test]
fn a_voter_without_its_store_is_refused_by_itself_and_by_the_leader() {
    let mut cluster = Cluster::start(
        hoist_bin!(),
        ClusterOptions {
            managers: 3,
            ..Default::default()
        },
    );
    cluster.hoist_ok(
        0,
        &[
            "service", "create", "--detach", "--name", "before", "--driver", "process", "sleep",
            "600",
        ],
    );
    let leader = wait_for("a leader", Duration::from_secs(30), || cluster.leader(0));
    let voter = (0..3).find(|index| *index != leader).unwrap();
    let store = cluster.nodes[voter].data_dir.join("raft/raft.redb");
    cluster.kill(voter);
    a_damaged_store_is_refused_by_the_node(&cluster, voter, &store);
    the_others_keep_the_quorum_and_the_data(&cluster, leader);
    a_blank_voter_is_refused_by_the_leader(&mut cluster, voter, leader);
}

/// A truncated, an empty and a missing store: each time the node refuses to start,
/// names the file (and for a damaged one the ways back), and leaves it be.
fn a_damaged_store_is_refused_by_the_node(cluster: &Cluster, voter: usize, store: &Path) {
    let store_shown = store.display().to_string();
    // A truncated store: the node names the file and the ways back, and leaves it be.
    let len = std::fs::metadata(store).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(store)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (status, text) = start_refused(cluster, voter);
    assert!(!status.success(), "{text}");
    assert!(text.contains(&store_shown), "{text}");
    assert!(text.contains("hoist node rm"), "{text}");
    assert!(text.contains("backup"), "{text}");
    assert_eq!(std::fs::metadata(store).unwrap().len(), len / 2);

    // A zero-length store, as a crash during creation or a careless copy leaves it.
    std::fs::write(store, b"").unwrap();
    let (status, text) = start_refused(cluster, voter);
    assert!(!status.success(), "{text}");
    assert!(text.contains(&format!("{store_shown} is empty")), "{text}");
    assert_eq!(std::fs::metadata(store).unwrap().len(), 0, "not re-created");

    // The whole raft/ directory deleted.
    std::fs::remove_dir_all(store.parent().unwrap()).unwrap();
    let (status, text) = start_refused(cluster, voter);
    assert!(!status.success(), "{text}");
    assert!(
        text.contains(&format!("{store_shown} is missing")),
        "{text}"
    );
    assert!(!store.exists(), "not re-created");
}

/// The other two keep the quorum and the data.
fn the_others_keep_the_quorum_and_the_data(cluster: &Cluster, leader: usize) {
    assert_eq!(service_names(cluster, leader), vec!["before".to_string()]);
    cluster.hoist_ok(
        leader,
        &[
            "service", "create", "--detach", "--name", "after", "--driver", "process", "sleep",
            "600",
        ],
    );
}

/// Its own check bypassed (node.json edited to say it is no voter, as an operator
/// might to "fix" the refusal), the node comes back with a blank store and asks to
/// be a voter again: the leader refuses it, and its replication to the node does
/// not take the lost entries for a bug (openraft's debug builds would panic).
fn a_blank_voter_is_refused_by_the_leader(cluster: &mut Cluster, voter: usize, leader: usize) {
    let record_path = cluster.nodes[voter].data_dir.join("node.json");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record_path).unwrap()).unwrap();
    assert_eq!(record["raft_voter"], true, "{record}");
    record["raft_voter"] = false.into();
    std::fs::write(&record_path, record.to_string()).unwrap();
    cluster.start_node(voter);
    wait_for(
        "the leader refusing the blank voter",
        Duration::from_secs(60),
        || {
            let log = std::fs::read_to_string(&cluster.nodes[voter].log).ok()?;
            log.contains("came back with a blank raft store")
                .then_some(())
        },
    );
    // Refused twice over: its request to be a voter, and its log that went back.
    let leader_log = wait_for(
        "the leader's replication refusing the lost entries",
        Duration::from_secs(30),
        || {
            let log = std::fs::read_to_string(&cluster.nodes[leader].log).ok()?;
            log.contains("lost raft entries it had confirmed")
                .then_some(log)
        },
    );
    assert!(
        leader_log.contains("a raft voter came back with a blank store: refused"),
        "{}",
        cluster.log_tail(leader, 30)
    );
    // The leader did not fall over, and the cluster of three voters still commits.
    assert!(
        !leader_log.contains("panicked"),
        "{}",
        cluster.log_tail(leader, 30)
    );
    assert_eq!(raft_voters(cluster, leader), Some(3));
    cluster.hoist_ok(
        leader,
        &[
            "service", "create", "--detach", "--name", "later", "--driver", "process", "sleep",
            "600",
        ],
    );
    let mut listed = service_names(cluster, leader);
    listed.sort();
    assert_eq!(listed, vec!["after", "before", "later"]);
}

/// A small tmpfs mounted over a directory, unmounted when dropped, even if the test
/// fails (lazily, so that a process still holding files there cannot keep it).
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a tmpfs on {}", dir.display());
        SmallDisk {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// A daemon this test started itself (to see its exit status), killed when dropped.
struct OwnDaemon(std::process::Child);

impl Drop for OwnDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_full_disk_makes_the_daemon_exit_with_the_cause() {
    // SAFETY: geteuid only reads a process attribute.
    if unsafe { libc::geteuid() } != 0 {
        // `.ci/run` sets HOIST_REQUIRE_ROOT when it runs as root: there this must run.
        if std::env::var_os("HOIST_REQUIRE_ROOT").is_some() {
            panic!(
                "HOIST_REQUIRE_ROOT is set but this test does not run as root (it mounts a tmpfs)"
            );
        }
        eprintln!(
            "skipping: mounting a tmpfs needs root (set HOIST_REQUIRE_ROOT to make this a failure)"
        );
        return;
    }
    let mut cluster = Cluster::spawn(hoist_bin!(), 1);
    cluster.kill(0);
    let node = &cluster.nodes[0];
    let _disk = SmallDisk::mount(&node.data_dir, "4m");
    let log_path = node.data_dir.with_extension("own.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut daemon = OwnDaemon(
        std::process::Command::new(hoist_bin!())
            .args(["daemon", "--data-dir"])
            .arg(&node.data_dir)
            .args([
                "--listen-addr",
                &node.listen_addr(),
                "--hostname",
                &node.name,
            ])
            .env("HOIST_LOG", "info,openraft=off")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_for("the control socket", Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(&node.socket)
            .ok()
            .map(|_| ())
    });
    cluster.hoist_ok(0, &["init"]);

    // Fill what is left of the disk, then keep writing to the cluster state until the
    // store cannot grow any more.
    let filler = node.data_dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    // Under the label value limit: every write is a valid change that needs room.
    let value = "x".repeat(1000);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut round = 0;
    let mut last_answer = String::new();
    let status = loop {
        if let Some(status) = daemon.0.try_wait().ok().flatten() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not exit on the full disk after {round} writes; the last answered: {last_answer}\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        round += 1;
        let label = format!("fill{round}={value}");
        let output = cluster.hoist(0, &["node", "update", "--label-add", &label, &node.name]);
        last_answer = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!last_answer.contains("invalid"), "{last_answer}");
    };
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!status.success(), "{log}");
    assert!(log.contains("raft stopped on a fatal error"), "{log}");
    assert!(log.contains("No space left on device"), "{log}");
}
