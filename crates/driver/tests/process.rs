//! Integration tests of the process driver with real processes: start, list,
//! logs, stop (with and without the grace period running out), exit codes, ports,
//! adoption by a second driver instance, and bind mounts.
//!
//! Each test has its own temp directory and a [`KillGuard`] that SIGKILLs every
//! process group it started, even when an assertion fails first. Tests wait on
//! conditions with deadlines, never on fixed sleeps.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hoist_driver::{
    check_mounts_supported, BindMount, Driver, DriverError, LogOptions, ProcessDriver, RunSpec,
    RunningTask, TaskExit,
};

/// Long enough for a loaded CI machine, short enough to fail fast.
const DEADLINE: Duration = Duration::from_secs(20);

fn spec(dir: &Path, task_id: &str, script: &str) -> RunSpec {
    RunSpec {
        task_id: task_id.to_owned(),
        service_id: "svc-id-1".to_owned(),
        service_name: "web".to_owned(),
        node_id: "node-id-1".to_owned(),
        node_name: "n1".to_owned(),
        command: vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()],
        env: BTreeMap::new(),
        ports: Vec::new(),
        mounts: Vec::new(),
        limits: None,
        stop_grace: Duration::from_secs(5),
        image: None,
        workdir: None,
        user: None,
        read_only: false,
        health: None,
        no_healthcheck: false,
        hostname: None,
        entrypoint: None,
        state_dir: dir.join("task-dirs").join(task_id),
    }
}

/// SIGKILLs the process group of every task it was shown when dropped, so a
/// failing test does not leave `sleep 30`s behind.
#[derive(Default)]
struct KillGuard {
    /// (pid, start time) so we never kill a process that reused the pid.
    groups: Vec<(i32, Option<u64>)>,
}

impl KillGuard {
    fn watch(&mut self, task: &RunningTask) {
        let pid = i32::try_from(task.pid.expect("a process task has a pid")).expect("pid fits i32");
        self.groups.push((pid, start_ticks(pid)));
    }
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        for &(pid, ticks) in &self.groups {
            if ticks.is_some() && start_ticks(pid) == ticks {
                // SAFETY: killpg with a valid signal has no memory effects.
                unsafe { libc::killpg(pid, libc::SIGKILL) };
            }
        }
    }
}

fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Follows the task's output until a line contains `needle`; returns all lines
/// read so far.
async fn wait_for_line(driver: &dyn Driver, task_id: &str, needle: &str) -> Vec<String> {
    let mut lines_rx = driver
        .logs(
            task_id,
            LogOptions {
                tail: None,
                follow: true,
            },
        )
        .await
        .expect("logs");
    let mut lines = Vec::new();
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines_rx.recv().await {
            let hit = line.contains(needle);
            lines.push(line);
            if hit {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no line with {needle:?} in {lines:?}");
    lines
}

async fn all_lines(driver: &dyn Driver, task_id: &str, tail: Option<usize>) -> Vec<String> {
    let mut lines_rx = driver
        .logs(
            task_id,
            LogOptions {
                tail,
                follow: false,
            },
        )
        .await
        .expect("logs");
    let mut lines = Vec::new();
    while let Some(line) = lines_rx.recv().await {
        lines.push(line);
    }
    lines
}

async fn wait_exit(driver: &dyn Driver, task_id: &str) -> TaskExit {
    tokio::time::timeout(DEADLINE, driver.wait(task_id))
        .await
        .expect("task did not exit in time")
        .expect("wait")
}

#[tokio::test]
async fn start_list_logs_stop_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let driver: Arc<dyn Driver> =
        Arc::new(ProcessDriver::new(dir.path().join("driver")).expect("driver"));
    let mut guard = KillGuard::default();
    let run = spec(dir.path(), "task-1", "echo hi; echo oops >&2; sleep 30");

    let task = driver.start(&run).await.expect("start");
    guard.watch(&task);
    assert_eq!(driver.name(), "process");
    assert!(!task.adopted);
    assert_eq!(task.exit.current(), None);

    let listed = driver.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].task_id, "task-1");
    assert_eq!(listed[0].pid, task.pid);

    let lines = wait_for_line(driver.as_ref(), "task-1", "oops").await;
    assert!(lines.contains(&"hi".to_owned()), "{lines:?}");

    let started = Instant::now();
    let exit = driver
        .stop("task-1", Duration::from_secs(10))
        .await
        .expect("stop");
    assert_eq!(
        exit,
        TaskExit::Signaled {
            signal: libc::SIGTERM
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "SIGTERM alone should have stopped it"
    );
    assert_eq!(task.exit.wait().await, exit);
    assert!(driver.list().await.expect("list").is_empty());
    // Stopping again is harmless and tells the same exit.
    assert_eq!(
        driver
            .stop("task-1", Duration::from_secs(1))
            .await
            .expect("stop"),
        exit
    );
    // Output stays readable after the exit, until remove.
    assert_eq!(
        all_lines(driver.as_ref(), "task-1", Some(2)).await,
        ["hi", "oops"]
    );

    driver.remove("task-1").await.expect("remove");
    assert!(matches!(
        driver.inspect("task-1").await,
        Err(DriverError::NotFound { .. })
    ));
    assert!(!run.state_dir.join("output.log").exists());
    // The id is free again once removed.
    let again = driver
        .start(&spec(dir.path(), "task-1", "exit 0"))
        .await
        .expect("restart");
    guard.watch(&again);
    assert_eq!(
        wait_exit(driver.as_ref(), "task-1").await,
        TaskExit::Exited { code: 0 }
    );
}

#[tokio::test]
async fn stop_kills_a_task_that_ignores_sigterm_after_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = ProcessDriver::new(dir.path().join("driver")).expect("driver");
    let mut guard = KillGuard::default();
    // The ignored disposition is inherited by `sleep` across exec.
    let run = spec(dir.path(), "stubborn", "trap '' TERM; echo ready; sleep 30");
    let task = driver.start(&run).await.expect("start");
    guard.watch(&task);
    // Only once "ready" is printed is the trap in place.
    wait_for_line(&driver, "stubborn", "ready").await;

    let grace = Duration::from_millis(300);
    let started = Instant::now();
    let exit = driver.stop("stubborn", grace).await.expect("stop");
    assert_eq!(
        exit,
        TaskExit::Signaled {
            signal: libc::SIGKILL
        }
    );
    assert!(
        started.elapsed() >= grace,
        "killed before the grace period ended"
    );
}

#[tokio::test]
async fn exit_code_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = ProcessDriver::new(dir.path().join("driver")).expect("driver");
    let mut guard = KillGuard::default();
    let task = driver
        .start(&spec(
            dir.path(),
            "fails",
            "for i in 1 2 3 4 5; do echo line$i; done; exit 3",
        ))
        .await
        .expect("start");
    guard.watch(&task);

    assert_eq!(
        wait_exit(&driver, "fails").await,
        TaskExit::Exited { code: 3 }
    );
    assert_eq!(task.exit.wait().await, TaskExit::Exited { code: 3 });
    assert!(driver.list().await.expect("list").is_empty());
    assert!(matches!(
        driver.remove("nope").await,
        Err(DriverError::NotFound { .. })
    ));
    assert_eq!(
        all_lines(&driver, "fails", Some(2)).await,
        ["line4", "line5"]
    );
    // Following an exited task's output ends by itself after the last line.
    let followed = tokio::time::timeout(DEADLINE, async {
        let mut lines_rx = driver
            .logs(
                "fails",
                LogOptions {
                    tail: None,
                    follow: true,
                },
            )
            .await
            .expect("logs");
        let mut n_lines = 0;
        while lines_rx.recv().await.is_some() {
            n_lines += 1;
        }
        n_lines
    })
    .await
    .expect("follow should end once the task has exited");
    assert_eq!(followed, 5);
}

#[tokio::test]
async fn ports_and_identity_are_passed_in_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = ProcessDriver::new(dir.path().join("driver")).expect("driver");
    let mut guard = KillGuard::default();
    let mut run = spec(
        dir.path(),
        "ported",
        "echo \"env PORT=$PORT A=$HOIST_PORT_8080 B=$HOIST_PORT_9090 T=$HOIST_TASK S=$HOIST_SERVICE N=$HOIST_NODE X=$EXTRA\"; sleep 30",
    );
    run.ports = vec![8080, 9090];
    run.env.insert("EXTRA".to_owned(), "extra value".to_owned());
    // The driver's own variables win over the spec's.
    run.env.insert("HOIST_TASK".to_owned(), "forged".to_owned());
    let task = driver.start(&run).await.expect("start");
    guard.watch(&task);

    assert_eq!(task.endpoints.len(), 2);
    let (first, second) = (task.endpoints[0], task.endpoints[1]);
    assert_eq!((first.target_port, second.target_port), (8080, 9090));
    assert_ne!(first.host_port, second.host_port);
    assert_ne!(first.host_port, 0);

    let lines = wait_for_line(&driver, "ported", "env ").await;
    let expected = format!(
        "env PORT={} A={} B={} T=ported S=web N=n1 X=extra value",
        first.host_port, first.host_port, second.host_port
    );
    assert_eq!(lines.last(), Some(&expected));
    // The port was free: nothing else holds it (the task does not listen).
    std::net::TcpListener::bind(("0.0.0.0", first.host_port)).expect("host port is free");

    driver
        .stop("ported", Duration::from_secs(5))
        .await
        .expect("stop");
}

#[tokio::test]
async fn a_second_driver_adopts_running_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("driver");
    let mut guard = KillGuard::default();
    let mut run = spec(dir.path(), "survivor", "echo hi; sleep 30");
    run.ports = vec![80];
    let first = ProcessDriver::new(&state).expect("driver");
    let task = first.start(&run).await.expect("start");
    guard.watch(&task);
    wait_for_line(&first, "survivor", "hi").await;
    // The worker restarts: the old driver instance is gone, the task is not.
    drop(first);

    let second = ProcessDriver::new(&state).expect("driver");
    let listed = second.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    let adopted = &listed[0];
    assert_eq!(adopted.task_id, "survivor");
    assert_eq!(adopted.pid, task.pid);
    assert_eq!(adopted.endpoints, task.endpoints);
    assert!(adopted.adopted);
    assert_eq!(all_lines(&second, "survivor", None).await, ["hi"]);
    // Adoption means no duplicate: the same task cannot be started again.
    assert!(matches!(
        second.start(&run).await,
        Err(DriverError::AlreadyExists { .. })
    ));

    let exit = second
        .stop("survivor", Duration::from_secs(10))
        .await
        .expect("stop");
    // Not our child, so the status cannot be read; but it is gone.
    assert_eq!(exit, TaskExit::Unknown);
    assert_eq!(adopted.exit.wait().await, TaskExit::Unknown);
    assert!(second.list().await.expect("list").is_empty());

    // A third instance sees the exit that was recorded, and no running task.
    let third = ProcessDriver::new(&state).expect("driver");
    assert!(third.list().await.expect("list").is_empty());
    assert!(third.wait("survivor").await.is_ok());
    third.remove("survivor").await.expect("remove");
}

#[tokio::test]
async fn start_errors_are_typed_and_release_the_task_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = ProcessDriver::new(dir.path().join("driver")).expect("driver");
    let mut guard = KillGuard::default();

    let mut missing = spec(dir.path(), "t-missing", "");
    missing.command = vec!["/nonexistent/program".to_owned()];
    assert!(matches!(
        driver.start(&missing).await,
        Err(DriverError::Spawn { .. })
    ));

    let bad_id = spec(dir.path(), "../escape", "exit 0");
    assert!(matches!(
        driver.start(&bad_id).await,
        Err(DriverError::InvalidSpec {
            field: "task_id",
            ..
        })
    ));
    let mut no_command = spec(dir.path(), "t-empty", "");
    no_command.command.clear();
    assert!(matches!(
        driver.prepare(&no_command).await,
        Err(DriverError::InvalidSpec {
            field: "command",
            ..
        })
    ));

    // The failed start left nothing behind: the same id starts fine now.
    let fixed = spec(dir.path(), "t-missing", "exit 0");
    let task = driver.start(&fixed).await.expect("start");
    guard.watch(&task);
    assert_eq!(
        wait_exit(&driver, "t-missing").await,
        TaskExit::Exited { code: 0 }
    );
}

#[tokio::test]
async fn bind_mounts_need_root_and_are_private_to_the_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = ProcessDriver::new(dir.path().join("driver")).expect("driver");
    let mut guard = KillGuard::default();
    let source = dir.path().join("source");
    std::fs::create_dir(&source).expect("mkdir");
    std::fs::write(source.join("hello.txt"), "from the node\n").expect("write");
    let target = dir.path().join("mnt").join("data");
    let script = format!(
        "cat {target}/hello.txt; if touch {target}/new 2>/dev/null; then echo writable; else echo readonly; fi",
        target = target.display()
    );
    let mut run = spec(dir.path(), "mounted", &script);
    run.mounts = vec![BindMount {
        source: source.clone(),
        target: target.clone(),
        readonly: true,
    }];

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(matches!(
            check_mounts_supported(),
            Err(DriverError::MountsNeedRoot { .. })
        ));
        let err = driver.start(&run).await.expect_err("mounts need root");
        assert!(err.to_string().contains("bind mounts need root"), "{err}");
        // `.ci/run` sets HOIST_REQUIRE_ROOT when it runs as root: there the mount itself
        // must be tested, not only its refusal.
        if std::env::var_os("HOIST_REQUIRE_ROOT").is_some() {
            panic!("HOIST_REQUIRE_ROOT is set but this test does not run as root (bind mounts)");
        }
        eprintln!("skipping the bind mount itself: it needs root (set HOIST_REQUIRE_ROOT to make this a failure)");
        return;
    }
    check_mounts_supported().expect("root can mount");
    let task = driver.start(&run).await.expect("start");
    guard.watch(&task);
    assert_eq!(
        wait_exit(&driver, "mounted").await,
        TaskExit::Exited { code: 0 }
    );
    assert_eq!(
        all_lines(&driver, "mounted", None).await,
        ["from the node", "readonly"]
    );
    // The target was created on the node, but the mount stayed in the task's
    // namespace: the node sees an empty directory.
    assert!(target.is_dir());
    assert_eq!(std::fs::read_dir(&target).expect("read_dir").count(), 0);
    assert!(!source.join("new").exists());
}

/// Whether this test can use the node's control groups; without root it cannot, and
/// says so (a failure under `HOIST_REQUIRE_ROOT`, which `.ci/run` sets as root).
fn cgroups_writable(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("HOIST_REQUIRE_ROOT").is_none(),
        "HOIST_REQUIRE_ROOT is set but this test does not run as root ({what})"
    );
    eprintln!("skipping {what}: cgroups need root (set HOIST_REQUIRE_ROOT to make this a failure)");
    false
}

#[tokio::test]
async fn a_task_over_its_memory_limit_is_killed_as_out_of_memory_and_its_cgroup_removed() {
    if !cgroups_writable("memory limits") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = ProcessDriver::new(dir.path().join("driver")).expect("driver");
    let mut guard = KillGuard::default();
    let task_id = format!("oom-{}", std::process::id());
    // The shell keeps the whole 200 MB substitution in memory: ten times the limit.
    let mut run = spec(
        dir.path(),
        &task_id,
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}",
    );
    run.limits = Some(hoist_driver::Limits {
        nano_cpus: None,
        memory_bytes: Some(20 << 20),
    });
    let task = driver.start(&run).await.expect("start");
    guard.watch(&task);
    let exit = wait_exit(&driver, &task_id).await;
    assert_eq!(exit, TaskExit::OutOfMemory, "{exit}");
    assert!(exit.to_string().contains("out of memory"), "{exit}");
    let group = Path::new("/sys/fs/cgroup/memory/hoist").join(&task_id);
    let deadline = Instant::now() + DEADLINE;
    while group.exists() {
        assert!(
            Instant::now() < deadline,
            "{} was not removed",
            group.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_cpu_and_memory_limited_task_runs_inside_its_cgroup() {
    if !cgroups_writable("cpu limits") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = ProcessDriver::new(dir.path().join("driver")).expect("driver");
    let mut guard = KillGuard::default();
    let task_id = format!("limited-{}", std::process::id());
    let mut run = spec(dir.path(), &task_id, "sleep 30");
    run.limits = Some(hoist_driver::Limits {
        nano_cpus: Some(500_000_000),
        memory_bytes: Some(64 << 20),
    });
    let task = driver.start(&run).await.expect("start");
    guard.watch(&task);
    let pid = task.pid.expect("a pid");
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let inside = format!("/hoist/{task_id}");
    assert!(
        membership
            .lines()
            .any(|line| line.contains(":memory:") && line.ends_with(&inside)),
        "{membership}"
    );
    assert!(
        membership
            .lines()
            .any(|line| line.contains("cpu") && line.ends_with(&inside)),
        "{membership}"
    );
    let read = |path: &str| std::fs::read_to_string(path).expect("a limit file");
    assert_eq!(
        read(&format!(
            "/sys/fs/cgroup/cpu/hoist/{task_id}/cpu.cfs_quota_us"
        ))
        .trim(),
        "50000"
    );
    assert_eq!(
        read(&format!(
            "/sys/fs/cgroup/memory/hoist/{task_id}/memory.limit_in_bytes"
        ))
        .trim(),
        (64u64 << 20).to_string()
    );
    driver
        .stop(&task_id, Duration::from_secs(5))
        .await
        .expect("stop");
    let deadline = Instant::now() + DEADLINE;
    while Path::new(&format!("/sys/fs/cgroup/cpu/hoist/{task_id}")).exists() {
        assert!(Instant::now() < deadline, "the cpu group was not removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
