//! Faults for test clusters: a user-space TCP proxy on every node's peer address (for
//! partitions, without root), seeds that make every choice of a scenario replayable,
//! and the fault scenarios themselves (shared by `tests/faults.rs` and `hoist-bench
//! faults`).
//!
//! A proxied daemon listens on `127.A.B.n:PROXIED_PORT` and advertises
//! `127.A.B.n:NODE_PORT`, where the [`FaultProxy`] accepts and forwards. Daemons bind
//! their outgoing peer connections to their own IP, so the proxy knows which node a
//! connection comes from by its source address. The daemons' unix sockets (the CLI)
//! never go through the proxy.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::check::{self, Snapshot, Violations};
use crate::timeline::{self, Fault, Timeline, Windows};
use crate::watch::{Target, Watcher};
use crate::workload::{History, Recorder, Workload, WorkloadConfig};
use crate::{Cluster, ClusterOptions};

// ---------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------

/// What a cut link does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionMode {
    /// New connections are reset at once and existing ones are killed (peers see
    /// connection errors right away).
    Refuse,
    /// Nothing is delivered until the cut heals: new connections are accepted but held,
    /// bytes already in flight wait (peers see time-outs, as with dropped packets, and
    /// connections that outlive the cut resume intact).
    Blackhole,
}

struct Rules {
    /// `(from, to)`: traffic from node IP `from` to node IP `to` is cut.
    cut: HashSet<(Ipv4Addr, Ipv4Addr)>,
    mode: PartitionMode,
}

struct Conn {
    from: Ipv4Addr,
    to: Ipv4Addr,
    streams: Vec<TcpStream>,
}

struct Shared {
    rules: Mutex<Rules>,
    changed: Condvar,
    conns: Mutex<HashMap<u64, Conn>>,
    next_conn: AtomicU64,
    stop: AtomicBool,
    /// Connections refused or killed because of a cut, for reports.
    refused: AtomicUsize,
}

impl Shared {
    fn rules(&self) -> MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Conn>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Blocks while traffic `from -> to` is blackholed; returns false if the proxy stops.
    fn wait_open(&self, from: Ipv4Addr, to: Ipv4Addr) -> bool {
        let mut rules = self.rules();
        while rules.mode == PartitionMode::Blackhole && rules.cut.contains(&(from, to)) {
            if self.stopped() {
                return false;
            }
            rules = self
                .changed
                .wait_timeout(rules, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        !self.stopped()
    }
}

/// Sets SO_LINGER to 0 so that closing sends a RST (a refused or killed link).
fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a properly sized option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// A TCP proxy in front of every node's peer listener that can cut links between nodes.
pub struct FaultProxy {
    shared: Arc<Shared>,
    fronts: Vec<SocketAddr>,
    listeners: Vec<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on `ip:front_port` for every IP and forwards to `ip:back_port`.
    pub fn start(ips: &[Ipv4Addr], front_port: u16, back_port: u16) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            rules: Mutex::new(Rules {
                cut: HashSet::new(),
                mode: PartitionMode::Refuse,
            }),
            changed: Condvar::new(),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            refused: AtomicUsize::new(0),
        });
        let mut fronts = Vec::new();
        let mut listeners = Vec::new();
        for ip in ips {
            let front = SocketAddr::from((*ip, front_port));
            let back = SocketAddr::from((*ip, back_port));
            let listener = TcpListener::bind(front)?;
            let shared = shared.clone();
            let ip = *ip;
            listeners.push(
                std::thread::Builder::new()
                    .name(format!("proxy-{ip}"))
                    .spawn(move || accept_loop(listener, ip, back, shared))?,
            );
            fronts.push(front);
        }
        Ok(FaultProxy {
            shared,
            fronts,
            listeners,
        })
    }

    /// How links are cut from now on (applies to the cuts in place too).
    pub fn set_mode(&self, mode: PartitionMode) {
        self.shared.rules().mode = mode;
        self.shared.changed.notify_all();
        self.enforce();
    }

    pub fn mode(&self) -> PartitionMode {
        self.shared.rules().mode
    }

    /// Cuts traffic from `from` to `to` (connections that `from` opens to `to`, and the
    /// bytes `to` sends back on connections that `to` opened to `from`).
    pub fn cut_one_way(&self, from: Ipv4Addr, to: Ipv4Addr) {
        self.shared.rules().cut.insert((from, to));
        self.enforce();
    }

    /// Cuts both directions between every IP of `a` and every IP of `b`.
    pub fn cut(&self, a: &[Ipv4Addr], b: &[Ipv4Addr]) {
        {
            let mut rules = self.shared.rules();
            for x in a {
                for y in b {
                    if x != y {
                        rules.cut.insert((*x, *y));
                        rules.cut.insert((*y, *x));
                    }
                }
            }
        }
        self.enforce();
    }

    /// Removes every cut: held connections go through, new ones are accepted.
    pub fn heal(&self) {
        self.shared.rules().cut.clear();
        self.shared.changed.notify_all();
    }

    /// The links cut right now, as `(from, to)`.
    pub fn cuts(&self) -> BTreeSet<(Ipv4Addr, Ipv4Addr)> {
        self.shared.rules().cut.iter().copied().collect()
    }

    /// Connections refused or killed by cuts so far.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections being forwarded (or held) right now.
    pub fn open_connections(&self) -> usize {
        self.shared.conns().len()
    }

    /// In Refuse mode, kills the existing connections that a cut now forbids.
    fn enforce(&self) {
        let rules = self.shared.rules();
        if rules.mode != PartitionMode::Refuse {
            return;
        }
        let mut conns = self.shared.conns();
        let doomed: Vec<u64> = conns
            .iter()
            .filter(|(_, conn)| {
                rules.cut.contains(&(conn.from, conn.to))
                    || rules.cut.contains(&(conn.to, conn.from))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in doomed {
            if let Some(conn) = conns.remove(&id) {
                self.shared.refused.fetch_add(1, Ordering::SeqCst);
                for stream in &conn.streams {
                    reset_on_close(stream);
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        for (_, conn) in self.shared.conns().drain() {
            for stream in &conn.streams {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        // Wake every accept() so the listener threads see the stop flag.
        for front in &self.fronts {
            let _ = TcpStream::connect_timeout(front, Duration::from_millis(200));
        }
        for listener in self.listeners.drain(..) {
            let _ = listener.join();
        }
    }
}

fn accept_loop(listener: TcpListener, ip: Ipv4Addr, back: SocketAddr, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopped() {
            return;
        }
        let Ok(client) = stream else {
            continue;
        };
        let from = match client.peer_addr().map(|addr| addr.ip()) {
            Ok(IpAddr::V4(from)) => from,
            _ => Ipv4Addr::UNSPECIFIED,
        };
        {
            let rules = shared.rules();
            if rules.mode == PartitionMode::Refuse && rules.cut.contains(&(from, ip)) {
                shared.refused.fetch_add(1, Ordering::SeqCst);
                reset_on_close(&client);
                continue;
            }
        }
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name(format!("proxy-{from}-{ip}"))
            .spawn(move || forward(client, from, ip, back, shared));
    }
}

/// Connects to the daemon behind the proxy from the client's own IP, so the daemon sees
/// the same source address as without a proxy (managers check a node's address
/// against it).
fn connect_upstream(from: Ipv4Addr, back: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    if !from.is_unspecified() {
        // A source that cannot be bound (not a local address) connects as the proxy.
        let _ = socket.bind(&SocketAddr::from((from, 0)).into());
    }
    socket.connect_timeout(&back.into(), Duration::from_secs(2))?;
    Ok(socket.into())
}

fn forward(client: TcpStream, from: Ipv4Addr, to: Ipv4Addr, back: SocketAddr, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
    // Registered first, so that a held (blackholed) connection can be shut at the end.
    shared.conns().insert(
        id,
        Conn {
            from,
            to,
            streams: vec![client.try_clone().expect("cloning a socket")],
        },
    );
    // A blackholed link holds new connections until it heals.
    if !shared.wait_open(from, to) {
        shared.conns().remove(&id);
        return;
    }
    let upstream = match connect_upstream(from, back) {
        Ok(upstream) => upstream,
        Err(_) => {
            // The daemon is down: the peer sees a reset, as without a proxy.
            shared.conns().remove(&id);
            reset_on_close(&client);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    {
        let mut conns = shared.conns();
        match conns.get_mut(&id) {
            Some(conn) => conn
                .streams
                .push(upstream.try_clone().expect("cloning a socket")),
            // Killed by a cut while connecting.
            None => {
                reset_on_close(&upstream);
                return;
            }
        }
    }
    let pumps_left = Arc::new(AtomicUsize::new(2));
    let spawn_pump = |src: TcpStream, dst: TcpStream, from: Ipv4Addr, to: Ipv4Addr| {
        let shared = shared.clone();
        let pumps_left = pumps_left.clone();
        std::thread::Builder::new()
            .name(format!("pump-{from}-{to}"))
            .spawn(move || {
                pump(src, dst, from, to, &shared);
                if pumps_left.fetch_sub(1, Ordering::SeqCst) == 1 {
                    shared.conns().remove(&id);
                }
            })
    };
    let client_read = client.try_clone().expect("cloning a socket");
    let upstream_read = upstream.try_clone().expect("cloning a socket");
    let _ = spawn_pump(client_read, upstream, from, to);
    let _ = spawn_pump(upstream_read, client, to, from);
}

/// Copies `src` to `dst`; bytes wait while `from -> to` is blackholed.
fn pump(mut src: TcpStream, mut dst: TcpStream, from: Ipv4Addr, to: Ipv4Addr, shared: &Shared) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !shared.wait_open(from, to) {
            break;
        }
        if dst.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = dst.shutdown(Shutdown::Write);
    let _ = src.shutdown(Shutdown::Read);
}

impl Cluster {
    /// The fault proxy (the cluster must have been started with `proxied`).
    pub fn proxy(&self) -> &FaultProxy {
        self.proxy
            .as_ref()
            .expect("partitions need ClusterOptions { proxied: true, .. }")
    }

    fn ips(&self, indexes: &[usize]) -> Vec<Ipv4Addr> {
        indexes.iter().map(|index| self.nodes[*index].ip).collect()
    }

    /// Cuts every link between a node of `a` and a node of `b`, both ways.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        self.proxy().cut(&self.ips(a), &self.ips(b));
    }

    /// Cuts node `index` from every other node.
    pub fn isolate(&self, index: usize) {
        let others: Vec<usize> = (0..self.nodes.len()).filter(|i| *i != index).collect();
        self.partition(&[index], &others);
    }

    /// Removes every cut.
    pub fn heal(&self) {
        self.proxy().heal();
    }

    pub fn set_partition_mode(&self, mode: PartitionMode) {
        self.proxy().set_mode(mode);
    }
}

// ---------------------------------------------------------------------------------
// Seeds, reports and the scenarios
// ---------------------------------------------------------------------------------

/// The seed of a run: `HOIST_FAULT_SEED` if set, else a random one. Every choice of
/// victims and timings comes from it, so a failing run replays with
/// `HOIST_FAULT_SEED=<seed>`.
pub fn fault_seed() -> u64 {
    seed_from_env().unwrap_or_else(|| rand::random::<u32>() as u64)
}

/// The seed of the short form in the test suite: `HOIST_FAULT_SEED` if set, else
/// `default`, so that every CI run makes the same choices and a red run replays as it
/// failed (the long form, `hoist-bench faults`, draws new seeds).
pub fn fault_seed_or(default: u64) -> u64 {
    seed_from_env().unwrap_or(default)
}

fn seed_from_env() -> Option<u64> {
    let text = std::env::var("HOIST_FAULT_SEED").ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("HOIST_FAULT_SEED={text:?} is not a number")),
    )
}

/// How long a scenario runs: the test's short form or the bench's long form.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Leader SIGKILLs under write load.
    pub leader_kills: usize,
    /// SIGKILLs of random managers during writes (crash durability).
    pub manager_kills: usize,
}

impl Size {
    pub fn short() -> Size {
        Size {
            leader_kills: 5,
            manager_kills: 10,
        }
    }

    pub fn long(kills: usize) -> Size {
        Size {
            leader_kills: (kills / 3).max(3),
            manager_kills: kills,
        }
    }
}

/// The fault scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// SIGKILL the leader of 3 managers several times under write load.
    LeaderKills,
    /// The leader isolated in a minority by the proxy, then paused (SIGSTOP): reads
    /// there fail or see the majority's newer write.
    LeaderIsolated,
    /// A worker cut from the managers and healed: its tasks are replaced while it is
    /// cut off, and no slot runs twice after healing.
    WorkerPartition,
    /// Repeated SIGKILLs of random managers during writes: nothing acknowledged lost.
    ManagerKills,
    /// Two of three managers lost: writes refused with "no quorum", then
    /// `init --force-new-cluster` on the survivor keeps every acknowledged change.
    QuorumLoss,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::LeaderKills,
        Scenario::LeaderIsolated,
        Scenario::WorkerPartition,
        Scenario::ManagerKills,
        Scenario::QuorumLoss,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::LeaderKills => "leader-kills",
            Scenario::LeaderIsolated => "leader-isolated",
            Scenario::WorkerPartition => "worker-partition",
            Scenario::ManagerKills => "manager-kills",
            Scenario::QuorumLoss => "quorum-loss",
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL
            .into_iter()
            .find(|scenario| scenario.name() == name)
    }

    /// The scenario's own RNG stream for a seed.
    fn rng(self, seed: u64) -> StdRng {
        let index = Scenario::ALL
            .iter()
            .position(|scenario| *scenario == self)
            .unwrap_or(0) as u64;
        StdRng::seed_from_u64(seed ^ (index + 1).wrapping_mul(0x2545_f491_4f6c_dd1d))
    }
}

/// What a scenario found.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: Scenario,
    pub seed: u64,
    /// Every checker with its violations (see [`check::CHECKERS`]).
    pub checks: Vec<(&'static str, Violations)>,
    pub timings: Vec<(String, Duration)>,
    /// Things worth knowing that are not violations.
    pub notes: Vec<String>,
    /// The faults and steps, with times since the start.
    pub schedule: Vec<String>,
    pub acked_writes: usize,
    pub failed_writes: usize,
    pub reads: usize,
    pub elapsed: Duration,
    /// Node log tails, kept when something was violated.
    pub logs: String,
}

impl Report {
    /// Violations of every checker.
    pub fn violations(&self) -> usize {
        self.checks.iter().map(|(_, found)| found.len()).sum()
    }

    /// Violations of one checker.
    pub fn count(&self, checker: &str) -> usize {
        self.checks
            .iter()
            .filter(|(name, _)| *name == checker)
            .map(|(_, found)| found.len())
            .sum()
    }

    /// The median of the timings named `name`.
    pub fn median(&self, name: &str) -> Option<Duration> {
        let mut samples: Vec<Duration> = self
            .timings
            .iter()
            .filter(|(what, _)| what == name)
            .map(|(_, took)| *took)
            .collect();
        samples.sort();
        samples.get(samples.len().saturating_sub(1) / 2).copied()
    }

    /// A readable account: seed, operations, timings, violations, schedule and (when
    /// something was violated) log tails.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "== fault scenario {} (HOIST_FAULT_SEED={}) took {:.1}s: {} violations; {} writes acknowledged, {} indeterminate, {} reads\n",
            self.scenario.name(),
            self.seed,
            self.elapsed.as_secs_f64(),
            self.violations(),
            self.acked_writes,
            self.failed_writes,
            self.reads
        ));
        for (checker, found) in &self.checks {
            out.push_str(&format!("  {checker}: {}\n", found.len()));
            for violation in found.iter().take(20) {
                out.push_str(&format!("    - {violation}\n"));
            }
        }
        let mut names: Vec<&str> = Vec::new();
        for (name, _) in &self.timings {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        for name in names {
            let samples: Vec<String> = self
                .timings
                .iter()
                .filter(|(what, _)| what == name)
                .map(|(_, took)| format!("{:.2}", took.as_secs_f64()))
                .collect();
            out.push_str(&format!("  timing {name} (s): {}\n", samples.join(" ")));
        }
        for note in &self.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        out.push_str("  schedule:\n");
        for event in &self.schedule {
            out.push_str(&format!("    {event}\n"));
        }
        if !self.logs.is_empty() {
            out.push_str(&self.logs);
        }
        out
    }
}

/// Runs one scenario with a seed. Panics only if the cluster cannot even be set up.
pub fn run_scenario(bin: &Path, scenario: Scenario, seed: u64, size: Size) -> Report {
    eprintln!(
        "fault scenario {}: HOIST_FAULT_SEED={seed} (set it to replay)",
        scenario.name()
    );
    match scenario {
        Scenario::LeaderKills => leader_kills(bin, seed, size),
        Scenario::LeaderIsolated => leader_isolated(bin, seed),
        Scenario::WorkerPartition => worker_partition(bin, seed),
        Scenario::ManagerKills => manager_kills(bin, seed, size),
        Scenario::QuorumLoss => quorum_loss(bin, seed),
    }
}

/// A scenario in progress: the cluster, its RNG, the history and what was seen.
struct Run {
    scenario: Scenario,
    seed: u64,
    cluster: Cluster,
    rng: StdRng,
    history: Arc<History>,
    /// Violations the scenario itself saw (stale read on the isolated node, a write
    /// acknowledged without quorum, a step that never happened).
    violations: Violations,
    timings: Vec<(String, Duration)>,
    notes: Vec<String>,
    schedule: Vec<String>,
    started: Instant,
    /// Samples what really runs until `finish` (see `watch.rs`).
    watcher: Option<Watcher>,
    /// The faults injected so far, for the timeline checkers: while a node cannot hear
    /// the managers, what it still runs is not held against it.
    faults: Vec<Fault>,
    /// Where the scenario says its services are at their desired replicas for good.
    steady_from: Option<Duration>,
    /// When the last `settle` converged: the settle point, unless the scenario set one.
    converged_at: Option<Duration>,
    windows: Windows,
}

type Step<T> = Result<T, String>;

/// `Fault::what` of the faults a `Run` injects.
const KILLED: &str = "daemon killed";
const PAUSED: &str = "daemon paused";
const CUT: &str = "cut off";

/// Samples the watcher takes after the settle point before the run ends (one of them
/// with a view, which names the tasks started last), so that the replicas are seen
/// continuously for a moment even when the cluster settled at once.
const SAMPLES_AFTER_SETTLE: usize = 4;

impl Run {
    fn new(bin: &Path, scenario: Scenario, seed: u64, options: ClusterOptions) -> Run {
        // One clock for the schedule, the operations and the watcher's samples.
        let history = History::new();
        let started = history.origin();
        let period = hoist_types::duration::parse_duration(options.heartbeat_period)
            .expect("ClusterOptions::heartbeat_period is a duration");
        let windows = Windows::for_cluster(period, options.heartbeat_grace);
        let managers: Vec<usize> = (0..options.managers).collect();
        let cluster = Cluster::start(bin, options);
        let watcher = Watcher::start(Target {
            names: names(&cluster),
            data_dirs: cluster
                .nodes
                .iter()
                .map(|node| node.data_dir.clone())
                .collect(),
            cli: cluster.cli(),
            managers,
            origin: started,
        });
        let mut run = Run {
            scenario,
            seed,
            cluster,
            rng: scenario.rng(seed),
            history,
            violations: Vec::new(),
            timings: Vec::new(),
            notes: Vec::new(),
            schedule: Vec::new(),
            started,
            watcher: Some(watcher),
            faults: Vec::new(),
            steady_from: None,
            converged_at: None,
            windows,
        };
        run.event(format!(
            "cluster of {} nodes ready in {:.1}s",
            run.cluster.nodes.len(),
            started.elapsed().as_secs_f64()
        ));
        run
    }

    fn name(&self, index: usize) -> String {
        self.cluster.nodes[index].name.clone()
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn fault_begins(&mut self, index: usize, what: &str) {
        let fault = Fault {
            node: self.name(index),
            what: what.to_string(),
            from: self.now(),
            to: None,
        };
        self.faults.push(fault);
    }

    fn fault_ends(&mut self, index: Option<usize>, what: &str) {
        let node = index.map(|index| self.name(index));
        let now = self.now();
        for fault in &mut self.faults {
            if fault.to.is_none()
                && fault.what == what
                && node.as_ref().is_none_or(|node| *node == fault.node)
            {
                fault.to = Some(now);
            }
        }
    }

    /// SIGKILLs node `index` (its task processes live on, as with a crashed daemon).
    fn kill(&mut self, index: usize) {
        self.cluster.kill(index);
        self.fault_begins(index, KILLED);
    }

    fn start_node(&mut self, index: usize) {
        self.cluster.start_node(index);
        self.fault_ends(Some(index), KILLED);
    }

    fn pause(&mut self, index: usize) {
        self.cluster.pause(index);
        self.fault_begins(index, PAUSED);
    }

    fn resume(&mut self, index: usize) {
        self.cluster.resume(index);
        self.fault_ends(Some(index), PAUSED);
    }

    /// Cuts the nodes of `cut_off` from those of `from` (the first cannot hear the
    /// managers among the second).
    fn partition(&mut self, cut_off: &[usize], from: &[usize]) {
        self.cluster.partition(cut_off, from);
        for index in cut_off {
            self.fault_begins(*index, CUT);
        }
    }

    fn isolate(&mut self, index: usize) {
        self.cluster.isolate(index);
        self.fault_begins(index, CUT);
    }

    fn heal(&mut self) {
        self.cluster.heal();
        self.fault_ends(None, CUT);
    }

    /// From now to the end, every service must keep a live process in each slot.
    fn mark_steady(&mut self) {
        self.steady_from = Some(self.now());
        self.event("settle point: the replicas are watched from here on".into());
    }

    fn event(&mut self, text: String) {
        let line = format!("[{:>7.2}s] {text}", self.started.elapsed().as_secs_f64());
        eprintln!("  {} {line}", self.scenario.name());
        self.schedule.push(line);
    }

    fn timing(&mut self, name: &str, took: Duration) {
        self.timings.push((name.to_string(), took));
    }

    fn violation(&mut self, text: String) {
        self.event(format!("VIOLATION: {text}"));
        self.violations.push(text);
    }

    fn recorder(&self, client: usize) -> Recorder {
        Recorder::new(self.cluster.cli(), self.history.clone(), client)
    }

    /// A pause of a random length in `range_ms` (fault timing, not correctness).
    fn random_pause(&mut self, low_ms: u64, high_ms: u64) {
        let ms = self.rng.gen_range(low_ms..=high_ms);
        std::thread::sleep(Duration::from_millis(ms));
    }

    /// Polls `check` until it gives a value, or fails the step after `timeout`.
    fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> Step<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check() {
                return Ok(value);
            }
            if Instant::now() > deadline {
                return Err(format!("timed out after {timeout:?} waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The leader of `managers`: a node that says it leads and that a majority of
    /// `managers` name as leader.
    fn leader(&self, managers: &[usize]) -> Option<usize> {
        leader_of(&self.cluster.cli(), managers)
    }

    fn wait_leader(&self, managers: &[usize]) -> Step<usize> {
        self.wait(
            "a leader that a majority of managers follows",
            Duration::from_secs(30),
            || self.leader(managers),
        )
    }

    /// Daemons that exited although the scenario did not kill them: a crash (or a
    /// signal from outside the test), reported as a violation.
    fn check_daemons(&mut self) {
        for index in 0..self.cluster.nodes.len() {
            let status = match self.cluster.nodes[index].child.as_mut() {
                Some(child) => match child.try_wait() {
                    Ok(Some(status)) => status,
                    _ => continue,
                },
                None => continue,
            };
            self.cluster.nodes[index].child = None;
            let tail = self.cluster.log_tail(index, 3);
            let hint = if tail.contains("shutting down") {
                " (it logged a clean shutdown: SIGTERM/SIGINT from outside the test?)"
            } else {
                ""
            };
            self.violation(format!(
                "daemon {} exited by itself with {status}{hint}; its log ends with:\n{tail}",
                self.name(index)
            ));
        }
    }

    /// With `HOIST_FAULT_DEBUG` set, logs every task and live task process.
    fn debug_tasks(&mut self) {
        if std::env::var_os("HOIST_FAULT_DEBUG").is_none() {
            return;
        }
        let Some(snapshot) = take_snapshot(&self.cluster, 0, &[]) else {
            return;
        };
        for task in &snapshot.tasks {
            self.event(format!(
                "debug: task {} {} on {} desired {} observed {}",
                task["id"],
                task["name"],
                task["node_hostname"],
                task["desired_state"],
                task["status"]["state"]
            ));
        }
        self.event(format!("debug: live task processes {:?}", snapshot.live));
    }

    /// Waits until the cluster has converged (as [`check::convergence`] sees it) and
    /// returns the last snapshot taken, converged or not.
    fn settle(
        &mut self,
        asked: &[usize],
        managers: &[usize],
        timeout: Duration,
    ) -> Option<Snapshot> {
        let started = Instant::now();
        let mut last: Option<Snapshot> = None;
        self.converged_at = None;
        loop {
            for index in asked {
                let Some(snapshot) = take_snapshot(&self.cluster, *index, managers) else {
                    continue;
                };
                let converged = check::convergence(&snapshot)
                    .iter()
                    .all(|(_, found)| found.is_empty());
                last = Some(snapshot);
                if converged {
                    self.converged_at = Some(self.now());
                    let took = started.elapsed();
                    self.timing("settle", took);
                    self.event(format!("converged after {:.1}s", took.as_secs_f64()));
                    return last;
                }
                break;
            }
            if started.elapsed() > timeout {
                self.event(format!("NOT converged after {timeout:?}"));
                return last;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Stops the watcher (after a few samples past the settle point) and runs the
    /// timeline checkers over what it saw, under the names of the final-snapshot
    /// checkers they extend to every instant.
    fn watched_checks(&mut self) -> Vec<(&'static str, Violations)> {
        let Some(watcher) = self.watcher.take() else {
            return Vec::new();
        };
        let steady_from = self.steady_from.or(self.converged_at);
        if let Some(steady_from) = steady_from {
            let deadline = Instant::now() + Duration::from_secs(3);
            while !watcher.viewed_since(steady_from, SAMPLES_AFTER_SETTLE)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let samples = watcher.stop();
        let with_view = samples
            .iter()
            .filter(|sample| sample.view.is_some())
            .count();
        self.notes.push(format!(
            "watcher: {} samples ({with_view} with the managers' view); windows: hand-over {:?}, Down {:?}, drain {:?}; replicas watched from {}",
            samples.len(),
            self.windows.hand_over,
            self.windows.down,
            self.windows.drain,
            steady_from.map_or("nowhere (never settled)".to_string(), |at| format!("{:.2}s", at.as_secs_f64()))
        ));
        let timeline = Timeline {
            samples,
            faults: self.faults.clone(),
            steady_from,
        };
        let windows = &self.windows;
        let mut misplaced = timeline::down_nodes_running_tasks(&timeline, windows);
        misplaced.extend(timeline::drained_nodes_running_tasks(&timeline, windows));
        vec![
            (
                check::REPLICAS,
                timeline::replicas_short_over_time(&timeline),
            ),
            (
                check::TWICE,
                timeline::slots_twice_over_time(&timeline, windows),
            ),
            (check::MISPLACED, misplaced),
        ]
    }

    /// Runs the final checks and builds the report.
    fn finish(
        mut self,
        outcome: Step<()>,
        snapshot: Option<Snapshot>,
        registers: &[(String, String)],
    ) -> Report {
        if let Err(err) = outcome {
            self.violation(format!("scenario stopped: {err}"));
        }
        self.check_daemons();
        let over_time = self.watched_checks();
        let ops = self.history.ops();
        let mut checks: Vec<(&'static str, Violations)> = match &snapshot {
            Some(snapshot) => check::check_all(&ops, snapshot, registers),
            None => {
                self.violations
                    .push("no final snapshot: no manager answered".to_string());
                check::CHECKERS[..6]
                    .iter()
                    .map(|name| (*name, Vec::new()))
                    .collect()
            }
        };
        for (name, found) in over_time {
            if let Some((_, violations)) = checks.iter_mut().find(|(checker, _)| *checker == name) {
                violations.extend(found);
            }
        }
        checks.push((check::SCENARIO, std::mem::take(&mut self.violations)));
        let writes: Vec<&crate::workload::Op> =
            ops.iter().filter(|op| op.kind.is_write()).collect();
        let reads = ops
            .iter()
            .filter(|op| matches!(op.result, crate::workload::OpResult::Read(_)))
            .count();
        let mut errors: BTreeMap<String, usize> = BTreeMap::new();
        for op in &writes {
            if let crate::workload::OpResult::Failed(err) = &op.result {
                *errors.entry(error_kind(err)).or_insert(0) += 1;
            }
        }
        let mut errors: Vec<(String, usize)> = errors.into_iter().collect();
        errors.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
        for (error, count) in errors.iter().take(6) {
            self.notes
                .push(format!("{count} indeterminate writes: {error}"));
        }
        let mut report = Report {
            scenario: self.scenario,
            seed: self.seed,
            checks,
            timings: self.timings,
            notes: self.notes,
            schedule: self.schedule,
            acked_writes: writes.iter().filter(|op| op.acked()).count(),
            failed_writes: writes.iter().filter(|op| op.failed()).count(),
            reads,
            elapsed: self.started.elapsed(),
            logs: String::new(),
        };
        if report.violations() > 0 {
            for index in 0..self.cluster.nodes.len() {
                report.logs.push_str(&format!(
                    "  --- {} log tail ---\n{}\n",
                    self.cluster.nodes[index].name,
                    self.cluster.log_tail(index, 40)
                ));
            }
        }
        report
    }
}

/// The leader of `managers`, asked through the CLI with time-outs: a node that says it
/// leads and that a majority of `managers` name as leader.
pub fn leader_of(cli: &crate::workload::Cli, managers: &[usize]) -> Option<usize> {
    let infos: Vec<(usize, Value)> = managers
        .iter()
        .filter_map(|index| cli.json(*index, &["info"]).map(|info| (*index, info)))
        .collect();
    for (index, info) in &infos {
        if info["is_leader"] != true {
            continue;
        }
        let id = &info["node_id"];
        let votes = infos
            .iter()
            .filter(|(_, other)| &other["leader"] == id)
            .count();
        if votes * 2 > managers.len() {
            return Some(*index);
        }
    }
    None
}

/// The cluster as manager `asked` sees it, plus what every one of `managers` answers.
pub fn take_snapshot(cluster: &Cluster, asked: usize, managers: &[usize]) -> Option<Snapshot> {
    let cli = cluster.cli();
    let array = |value: Option<Value>| value.and_then(|value| value.as_array().cloned());
    let nodes = array(cli.json(asked, &["node", "ls"]))?;
    let services = array(cli.json(asked, &["service", "ls"]))?;
    let mut tasks = Vec::new();
    for service in &services {
        let name = service["spec"]["name"].as_str()?;
        tasks.extend(array(cli.json(asked, &["service", "ps", name]))?);
    }
    let live = cluster
        .live_task_processes()
        .into_iter()
        .map(|(index, task)| (cluster.nodes[index].name.clone(), task))
        .collect();
    let managers = managers
        .iter()
        .map(|index| check::ManagerView {
            name: cluster.nodes[*index].name.clone(),
            nodes: array(cli.json(*index, &["node", "ls"])),
            services: array(cli.json(*index, &["service", "ls"])),
        })
        .collect();
    Some(Snapshot {
        nodes,
        services,
        tasks,
        live,
        managers,
    })
}

fn names(cluster: &Cluster) -> Vec<String> {
    cluster.nodes.iter().map(|node| node.name.clone()).collect()
}

/// SIGKILL the leader of 3 managers (+2 workers) several times under write load.
fn leader_kills(bin: &Path, seed: u64, size: Size) -> Report {
    let mut run = Run::new(
        bin,
        Scenario::LeaderKills,
        seed,
        ClusterOptions {
            managers: 3,
            workers: 2,
            ..Default::default()
        },
    );
    let managers = [0, 1, 2];
    let config = WorkloadConfig::mixed(managers.to_vec(), names(&run.cluster));
    let register = config.register.clone().expect("a register");
    let workload = Workload::start(run.cluster.cli(), run.history.clone(), config, seed);
    let outcome = (|| -> Step<()> {
        run.random_pause(500, 1500);
        for round in 0..size.leader_kills {
            let leader = run.wait_leader(&managers)?;
            run.event(format!(
                "kill {}/{}: SIGKILL leader {}",
                round + 1,
                size.leader_kills,
                run.name(leader)
            ));
            run.kill(leader);
            let killed = Instant::now();
            let new_leader = run.wait_leader(&managers)?;
            run.timing("leader SIGKILL -> new leader", killed.elapsed());
            run.event(format!("new leader {}", run.name(new_leader)));
            run.random_pause(200, 1500);
            run.start_node(leader);
            let restarted = Instant::now();
            let cli = run.cluster.cli();
            run.wait(
                "the old leader back as a follower",
                Duration::from_secs(30),
                || {
                    let info = cli.json(leader, &["info"])?;
                    (info["leader"].is_string() && info["is_leader"] == false).then_some(())
                },
            )?;
            run.timing("restart -> follows a leader", restarted.elapsed());
            run.event(format!("{} restarted and follows", run.name(leader)));
            run.random_pause(300, 1500);
        }
        Ok(())
    })();
    workload.stop();
    run.event("workload stopped".into());
    let snapshot = run.settle(&managers, &managers, Duration::from_secs(90));
    run.finish(outcome, snapshot, &[register])
}

/// Repeated SIGKILLs of random managers during writes (crash durability).
fn manager_kills(bin: &Path, seed: u64, size: Size) -> Report {
    let mut run = Run::new(
        bin,
        Scenario::ManagerKills,
        seed,
        ClusterOptions {
            managers: 3,
            workers: 1,
            ..Default::default()
        },
    );
    let managers = [0, 1, 2];
    let config = WorkloadConfig::mixed(managers.to_vec(), names(&run.cluster));
    let register = config.register.clone().expect("a register");
    let workload = Workload::start(run.cluster.cli(), run.history.clone(), config, seed);
    let outcome = (|| -> Step<()> {
        for round in 0..size.manager_kills {
            run.random_pause(100, 1000);
            let victim = managers[run.rng.gen_range(0..managers.len())];
            run.event(format!(
                "kill {}/{}: SIGKILL {}",
                round + 1,
                size.manager_kills,
                run.name(victim)
            ));
            run.kill(victim);
            run.random_pause(0, 800);
            run.start_node(victim);
            let restarted = Instant::now();
            let cli = run.cluster.cli();
            // The store must open after every kill, and the node find its leader.
            run.wait(
                "the killed manager back and following a leader",
                Duration::from_secs(30),
                || {
                    let info = cli.json(victim, &["info"])?;
                    info["leader"].is_string().then_some(())
                },
            )?;
            run.timing("restart -> follows a leader", restarted.elapsed());
        }
        Ok(())
    })();
    workload.stop();
    run.event("workload stopped".into());
    let snapshot = run.settle(&managers, &managers, Duration::from_secs(90));
    run.finish(outcome, snapshot, &[register])
}

/// The leader isolated in a minority (proxy), then the next leader paused (SIGSTOP):
/// reads there fail or see the majority's newer write, writes there are never
/// acknowledged.
fn leader_isolated(bin: &Path, seed: u64) -> Report {
    let mut run = Run::new(
        bin,
        Scenario::LeaderIsolated,
        seed,
        ClusterOptions {
            managers: 3,
            workers: 1,
            proxied: true,
            ..Default::default()
        },
    );
    let mode = if run.rng.gen_bool(0.5) {
        PartitionMode::Refuse
    } else {
        PartitionMode::Blackhole
    };
    run.cluster.set_partition_mode(mode);
    run.event(format!("partition mode {mode:?}"));
    let managers = [0, 1, 2];
    let target = run.name(3);
    let config = WorkloadConfig::light(managers.to_vec(), names(&run.cluster));
    let register = config.register.clone().expect("a register");
    let workload = Workload::start(run.cluster.cli(), run.history.clone(), config, seed);
    let recorder = run.recorder(crate::workload::SCENARIO_CLIENT);
    let mut next = 0u64;
    let outcome = (|| -> Step<()> {
        // Writes `iso` through `via` (any of them, retried) until one is acknowledged.
        let mut write_until_acked = |run: &mut Run, via: &[usize]| -> Step<u64> {
            let deadline = Instant::now() + Duration::from_secs(40);
            loop {
                next += 1;
                let node = via[run.rng.gen_range(0..via.len())];
                let started = Instant::now();
                match recorder.set_label(node, &target, "iso", next) {
                    Ok(()) => return Ok(next),
                    Err(err) => run.event(format!(
                        "write iso={next} via {} failed after {:.1}s: {}",
                        run.name(node),
                        started.elapsed().as_secs_f64(),
                        first_line(&err)
                    )),
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "no write of iso acknowledged through {via:?} in 40s"
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        };

        // Phase 1: the leader alone on one side of a partition.
        run.random_pause(300, 1000);
        let leader = run.wait_leader(&managers)?;
        write_until_acked(&mut run, &[leader])?;
        run.event(format!("isolate leader {}", run.name(leader)));
        run.isolate(leader);
        let cut = Instant::now();
        let majority: Vec<usize> = managers.iter().copied().filter(|m| *m != leader).collect();
        let newer = write_until_acked(&mut run, &majority)?;
        run.timing(
            "leader isolated -> majority write acknowledged",
            cut.elapsed(),
        );
        run.event(format!("majority acknowledged iso={newer}"));
        for _ in 0..3 {
            match recorder.read_label(leader, &target, "iso") {
                Err(err) => run.event(format!("read on the isolated old leader failed (fine): {}", first_line(&err))),
                Ok(Some(value)) if value >= newer => run.event(format!("read on the isolated old leader: iso={value} (fine)")),
                Ok(value) => run.violation(format!(
                    "stale read on the isolated old leader {}: iso={value:?} after the majority acknowledged {newer}",
                    run.name(leader)
                )),
            }
        }
        match recorder.set_label(leader, &target, "iso-minority", 1) {
            Ok(()) => run.violation(format!(
                "a write through the isolated old leader {} was acknowledged",
                run.name(leader)
            )),
            Err(err) => run.event(format!(
                "write on the isolated old leader refused (fine): {}",
                first_line(&err)
            )),
        }
        run.random_pause(0, 1000);
        run.heal();
        let healed = Instant::now();
        run.event("healed".into());
        let cli = run.cluster.cli();
        run.wait(
            "the old leader to catch up after healing",
            Duration::from_secs(30),
            || {
                let value = parse_label_of(&cli, leader, &target, "iso")?;
                (value >= newer).then_some(())
            },
        )?;
        run.timing("heal -> old leader caught up", healed.elapsed());

        // Phase 2: the (new) leader frozen with SIGSTOP while the others go on.
        let leader = run.wait_leader(&managers)?;
        write_until_acked(&mut run, &[leader])?;
        run.event(format!("SIGSTOP leader {}", run.name(leader)));
        run.pause(leader);
        let paused = Instant::now();
        let majority: Vec<usize> = managers.iter().copied().filter(|m| *m != leader).collect();
        let newer = match write_until_acked(&mut run, &majority) {
            Ok(newer) => newer,
            Err(err) => {
                run.resume(leader);
                return Err(err);
            }
        };
        run.timing(
            "leader paused -> majority write acknowledged",
            paused.elapsed(),
        );
        run.event(format!(
            "majority acknowledged iso={newer}; reading on the paused leader"
        ));
        let reader = recorder.clone();
        let target_name = target.clone();
        let read = std::thread::spawn(move || reader.read_label(leader, &target_name, "iso"));
        run.random_pause(100, 1000);
        run.resume(leader);
        run.event(format!("SIGCONT {}", run.name(leader)));
        match read.join().map_err(|_| "the reader panicked".to_string())? {
            Err(err) => run.event(format!("read on the resumed old leader failed (fine): {}", first_line(&err))),
            Ok(Some(value)) if value >= newer => run.event(format!("read on the resumed old leader: iso={value} (fine)")),
            Ok(value) => run.violation(format!(
                "stale read on the resumed old leader {}: iso={value:?} after the majority acknowledged {newer}",
                run.name(leader)
            )),
        }
        run.random_pause(300, 1000);
        Ok(())
    })();
    run.heal();
    for index in 0..run.cluster.nodes.len() {
        run.resume(index);
    }
    workload.stop();
    run.event("workload stopped".into());
    let snapshot = run.settle(&managers, &managers, Duration::from_secs(90));
    let registers = [register, (target, "iso".to_string())];
    run.finish(outcome, snapshot, &registers)
}

/// A worker cut from the managers (proxy), its tasks replaced, then healed.
fn worker_partition(bin: &Path, seed: u64) -> Report {
    let mut run = Run::new(
        bin,
        Scenario::WorkerPartition,
        seed,
        ClusterOptions {
            managers: 3,
            workers: 2,
            proxied: true,
            ..Default::default()
        },
    );
    let managers = [0, 1, 2];
    let workers = [3, 4];
    let mode = if run.rng.gen_bool(0.5) {
        PartitionMode::Refuse
    } else {
        PartitionMode::Blackhole
    };
    run.cluster.set_partition_mode(mode);
    run.event(format!("partition mode {mode:?}"));
    let recorder = run.recorder(crate::workload::SCENARIO_CLIENT);
    let cli = run.cluster.cli();
    let config = WorkloadConfig::light(managers.to_vec(), names(&run.cluster));
    let register = config.register.clone().expect("a register");
    let mut workload = None;
    let outcome = (|| -> Step<()> {
        // The tasks run on the workers only.
        for manager in managers {
            let name = run.name(manager);
            let out = cli.run(0, &["node", "update", "--availability", "drain", &name]);
            if !out.ok {
                return Err(format!("draining {name}: {}", out.stderr));
            }
        }
        recorder.create_service(0, "web", 4)?;
        run.wait("web running 4 replicas", Duration::from_secs(60), || {
            running_on(&cli, 0, "web").filter(|per_node| per_node.values().sum::<usize>() == 4)
        })?;
        // No other service exists here, and every later move is start-first.
        run.mark_steady();
        workload = Some(Workload::start(
            cli.clone(),
            run.history.clone(),
            config.clone(),
            seed,
        ));
        run.random_pause(300, 1500);
        let victim = workers[run.rng.gen_range(0..workers.len())];
        let other = workers
            .iter()
            .copied()
            .find(|w| *w != victim)
            .expect("two workers");
        let (victim_name, other_name) = (run.name(victim), run.name(other));
        run.event(format!("cut {victim_name} from the managers"));
        run.partition(&[victim], &managers);
        let cut = Instant::now();
        run.wait(
            &format!("{victim_name} Down and its tasks replaced on {other_name}"),
            Duration::from_secs(60),
            || {
                let nodes = cli.json(0, &["node", "ls"])?;
                let down = nodes.as_array()?.iter().any(|node| {
                    node["hostname"] == victim_name.as_str() && node["status"] == "down"
                });
                let per_node = running_on(&cli, 0, "web")?;
                (down && per_node.get(&other_name) == Some(&4)).then_some(())
            },
        )?;
        run.timing("worker cut -> Down and replaced", cut.elapsed());
        let cut_off_still_running = run
            .cluster
            .live_task_processes()
            .iter()
            .filter(|(index, _)| *index == victim)
            .count();
        run.notes.push(format!(
            "while cut off, {victim_name} still ran {cut_off_still_running} task processes"
        ));
        run.event(format!(
            "replaced; {victim_name} still runs {cut_off_still_running} processes"
        ));
        run.debug_tasks();
        run.random_pause(500, 3000);
        let twice_before = take_snapshot(&run.cluster, 0, &[])
            .map_or(0, |snapshot| check::slots_running_twice(&snapshot).len());
        run.heal();
        let healed = Instant::now();
        run.event(format!(
            "healed ({twice_before} slots ran twice just before: the old tasks on {victim_name})"
        ));
        let cluster = &run.cluster;
        run.wait(
            "no slot running twice after healing",
            Duration::from_secs(60),
            || {
                let snapshot = take_snapshot(cluster, 0, &[])?;
                check::slots_running_twice(&snapshot)
                    .is_empty()
                    .then_some(())
            },
        )?;
        run.timing("heal -> no slot runs twice", healed.elapsed());
        run.debug_tasks();
        run.random_pause(300, 1000);
        Ok(())
    })();
    run.heal();
    if let Some(workload) = workload {
        workload.stop();
    }
    run.event("workload stopped".into());
    let snapshot = run.settle(&managers, &managers, Duration::from_secs(90));
    run.finish(outcome, snapshot, &[register])
}

/// Two of three managers lost: writes refused with "no quorum"; `init
/// --force-new-cluster` on the survivor keeps every acknowledged change; the old
/// managers, restarted with their data, are refused and cannot take writes.
fn quorum_loss(bin: &Path, seed: u64) -> Report {
    let mut run = Run::new(
        bin,
        Scenario::QuorumLoss,
        seed,
        ClusterOptions {
            managers: 3,
            workers: 1,
            ..Default::default()
        },
    );
    let managers = [0, 1, 2];
    let survivor = managers[run.rng.gen_range(0..managers.len())];
    let lost: Vec<usize> = managers
        .iter()
        .copied()
        .filter(|m| *m != survivor)
        .collect();
    let worker = run.name(3);
    // Labels only on nodes that outlive the recovery (it drops the lost managers).
    let label_nodes = vec![worker.clone(), run.name(survivor)];
    let config = WorkloadConfig::mixed(managers.to_vec(), label_nodes);
    let register = config.register.clone().expect("a register");
    let never_written = config.max_replicas + 1;
    let workload = Workload::start(run.cluster.cli(), run.history.clone(), config, seed);
    let recorder = run.recorder(crate::workload::SCENARIO_CLIENT);
    let mut outcome = (|| -> Step<()> {
        run.random_pause(3000, 6000);
        workload.stop();
        run.event("workload stopped".into());
        // Every manager has applied every acknowledged change before the loss.
        let before = run.settle(&managers, &managers, Duration::from_secs(90));
        let settled = before.as_ref().is_some_and(|snapshot| {
            check::convergence(snapshot)
                .iter()
                .all(|(_, found)| found.is_empty())
        });
        if !settled {
            return Err("the cluster did not converge before the quorum loss".into());
        }
        for index in &lost {
            run.event(format!("SIGKILL {} and its tasks", run.name(*index)));
            run.kill(*index);
            run.cluster.kill_tasks_of(*index);
        }
        let lost_at = Instant::now();
        type Attempt<'a> = Box<dyn Fn() -> Result<(), String> + 'a>;
        let attempts: [(&str, Attempt); 3] = [
            (
                "label",
                Box::new(|| recorder.set_label(survivor, &worker, "noq", 1)),
            ),
            (
                "create",
                Box::new(|| recorder.create_service(survivor, "noq", 1)),
            ),
            // A count the workload never writes: every write's value is unique.
            (
                "scale",
                Box::new(|| recorder.scale(survivor, "w0-s0", never_written)),
            ),
        ];
        for (what, attempt) in attempts {
            let started = Instant::now();
            match attempt() {
                Ok(()) => run.violation(format!(
                    "a {what} was acknowledged with 2 of 3 managers down"
                )),
                Err(err) if err.contains("no quorum") => {}
                Err(err) => run.violation(format!(
                    "a {what} without quorum failed without saying \"no quorum\": {}",
                    first_line(&err)
                )),
            }
            run.timing("write refused without quorum", started.elapsed());
        }
        run.event(format!(
            "writes refused for {:.1}s; init --force-new-cluster on {}",
            lost_at.elapsed().as_secs_f64(),
            run.name(survivor)
        ));
        let cli = run.cluster.cli();
        let forced = Instant::now();
        let out = cli.run(survivor, &["init", "--force-new-cluster"]);
        if !out.ok {
            return Err(format!("init --force-new-cluster failed: {}", out.stderr));
        }
        run.event(format!("force-new-cluster: {}", first_line(&out.stdout)));
        let mut attempt = 0;
        run.wait(
            "the survivor accepts writes",
            Duration::from_secs(30),
            || {
                attempt += 1;
                recorder.set_label(survivor, &worker, "after", attempt).ok()
            },
        )?;
        run.timing("force-new-cluster -> write accepted", forced.elapsed());
        // The old managers come back with their old data: refused, no second cluster.
        for index in &lost {
            run.start_node(*index);
        }
        run.event("old managers restarted with their data".into());
        for index in lost.clone() {
            let refused = run.wait("the old manager refused", Duration::from_secs(30), || {
                let out = cli.run(index, &["node", "ls"]);
                (!out.ok && out.stderr.contains("refused")).then_some(())
            });
            if let Err(err) = refused {
                run.violation(format!("{}: {err}", run.name(index)));
            }
            if recorder
                .set_label(index, &worker, "split", index as u64 + 1)
                .is_ok()
            {
                run.violation(format!(
                    "the old manager {} acknowledged a write after the cluster was forced new (split brain)",
                    run.name(index)
                ));
            }
        }
        Ok(())
    })();
    let snapshot = run.settle(&[survivor], &[survivor], Duration::from_secs(90));
    if let Some(snapshot) = &snapshot {
        let resurrected: Vec<String> = snapshot
            .services
            .iter()
            .filter(|service| service["spec"]["name"] == "noq")
            .map(|_| "service noq (refused with no quorum) exists after recovery".to_string())
            .collect();
        run.notes.extend(resurrected);
    }
    if outcome.is_ok() && snapshot.is_none() {
        outcome = Err("the survivor does not answer after recovery".into());
    }
    run.finish(outcome, snapshot, &[register])
}

/// An error message without its numbers and addresses, to count errors by kind.
fn error_kind(err: &str) -> String {
    let line = first_line(err);
    let mut kind = String::new();
    let mut in_digits = false;
    for c in line.chars().take(160) {
        if c.is_ascii_digit() {
            if !in_digits {
                kind.push('#');
            }
            in_digits = true;
        } else {
            in_digits = false;
            kind.push(c);
        }
    }
    kind
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// Label `key` of node `target`, read through node `asked`.
fn parse_label_of(
    cli: &crate::workload::Cli,
    asked: usize,
    target: &str,
    key: &str,
) -> Option<u64> {
    let nodes = cli.json(asked, &["node", "ls"])?;
    let node = nodes
        .as_array()?
        .iter()
        .find(|node| node["hostname"] == target)?;
    node["labels"][key].as_str()?.parse().ok()
}

/// Running tasks of `service` per node hostname (observed running and still wanted).
fn running_on(
    cli: &crate::workload::Cli,
    asked: usize,
    service: &str,
) -> Option<BTreeMap<String, usize>> {
    let tasks = cli.json(asked, &["service", "ps", service])?;
    let mut per_node = BTreeMap::new();
    for task in tasks.as_array()? {
        if task["desired_state"] == "running" && task["status"]["state"] == "running" {
            *per_node
                .entry(
                    task["node_hostname"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
                .or_insert(0) += 1;
        }
    }
    Some(per_node)
}

#[cfg(test)]
mod tests {
    use std::os::fd::FromRawFd;

    use super::*;

    /// A TCP connection from `source` (so the proxy sees that node) to `to`.
    fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
        let to_sockaddr = |addr: SocketAddr| {
            let SocketAddr::V4(addr) = addr else {
                panic!("IPv4 only")
            };
            libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: addr.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*addr.ip()).to_be(),
                },
                sin_zero: [0; 8],
            }
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: plain socket calls on a fd we own; it is closed on every error path
        // (by the TcpStream that takes it).
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let stream = TcpStream::from_raw_fd(fd);
            let local = to_sockaddr(SocketAddr::from((source, 0)));
            if libc::bind(fd, &local as *const _ as *const libc::sockaddr, len) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let remote = to_sockaddr(to);
            if libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(stream)
        }
    }

    fn echo_server(addr: SocketAddr) {
        let listener = TcpListener::bind(addr).expect("binding the echo server");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = stream.try_clone().expect("clone");
                    let mut writer = stream;
                    let _ = std::io::copy(&mut reader, &mut writer);
                });
            }
        });
    }

    /// Sends `text` and reads it back within `timeout`; `None` if nothing came back.
    fn echo(stream: &mut TcpStream, text: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        stream.write_all(text).ok()?;
        read_some(stream, timeout)
    }

    fn read_some(stream: &mut TcpStream, timeout: Duration) -> Option<Vec<u8>> {
        stream.set_read_timeout(Some(timeout)).ok()?;
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(buf[..n].to_vec()),
        }
    }

    #[test]
    fn the_proxy_forwards_refuses_and_holds_by_source_address() {
        let block = (1..250u8)
            .find(|b| {
                (1..=2u8).all(|host| {
                    [4377u16, 4378].iter().all(|port| {
                        TcpListener::bind((Ipv4Addr::new(127, 251, *b, host), *port)).is_ok()
                    })
                })
            })
            .expect("a free address block");
        let a = Ipv4Addr::new(127, 251, block, 1);
        let b = Ipv4Addr::new(127, 251, block, 2);
        echo_server(SocketAddr::from((a, 4378)));
        let proxy = FaultProxy::start(&[a, b], 4377, 4378).expect("starting the proxy");
        let front = SocketAddr::from((a, 4377));
        let short = Duration::from_millis(300);
        let long = Duration::from_secs(5);

        let mut from_b = connect_from(b, front).expect("connecting");
        assert_eq!(
            echo(&mut from_b, b"one", long).as_deref(),
            Some(&b"one"[..])
        );

        // Refuse: the existing connection dies, new ones from b are reset, others pass.
        proxy.cut(&[a], &[b]);
        assert_eq!(echo(&mut from_b, b"two", long), None);
        let mut again = connect_from(b, front).expect("the kernel accepts");
        assert_eq!(echo(&mut again, b"three", long), None);
        let mut from_elsewhere = TcpStream::connect(front).expect("connecting");
        assert_eq!(
            echo(&mut from_elsewhere, b"four", long).as_deref(),
            Some(&b"four"[..])
        );
        assert!(proxy.refused() >= 2);
        proxy.heal();
        let mut healed = connect_from(b, front).expect("connecting");
        assert_eq!(
            echo(&mut healed, b"five", long).as_deref(),
            Some(&b"five"[..])
        );

        // Blackhole: bytes wait until the cut heals, on old and new connections.
        proxy.set_mode(PartitionMode::Blackhole);
        proxy.cut(&[b], &[a]);
        assert_eq!(echo(&mut healed, b"six", short), None);
        let mut held = connect_from(b, front).expect("connecting");
        assert_eq!(echo(&mut held, b"seven", short), None);
        proxy.heal();
        assert_eq!(read_some(&mut healed, long).as_deref(), Some(&b"six"[..]));
        assert_eq!(read_some(&mut held, long).as_deref(), Some(&b"seven"[..]));
        drop(proxy);
        assert!(
            TcpListener::bind(front).is_ok(),
            "the proxy let go of its port"
        );
    }
}
