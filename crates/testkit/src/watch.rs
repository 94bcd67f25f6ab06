//! The watcher: threads beside every fault scenario that sample, every
//! [`SAMPLE_EVERY`], the task processes that really run (the process driver's records
//! and `/proc`) and, every [`VIEW_EVERY`], the cluster's view from whichever manager
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

/// How often the view is read, on its own thread so that a slow manager never holds
/// the process sampling: its CLI calls cost far more than reading `/proc`, and five
/// scenarios share two cores in the short form. A sample carries the view finished
/// since the one before (so a view is up to this much older than its sample).
const VIEW_EVERY: Duration = Duration::from_millis(500);

/// A manager that takes longer than this to answer is skipped for this view (a paused
/// or cut-off one would otherwise hold the view for the CLI's whole time-out).
const VIEW_TIMEOUT: Duration = Duration::from_secs(2);

/// What the two threads share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    samples: Mutex<Vec<Sample>>,
    /// The last view read and not yet put in a sample.
    view: Mutex<Option<View>>,
    /// A live task no view has named yet: the next view lists the tasks of services
    /// scaled to 0 too.
    unknown_tasks: AtomicBool,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps out the rest of `period` from `tick`, or until stopped.
    fn pace(&self, tick: Instant, period: Duration) {
        while tick.elapsed() < period && !self.stopped() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The sampling threads; stopped by [`Watcher::stop`] (or when dropped).
pub(crate) struct Watcher {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// What the threads need to sample a cluster.
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
        let shared = Arc::new(Shared::default());
        let target = Arc::new(target);
        let mut threads = Vec::new();
        for (name, work) in [
            ("fault-watcher", sample_processes as fn(&Target, &Shared)),
            ("fault-watcher-view", read_views),
        ] {
            let shared = shared.clone();
            let target = target.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || work(&target, &shared))
                    .expect("starting a watcher thread"),
            );
        }
        Watcher { shared, threads }
    }

    /// Whether at least `count` samples were taken at or after `at`, one of them with
    /// a view.
    pub(crate) fn viewed_since(&self, at: Duration, count: usize) -> bool {
        let samples = self
            .shared
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let since: Vec<&Sample> = samples.iter().filter(|sample| sample.at >= at).collect();
        since.len() >= count && since.iter().any(|sample| sample.view.is_some())
    }

    /// Stops the threads after their current step and returns every sample.
    pub(crate) fn stop(mut self) -> Vec<Sample> {
        self.shared.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        std::mem::take(
            &mut *self
                .shared
                .samples
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn sample_processes(target: &Target, shared: &Shared) {
    let data_dirs: Vec<&Path> = target.data_dirs.iter().map(PathBuf::as_path).collect();
    let mut known: HashSet<String> = HashSet::new();
    while !shared.stopped() {
        let tick = Instant::now();
        let at = target.origin.elapsed();
        let live: Vec<(String, String)> = crate::live_task_processes_in(&data_dirs)
            .into_iter()
            .map(|(index, task)| (target.names[index].clone(), task))
            .collect();
        let view = shared.view.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(view) = &view {
            known.extend(view.tasks.iter().map(|task| task.id.clone()));
        }
        let unknown = live.iter().any(|(_, task)| !known.contains(task));
        shared.unknown_tasks.store(unknown, Ordering::SeqCst);
        shared
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Sample { at, live, view });
        shared.pace(tick, SAMPLE_EVERY);
    }
}

fn read_views(target: &Target, shared: &Shared) {
    let mut cli = target.cli.clone();
    cli.timeout = VIEW_TIMEOUT;
    let mut preferred = 0;
    while !shared.stopped() {
        let tick = Instant::now();
        let every_service = shared.unknown_tasks.load(Ordering::SeqCst);
        let requested_at = target.origin.elapsed();
        if let Some(mut view) = read_view(&cli, target, &mut preferred, every_service) {
            view.requested_at = requested_at;
            *shared.view.lock().unwrap_or_else(|p| p.into_inner()) = Some(view);
        }
        shared.pace(tick, VIEW_EVERY);
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
        requested_at: Duration::ZERO,
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
