//! The watcher: a thread beside every fault scenario that samples, every
//! [`SAMPLE_EVERY`], the task processes that really run (the process driver's records
//! and `/proc`) and, every other sample, the cluster's view from whichever manager
//! answers quickly, for the checkers of [`crate::timeline`].
//!
//! It only reads: it never kills, restarts or cuts anything, and it borrows nothing from
//! the [`Cluster`](crate::Cluster), which the scenario keeps mutating (data directories
//! and sockets stay where they are across restarts). A view that does not come whole
//! (a manager paused, no quorum, a CLI timing out) is left out of its sample.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::timeline::{NodeState, Sample, TaskSlot, View};
use crate::workload::Cli;

/// How often the processes are sampled.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The view is read every this many samples: its CLI calls cost far more than reading
/// `/proc`, and five scenarios share two cores in the short form.
const VIEW_EVERY: usize = 2;

/// A manager that takes longer than this to answer is skipped for this view (a paused
/// or cut-off one would otherwise hold the sampling for the CLI's whole time-out).
const VIEW_TIMEOUT: Duration = Duration::from_secs(2);

/// The sampling thread; stopped by [`Watcher::stop`] (or when dropped).
pub(crate) struct Watcher {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<JoinHandle<()>>,
}

/// What the thread needs to sample a cluster.
pub(crate) struct Target {
    /// Node hostnames and data directories, by node index.
    pub names: Vec<String>,
    pub data_dirs: Vec<PathBuf>,
    pub cli: Cli,
    /// The managers to ask for the view, in order of preference.
    pub managers: Vec<usize>,
    /// The run's start: samples are times since it.
    pub origin: Instant,
}

impl Watcher {
    pub(crate) fn start(target: Target) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let stop = stop.clone();
            let samples = samples.clone();
            std::thread::Builder::new()
                .name("fault-watcher".into())
                .spawn(move || sample_until_stopped(target, &stop, &samples))
                .expect("starting the watcher thread")
        };
        Watcher {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// Samples taken at or after `at`.
    pub(crate) fn samples_since(&self, at: Duration) -> usize {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.iter().filter(|sample| sample.at >= at).count()
    }

    /// Stops the thread after its current sample and returns every sample.
    pub(crate) fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn sample_until_stopped(target: Target, stop: &AtomicBool, samples: &Mutex<Vec<Sample>>) {
    let mut cli = target.cli.clone();
    cli.timeout = VIEW_TIMEOUT;
    let data_dirs: Vec<&Path> = target.data_dirs.iter().map(PathBuf::as_path).collect();
    // Task ids some view already named: a live task none names makes the next view due.
    let mut known: HashSet<String> = HashSet::new();
    let mut preferred = 0;
    let mut count = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let tick = Instant::now();
        let at = target.origin.elapsed();
        let live: Vec<(String, String)> = crate::live_task_processes_in(&data_dirs)
            .into_iter()
            .map(|(index, task)| (target.names[index].clone(), task))
            .collect();
        let unknown = live.iter().any(|(_, task)| !known.contains(task));
        let view = if count % VIEW_EVERY == 0 || unknown {
            read_view(&cli, &target, &mut preferred, unknown)
        } else {
            None
        };
        if let Some(view) = &view {
            known.extend(view.tasks.iter().map(|task| task.id.clone()));
        }
        count += 1;
        samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Sample { at, live, view });
        while tick.elapsed() < SAMPLE_EVERY && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The view from the first manager that answers whole, starting with the one that
/// answered last time; `every_service`: the tasks of services scaled to 0 too.
fn read_view(
    cli: &Cli,
    target: &Target,
    preferred: &mut usize,
    every_service: bool,
) -> Option<View> {
    let n = target.managers.len();
    for offset in 0..n {
        let position = (*preferred + offset) % n;
        let index = target.managers[position];
        if let Some(view) = view_of(cli, index, &target.names[index], every_service) {
            *preferred = position;
            return Some(view);
        }
    }
    None
}

fn view_of(cli: &Cli, index: usize, name: &str, every_service: bool) -> Option<View> {
    let array = |args: &[&str]| cli.json(index, args)?.as_array().cloned();
    let nodes = array(&["node", "ls"])?
        .iter()
        .map(|node| {
            Some(NodeState {
                hostname: node["hostname"].as_str()?.to_string(),
                status: node["status"].as_str()?.to_string(),
                availability: node["availability"].as_str()?.to_string(),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let mut services = Vec::new();
    let mut tasks = Vec::new();
    for service in array(&["service", "ls"])? {
        let Some(replicas) = service["spec"]["mode"]["replicated"]["replicas"].as_u64() else {
            continue;
        };
        let service_name = service["spec"]["name"].as_str()?.to_string();
        // A service scaled to 0 starts nothing: its tasks were named by earlier views,
        // unless a live task is still unknown.
        if replicas > 0 || every_service {
            for task in array(&["service", "ps", &service_name])? {
                tasks.push(task_slot(&task, &service_name)?);
            }
        }
        services.push((service_name, replicas));
    }
    Some(View {
        asked: name.to_string(),
        nodes,
        services,
        tasks,
    })
}

fn task_slot(task: &Value, service: &str) -> Option<TaskSlot> {
    Some(TaskSlot {
        id: task["id"].as_str()?.to_string(),
        service: service.to_string(),
        slot: task["name"].as_str()?.to_string(),
        node: task["node_hostname"].as_str().map(str::to_string),
        desired: task["desired_state"].as_str()?.to_string(),
    })
}
