//! `hoist-bench`: measurements on real local clusters, printed as tables.
//!
//! `hoist-bench failover [--kills N] [--writes N] [--worker-runs N]` measures, on daemon
//! processes of the release `hoist` binary next to this one:
//! - leader failover: SIGKILL the leader of 3 managers, time until a survivor reports
//!   a new leader that accepts a write; the old leader is restarted between kills;
//! - write latency: sequential writes (a node label) through the leader and through a
//!   follower (forwarded), on 3 managers;
//! - worker loss: SIGKILL a worker and its tasks, time until every replica runs again
//!   elsewhere (default heartbeat 1 s x grace 3, as shipped).
//!
//! Timings live here, never in tests.

mod faults;
mod rate;
mod swarm;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hoist_api::endpoint as api;
use hoist_api::{Client, NodeUpdateRequest, NodeView, ServiceView, TaskView};
use hoist_testkit::{Cluster, ClusterOptions};

fn hoist_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("hoist");
    if !path.exists() {
        bail!(
            "{} is missing: build it first with `cargo build --release -p hoist`",
            path.display()
        );
    }
    Ok(path)
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

fn summary(name: &str, unit: &str, mut samples: Vec<f64>) -> Vec<String> {
    samples.sort_by(|a, b| a.total_cmp(b));
    vec![
        name.to_string(),
        samples.len().to_string(),
        format!("{:.1} {unit}", percentile(&samples, 0.5)),
        format!("{:.1} {unit}", percentile(&samples, 0.9)),
        format!("{:.1} {unit}", samples.first().copied().unwrap_or(f64::NAN)),
        format!("{:.1} {unit}", samples.last().copied().unwrap_or(f64::NAN)),
    ]
}

fn client(cluster: &Cluster, index: usize) -> anyhow::Result<Client> {
    Ok(Client::unix(&cluster.nodes[index].socket)?)
}

async fn leader_index(cluster: &Cluster, asked: usize) -> Option<usize> {
    let client = client(cluster, asked).ok()?;
    let info: hoist_api::InfoResponse = client.call::<api::Info>(&(), &()).await.ok()?;
    if !info.is_leader {
        let leader = info.leader?;
        let nodes: Vec<NodeView> = client.call::<api::NodeList>(&(), &()).await.ok()?;
        let name = nodes
            .into_iter()
            .find(|view| view.node.id == leader)?
            .node
            .hostname;
        return cluster.node_index(&name);
    }
    Some(asked)
}

async fn label_write(client: &Client, node: &str, value: usize) -> anyhow::Result<()> {
    let request = NodeUpdateRequest {
        availability: None,
        label_add: [("bench".to_string(), value.to_string())].into(),
        label_rm: vec![],
    };
    let _: NodeView = client.call::<api::NodeUpdate>(node, &request).await?;
    Ok(())
}

async fn failover(kills: usize, writes: usize, worker_runs: usize) -> anyhow::Result<()> {
    let bin = hoist_binary()?;
    let mut rows = Vec::new();

    let mut cluster = Cluster::start(
        &bin,
        ClusterOptions {
            managers: 3,
            ..Default::default()
        },
    );
    // Write latency first, on a healthy cluster.
    let leader = leader_index(&cluster, 0).await.context("no leader")?;
    let follower = (leader + 1) % 3;
    for (label, index) in [
        ("write via leader", leader),
        ("write via follower", follower),
    ] {
        let client = client(&cluster, index)?;
        let mut samples = Vec::new();
        for value in 0..writes {
            let started = Instant::now();
            label_write(&client, "node-1", value).await?;
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        rows.push(summary(label, "ms", samples));
    }

    let mut elections = Vec::new();
    for _ in 0..kills {
        let leader = leader_index(&cluster, 0)
            .await
            .or(leader_index(&cluster, 1).await)
            .context("no leader")?;
        let survivor = (leader + 1) % 3;
        let survivor_client = client(&cluster, survivor)?;
        cluster.kill(leader);
        let killed = Instant::now();
        // A new leader counts once it has accepted a write.
        let mut value = 0;
        loop {
            value += 1;
            let attempt = tokio::time::timeout(
                Duration::from_secs(2),
                label_write(&survivor_client, "node-1", value),
            )
            .await;
            if matches!(attempt, Ok(Ok(()))) {
                break;
            }
            if killed.elapsed() > Duration::from_secs(30) {
                bail!("no new leader within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        elections.push(killed.elapsed().as_secs_f64() * 1000.0);
        cluster.start_node(leader);
        cluster.wait_all_ready(survivor, Duration::from_secs(30));
    }
    rows.push(summary("leader SIGKILL -> write accepted", "ms", elections));
    drop(cluster);

    let mut losses = Vec::new();
    let mut mesh_requests = Vec::new();
    let mut mesh_failures = Vec::new();
    for _ in 0..worker_runs {
        let mut cluster = Cluster::start(
            &bin,
            ClusterOptions {
                managers: 1,
                workers: 4,
                ..Default::default()
            },
        );
        cluster.hoist_ok(0, &["node", "update", "--availability", "drain", "node-1"]);
        let bin_text = bin.display().to_string();
        cluster.hoist_ok(
            0,
            &[
                "service",
                "create",
                "--detach",
                "--name",
                "web",
                "--replicas",
                "8",
                "-p",
                "published=8080,target=80,protocol=http",
                "--driver",
                "process",
                &bin_text,
                "hello",
            ],
        );
        let api = client(&cluster, 0)?;
        wait_until_converged(&api, "web", Duration::from_secs(60)).await?;
        let victim = 2;
        let victim_name = cluster.nodes[victim].name.clone();
        // A client keeps requesting through the manager's mesh (it runs no task) for
        // the whole loss, counting requests that failed.
        let mesh_addr = format!("{}:8080", cluster.nodes[0].ip);
        let ready_by = Instant::now() + Duration::from_secs(20);
        while !http_ok(&mesh_addr) {
            if Instant::now() > ready_by {
                bail!("the mesh on {mesh_addr} did not answer");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stop_load = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = {
            let stop = stop_load.clone();
            let addr = mesh_addr.clone();
            std::thread::spawn(move || {
                let (mut sent, mut failed) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    sent += 1;
                    if !http_ok(&addr) {
                        failed += 1;
                    }
                }
                (sent, failed)
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.kill(victim);
        cluster.kill_tasks_of(victim);
        let killed = Instant::now();
        loop {
            let tasks: Vec<TaskView> = api.call::<api::ServiceTasks>("web", &()).await?;
            let running_elsewhere = tasks
                .iter()
                .filter(|view| {
                    view.task.desired_state == hoist_types::task::DesiredState::Running
                        && view.task.status.state == hoist_types::task::TaskState::Running
                        && view.node_hostname.as_deref() != Some(victim_name.as_str())
                })
                .count();
            if running_elsewhere >= 8 {
                break;
            }
            if killed.elapsed() > Duration::from_secs(60) {
                bail!("replacements did not run within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        losses.push(killed.elapsed().as_secs_f64() * 1000.0);
        stop_load.store(true, std::sync::atomic::Ordering::SeqCst);
        let (sent, failed) = load
            .join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))?;
        mesh_requests.push(sent);
        mesh_failures.push(failed);
    }
    rows.push(summary(
        "worker SIGKILL -> all replicas running",
        "ms",
        losses,
    ));

    rows.push(summary(
        "L7 mesh requests failed during a worker loss",
        "req",
        mesh_failures.iter().map(|failed| *failed as f64).collect(),
    ));
    print_table(
        &["measurement", "runs", "median", "p90", "min", "max"],
        &rows,
    );
    println!();
    println!(
        "Mesh load during the worker losses: {} requests sent, {} failed.",
        mesh_requests.iter().sum::<u64>(),
        mesh_failures.iter().sum::<u64>()
    );
    println!("Failure detection: heartbeat 1 s x grace 3 (Swarm's defaults: 5 s x 3; Kubernetes marks a node NotReady after 40 s and evicts after 5 min).");
    Ok(())
}

async fn wait_until_converged(
    api: &Client,
    service: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let view: ServiceView = api.call::<api::ServiceInspect>(service, &()).await?;
        if view.running == view.desired {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{service} did not converge");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One GET on a fresh connection; true on a 200.
fn http_ok(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    if write!(
        stream,
        "GET /api HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

fn arg_value(args: &[String], flag: &str, default: usize) -> anyhow::Result<usize> {
    match args.iter().position(|arg| arg == flag) {
        Some(index) => args
            .get(index + 1)
            .with_context(|| format!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag} needs a number")),
        None => Ok(default),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("faults") => faults::run(&args),
        Some("swarm") => swarm::run(&args[1..]).await,
        Some("rate") => rate::run(&args[1..]).await,
        Some("failover") => {
            let kills = arg_value(&args, "--kills", 10)?;
            let writes = arg_value(&args, "--writes", 200)?;
            let worker_runs = arg_value(&args, "--worker-runs", 5)?;
            failover(kills, writes, worker_runs).await
        }
        _ => {
            eprintln!("usage: hoist-bench failover [--kills N] [--writes N] [--worker-runs N]");
            eprintln!(
                "       hoist-bench faults [--seeds N] [--seed S] [--kills N] [--scenario NAME]"
            );
            eprintln!("       hoist-bench rate --url http://127.0.0.1:PORT/ --rate R [--duration S] [--connections C]");
            std::process::exit(2);
        }
    }
}

/// Prints a Markdown table, columns padded to their widest cell (so it reads in a
/// terminal and pastes into a README).
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.len()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            widths[index] = widths[index].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(index, cell)| format!("{cell:<width$}", width = widths[index]))
            .collect();
        println!("| {} |", text.join(" | "));
    };
    line(header.to_vec());
    println!(
        "|{}|",
        widths
            .iter()
            .map(|width| "-".repeat(width + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
