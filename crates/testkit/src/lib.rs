//! Starting real local clusters of `hoist daemon` processes for integration tests.
//!
//! Every node is its own OS process on its own loopback address (127.A.B.n, with A.B
//! unique to the cluster and checked free), talking over real sockets. Faults are real
//! signals, and partitions go through a user-space TCP proxy (`faults`, with
//! `ClusterOptions::proxied`); `workload` records a client history and `check` judges
//! it, and a watcher (`watch`) samples what runs beside every fault scenario for the
//! checkers of `timeline`. Every process a cluster started is killed when it is dropped, even when the test
//! panics, and daemons also die with the test thread that started them
//! (`PR_SET_PDEATHSIG`), so an aborted run leaves nothing behind.
//!
//! The kit knows nothing of hoist's internals: it drives the binary's CLI, reads its
//! JSON output, and looks at the process driver's records in the data directories only
//! to find task processes (to check them, and to clean them up).

// The test kit runs inside tests: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod check;
pub mod faults;
pub mod linearizable;
pub mod timeline;
mod tls;
mod watch;
pub mod workload;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `hoist` binary under test, for integration tests of the `hoist` crate: Cargo
/// tells only that crate's test builds where it is, at compile time, so this expands
/// in the caller.
#[macro_export]
macro_rules! hoist_bin {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_hoist"))
    };
}

pub use check::{Snapshot, Violations};
pub use faults::{
    fault_seed, fault_seed_or, run_scenario, FaultProxy, PartitionMode, Report, Scenario, Size,
};
pub use tls::{tls_get, tls_request, tls_stream, tls_stream_as, FakeTlsServer};
pub use workload::{Cli, History, Op, OpKind, OpResult, Recorder, Workload, WorkloadConfig};

/// The port every test daemon listens on; addresses differ by IP instead.
pub const NODE_PORT: u16 = 2377;

/// Where a daemon really listens when its peer traffic goes through a [`FaultProxy`]
/// (the proxy takes [`NODE_PORT`], the address the daemon advertises).
pub const PROXIED_PORT: u16 = 2378;

/// How a cluster is set up.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub managers: usize,
    pub workers: usize,
    pub heartbeat_period: &'static str,
    pub heartbeat_grace: u32,
    pub extra_init_args: Vec<String>,
    /// Put every node's peer traffic through a [`FaultProxy`] (for partitions): the
    /// daemon listens on `PROXIED_PORT` and advertises `NODE_PORT`, where the proxy is.
    pub proxied: bool,
    /// Extra `hoist daemon` flags for every node, e.g. `--raft-snapshot-interval 20`.
    pub extra_daemon_args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            managers: 1,
            workers: 0,
            heartbeat_period: "1s",
            heartbeat_grace: 3,
            extra_init_args: Vec::new(),
            proxied: false,
            extra_daemon_args: Vec::new(),
        }
    }
}

/// One daemon of a test cluster.
pub struct NodeProc {
    pub name: String,
    pub ip: Ipv4Addr,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// The port other nodes reach it at ([`NODE_PORT`] unless its data directory came
    /// from elsewhere with its address in it).
    pub port: u16,
    /// Whether a fault proxy stands in front of its listener.
    pub proxied: bool,
    child: Option<Child>,
}

impl NodeProc {
    /// The address other nodes reach it at (the proxy's, when proxied).
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// The address the daemon itself listens on.
    pub fn listen_addr(&self) -> String {
        let port = if self.proxied {
            PROXIED_PORT
        } else {
            self.port
        };
        format!("{}:{port}", self.ip)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A local cluster of daemon processes.
pub struct Cluster {
    pub bin: PathBuf,
    pub nodes: Vec<NodeProc>,
    /// The fault proxy in front of every node's listener, when `ClusterOptions::proxied`.
    proxy: Option<FaultProxy>,
    /// Extra flags every daemon starts with.
    daemon_args: Vec<String>,
    /// Kept for its Drop, which removes every data directory.
    _dir: tempfile::TempDir,
}

static NEXT_CLUSTER: AtomicU32 = AtomicU32::new(0);

/// Finds a 127.A.B.0/24 block where nobody listens on the node port (nor on the
/// proxied port, when `proxied`).
fn free_block(n_nodes: usize, proxied: bool) -> [u8; 2] {
    let pid = std::process::id();
    loop {
        let serial = NEXT_CLUSTER.fetch_add(1, Ordering::SeqCst);
        let a = 20 + ((pid + serial / 250) % 200) as u8;
        let b = 1 + (serial % 250) as u8;
        let ports: &[u16] = if proxied {
            &[NODE_PORT, PROXIED_PORT]
        } else {
            &[NODE_PORT]
        };
        let free = (1..=n_nodes).all(|host| {
            ports.iter().all(|port| {
                let addr = SocketAddr::from((Ipv4Addr::new(127, a, b, host as u8), *port));
                TcpListener::bind(addr).is_ok()
            })
        });
        if free {
            return [a, b];
        }
    }
}

/// Copies a directory tree (files and directories; sockets and links are skipped).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating a copy");
    for entry in std::fs::read_dir(from).expect("reading a directory to copy") {
        let entry = entry.expect("a directory entry");
        let kind = entry.file_type().expect("a file type");
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).expect("copying a file");
        }
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Cluster {
    /// Starts `managers + workers` daemons, inits the first and joins the others.
    pub fn start(bin: &Path, options: ClusterOptions) -> Cluster {
        let cluster = Cluster::spawn_configured(
            bin,
            options.managers + options.workers,
            options.proxied,
            options.extra_daemon_args.clone(),
        );
        let mut init: Vec<String> = vec![
            "init".into(),
            "--heartbeat-period".into(),
            options.heartbeat_period.into(),
            "--heartbeat-grace".into(),
            options.heartbeat_grace.to_string(),
        ];
        init.extend(options.extra_init_args.iter().cloned());
        let init_args: Vec<&str> = init.iter().map(String::as_str).collect();
        cluster.hoist_ok(0, &init_args);
        let manager_token = cluster
            .hoist_ok(0, &["join-token", "manager", "-q"])
            .trim()
            .to_string();
        let worker_token = cluster
            .hoist_ok(0, &["join-token", "worker", "-q"])
            .trim()
            .to_string();
        let first = cluster.nodes[0].addr();
        for index in 1..cluster.nodes.len() {
            let token = if index < options.managers {
                &manager_token
            } else {
                &worker_token
            };
            cluster.hoist_ok(index, &["join", "--token", token, &first]);
        }
        cluster.wait_all_ready(0, Duration::from_secs(30));
        cluster
    }

    /// Starts `n` daemons that are in no cluster yet.
    pub fn spawn(bin: &Path, n: usize) -> Cluster {
        Cluster::spawn_with(bin, n, false)
    }

    /// Starts `n` daemons that are in no cluster yet, behind a fault proxy if `proxied`.
    pub fn spawn_with(bin: &Path, n: usize, proxied: bool) -> Cluster {
        Cluster::spawn_configured(bin, n, proxied, Vec::new())
    }

    fn spawn_configured(bin: &Path, n: usize, proxied: bool, daemon_args: Vec<String>) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("hoist-test-")
            .tempdir()
            .expect("creating a temporary directory");
        let [a, b] = free_block(n, proxied);
        let mut nodes = Vec::new();
        for index in 0..n {
            let name = format!("node-{}", index + 1);
            let data_dir = dir.path().join(&name);
            nodes.push(NodeProc {
                socket: data_dir.join("hoist.sock"),
                log: dir.path().join(format!("{name}.log")),
                name,
                ip: Ipv4Addr::new(127, a, b, index as u8 + 1),
                port: NODE_PORT,
                data_dir,
                proxied,
                child: None,
            });
        }
        let proxy = proxied.then(|| {
            let ips: Vec<Ipv4Addr> = nodes.iter().map(|node| node.ip).collect();
            FaultProxy::start(&ips, NODE_PORT, PROXIED_PORT).expect("starting the fault proxy")
        });
        let mut cluster = Cluster {
            bin: bin.to_path_buf(),
            nodes,
            proxy,
            daemon_args,
            _dir: dir,
        };
        for index in 0..n {
            cluster.start_node(index);
        }
        cluster
    }

    /// Starts daemons on copies of data directories written elsewhere (by an older
    /// build, say): `nodes` names each directory under `source`, with the hostname and
    /// address its files were written with. The copies are removed with the cluster;
    /// `source` is never written to.
    pub fn from_data_dirs(
        bin: &Path,
        source: &Path,
        nodes: &[(&str, &str, SocketAddr)],
        daemon_args: Vec<String>,
    ) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("hoist-test-")
            .tempdir()
            .expect("creating a temporary directory");
        let mut procs = Vec::new();
        for (dir_name, hostname, addr) in nodes {
            let SocketAddr::V4(addr) = addr else {
                panic!("{addr} is not an IPv4 address");
            };
            assert!(
                TcpListener::bind(addr).is_ok(),
                "{addr}, where the data directory {dir_name} says its node listens, is taken"
            );
            let data_dir = dir.path().join(dir_name);
            copy_tree(&source.join(dir_name), &data_dir);
            procs.push(NodeProc {
                name: hostname.to_string(),
                ip: *addr.ip(),
                port: addr.port(),
                socket: data_dir.join("hoist.sock"),
                log: dir.path().join(format!("{dir_name}.log")),
                data_dir,
                proxied: false,
                child: None,
            });
        }
        let mut cluster = Cluster {
            bin: bin.to_path_buf(),
            nodes: procs,
            proxy: None,
            daemon_args,
            _dir: dir,
        };
        for index in 0..cluster.nodes.len() {
            cluster.start_node(index);
        }
        cluster
    }

    /// Starts (or restarts) node `index`'s daemon with its data directory.
    pub fn start_node(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        assert!(node.child.is_none(), "{} is already running", node.name);
        std::fs::create_dir_all(&node.data_dir).expect("creating the data directory");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("opening the node log");
        let mut command = Command::new(&self.bin);
        command
            .arg("daemon")
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--listen-addr")
            .arg(node.listen_addr());
        if node.proxied {
            command.arg("--advertise-addr").arg(node.addr());
        }
        command
            .args(&self.daemon_args)
            .arg("--hostname")
            .arg(&node.name)
            .env("HOIST_LOG", "info,openraft=off,hoist=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the
        // daemon if the test thread that started it dies.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().expect("starting hoist daemon");
        node.child = Some(child);
        let socket = node.socket.clone();
        let name = node.name.clone();
        wait_for(
            &format!("{name}'s control socket"),
            Duration::from_secs(20),
            || {
                std::os::unix::net::UnixStream::connect(&socket)
                    .ok()
                    .map(|_| ())
            },
        );
    }

    /// Runs `hoist ARGS` against node `index`.
    pub fn hoist(&self, index: usize, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env(
                "HOIST_HOST",
                format!("unix://{}", self.nodes[index].socket.display()),
            )
            .stdin(Stdio::null())
            .output()
            .expect("running the hoist CLI")
    }

    /// Runs `hoist ARGS` and returns its stdout, panicking with stderr on failure.
    pub fn hoist_ok(&self, index: usize, args: &[&str]) -> String {
        let output = self.hoist(index, args);
        if !output.status.success() {
            panic!(
                "`hoist {}` on {} failed: {}{}\n--- log tail ---\n{}",
                args.join(" "),
                self.nodes[index].name,
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout),
                self.log_tail(index, 30)
            );
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `hoist ARGS`, expects failure, and returns stderr.
    pub fn hoist_err(&self, index: usize, args: &[&str]) -> String {
        let output = self.hoist(index, args);
        assert!(
            !output.status.success(),
            "`hoist {}` was expected to fail but printed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// `hoist ARGS --format json` parsed, or `None` if the command failed.
    pub fn json(&self, index: usize, args: &[&str]) -> Option<Value> {
        let mut args = args.to_vec();
        args.extend(["--format", "json"]);
        let output = self.hoist(index, &args);
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// `node ls` as JSON from node `index`.
    pub fn node_ls(&self, index: usize) -> Option<Vec<Value>> {
        self.json(index, &["node", "ls"])
            .and_then(|value| value.as_array().cloned())
    }

    /// Waits until node `index` lists every node of the cluster as Ready.
    pub fn wait_all_ready(&self, index: usize, timeout: Duration) {
        let expected = self.nodes.len();
        wait_for("every node Ready", timeout, || {
            let nodes = self.node_ls(index)?;
            let ready = nodes
                .iter()
                .filter(|node| node["status"] == "ready")
                .count();
            (nodes.len() == expected && ready == expected).then_some(())
        });
    }

    /// The index of the node that is the Raft leader, as node `asked` sees it.
    pub fn leader(&self, asked: usize) -> Option<usize> {
        let info = self.json(asked, &["info"])?;
        let leader = info["leader"].as_str()?;
        let nodes = self.node_ls(asked)?;
        let hostname = nodes
            .iter()
            .find(|node| node["id"] == leader)?
            .get("hostname")?
            .as_str()?
            .to_string();
        self.nodes.iter().position(|node| node.name == hostname)
    }

    pub fn node_index(&self, hostname: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == hostname)
    }

    /// SIGKILLs node `index` and reaps it.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, index: usize, signal: i32) {
        if let Some(pid) = self.nodes[index].pid() {
            // SAFETY: sending a signal to a child we started and have not reaped.
            unsafe {
                libc::kill(pid as i32, signal);
            }
        }
    }

    /// Freezes node `index` (SIGSTOP): it holds its sockets but answers nothing.
    pub fn pause(&self, index: usize) {
        self.signal(index, libc::SIGSTOP);
    }

    pub fn resume(&self, index: usize) {
        self.signal(index, libc::SIGCONT);
    }

    pub fn restart(&mut self, index: usize) {
        self.kill(index);
        self.start_node(index);
    }

    /// The last `lines` lines of node `index`'s log, for failure messages.
    pub fn log_tail(&self, index: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[index].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Task processes the daemons' process driver recorded, alive or not:
    /// `(node index, task id, pid)`.
    pub fn recorded_tasks(&self) -> Vec<(usize, String, i32)> {
        let mut found = Vec::new();
        for (index, node) in self.nodes.iter().enumerate() {
            for (task_id, pid) in driver_records(&node.data_dir) {
                found.push((index, task_id, pid));
            }
        }
        found
    }

    /// Task processes that are alive right now, as `(node index, task id)`. A process
    /// counts only if it still carries the task's id in its environment, so a reused
    /// pid is not mistaken for a task.
    pub fn live_task_processes(&self) -> Vec<(usize, String)> {
        let data_dirs: Vec<&Path> = self
            .nodes
            .iter()
            .map(|node| node.data_dir.as_path())
            .collect();
        live_task_processes_in(&data_dirs)
    }

    /// Kills every process working inside this cluster's directory: task processes a
    /// daemon spawned but had not yet recorded when it was SIGKILLed (the driver writes
    /// its record once it knows the pid), which `kill_tasks_of` cannot find. The driver
    /// kills those itself, but only when that node's daemon starts again.
    fn kill_unrecorded_tasks(&self) {
        let root = self._dir.path();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<i32>().ok())
            else {
                continue;
            };
            // A removed directory reads as "PATH (deleted)", still under `root`.
            let inside =
                std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(root));
            if inside && pid != std::process::id() as i32 {
                // SAFETY: the process works inside this cluster's private temporary
                // directory, so it is one of this cluster's tasks.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }

    /// Kills the task processes node `index` runs (a dead node's workloads die with it).
    pub fn kill_tasks_of(&self, index: usize) {
        for (task_id, pid) in driver_records(&self.nodes[index].data_dir) {
            if process_runs_task(pid, &task_id) {
                // SAFETY: the pid runs this task (checked just above); the task leads
                // its own process group.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// Task processes alive right now under these data directories, as `(index in
/// data_dirs, task id)`: what [`Cluster::live_task_processes`] reads, for threads that
/// cannot borrow the cluster.
pub fn live_task_processes_in(data_dirs: &[&Path]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (index, data_dir) in data_dirs.iter().enumerate() {
        for (task_id, pid) in driver_records(data_dir) {
            if process_runs_task(pid, &task_id) {
                found.push((index, task_id));
            }
        }
    }
    found
}

/// `(task id, pid)` of every record the process driver keeps under `data_dir`.
pub fn driver_records(data_dir: &Path) -> Vec<(String, i32)> {
    let mut records = Vec::new();
    let Ok(entries) = std::fs::read_dir(data_dir.join("driver").join("tasks")) else {
        return records;
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(record) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let Some(task_id) = record["task_id"].as_str() else {
            continue;
        };
        if let Some(pid) = record["pid"].as_i64().filter(|pid| *pid > 1) {
            records.push((task_id.to_string(), pid as i32));
        }
    }
    records
}

/// Whether `pid` is alive (not a zombie) and runs task `task_id`.
pub fn process_runs_task(pid: i32, task_id: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(") ")
        .next()
        .and_then(|rest| rest.chars().next());
    if matches!(state, None | Some('Z') | Some('X')) {
        return false;
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let wanted = format!("HOIST_TASK={task_id}");
    environ
        .split(|byte| *byte == 0)
        .any(|entry| entry == wanted.as_bytes())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.resume(index);
            self.kill(index);
        }
        for index in 0..self.nodes.len() {
            self.kill_tasks_of(index);
        }
        self.kill_unrecorded_tasks();
        // A SIGKILLed daemon cannot remove the kernel data path's rules; left in place
        // they would keep catching connections to these addresses.
        if self.daemon_args.iter().any(|arg| arg == "nftables") {
            for node in &self.nodes {
                let table = hoist_mesh::kernel::table_name(std::net::IpAddr::V4(node.ip));
                let _ = Command::new("nft")
                    .args(["delete", "table", "ip", &table])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// One HTTP/1.1 GET on a fresh connection (`Connection: close`), with a 10 s read
/// deadline; the raw response, or what went wrong.
pub fn http_get(addr: &str, host: &str, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|err| format!("connect: {err}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|err| err.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|err| err.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|err| format!("read: {err}"))?;
    Ok(response)
}
