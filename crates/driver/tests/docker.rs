//! Integration tests of the docker driver against the real engine: a published
//! port reached from the node, environment and a read-only bind mount, stop
//! with and without the grace running out, exit codes, logs (tail and follow),
//! adoption by a second driver of the same owner (and invisibility to another
//! owner), a missing image that cannot be pulled, and health gating.
//!
//! No registry is needed. Each test builds its own image, `FROM scratch`, from
//! the crate's `hoist-test-workload` binary (`src/bin/hoist-test-workload.rs`) plus
//! the shared libraries `ldd` lists for it; the binary's first argument picks the
//! workload's role (`serve`, `exit`, `sleep`, `probe`).
//!
//! Without an engine (`/var/run/docker.sock` absent and `DOCKER_HOST` unset)
//! each test prints a note and passes, unless `HOIST_REQUIRE_DOCKER=1`, which
//! makes it fail. Every test labels its containers with its own owner and tags
//! its own image, and a [`Cleanup`] guard force-removes both when the test ends,
//! even on a failed assertion, so tests run in parallel and leave nothing.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::query_parameters::{
    BuildImageOptions, ListContainersOptions, RemoveContainerOptions, RemoveImageOptions,
};
use bollard::Docker;
use futures::StreamExt;
use hoist_driver::{
    BindMount, DockerDriver, Driver, DriverError, HealthState, LogOptions, RunSpec, TaskExit,
};

/// Long enough for a loaded CI machine, short enough to fail fast.
const DEADLINE: Duration = Duration::from_secs(60);

/// The port the workload listens on inside its container.
const TARGET_PORT: u16 = 8080;

/// The argv that runs one role of the workload binary in the test image.
fn role(name: &str) -> Vec<String> {
    // The image's ENTRYPOINT is the workload binary; the role is the argument (CMD).
    vec![name.to_owned()]
}

// ---------------------------------------------------------------------------
// Fixture: engine check, the test image, cleanup.

/// False (with a note) when there is no engine to test against, unless
/// `HOIST_REQUIRE_DOCKER=1` says that must fail.
fn engine_present() -> bool {
    let docker_host = std::env::var("DOCKER_HOST").is_ok_and(|host| !host.is_empty());
    if docker_host || Path::new("/var/run/docker.sock").exists() {
        return true;
    }
    assert!(
        std::env::var("HOIST_REQUIRE_DOCKER").as_deref() != Ok("1"),
        "HOIST_REQUIRE_DOCKER=1 but there is no docker engine \
         (/var/run/docker.sock is absent and DOCKER_HOST is unset)"
    );
    eprintln!(
        "note: skipping docker driver test: no docker engine \
         (/var/run/docker.sock absent, DOCKER_HOST unset); \
         set HOIST_REQUIRE_DOCKER=1 to make this a failure"
    );
    false
}

async fn engine() -> Docker {
    Docker::connect_with_defaults()
        .expect("docker client")
        .negotiate_version()
        .await
        .expect("docker engine answers")
}

struct Fixture {
    docker: Docker,
    /// This test's node id: every container it creates carries it.
    owner: String,
    /// This test's unique name, lower case (image names must be).
    unique: String,
    image: String,
    dir: tempfile::TempDir,
    _cleanup: Cleanup,
}

/// Removes, when dropped, every container labelled with one of `owners` and
/// every image in `images`, by force. Drop runs inside the test's runtime, so
/// the engine calls run on a thread with a runtime of their own.
struct Cleanup {
    owners: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let owners = std::mem::take(&mut self.owners);
        let images = std::mem::take(&mut self.images);
        let cleaner = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async move {
                let docker = engine().await;
                for owner in owners {
                    let options = ListContainersOptions {
                        all: true,
                        filters: Some(HashMap::from([(
                            "label".to_owned(),
                            vec![format!("hoist.node={owner}")],
                        )])),
                        ..ListContainersOptions::default()
                    };
                    let containers = docker
                        .list_containers(Some(options))
                        .await
                        .unwrap_or_default();
                    for id in containers.into_iter().filter_map(|summary| summary.id) {
                        let options = RemoveContainerOptions {
                            force: true,
                            v: true,
                            ..RemoveContainerOptions::default()
                        };
                        if let Err(err) = docker.remove_container(&id, Some(options)).await {
                            eprintln!("cleanup: cannot remove container {id}: {err}");
                        }
                    }
                }
                for image in images {
                    let options = RemoveImageOptions {
                        force: true,
                        ..RemoveImageOptions::default()
                    };
                    match docker.remove_image(&image, Some(options), None).await {
                        Ok(_) => {}
                        Err(bollard::errors::Error::DockerResponseServerError {
                            status_code: 404,
                            ..
                        }) => {}
                        Err(err) => eprintln!("cleanup: cannot remove image {image}: {err}"),
                    }
                }
            });
        });
        let _ = cleaner.join();
    }
}

/// The fixture of test `test`, with its image built (with a HEALTHCHECK when
/// `healthcheck`); `None` when the test is skipped for want of an engine.
async fn fixture(test: &str, healthcheck: bool) -> Option<Fixture> {
    if !engine_present() {
        return None;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    let unique =
        format!("{}-{}-{nanos}", test.replace('_', "-"), std::process::id()).to_lowercase();
    let owner = format!("node-{unique}");
    let image = format!("hoist-driver-test-{unique}:latest");
    // The guard exists before anything is created.
    let cleanup = Cleanup {
        owners: vec![owner.clone()],
        images: vec![image.clone()],
    };
    let docker = engine().await;
    build_image(&docker, &image, healthcheck).await;
    Some(Fixture {
        docker,
        owner,
        unique,
        image,
        dir: tempfile::tempdir().expect("tempdir"),
        _cleanup: cleanup,
    })
}

/// Builds the test image from an in-memory context: the workload binary as `/workload`,
/// the shared libraries it needs at their own paths, nothing else.
async fn build_image(docker: &Docker, tag: &str, healthcheck: bool) {
    let exe = Path::new(env!("CARGO_BIN_EXE_hoist-test-workload"));
    let libraries = shared_libraries(exe);
    let library_dirs: BTreeSet<String> = libraries
        .iter()
        .filter_map(|lib| Some(lib.parent()?.to_string_lossy().into_owned()))
        .collect();
    let mut dockerfile = format!(
        "FROM scratch\n\
         COPY rootfs/ /\n\
         ENV LD_LIBRARY_PATH={}\n\
         ENTRYPOINT [\"/workload\"]\n\
         CMD [\"serve\"]\n",
        library_dirs.into_iter().collect::<Vec<_>>().join(":")
    );
    if healthcheck {
        dockerfile.push_str(
            "HEALTHCHECK --interval=1s --timeout=3s --retries=2 \
             CMD [\"/workload\", \"probe\"]\n",
        );
    }
    let mut context = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8], mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        context.append_data(&mut header, path, bytes).expect("tar");
    };
    add("Dockerfile", dockerfile.as_bytes(), 0o644);
    add(
        "rootfs/workload",
        &std::fs::read(exe).expect("read the workload binary"),
        0o755,
    );
    for library in &libraries {
        let bytes = std::fs::read(library).expect("read shared library");
        add(&format!("rootfs{}", library.display()), &bytes, 0o755);
    }
    let context = context.into_inner().expect("tar");
    let options = BuildImageOptions {
        t: Some(tag.to_owned()),
        rm: true,
        forcerm: true,
        // Tests build the same layers in parallel and each removes its image when it
        // ends: a build that reused another test's cached layer would lose its parent.
        nocache: true,
        ..BuildImageOptions::default()
    };
    let mut steps = docker.build_image(
        options,
        None,
        Some(bollard::body_full(bytes::Bytes::from(context))),
    );
    while let Some(step) = steps.next().await {
        step.expect("building the test image");
    }
}

/// The absolute paths `ldd` lists for `exe` (none for a static binary).
fn shared_libraries(exe: &Path) -> Vec<PathBuf> {
    let output = std::process::Command::new("ldd")
        .arg(exe)
        .output()
        .expect("ldd (to copy the test binary's libraries into the test image)");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/.../libc.so.6 (0x..)" or "/lib64/ld-linux...so.2 (0x..)"
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

impl Fixture {
    fn task_id(&self, name: &str) -> String {
        format!("{}-{name}", self.unique)
    }

    /// A spec running the image's default role (`serve`) on port 8080,
    /// or `command` when given.
    fn spec(&self, task_id: &str, command: Vec<String>) -> RunSpec {
        RunSpec {
            task_id: task_id.to_owned(),
            service_id: "svc-id-1".to_owned(),
            service_name: "web".to_owned(),
            node_id: self.owner.clone(),
            node_name: "n1".to_owned(),
            command,
            env: BTreeMap::new(),
            ports: vec![TARGET_PORT],
            mounts: Vec::new(),
            limits: None,
            stop_grace: Duration::from_secs(5),
            image: Some(self.image.clone()),
            workdir: None,
            user: None,
            read_only: false,
            health: None,
            no_healthcheck: false,
            hostname: None,
            entrypoint: None,
            state_dir: self.dir.path().join(task_id),
        }
    }

    async fn driver(&self) -> DockerDriver {
        DockerDriver::connect(self.owner.clone())
            .await
            .expect("connect")
    }

    /// Ids of every container of this test's owner, running or not.
    async fn own_containers(&self) -> Vec<String> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![format!("hoist.node={}", self.owner)],
            )])),
            ..ListContainersOptions::default()
        };
        self.docker
            .list_containers(Some(options))
            .await
            .expect("list")
            .into_iter()
            .filter_map(|summary| summary.id)
            .collect()
    }
}

/// Connects to `127.0.0.1:port` until the workload answers a line.
fn fetch_line(port: u16) -> String {
    let started = Instant::now();
    loop {
        let answer = TcpStream::connect(("127.0.0.1", port)).and_then(|mut stream| {
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        });
        match answer {
            // The engine's proxy accepts before the workload listens, then
            // closes: an empty answer means "not yet".
            Ok(text) if !text.is_empty() => return text.trim().to_owned(),
            other => assert!(
                started.elapsed() < DEADLINE,
                "no answer on port {port}: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Follows the task's output until a line contains `needle`.
async fn wait_for_line(driver: &dyn Driver, task_id: &str, needle: &str) -> Vec<String> {
    let options = LogOptions {
        tail: None,
        follow: true,
    };
    let mut lines_rx = driver.logs(task_id, options).await.expect("logs");
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
    let options = LogOptions {
        tail,
        follow: false,
    };
    let mut lines_rx = driver.logs(task_id, options).await.expect("logs");
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

// ---------------------------------------------------------------------------
// The tests.

#[tokio::test]
async fn serves_on_a_published_port_and_stops_gracefully() {
    let Some(fx) = fixture("serves", false).await else {
        return;
    };
    let driver = fx.driver().await;
    let engine = driver.engine_info().await.expect("engine info");
    assert!(!engine.version.is_empty(), "{engine:?}");
    assert!(!engine.storage_driver.is_empty(), "{engine:?}");

    let data_dir = fx.dir.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    std::fs::write(data_dir.join("hello.txt"), "from-the-node\n").expect("data file");
    let task_id = fx.task_id("t1");
    let mut spec = fx.spec(&task_id, Vec::new());
    spec.mounts.push(BindMount {
        source: data_dir.clone(),
        target: PathBuf::from("/data"),
        readonly: true,
    });
    let task = driver.start(&spec).await.expect("start");
    assert!(!task.adopted);
    assert!(task.pid.is_some());
    assert_eq!(task.endpoints.len(), 1);
    assert_eq!(task.endpoints[0].target_port, TARGET_PORT);
    let host_port = task.endpoints[0].host_port;
    assert_ne!(host_port, 0);

    wait_for_line(&driver, &task_id, "serving on 8080").await;
    let answer = fetch_line(host_port);
    assert_eq!(
        answer,
        format!("task={task_id} service=web node=n1 port=8080 data=from-the-node writable=false")
    );
    assert!(!data_dir.join("written-by-task").exists());

    let listed = driver.list().await.expect("list");
    assert_eq!(
        listed
            .iter()
            .map(|t| t.task_id.as_str())
            .collect::<Vec<_>>(),
        [task_id.as_str()]
    );
    assert_eq!(driver.health(&task_id).await.expect("health"), None);
    assert!(matches!(
        driver.remove(&task_id).await,
        Err(DriverError::StillRunning { .. })
    ));

    // SIGTERM reaches the workload through the container's init and ends it
    // long before the grace period.
    let started = Instant::now();
    let exit = driver
        .stop(&task_id, Duration::from_secs(20))
        .await
        .expect("stop");
    assert_eq!(exit, TaskExit::Signaled { signal: 15 });
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(task.exit.wait().await, exit);
    assert!(driver.list().await.expect("list").is_empty());

    driver.remove(&task_id).await.expect("remove");
    assert!(fx.own_containers().await.is_empty());
    assert!(matches!(
        driver.inspect(&task_id).await,
        Err(DriverError::NotFound { .. })
    ));
}

#[tokio::test]
async fn stop_kills_after_the_grace_period() {
    let Some(fx) = fixture("stop-grace", false).await else {
        return;
    };
    let driver = fx.driver().await;
    let task_id = fx.task_id("stubborn");
    let mut spec = fx.spec(&task_id, role("serve"));
    spec.env
        .insert("HOIST_TEST_IGNORE_TERM".to_owned(), "1".to_owned());
    driver.start(&spec).await.expect("start");
    // The line comes after SIGTERM is ignored.
    wait_for_line(&driver, &task_id, "serving on").await;

    let grace = Duration::from_secs(2);
    let started = Instant::now();
    let exit = driver.stop(&task_id, grace).await.expect("stop");
    let took = started.elapsed();
    assert_eq!(exit, TaskExit::Signaled { signal: 9 });
    assert!(took >= grace, "stopped after {took:?}, before the grace");
    assert!(took < grace + Duration::from_secs(15), "{took:?}");
    driver.remove(&task_id).await.expect("remove");
}

#[tokio::test]
async fn failing_container_reports_its_exit_code_and_output() {
    let Some(fx) = fixture("exit-code", false).await else {
        return;
    };
    let driver = fx.driver().await;
    let task_id = fx.task_id("fails");
    let mut spec = fx.spec(&task_id, role("exit"));
    spec.env
        .insert("HOIST_TEST_EXIT_CODE".to_owned(), "3".to_owned());
    let task = driver.start(&spec).await.expect("start");
    assert_eq!(
        wait_exit(&driver, &task_id).await,
        TaskExit::Exited { code: 3 }
    );
    assert_eq!(task.exit.current(), Some(TaskExit::Exited { code: 3 }));
    assert!(driver.list().await.expect("list").is_empty());
    // Stopping an exited task returns its exit at once.
    assert_eq!(
        driver
            .stop(&task_id, Duration::from_secs(30))
            .await
            .expect("stop"),
        TaskExit::Exited { code: 3 }
    );

    let lines = all_lines(&driver, &task_id, None).await;
    let stderr_at = lines.iter().position(|line| line == "complaint on stderr");
    let first_at = lines.iter().position(|line| line == "line 1");
    assert!(
        stderr_at.is_some() && stderr_at < first_at,
        "stderr then stdout in {lines:?}"
    );
    assert_eq!(
        all_lines(&driver, &task_id, Some(2)).await,
        ["line 4", "line 5"]
    );
    // Following an exited task's output ends after its last line.
    let followed = tokio::time::timeout(DEADLINE, async {
        let options = LogOptions {
            tail: Some(1),
            follow: true,
        };
        let mut lines_rx = driver.logs(&task_id, options).await.expect("logs");
        let mut lines = Vec::new();
        while let Some(line) = lines_rx.recv().await {
            lines.push(line);
        }
        lines
    })
    .await
    .expect("follow of an exited task ends");
    assert_eq!(followed, ["line 5"]);

    driver.remove(&task_id).await.expect("remove");
    assert!(fx.own_containers().await.is_empty());
}

#[tokio::test]
async fn a_second_driver_of_the_same_owner_adopts_and_another_owner_does_not_see() {
    let Some(fx) = fixture("adoption", false).await else {
        return;
    };
    let first = fx.driver().await;
    let task_id = fx.task_id("adopted");
    let spec = fx.spec(&task_id, Vec::new());
    let started = first.start(&spec).await.expect("start");

    // A restarted worker: a new driver of the same node.
    let second = fx.driver().await;
    let listed = second.list().await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].task_id, task_id);
    assert!(listed[0].adopted);
    assert_eq!(listed[0].endpoints, started.endpoints);
    assert!(matches!(
        second.start(&spec).await,
        Err(DriverError::AlreadyExists { .. })
    ));

    // Another node sharing the engine sees nothing of it.
    let stranger = DockerDriver::connect(format!("{}-other", fx.owner))
        .await
        .expect("connect");
    assert!(stranger.list().await.expect("list").is_empty());
    assert!(matches!(
        stranger.inspect(&task_id).await,
        Err(DriverError::NotFound { .. })
    ));
    assert!(matches!(
        stranger.stop(&task_id, Duration::from_secs(1)).await,
        Err(DriverError::NotFound { .. })
    ));

    wait_for_line(&second, &task_id, "serving on").await;
    fetch_line(listed[0].endpoints[0].host_port);
    let exit = second
        .stop(&task_id, Duration::from_secs(20))
        .await
        .expect("stop");
    assert_eq!(exit, TaskExit::Signaled { signal: 15 });
    // The first instance's watcher saw the same end.
    let seen_by_first = tokio::time::timeout(DEADLINE, started.exit.wait())
        .await
        .expect("first driver sees the exit");
    assert_eq!(seen_by_first, exit);
    second.remove(&task_id).await.expect("remove");
    assert!(fx.own_containers().await.is_empty());
}

#[tokio::test]
async fn a_missing_image_that_cannot_be_pulled_is_a_clear_error() {
    if !engine_present() {
        return;
    }
    let unique = format!("missing-image-{}", std::process::id());
    let owner = format!("node-{unique}");
    let _cleanup = Cleanup {
        owners: vec![owner.clone()],
        images: Vec::new(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = DockerDriver::connect(owner.clone()).await.expect("connect");
    let image = format!("hoist-driver-test-absent-{unique}:nope");
    let spec = RunSpec {
        task_id: format!("{unique}-t1"),
        service_id: "svc-id-1".to_owned(),
        service_name: "web".to_owned(),
        node_id: owner.clone(),
        node_name: "n1".to_owned(),
        command: Vec::new(),
        env: BTreeMap::new(),
        ports: vec![TARGET_PORT],
        mounts: Vec::new(),
        limits: None,
        stop_grace: Duration::from_secs(5),
        image: Some(image.clone()),
        workdir: None,
        user: None,
        read_only: false,
        health: None,
        no_healthcheck: false,
        hostname: None,
        entrypoint: None,
        state_dir: dir.path().join("t1"),
    };
    let err = tokio::time::timeout(DEADLINE, driver.start(&spec))
        .await
        .expect("the pull gives up in time")
        .expect_err("no such image anywhere");
    assert!(
        matches!(err, DriverError::ImageUnavailable { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "image {image} is not on node n1 and could not be pulled: "
        )),
        "{message}"
    );
    assert!(matches!(
        driver.prepare(&spec).await,
        Err(DriverError::ImageUnavailable { .. })
    ));
    assert!(driver.list().await.expect("list").is_empty());
    assert!(matches!(
        driver.inspect(&spec.task_id).await,
        Err(DriverError::NotFound { .. })
    ));

    let mut no_image = spec.clone();
    no_image.image = None;
    assert!(matches!(
        driver.start(&no_image).await,
        Err(DriverError::InvalidSpec { field: "image", .. })
    ));
}

#[tokio::test]
async fn start_waits_for_health_and_fails_on_unhealthy() {
    let Some(fx) = fixture("health", true).await else {
        return;
    };
    let driver = fx.driver().await;

    let healthy_id = fx.task_id("healthy");
    let task = tokio::time::timeout(DEADLINE, driver.start(&fx.spec(&healthy_id, Vec::new())))
        .await
        .expect("start in time")
        .expect("start");
    assert_eq!(
        driver.health(&healthy_id).await.expect("health"),
        Some(HealthState::Healthy)
    );
    // Healthy means listening: the first request is answered.
    assert!(fetch_line(task.endpoints[0].host_port).starts_with(&format!("task={healthy_id} ")));

    let sick_id = fx.task_id("sick");
    let started = Instant::now();
    let err = tokio::time::timeout(DEADLINE, driver.start(&fx.spec(&sick_id, role("sleep"))))
        .await
        .expect("start gives up in time")
        .expect_err("never healthy");
    assert!(
        matches!(err, DriverError::Unhealthy { ref task_id, .. } if *task_id == sick_id),
        "{err:?} after {:?}",
        started.elapsed()
    );
    // The failed start left no container behind, and forgot the task.
    assert_eq!(fx.own_containers().await.len(), 1);
    assert!(matches!(
        driver.inspect(&sick_id).await,
        Err(DriverError::NotFound { .. })
    ));

    driver
        .stop(&healthy_id, Duration::from_secs(20))
        .await
        .expect("stop");
    driver.remove(&healthy_id).await.expect("remove");
    assert!(fx.own_containers().await.is_empty());
}
