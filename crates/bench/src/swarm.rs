//! `hoist-bench swarm [--sizes 10,30] [--runs 1]`: Hoist next to Docker Swarm mode on the
//! local Docker Engine, the same image, the same engine, in one run.
//!
//! For each size N (and each run), on a single-node swarm (`docker swarm init` on
//! 127.0.0.1, on a free port rather than 2377, which Hoist's daemons use) and on a local
//! Hoist cluster (1 manager + 2 workers, daemons of the release `hoist` binary next to
//! this one, all on the same engine):
//! - all running: from `service create --detach --replicas N` until N tasks run;
//! - replace: `docker kill` one task's container, until N tasks run again with a new task
//!   in its place (both with their default restart delay, 5 s);
//!
//! then `service rm`, and a wait until the containers are gone.
//!
//! Both are polled the same way, every 50 ms, through their APIs on unix sockets (the
//! engine's `/tasks` for Swarm, the daemon's service inspect and tasks endpoints for Hoist); the
//! commands themselves go through the `docker` and `hoist` CLIs.
//!
//! The image `hoist-hello:bench` is `FROM scratch`, the `hoist` binary and the shared
//! libraries `ldd` lists (no registry). Swarm services use `--no-resolve-image` (no
//! registry to ask for a digest). Nothing is published: Swarm's ingress needs IPVS, which
//! this kind of machine lacks, so the routing mesh is left out of the comparison.
//!
//! The engine is left as it was found: the run refuses to start if the engine is in a
//! swarm or the image tag exists, and a guard (Drop) removes the services, containers,
//! image, the swarm and the `docker_gwbridge` network it made, even on error or panic.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hoist_api::endpoint::{self as api, Endpoint};
use hoist_api::{Client, ServiceView, TaskView};
use hoist_testkit::{Cluster, ClusterOptions};
use hoist_types::task::{DesiredState, TaskState};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

const IMAGE: &str = "hoist-hello:bench";
const SWARM_SERVICE: &str = "hb-swarm";
const HOIST_SERVICE: &str = "hb";
const POLL: Duration = Duration::from_millis(50);
const TIMEOUT: Duration = Duration::from_secs(180);
/// Pause between "all running" and the kill, so both start from a settled service.
const SETTLE: Duration = Duration::from_secs(2);

fn hoist_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name("hoist");
    if !path.exists() {
        bail!(
            "{} is missing: build it first with `cargo build --release -p hoist`",
            path.display()
        );
    }
    Ok(path)
}

/// `docker ARGS`, its stdout, or an error with its stderr.
fn docker(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running the docker CLI")?;
    if !output.status.success() {
        bail!(
            "`docker {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `docker ARGS` for cleanup: failures are only reported.
fn docker_quiet(args: &[&str]) {
    if let Err(err) = docker(args) {
        eprintln!("cleanup: {err:#}");
    }
}

fn docker_socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => PathBuf::from(&host["unix://".len()..]),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

/// Ids of containers carrying `label` (`key` or `key=value`): all of them, or only the
/// running ones.
fn labelled(label: &str, all: bool) -> Vec<String> {
    let filter = format!("label={label}");
    let mut args = vec!["ps", "-q", "--no-trunc", "--filter", &filter];
    if all {
        args.push("-a");
    }
    docker(&args)
        .map(|out| out.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Ids of containers (any state) carrying `label`.
fn containers_with_label(label: &str) -> Vec<String> {
    labelled(label, true)
}

/// Ids of containers whose `hoist.node` label is one of `node_ids`: all of them, or only
/// the running ones.
fn hoist_containers_in(node_ids: &[String], all: bool) -> Vec<String> {
    node_ids
        .iter()
        .flat_map(|id| labelled(&format!("hoist.node={id}"), all))
        .collect()
}

/// Ids of containers (any state) whose `hoist.node` label is one of `node_ids`.
fn hoist_containers(node_ids: &[String]) -> Vec<String> {
    hoist_containers_in(node_ids, true)
}

/// Undoes everything the benchmark did to the engine, on every way out.
struct Guard {
    image_built: bool,
    swarm_joined: bool,
    /// Whether `docker_gwbridge` existed before `swarm init` (which creates it).
    gwbridge_existed: bool,
    /// The Hoist cluster's node ids: their containers are removed (the cluster itself is
    /// dropped, daemons killed, before this guard).
    hoist_nodes: Vec<String>,
    build_dir: Option<PathBuf>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.swarm_joined {
            let _ = docker(&["service", "rm", SWARM_SERVICE]);
            let label = format!("com.docker.swarm.service.name={SWARM_SERVICE}");
            let deadline = Instant::now() + Duration::from_secs(30);
            while !containers_with_label(&label).is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            let state =
                docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]).unwrap_or_default();
            if state.trim() != "inactive" {
                docker_quiet(&["swarm", "leave", "--force"]);
            }
            for id in containers_with_label(&label) {
                docker_quiet(&["rm", "-f", &id]);
            }
            if !self.gwbridge_existed {
                // The bridge may still have an endpoint for a moment after leaving.
                for _ in 0..20 {
                    let exists =
                        docker(&["network", "ls", "-q", "--filter", "name=^docker_gwbridge$"])
                            .map(|out| !out.trim().is_empty())
                            .unwrap_or(false);
                    if !exists || docker(&["network", "rm", "docker_gwbridge"]).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
        for id in hoist_containers(&self.hoist_nodes) {
            docker_quiet(&["rm", "-f", &id]);
        }
        if self.image_built {
            docker_quiet(&["rmi", "-f", IMAGE]);
        }
        if let Some(dir) = self.build_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Builds `hoist-hello:bench`: FROM scratch, `hoist` and the libraries `ldd` lists.
fn build_image(bin: &Path, guard: &mut Guard) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("hoist-bench-swarm-{}", std::process::id()));
    guard.build_dir = Some(dir.clone());
    let root = dir.join("root");
    std::fs::create_dir_all(&root)?;
    std::fs::copy(bin, root.join("hoist"))?;
    let ldd = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(path) = line.split_whitespace().find(|word| word.starts_with('/')) {
            let target = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().context("library path")?)?;
            std::fs::copy(path, &target).with_context(|| format!("copying {path}"))?;
        }
    }
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY root/ /\nENTRYPOINT [\"/hoist\"]\nCMD [\"hello\"]\n",
    )?;
    guard.image_built = true;
    docker(&["build", "-q", "-t", IMAGE, &dir.display().to_string()])?;
    Ok(())
}

/// Polls `check` every [`POLL`] until it is true; the time since `started`.
async fn time_until<F, Fut>(what: &str, started: Instant, mut check: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    loop {
        if check().await? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > TIMEOUT {
            bail!("timed out after {TIMEOUT:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The swarm service's tasks whose desired state is running: `(task id, state, container)`.
async fn swarm_tasks(engine: &Client) -> anyhow::Result<Vec<(String, String, String)>> {
    let filters = format!(r#"{{"service":["{SWARM_SERVICE}"],"desired-state":["running"]}}"#);
    let tasks: Value = engine
        .get_foreign(&format!(
            "/tasks?filters={}",
            utf8_percent_encode(&filters, NON_ALPHANUMERIC)
        ))
        .await
        .context("listing the swarm's tasks")?;
    Ok(tasks
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .map(|task| {
                    let text = |value: &Value| value.as_str().unwrap_or_default().to_string();
                    (
                        text(&task["ID"]),
                        text(&task["Status"]["State"]),
                        text(&task["Status"]["ContainerStatus"]["ContainerID"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Swarm: (all running, replace) for `n` replicas.
async fn swarm_round(engine: &Client, n: usize) -> anyhow::Result<(Duration, Duration)> {
    let replicas = n.to_string();
    let started = Instant::now();
    docker(&[
        "service",
        "create",
        "--detach",
        "--no-resolve-image",
        "--name",
        SWARM_SERVICE,
        "--replicas",
        &replicas,
        IMAGE,
    ])?;
    let all_running = time_until("the swarm's replicas running", started, || async {
        let tasks = swarm_tasks(engine).await?;
        Ok(tasks
            .iter()
            .filter(|(_, state, _)| state == "running")
            .count()
            == n)
    })
    .await?;

    tokio::time::sleep(SETTLE).await;
    let (victim, _, container) = swarm_tasks(engine)
        .await?
        .into_iter()
        .find(|(_, state, container)| state == "running" && !container.is_empty())
        .context("no running swarm task to kill")?;
    let killed = Instant::now();
    docker(&["kill", &container])?;
    let replace = time_until("the swarm's replacement running", killed, || async {
        let tasks = swarm_tasks(engine).await?;
        Ok(tasks
            .iter()
            .filter(|(id, state, _)| state == "running" && *id != victim)
            .count()
            == n)
    })
    .await?;

    docker(&["service", "rm", SWARM_SERVICE])?;
    let label = format!("com.docker.swarm.service.name={SWARM_SERVICE}");
    time_until("the swarm's containers gone", Instant::now(), || async {
        Ok(containers_with_label(&label).is_empty())
    })
    .await?;
    Ok((all_running, replace))
}

/// Hoist: (all running, replace, ended containers left after `service rm`) for `n`
/// replicas.
async fn hoist_round(
    cluster: &Cluster,
    api: &Client,
    node_ids: &[String],
    n: usize,
) -> anyhow::Result<(Duration, Duration, usize)> {
    let replicas = n.to_string();
    let started = Instant::now();
    let output = cluster.hoist(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            HOIST_SERVICE,
            "--replicas",
            &replicas,
            IMAGE,
        ],
    );
    if !output.status.success() {
        bail!(
            "hoist service create: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let all_running = time_until("Hoist's replicas running", started, || async {
        let view: ServiceView = api.call::<api::ServiceInspect>(HOIST_SERVICE, &()).await?;
        Ok(view.running == n as u64 && view.desired == n as u64)
    })
    .await?;

    tokio::time::sleep(SETTLE).await;
    let running = |view: &TaskView| {
        view.task.desired_state == DesiredState::Running
            && view.task.status.state == TaskState::Running
    };
    let tasks: Vec<TaskView> = api.call::<api::ServiceTasks>(HOIST_SERVICE, &()).await?;
    let victim = tasks
        .iter()
        .find(|view| running(view))
        .context("no running Hoist task to kill")?
        .task
        .id
        .to_string();
    let killed = Instant::now();
    docker(&["kill", &format!("hoist-{HOIST_SERVICE}.{victim}")])?;
    let replace = time_until("Hoist's replacement running", killed, || async {
        let tasks: Vec<TaskView> = api.call::<api::ServiceTasks>(HOIST_SERVICE, &()).await?;
        Ok(tasks
            .iter()
            .filter(|view| running(view) && view.task.id.to_string() != victim)
            .count()
            == n)
    })
    .await?;

    let output = cluster.hoist(0, &["service", "rm", HOIST_SERVICE]);
    if !output.status.success() {
        bail!(
            "hoist service rm: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    // Hoist's workers keep an ended task's container (its logs) for 10 minutes, even
    // after `service rm`; Swarm removes them with the service. Wait for the running ones
    // to stop, then remove the ended ones here so the next round starts clean.
    time_until("Hoist's containers stopped", Instant::now(), || async {
        Ok(hoist_containers_in(node_ids, false).is_empty())
    })
    .await?;
    let ended = hoist_containers(node_ids);
    for id in &ended {
        docker_quiet(&["rm", "-f", id]);
    }
    Ok((all_running, replace, ended.len()))
}

fn sizes_arg(args: &[String]) -> anyhow::Result<Vec<usize>> {
    match args.iter().position(|arg| arg == "--sizes") {
        Some(index) => args
            .get(index + 1)
            .context("--sizes needs a value, such as 10,30")?
            .split(',')
            .map(|size| {
                let size: usize = size.trim().parse().context("--sizes takes numbers")?;
                if size == 0 {
                    bail!("--sizes takes numbers above 0");
                }
                Ok(size)
            })
            .collect(),
        None => Ok(vec![10, 30]),
    }
}

fn runs_arg(args: &[String]) -> anyhow::Result<usize> {
    match args.iter().position(|arg| arg == "--runs") {
        Some(index) => {
            let runs: usize = args
                .get(index + 1)
                .context("--runs needs a value")?
                .parse()
                .context("--runs needs a number")?;
            if runs == 0 {
                bail!("--runs must be at least 1");
            }
            Ok(runs)
        }
        None => Ok(1),
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() - 1) / 2]
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let sizes = sizes_arg(args)?;
    let runs = runs_arg(args)?;
    let bin = hoist_binary()?;

    let version = docker(&["version", "--format", "{{.Server.Version}}"])
        .context("no Docker Engine answers")?;
    let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
    if state.trim() != "inactive" {
        bail!(
            "this engine is already in a swarm (state {:?}): the benchmark would have to leave it. Run it on an engine outside any swarm.",
            state.trim()
        );
    }
    if !docker(&["images", "-q", IMAGE])?.trim().is_empty() {
        bail!("the image {IMAGE} already exists (a previous run killed?): remove it with `docker rmi {IMAGE}` first");
    }
    let gwbridge_existed = !docker(&["network", "ls", "-q", "--filter", "name=^docker_gwbridge$"])?
        .trim()
        .is_empty();

    let mut guard = Guard {
        image_built: false,
        swarm_joined: false,
        gwbridge_existed,
        hoist_nodes: Vec::new(),
        build_dir: None,
    };
    let outcome = tokio::select! {
        outcome = measure(&bin, &sizes, runs, version.trim(), &mut guard) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    eprintln!("cleaning up: swarm leave, service, containers, image");
    drop(guard);
    outcome
}

async fn measure(
    bin: &Path,
    sizes: &[usize],
    runs: usize,
    engine_version: &str,
    guard: &mut Guard,
) -> anyhow::Result<()> {
    eprintln!("building {IMAGE} from {}", bin.display());
    build_image(bin, guard)?;

    // Not Swarm's default 0.0.0.0:2377: Hoist daemons (these and any test's) listen on
    // 127.A.B.n:2377, which a wildcard bind of the same port would take from them.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    eprintln!("docker swarm init --advertise-addr {addr} --listen-addr {addr}");
    guard.swarm_joined = true;
    docker(&[
        "swarm",
        "init",
        "--advertise-addr",
        &addr,
        "--listen-addr",
        &addr,
    ])?;
    let engine = Client::unix(docker_socket())?;

    eprintln!("starting a Hoist cluster: 1 manager, 2 workers");
    let cluster = Cluster::start(
        bin,
        ClusterOptions {
            managers: 1,
            workers: 2,
            ..Default::default()
        },
    );
    let node_ids: Vec<String> = cluster
        .node_ls(0)
        .context("hoist node ls")?
        .iter()
        .filter_map(|node| node["id"].as_str().map(str::to_string))
        .collect();
    guard.hoist_nodes = node_ids.clone();
    let api = Client::unix(&cluster.nodes[0].socket)?;

    let mut rows = Vec::new();
    let mut ended_left = 0;
    for &n in sizes {
        let mut samples: [Vec<Duration>; 4] = Default::default();
        for run in 1..=runs {
            let (swarm_up, swarm_replace) = swarm_round(&engine, n).await?;
            let (hoist_up, hoist_replace, ended) =
                hoist_round(&cluster, &api, &node_ids, n).await?;
            ended_left = ended_left.max(ended);
            eprintln!(
                "N={n} run {run}/{runs}: all running swarm {:.2} s, hoist {:.2} s; replace swarm {:.2} s, hoist {:.2} s",
                swarm_up.as_secs_f64(),
                hoist_up.as_secs_f64(),
                swarm_replace.as_secs_f64(),
                hoist_replace.as_secs_f64()
            );
            for (index, sample) in [swarm_up, hoist_up, swarm_replace, hoist_replace]
                .into_iter()
                .enumerate()
            {
                samples[index].push(sample);
            }
        }
        let [swarm_up, hoist_up, swarm_replace, hoist_replace] =
            samples.map(median).map(|took| took.as_secs_f64());
        rows.push(vec![
            n.to_string(),
            format!("{swarm_up:.2} s"),
            format!("{hoist_up:.2} s"),
            format!("{:.2}", swarm_up / hoist_up),
            format!("{swarm_replace:.2} s"),
            format!("{hoist_replace:.2} s"),
            format!("{:.2}", swarm_replace / hoist_replace),
        ]);
    }
    drop(cluster);
    // The daemons are gone: nothing restarts a container now.
    let left: BTreeSet<String> = hoist_containers(&node_ids).into_iter().collect();
    if !left.is_empty() {
        eprintln!(
            "note: {} Hoist container(s) were left after the cluster stopped; removing them",
            left.len()
        );
    }
    for id in left {
        docker_quiet(&["rm", "-f", &id]);
    }

    println!();
    println!(
        "Docker Engine {engine_version}; {IMAGE} (FROM scratch + hoist); {} run(s) per size, median shown",
        runs
    );
    println!("Swarm: one node (swarm init on 127.0.0.1). Hoist: 1 manager + 2 workers, daemons on this machine, same engine.");
    print_swarm_table(&rows);
    println!();
    println!("All running: from `service create --detach` until N tasks run. Kill -> replaced: from `docker kill` of one task's container until N tasks run again, a new task in its place.");
    println!("Both use their default restart delay: Swarm 5 s, Hoist 5 s (so ~5 s of each replace time is the delay).");
    println!(
        "Both polled every 50 ms through their APIs (engine /tasks, hoist {}[/tasks]).",
        api::ServiceInspect::path(HOIST_SERVICE)
    );
    if ended_left > 0 {
        println!("Cleanup differs: after `service rm`, Swarm removed every container; Hoist stopped its containers but kept ended ones (up to {ended_left} per round, kept 10 min for logs), which the bench removed.");
    }
    println!("Left out: published ports / ingress (Swarm's routing mesh needs IPVS, absent here); Swarm ran with --no-resolve-image (no registry).");
    Ok(())
}

fn print_swarm_table(rows: &[Vec<String>]) {
    let header = [
        "N",
        "Swarm: all running",
        "Hoist: all running",
        "Swarm/Hoist",
        "Swarm: kill -> replaced",
        "Hoist: kill -> replaced",
        "Swarm/Hoist",
    ];
    crate::print_table(&header, rows);
}
