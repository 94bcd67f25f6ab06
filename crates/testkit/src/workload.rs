//! A client workload that records every change it asks for and every read it makes,
//! with start and end times, by running the `hoist` CLI against the nodes' unix sockets.
//! A change is acknowledged when its CLI exited 0; a failed or timed-out change is
//! indeterminate (it may or may not have happened), never "absent".

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::Cluster;

/// What a CLI run gave.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// Runs the CLI against a cluster's nodes from any thread (it borrows nothing from the
/// [`Cluster`], which the scenario keeps mutating: kills and restarts).
#[derive(Debug, Clone)]
pub struct Cli {
    pub bin: PathBuf,
    pub sockets: Vec<PathBuf>,
    pub names: Vec<String>,
    /// A CLI still running after this is killed (a paused daemon answers nothing).
    pub timeout: Duration,
}

impl Cluster {
    /// A CLI runner for workload threads.
    pub fn cli(&self) -> Cli {
        Cli {
            bin: self.bin.clone(),
            sockets: self.nodes.iter().map(|node| node.socket.clone()).collect(),
            names: self.nodes.iter().map(|node| node.name.clone()).collect(),
            timeout: Duration::from_secs(25),
        }
    }
}

impl Cli {
    /// Runs `hoist ARGS` against node `index`, killing it after `self.timeout`.
    pub fn run(&self, index: usize, args: &[&str]) -> CliOutput {
        let child = Command::new(&self.bin)
            .args(args)
            .env(
                "HOIST_HOST",
                format!("unix://{}", self.sockets[index].display()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(err) => {
                return CliOutput {
                    ok: false,
                    stdout: String::new(),
                    stderr: format!("cannot run the CLI: {err}"),
                    timed_out: false,
                }
            }
        };
        let pid = child.id() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let (output, timed_out) = match rx.recv_timeout(self.timeout) {
            Ok(output) => (output, false),
            Err(_) => {
                // SAFETY: the child is not reaped until wait_with_output returns.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                (rx.recv().expect("the CLI waiter"), true)
            }
        };
        match output {
            Ok(output) => CliOutput {
                ok: output.status.success() && !timed_out,
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: if timed_out {
                    format!("timed out after {:?}", self.timeout)
                } else {
                    String::from_utf8_lossy(&output.stderr).into_owned()
                },
                timed_out,
            },
            Err(err) => CliOutput {
                ok: false,
                stdout: String::new(),
                stderr: err.to_string(),
                timed_out,
            },
        }
    }

    /// `hoist ARGS --format json`, parsed; `None` on failure.
    pub fn json(&self, index: usize, args: &[&str]) -> Option<Value> {
        let mut args = args.to_vec();
        args.extend(["--format", "json"]);
        let output = self.run(index, &args);
        if !output.ok {
            return None;
        }
        serde_json::from_str(&output.stdout).ok()
    }
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    CreateService {
        name: String,
        replicas: u64,
    },
    Scale {
        name: String,
        replicas: u64,
    },
    /// `node update --label-add KEY=VALUE TARGET`.
    SetLabel {
        target: String,
        key: String,
        value: u64,
    },
    /// Reads label KEY of node TARGET from `node ls`.
    ReadLabel {
        target: String,
        key: String,
    },
}

impl OpKind {
    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::ReadLabel { .. })
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// A change acknowledged (CLI exited 0).
    Ok,
    /// A read answered: the label's value (`None`: absent).
    Read(Option<u64>),
    /// Failed or timed out: indeterminate for a change, nothing for a read.
    Failed(String),
}

/// A recorded operation; times are from the history's origin.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    /// The node whose socket was asked.
    pub node: usize,
    pub kind: OpKind,
    pub start: Duration,
    pub end: Duration,
    pub result: OpResult,
}

impl Op {
    pub fn acked(&self) -> bool {
        self.result == OpResult::Ok
    }

    pub fn failed(&self) -> bool {
        matches!(self.result, OpResult::Failed(_))
    }
}

/// Every operation of a run, shared by the workload threads.
#[derive(Debug)]
pub struct History {
    origin: Instant,
    ops: Mutex<Vec<Op>>,
}

impl History {
    pub fn new() -> Arc<History> {
        Arc::new(History {
            origin: Instant::now(),
            ops: Mutex::new(Vec::new()),
        })
    }

    /// Time since the origin.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub fn origin(&self) -> Instant {
        self.origin
    }

    pub fn record(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).push(op);
    }

    /// The operations so far, by start time.
    pub fn ops(&self) -> Vec<Op> {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
        ops.sort_by_key(|op| op.start);
        ops
    }
}

/// A client that records what it does in a [`History`].
#[derive(Debug, Clone)]
pub struct Recorder {
    pub cli: Cli,
    pub history: Arc<History>,
    pub client: usize,
}

impl Recorder {
    pub fn new(cli: Cli, history: Arc<History>, client: usize) -> Recorder {
        Recorder {
            cli,
            history,
            client,
        }
    }

    fn write(&self, node: usize, kind: OpKind, args: &[&str]) -> Result<(), String> {
        let start = self.history.now();
        let output = self.cli.run(node, args);
        let end = self.history.now();
        let result = if output.ok {
            OpResult::Ok
        } else {
            OpResult::Failed(output.stderr.trim().to_string())
        };
        let outcome = match &result {
            OpResult::Failed(err) => Err(err.clone()),
            _ => Ok(()),
        };
        self.history.record(Op {
            client: self.client,
            node,
            kind,
            start,
            end,
            result,
        });
        outcome
    }

    /// `service create --detach --name NAME --replicas N` of a sleeping process.
    pub fn create_service(&self, node: usize, name: &str, replicas: u64) -> Result<(), String> {
        let count = replicas.to_string();
        self.write(
            node,
            OpKind::CreateService {
                name: name.to_string(),
                replicas,
            },
            &[
                "service",
                "create",
                "--detach",
                "--name",
                name,
                "--replicas",
                &count,
                "--driver",
                "process",
                "sh",
                "-c",
                "sleep 3600",
            ],
        )
    }

    /// `service scale --detach NAME=N`.
    pub fn scale(&self, node: usize, name: &str, replicas: u64) -> Result<(), String> {
        let arg = format!("{name}={replicas}");
        self.write(
            node,
            OpKind::Scale {
                name: name.to_string(),
                replicas,
            },
            &["service", "scale", "--detach", &arg],
        )
    }

    /// `node update --label-add KEY=VALUE TARGET`.
    pub fn set_label(
        &self,
        node: usize,
        target: &str,
        key: &str,
        value: u64,
    ) -> Result<(), String> {
        let arg = format!("{key}={value}");
        self.write(
            node,
            OpKind::SetLabel {
                target: target.to_string(),
                key: key.to_string(),
                value,
            },
            &["node", "update", "--label-add", &arg, target],
        )
    }

    /// Reads label KEY of TARGET through node `node` (`node ls`): `Ok(value or None)`,
    /// or `Err` if the read failed.
    pub fn read_label(&self, node: usize, target: &str, key: &str) -> Result<Option<u64>, String> {
        let start = self.history.now();
        let output = self.cli.run(node, &["node", "ls", "--format", "json"]);
        let end = self.history.now();
        let value = if output.ok {
            parse_label(&output.stdout, target, key)
        } else {
            Err(output.stderr.trim().to_string())
        };
        self.history.record(Op {
            client: self.client,
            node,
            kind: OpKind::ReadLabel {
                target: target.to_string(),
                key: key.to_string(),
            },
            start,
            end,
            result: match &value {
                Ok(value) => OpResult::Read(*value),
                Err(err) => OpResult::Failed(err.clone()),
            },
        });
        value
    }
}

/// Label KEY of node TARGET in `node ls` JSON.
fn parse_label(stdout: &str, target: &str, key: &str) -> Result<Option<u64>, String> {
    let nodes: Value =
        serde_json::from_str(stdout).map_err(|err| format!("bad node ls JSON: {err}"))?;
    let node = nodes
        .as_array()
        .and_then(|nodes| nodes.iter().find(|node| node["hostname"] == target))
        .ok_or_else(|| format!("{target} is not in node ls"))?;
    match &node["labels"][key] {
        Value::Null => Ok(None),
        Value::String(text) => text
            .parse()
            .map(Some)
            .map_err(|_| format!("label {key}={text:?} is not a number")),
        other => Err(format!("label {key} is {other}")),
    }
}

/// What the workload threads do.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Nodes (indexes) the clients send their requests to, chosen at random each time.
    pub targets: Vec<usize>,
    /// Clients creating services (each owns its services: at most `services_each` at
    /// once) and scaling them. A service is created and scaled to every count from 1
    /// to `max_replicas` once, in a random order, then scaled to 0 and left alone: no
    /// replica count is written twice to a service, so the final count names the
    /// write that set it (a lost acknowledged scale cannot hide behind an equal one).
    pub service_writers: usize,
    pub services_each: usize,
    /// Largest replica count asked for.
    pub max_replicas: u64,
    /// Clients setting labels: each owns its label key and writes increasing values on
    /// random nodes of `label_nodes`.
    pub label_writers: usize,
    pub label_nodes: Vec<String>,
    /// The register: one label `(node, key)` written with increasing values by one
    /// client (nobody else may write it)...
    pub register: Option<(String, String)>,
    /// ...and read back by these many clients.
    pub readers: usize,
    /// Pause between two operations of one client, in ms (a range).
    pub think_ms: (u64, u64),
}

impl WorkloadConfig {
    /// Writers of every kind, the register and two readers.
    pub fn mixed(targets: Vec<usize>, label_nodes: Vec<String>) -> WorkloadConfig {
        let register = Some((label_nodes[0].clone(), "reg".to_string()));
        WorkloadConfig {
            targets,
            service_writers: 1,
            services_each: 3,
            max_replicas: 3,
            label_writers: 1,
            label_nodes,
            register,
            readers: 2,
            think_ms: (20, 150),
        }
    }

    /// Only the register (one writer, one reader) and one label writer: light.
    pub fn light(targets: Vec<usize>, label_nodes: Vec<String>) -> WorkloadConfig {
        WorkloadConfig {
            service_writers: 0,
            readers: 1,
            think_ms: (50, 250),
            ..WorkloadConfig::mixed(targets, label_nodes)
        }
    }
}

/// Client threads running a [`WorkloadConfig`] until stopped.
pub struct Workload {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub history: Arc<History>,
}

/// Client ids: the scenario's own operations use ids from this one on.
pub const SCENARIO_CLIENT: usize = 1000;

impl Workload {
    /// Starts the clients; each gets its own RNG seeded from `seed`.
    pub fn start(cli: Cli, history: Arc<History>, config: WorkloadConfig, seed: u64) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut client = 0;
        let mut spawn = |role: Role, threads: &mut Vec<JoinHandle<()>>| {
            let recorder = Recorder::new(cli.clone(), history.clone(), client);
            let config = config.clone();
            let stop = stop.clone();
            let rng = StdRng::seed_from_u64(
                seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(client as u64 + 1)),
            );
            client += 1;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("workload-{}", recorder.client))
                    .spawn(move || run_client(role, recorder, config, stop, rng))
                    .expect("starting a workload thread"),
            );
        };
        for writer in 0..config.service_writers {
            spawn(Role::Services(writer), &mut threads);
        }
        for writer in 0..config.label_writers {
            spawn(Role::Labels(writer), &mut threads);
        }
        if config.register.is_some() {
            spawn(Role::RegisterWriter, &mut threads);
            for _ in 0..config.readers {
                spawn(Role::Reader, &mut threads);
            }
        }
        Workload {
            stop,
            threads,
            history,
        }
    }

    /// Stops the clients and waits for their last operation to end.
    pub fn stop(mut self) -> Arc<History> {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.history.clone()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Services(usize),
    Labels(usize),
    RegisterWriter,
    Reader,
}

/// A service writer's services: the replica counts each has still to be given.
#[derive(Debug, Default)]
struct ServiceWrites {
    created: usize,
    /// Services still being written, with their next counts (the next one last).
    active: Vec<(String, Vec<u64>)>,
}

impl ServiceWrites {
    /// The next write: `(service, replicas, whether it creates the service)`.
    fn next(
        &mut self,
        writer: usize,
        config: &WorkloadConfig,
        rng: &mut StdRng,
    ) -> (String, u64, bool) {
        use rand::seq::SliceRandom;
        let create = self.active.len() < config.services_each
            && (self.active.is_empty() || rng.gen_bool(0.3));
        if create {
            let name = format!("w{writer}-s{}", self.created);
            self.created += 1;
            let mut counts: Vec<u64> = (1..=config.max_replicas).collect();
            counts.shuffle(rng);
            // Popped from the end: the shuffled counts first, 0 last.
            counts.insert(0, 0);
            let replicas = counts.pop().unwrap_or(0);
            self.active.push((name.clone(), counts));
            return (name, replicas, true);
        }
        let index = rng.gen_range(0..self.active.len());
        let replicas = self.active[index].1.pop().unwrap_or(0);
        let name = if self.active[index].1.is_empty() {
            self.active.swap_remove(index).0
        } else {
            self.active[index].0.clone()
        };
        (name, replicas, false)
    }
}

fn run_client(
    role: Role,
    recorder: Recorder,
    config: WorkloadConfig,
    stop: Arc<AtomicBool>,
    mut rng: StdRng,
) {
    let mut services = ServiceWrites::default();
    // Labels and the register: one writer per key, values increasing in time order.
    let mut label_value = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let node = config.targets[rng.gen_range(0..config.targets.len())];
        match role {
            Role::Services(writer) => match services.next(writer, &config, &mut rng) {
                // Taken even if indeterminate: a retry would collide with itself.
                (name, replicas, true) => {
                    let _ = recorder.create_service(node, &name, replicas);
                }
                (name, replicas, false) => {
                    let _ = recorder.scale(node, &name, replicas);
                }
            },
            Role::Labels(writer) => {
                label_value += 1;
                let target = &config.label_nodes[rng.gen_range(0..config.label_nodes.len())];
                let _ = recorder.set_label(node, target, &format!("w{writer}"), label_value);
            }
            Role::RegisterWriter => {
                let (target, key) = config.register.as_ref().expect("a register");
                label_value += 1;
                let _ = recorder.set_label(node, target, key, label_value);
            }
            Role::Reader => {
                let (target, key) = config.register.as_ref().expect("a register");
                let _ = recorder.read_label(node, target, key);
            }
        }
        let think = rng.gen_range(config.think_ms.0..=config.think_ms.1);
        let until = Instant::now() + Duration::from_millis(think);
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_service_writer_never_writes_one_count_twice_to_a_service() {
        let config = WorkloadConfig::mixed(vec![0], vec!["n".into()]);
        let mut rng = StdRng::seed_from_u64(7);
        let mut services = ServiceWrites::default();
        let mut written: HashMap<String, Vec<u64>> = HashMap::new();
        for _ in 0..500 {
            let (name, replicas, create) = services.next(0, &config, &mut rng);
            assert_eq!(create, !written.contains_key(&name), "{name}");
            written.entry(name).or_default().push(replicas);
            assert!(services.active.len() <= config.services_each);
        }
        for (name, counts) in &written {
            let mut unique = counts.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), counts.len(), "{name}: {counts:?}");
            assert!(counts.len() <= 4, "{name}: {counts:?}");
        }
        let retired: Vec<&Vec<u64>> = written
            .values()
            .filter(|counts| counts.len() == 4)
            .collect();
        assert!(retired.len() > 10);
        assert!(retired
            .iter()
            .all(|counts| counts[3] == 0 && counts[..3].iter().all(|c| *c > 0)));
    }
}
