//! `hoist demo`: a local cluster of separate daemon processes on loopback addresses,
//! with the hello service deployed on it. Stays up until Ctrl-C, then removes the
//! service and stops every process it started.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hoist_api::endpoint as api;
use hoist_api::{
    Client, CreateServiceRequest, InitRequest, JoinClusterRequest, NodeView, ServiceView, TaskView,
    TokenResponse,
};
use hoist_cli::{print_table, DemoArgs};

/// `println!` that goes on when stdout is gone (`hoist demo | head`): the demo runs
/// until Ctrl-C and must still stop what it started, whoever reads its output.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
use hoist_types::service::{Mount, PublishedPort, ServiceMode, ServiceSpec};
use hoist_types::Role;

const NODE_PORT: u16 = 2377;

struct DemoNode {
    name: String,
    addr: String,
    socket: PathBuf,
    data_dir: PathBuf,
    child: Child,
}

/// Stops every daemon (and the tasks they left) however the demo ends.
struct Processes {
    nodes: Vec<DemoNode>,
    _temp: Option<tempfile::TempDir>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            // SAFETY: signalling a child we started and have not reaped.
            unsafe {
                libc::kill(node.child.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for node in &mut self.nodes {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = node.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = node.child.kill();
            let _ = node.child.wait();
            kill_recorded_tasks(&node.data_dir);
        }
    }
}

/// Task processes outlive their daemon on purpose (a restarted worker adopts them);
/// the demo is over, so any left are stopped here.
fn kill_recorded_tasks(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir.join("driver").join("tasks")) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(record) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if let Some(pid) = record["pid"].as_i64().filter(|pid| *pid > 1) {
            // SAFETY: the task leads its own process group; this ends the group.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}

fn free_block(n_nodes: usize) -> anyhow::Result<[u8; 2]> {
    for b in 1..250u8 {
        let a = 200u8;
        let free = (1..=n_nodes).all(|host| {
            TcpListener::bind(SocketAddr::from((
                Ipv4Addr::new(127, a, b, host as u8),
                NODE_PORT,
            )))
            .is_ok()
        });
        if free {
            return Ok([a, b]);
        }
    }
    bail!("no free loopback block 127.200.x.0/24 for the demo nodes")
}

async fn wait_for_socket(socket: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the daemon did not open {} in time", socket.display())
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.managers == 0 {
        bail!("--managers must be at least 1");
    }
    if args.managers + args.workers > 250 {
        bail!("at most 250 nodes in a demo");
    }
    let exe = std::env::current_exe().context("finding the hoist binary")?;
    let (root, temp) = match &args.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let temp = tempfile::Builder::new().prefix("hoist-demo-").tempdir()?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let n_nodes = args.managers + args.workers;
    let [a, b] = free_block(n_nodes)?;
    let mut processes = Processes {
        nodes: Vec::new(),
        _temp: temp,
    };
    say!(
        "Starting {} manager(s) and {} worker(s) as separate processes...",
        args.managers,
        args.workers
    );
    for index in 0..n_nodes {
        let node = spawn_node(&args, &exe, &root, [a, b], index)?;
        processes.nodes.push(node);
    }
    for node in &processes.nodes {
        wait_for_socket(&node.socket).await?;
    }
    let first = form_cluster(&processes, args.managers).await?;

    let spec = hello_spec(&args, &exe)?;
    let created: ServiceView = first
        .call::<api::ServiceCreate>(&(), &CreateServiceRequest { spec })
        .await?;
    let service = created.service.id.to_string();
    wait_running(&first, &service, &root).await?;

    show(&first, &service, &processes, &args, &root).await?;

    wait_for_ctrl_c().await;
    stop(&first, &service, &processes).await;
    drop(processes);
    say!("Demo stopped.");
    Ok(())
}

/// Starts the daemon of node `index`, on 127.A.B.(index + 1).
fn spawn_node(
    args: &DemoArgs,
    exe: &Path,
    root: &Path,
    [a, b]: [u8; 2],
    index: usize,
) -> anyhow::Result<DemoNode> {
    let name = if index < args.managers {
        format!("manager-{}", index + 1)
    } else {
        format!("worker-{}", index + 1 - args.managers)
    };
    let addr = format!("{}:{NODE_PORT}", Ipv4Addr::new(127, a, b, index as u8 + 1));
    let data_dir = root.join(&name);
    std::fs::create_dir_all(&data_dir)?;
    let log = std::fs::File::create(root.join(format!("{name}.log")))?;
    let child = Command::new(exe)
        .arg("daemon")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--listen-addr")
        .arg(&addr)
        .arg("--hostname")
        .arg(&name)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting a daemon")?;
    Ok(DemoNode {
        socket: data_dir.join("hoist.sock"),
        name,
        addr,
        data_dir,
        child,
    })
}

/// Initializes the cluster on the first node and joins the others to it (the first
/// `managers` as managers); returns the first node's client.
async fn form_cluster(processes: &Processes, managers: usize) -> anyhow::Result<Client> {
    let first = Client::unix(&processes.nodes[0].socket)?;
    first
        .call::<api::Init>(&(), &InitRequest::default())
        .await?;
    let manager_token: TokenResponse = first
        .call_with::<api::JoinToken>(&Role::Manager, &api::RotateQuery::default(), &())
        .await?;
    let worker_token: TokenResponse = first
        .call_with::<api::JoinToken>(&Role::Worker, &api::RotateQuery::default(), &())
        .await?;
    for (index, node) in processes.nodes.iter().enumerate().skip(1) {
        let token = if index < managers {
            &manager_token
        } else {
            &worker_token
        };
        Client::unix(&node.socket)?
            .call::<api::JoinCluster>(
                &(),
                &JoinClusterRequest {
                    token: token.token.clone(),
                    manager_addr: processes.nodes[0].addr.clone(),
                    advertise_addr: None,
                    expected_role: None,
                },
            )
            .await
            .with_context(|| format!("joining {}", node.name))?;
    }
    Ok(first)
}

/// The hello service: three replicas of `hoist hello`, published on `--port`.
fn hello_spec(args: &DemoArgs, exe: &Path) -> anyhow::Result<ServiceSpec> {
    let mut command = vec![exe.display().to_string(), "hello".to_string()];
    let mut spec = ServiceSpec {
        name: "hello".into(),
        mode: ServiceMode::Replicated { replicas: 3 },
        driver: hoist_types::DriverKind::Process,
        ports: vec![PublishedPort::parse(&format!("{}:80", args.port))?],
        ..ServiceSpec::default()
    };
    if let Some(dir) = &args.dir {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("--dir {}", dir.display()))?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            spec.mounts.push(Mount::parse(&format!(
                "type=bind,source={},target=/srv/hello,readonly",
                dir.display()
            ))?);
            command.extend(["--dir".into(), "/srv/hello".into()]);
        } else {
            say!(
                "(not root: the tasks read {} directly instead of through a bind mount)",
                dir.display()
            );
            command.extend(["--dir".into(), dir.display().to_string()]);
        }
    }
    spec.command = command;
    Ok(spec)
}

async fn wait_running(first: &Client, service: &str, root: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view: ServiceView = first.call::<api::ServiceInspect>(service, &()).await?;
        if view.running == view.desired && view.desired > 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the hello service did not start in time: see the logs in {}",
                root.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The nodes, the running tasks, and where to reach them.
async fn show(
    first: &Client,
    service: &str,
    processes: &Processes,
    args: &DemoArgs,
    root: &Path,
) -> anyhow::Result<()> {
    let nodes: Vec<NodeView> = first.call::<api::NodeList>(&(), &()).await?;
    let mut rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|view| {
            vec![
                view.node.id.to_string(),
                view.node.hostname.clone(),
                view.node.status.as_str().into(),
                view.node.availability.as_str().into(),
                view.manager_status
                    .map(|status| status.to_string())
                    .unwrap_or_default(),
                view.node.addr.clone(),
            ]
        })
        .collect();
    rows.sort_by(|x, y| x[1].cmp(&y[1]));
    say!();
    // The demo runs until Ctrl-C whether or not anyone reads its output.
    let _ = print_table(
        &[
            "ID",
            "HOSTNAME",
            "STATUS",
            "AVAILABILITY",
            "MANAGER STATUS",
            "ADDRESS",
        ],
        &rows,
    );
    let tasks: Vec<TaskView> = first.call::<api::ServiceTasks>(service, &()).await?;
    let live: Vec<&TaskView> = tasks
        .iter()
        .filter(|view| view.task.status.state == hoist_types::task::TaskState::Running)
        .collect();
    say!();
    let _ = print_table(
        &["ID", "NAME", "NODE", "CURRENT STATE", "ENDPOINT"],
        &live
            .iter()
            .map(|view| {
                vec![
                    view.task.id.to_string(),
                    view.name.clone(),
                    view.node_hostname.clone().unwrap_or_default(),
                    "Running".into(),
                    view.task
                        .status
                        .endpoints
                        .first()
                        .map(|endpoint| endpoint.addr.clone())
                        .unwrap_or_default(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    say!();
    say!("The hello page through the routing mesh, on every node (reload: another task answers):");
    for node in &processes.nodes {
        let ip = node
            .addr
            .rsplit_once(':')
            .map(|(ip, _)| ip)
            .unwrap_or(&node.addr);
        say!("    mesh: http://{ip}:{}/   ({})", args.port, node.name);
    }
    say!();
    say!("Each task directly:");
    for view in &live {
        if let Some(endpoint) = view.task.status.endpoints.first() {
            say!(
                "    task: http://{}/   ({})",
                endpoint.addr,
                view.node_hostname.clone().unwrap_or_default()
            );
        }
    }
    say!();
    say!("To run hoist commands against this cluster, paste:");
    say!();
    say!(
        "    export HOIST_HOST=unix://{}",
        processes.nodes[0].socket.display()
    );
    say!("    hoist service scale hello=6");
    say!();
    say!(
        "Node logs are in {}. Press Ctrl-C to stop the demo.",
        root.display()
    );
    Ok(())
}

/// Removes the hello service and waits (a while) for its tasks to end.
async fn stop(first: &Client, service: &str, processes: &Processes) {
    say!(
        "\nStopping the demo: removing the hello service and stopping {} daemons...",
        processes.nodes.len()
    );
    let _ = first.call::<api::ServiceRemove>(service, &()).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let tasks: Vec<TaskView> = first
            .call::<api::ServiceTasks>(service, &())
            .await
            .unwrap_or_default();
        if tasks
            .iter()
            .all(|view| view.task.status.state.is_terminal())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_ctrl_c() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
