//! `hoist service ...`: Docker's verbs, flags and columns for services.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hoist_api::endpoint as api;
use hoist_api::{
    Client, CreateServiceRequest, ScaleRequest, ServiceView, TaskView, UpdateServiceRequest,
};
use hoist_types::service::{
    parse_cpus, parse_key_value, parse_memory, Constraint, HttpRoute, Mount, PlacementPref,
    PublishedPort, Rebalance, RestartCondition, ServiceMode, ServiceSpec,
};
use hoist_types::task::{DesiredState, TaskState};
use hoist_types::DriverKind;

use crate::output::{ago, duration, print_json, print_table, wants_json};
use crate::ListArgs;
use hoist_types::clock::now_ms;

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service.
    Create(Box<CreateArgs>),
    /// List services.
    Ls(ListArgs),
    /// List the tasks of a service.
    Ps(PsArgs),
    /// Show services as JSON (or --pretty).
    Inspect {
        /// Services: name, id or id prefix.
        services: Vec<String>,
        /// Print a readable summary instead of JSON.
        #[arg(long)]
        pretty: bool,
    },
    /// Set the replicas of replicated services: NAME=N ...
    Scale {
        /// Return at once instead of waiting for convergence.
        #[arg(long, short)]
        detach: bool,
        /// SERVICE=REPLICAS, one or more.
        #[arg(required = true)]
        scales: Vec<String>,
    },
    /// Change a service.
    Update(UpdateArgs),
    /// Remove services.
    Rm {
        /// Services to remove: name, id or id prefix.
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Show the output of a service's tasks.
    Logs {
        /// Keep following new output.
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines of each task.
        #[arg(long)]
        tail: Option<usize>,
        /// The service (name, id or id prefix), or one task's id (or id prefix).
        service: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the service (letters, digits, `-` and `_`).
    #[arg(long)]
    pub name: String,
    /// Number of tasks (replicated mode).
    #[arg(long, allow_negative_numbers = true)]
    pub replicas: Option<i64>,
    /// replicated, global, replicated-job (tasks that run to completion: --replicas of
    /// them, --max-concurrent at a time) or global-job (one to completion per node).
    #[arg(long, default_value = "replicated")]
    pub mode: String,
    /// replicated-job: how many tasks run at once (default: all of --replicas).
    #[arg(long = "max-concurrent")]
    pub max_concurrent: Option<u64>,
    /// At most this many of the service's tasks on one node (the rest stay pending; 0: no limit).
    #[arg(long = "replicas-max-per-node")]
    pub replicas_max_per_node: Option<u64>,
    /// Publish a port: PUBLISHED:TARGET[/tcp|http] or published=..,target=..[,protocol=..][,mode=ingress|host].
    #[arg(long, short = 'p')]
    pub publish: Vec<String>,
    /// Environment variable KEY=VALUE.
    #[arg(long, short = 'e')]
    pub env: Vec<String>,
    /// Service label KEY=VALUE.
    #[arg(long, short = 'l')]
    pub label: Vec<String>,
    /// type=bind,source=/a,target=/b[,readonly].
    #[arg(long)]
    pub mount: Vec<String>,
    /// Placement constraint, e.g. node.labels.disk==ssd.
    #[arg(long)]
    pub constraint: Vec<String>,
    /// spread=node.labels.KEY.
    #[arg(long = "placement-pref")]
    pub placement_pref: Vec<String>,
    /// CPUs each task needs free on its node, e.g. 0.5.
    #[arg(long = "reserve-cpu")]
    pub reserve_cpu: Option<String>,
    /// Memory each task needs free on its node, e.g. 256M or 1G.
    #[arg(long = "reserve-memory")]
    pub reserve_memory: Option<String>,
    /// Most CPUs each task may use, e.g. 1.5.
    #[arg(long = "limit-cpu")]
    pub limit_cpu: Option<String>,
    /// Most memory each task may use, e.g. 512M.
    #[arg(long = "limit-memory")]
    pub limit_memory: Option<String>,
    /// any, on-failure or none.
    #[arg(long = "restart-condition")]
    pub restart_condition: Option<String>,
    /// Wait between a task's end and its replacement's start, e.g. 5s (default 5s).
    #[arg(long = "restart-delay", value_parser = crate::parse_duration_ms)]
    pub restart_delay: Option<u64>,
    /// Restarts a slot gets (within --restart-window if given) before it is left
    /// stopped (default: unlimited).
    #[arg(long = "restart-max-attempts")]
    pub restart_max_attempts: Option<u64>,
    /// Window over which --restart-max-attempts counts restarts, e.g. 1m.
    #[arg(long = "restart-window", value_parser = crate::parse_duration_ms)]
    pub restart_window: Option<u64>,
    /// Time a task has to exit after SIGTERM before it is killed, e.g. 10s.
    #[arg(long = "stop-grace-period", value_parser = crate::parse_duration_ms)]
    pub stop_grace_period: Option<u64>,
    /// process or docker (default: process for a command, docker for an image).
    #[arg(long)]
    pub driver: Option<String>,
    /// Move tasks to even out the spread when nodes come back: auto or off.
    #[arg(long)]
    pub rebalance: Option<String>,
    /// HTTP path the mesh checks on http ports, e.g. /healthz.
    #[arg(long = "health-path")]
    pub health_path: Option<String>,
    /// Requests this service takes on a shared http port: host=NAME,path=/PREFIX.
    #[arg(long)]
    pub route: Vec<String>,
    /// User to run as in the container (name or uid[:gid]).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Mount the container's root filesystem read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Command run inside each container to check its health (through its shell).
    #[arg(long = "health-cmd")]
    pub health_cmd: Option<String>,
    /// Time between health checks, e.g. 5s (default 30s).
    #[arg(long = "health-interval", value_parser = crate::parse_duration_ms)]
    pub health_interval: Option<u64>,
    /// Consecutive failures needed to report unhealthy (default 3).
    #[arg(long = "health-retries")]
    pub health_retries: Option<u32>,
    /// How long one health check may take, e.g. 3s (default: the interval).
    #[arg(long = "health-timeout", value_parser = crate::parse_duration_ms)]
    pub health_timeout: Option<u64>,
    /// Failed checks within this time of the start do not count, e.g. 30s.
    #[arg(long = "health-start-period", value_parser = crate::parse_duration_ms)]
    pub health_start_period: Option<u64>,
    /// Disable the image's HEALTHCHECK (docker driver).
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    /// The container's hostname (docker driver).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Replace the image's ENTRYPOINT (docker driver).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Return at once instead of showing progress until converged.
    #[arg(long, short)]
    pub detach: bool,
    /// How long to show progress before giving up with an error, e.g. 2m (default 10m).
    #[arg(long = "progress-deadline", value_parser = crate::parse_duration_ms)]
    pub progress_deadline: Option<u64>,
    /// The command (process driver) or the image and its command (docker driver).
    #[arg(required = true, trailing_var_arg = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// `json` for a JSON array with stable field names.
    #[arg(long)]
    pub format: Option<String>,
    /// Print task ids only.
    #[arg(long, short)]
    pub quiet: bool,
    /// Show every task, including ended ones beyond the current (default: all).
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// The service: name, id or id prefix.
    pub service: String,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Number of tasks (replicated mode).
    #[arg(long, allow_negative_numbers = true)]
    pub replicas: Option<i64>,
    /// Add or change an environment variable, KEY=VALUE (tasks are replaced).
    #[arg(long = "env-add")]
    pub env_add: Vec<String>,
    /// Remove an environment variable by key.
    #[arg(long = "env-rm")]
    pub env_rm: Vec<String>,
    /// Add a placement constraint, e.g. node.labels.disk==ssd.
    #[arg(long = "constraint-add")]
    pub constraint_add: Vec<String>,
    /// Remove a placement constraint, written as it was added.
    #[arg(long = "constraint-rm")]
    pub constraint_rm: Vec<String>,
    /// Move tasks to even out the spread when nodes come back: auto or off.
    #[arg(long)]
    pub rebalance: Option<String>,
    /// At most this many of the service's tasks on one node; 0 lifts the limit.
    #[arg(long = "replicas-max-per-node")]
    pub replicas_max_per_node: Option<u64>,
    /// Return at once instead of showing progress until converged.
    #[arg(long, short)]
    pub detach: bool,
    /// How long to show progress before giving up with an error, e.g. 2m (default 10m).
    #[arg(long = "progress-deadline", value_parser = crate::parse_duration_ms)]
    pub progress_deadline: Option<u64>,
    /// The service: name, id or id prefix.
    pub service: String,
}

pub async fn run(client: &Client, command: ServiceCommand) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Create(args) => create(client, *args).await,
        ServiceCommand::Ls(args) => ls(client, args).await,
        ServiceCommand::Ps(args) => ps(client, args).await,
        ServiceCommand::Inspect { services, pretty } => inspect(client, services, pretty).await,
        ServiceCommand::Scale { detach, scales } => scale(client, scales, detach).await,
        ServiceCommand::Update(args) => update(client, args).await,
        ServiceCommand::Rm { services } => {
            let mut failures = Vec::new();
            for service in services {
                match client.call::<api::ServiceRemove>(&service, &()).await {
                    Ok(_) => outln!("{service}"),
                    Err(err) => failures.push(format!("{service}: {err}")),
                }
            }
            if failures.is_empty() {
                Ok(())
            } else {
                bail!("{}", failures.join("\n"))
            }
        }
        ServiceCommand::Logs {
            follow,
            tail,
            service,
        } => logs(client, &service, follow, tail).await,
    }
}

/// Whether the first word names an image rather than a program: images have a tag or a
/// registry path (`nginx:1.25`, `nginxdemos/hello`); a bare word is a program if it is
/// on PATH.
fn looks_like_image(first: &str) -> bool {
    if first.starts_with('/') || first.starts_with('.') {
        return false;
    }
    if first.contains(':') || first.contains('/') {
        return true;
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(first).is_file()))
        .unwrap_or(false);
    !on_path
}

fn replicas_arg(replicas: i64) -> anyhow::Result<u64> {
    u64::try_from(replicas)
        .map_err(|_| anyhow::anyhow!("invalid --replicas {replicas}: it must be 0 or more"))
}

/// `--mode`, `--replicas` and `--max-concurrent` as a service mode.
fn mode_from(args: &CreateArgs) -> anyhow::Result<ServiceMode> {
    let mode = match args.mode.as_str() {
        "replicated" => ServiceMode::Replicated {
            replicas: args.replicas.map(replicas_arg).transpose()?.unwrap_or(1),
        },
        "global" => {
            if args.replicas.is_some() {
                bail!("--replicas can only be used with --mode replicated");
            }
            ServiceMode::Global
        }
        "replicated-job" => {
            let total_completions = args.replicas.map(replicas_arg).transpose()?.unwrap_or(1);
            ServiceMode::ReplicatedJob {
                // Docker's default: all of them at once.
                max_concurrent: args.max_concurrent.unwrap_or(total_completions).max(1),
                total_completions,
            }
        }
        "global-job" => {
            if args.replicas.is_some() {
                bail!("--replicas can only be used with --mode replicated or replicated-job");
            }
            ServiceMode::GlobalJob
        }
        other => bail!(
            "invalid --mode {other:?}: expected replicated, global, replicated-job or global-job"
        ),
    };
    if args.max_concurrent.is_some() && !matches!(mode, ServiceMode::ReplicatedJob { .. }) {
        bail!("--max-concurrent can only be used with --mode replicated-job");
    }
    Ok(mode)
}

fn spec_from(args: CreateArgs) -> anyhow::Result<ServiceSpec> {
    let mode = mode_from(&args)?;
    let mut spec = ServiceSpec {
        name: args.name,
        mode,
        ..ServiceSpec::default()
    };
    if spec.mode.is_job() && args.restart_condition.is_none() {
        // A job's task that exits 0 is done; one that fails is tried again (Docker's
        // default for jobs).
        spec.restart_policy.condition = RestartCondition::OnFailure;
    }
    spec.max_replicas_per_node = args.replicas_max_per_node.filter(|max| *max > 0);
    let driver = match args.driver {
        Some(driver) => driver.parse::<DriverKind>()?,
        None if looks_like_image(&args.command[0]) => DriverKind::Docker,
        None => DriverKind::Process,
    };
    if driver == DriverKind::Docker {
        spec.image = Some(args.command[0].clone());
        spec.command = args.command[1..].to_vec();
    } else {
        spec.command = args.command;
    }
    spec.driver = driver;
    for text in &args.publish {
        spec.ports.push(PublishedPort::parse(text)?);
    }
    for text in &args.env {
        let (key, value) = parse_key_value("env", text)?;
        spec.env.insert(key, value);
    }
    for text in &args.label {
        let (key, value) = parse_key_value("label", text)?;
        spec.labels.insert(key, value);
    }
    for text in &args.mount {
        spec.mounts.push(Mount::parse(text)?);
    }
    for text in &args.constraint {
        spec.constraints.push(Constraint::parse(text)?);
    }
    for text in &args.placement_pref {
        spec.placement_prefs.push(PlacementPref::parse(text)?);
    }
    if let Some(text) = &args.reserve_cpu {
        spec.resources.reservations.nano_cpus = parse_cpus(text)?;
    }
    if let Some(text) = &args.reserve_memory {
        spec.resources.reservations.memory_bytes = parse_memory(text)?;
    }
    if let Some(text) = &args.limit_cpu {
        spec.resources.limits.nano_cpus = parse_cpus(text)?;
    }
    if let Some(text) = &args.limit_memory {
        spec.resources.limits.memory_bytes = parse_memory(text)?;
    }
    if let Some(text) = &args.restart_condition {
        spec.restart_policy.condition = text.parse::<RestartCondition>()?;
    }
    if let Some(delay) = args.restart_delay {
        spec.restart_policy.delay_ms = delay;
    }
    if let Some(attempts) = args.restart_max_attempts {
        spec.restart_policy.max_attempts = Some(attempts);
    }
    if let Some(window) = args.restart_window {
        spec.restart_policy.window_ms = Some(window);
    }
    if let Some(grace) = args.stop_grace_period {
        spec.stop_grace_period_ms = grace;
    }
    if let Some(text) = &args.rebalance {
        spec.rebalance = parse_rebalance(text)?;
    }
    spec.health_path = args.health_path;
    spec.user = args.user;
    spec.read_only = args.read_only;
    spec.health_cmd = args.health_cmd;
    spec.health_interval_ms = args.health_interval;
    spec.health_retries = args.health_retries;
    spec.health_timeout_ms = args.health_timeout;
    spec.health_start_period_ms = args.health_start_period;
    spec.no_healthcheck = args.no_healthcheck;
    spec.hostname = args.hostname;
    spec.entrypoint = args.entrypoint;
    for text in &args.route {
        spec.routes.push(HttpRoute::parse(text)?);
    }
    spec.validate()?;
    Ok(spec)
}

/// A process task shares its node's network, so it cannot have the target port to
/// itself: the driver gives it a free port in `$PORT` (and `$HOIST_PORT_<target>`), and
/// that is where the mesh sends the published port's traffic. A command that never
/// mentions PORT most likely listens on the target port, where nothing arrives.
fn port_contract_warning(spec: &ServiceSpec) -> Option<String> {
    if spec.driver != DriverKind::Process || spec.ports.is_empty() {
        return None;
    }
    if spec.command.iter().any(|word| word.contains("PORT")) {
        return None;
    }
    let first = &spec.ports[0];
    Some(format!(
        "warning: a process task does not receive traffic on its target port {target}: it must listen on the port in $PORT \
         (for each target port, also $HOIST_PORT_{target}), where the mesh sends what arrives on published port {published}. \
         This command does not mention PORT; unless the program reads $PORT itself, start it with e.g. \
         `-- sh -c 'exec my-server --port \"$PORT\"'`.",
        target = first.target,
        published = first.published,
    ))
}

fn parse_rebalance(text: &str) -> anyhow::Result<Rebalance> {
    match text {
        "auto" => Ok(Rebalance::Auto),
        "off" => Ok(Rebalance::Off),
        other => bail!("invalid --rebalance {other:?}: expected auto or off"),
    }
}

async fn create(client: &Client, args: CreateArgs) -> anyhow::Result<()> {
    let detach = args.detach;
    let deadline = progress_deadline(args.progress_deadline);
    let spec = spec_from(args)?;
    if let Some(warning) = port_contract_warning(&spec) {
        eprintln!("{warning}");
    }
    let created: ServiceView = client
        .call::<api::ServiceCreate>(&(), &CreateServiceRequest { spec })
        .await?;
    outln!("{}", created.service.id);
    if !detach {
        converge(client, &created.service.id.to_string(), deadline).await?;
    }
    Ok(())
}

/// How far along a task is, out of 6, for the progress bars.
fn progress_step(state: TaskState) -> usize {
    match state {
        TaskState::New => 0,
        TaskState::Pending => 1,
        TaskState::Assigned => 2,
        TaskState::Accepted | TaskState::Preparing => 3,
        TaskState::Starting => 4,
        TaskState::Running => 6,
        _ => 0,
    }
}

fn bar(step: usize) -> String {
    const WIDTH: usize = 50;
    let filled = WIDTH * step / 6;
    if filled >= WIDTH {
        format!("[{}>]", "=".repeat(WIDTH))
    } else {
        format!("[{}>{}]", "=".repeat(filled), " ".repeat(WIDTH - filled))
    }
}

/// How long `create`, `update` and `scale` show progress before they give up (Docker's
/// and Kubernetes' progress deadline is 10 minutes too).
const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

fn progress_deadline(flag_ms: Option<u64>) -> Duration {
    flag_ms.map_or(DEFAULT_PROGRESS_DEADLINE, Duration::from_millis)
}

/// The label of one slot's line: its state, why it is pending, or the error of its
/// last attempt when that failed (so a command that cannot start says why at once).
fn slot_label(task: &TaskView, last_error: Option<&str>) -> String {
    let state = task.task.status.state;
    match (&task.task.pending_reason, state, last_error) {
        (Some(reason), TaskState::Pending, _) => format!("pending: {reason}"),
        (_, TaskState::Running, _) => state.to_string(),
        (_, _, Some(err)) => format!("{state} (last attempt: {})", one_line(err, 100)),
        _ => state.to_string(),
    }
}

fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > max {
        format!("{}...", line.chars().take(max).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// The error of the newest failed or rejected task of each slot, by slot name.
fn last_errors(tasks: &[TaskView]) -> BTreeMap<String, (u64, String)> {
    let mut errors: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for view in tasks {
        let status = &view.task.status;
        let Some(err) = &status.err else { continue };
        if !matches!(status.state, TaskState::Failed | TaskState::Rejected) {
            continue;
        }
        let at = view.task.created_at_ms;
        let newer = errors.get(&view.name).is_none_or(|(seen, _)| *seen < at);
        if newer {
            errors.insert(view.name.clone(), (at, err.clone()));
        }
    }
    errors
}

/// Why waiting longer is pointless: a slot whose tasks failed as often as the restart
/// policy allows and that has no task left to run. `None` while retries remain (a
/// policy with a window may allow more later, so only one without counts).
fn restarts_exhausted(spec: &ServiceSpec, tasks: &[TaskView]) -> Option<String> {
    let policy = &spec.restart_policy;
    let allowed = match policy.condition {
        RestartCondition::None => 0,
        _ if policy.window_ms.is_some() => return None,
        _ => policy.max_attempts?,
    };
    // Per slot: failed attempts, and whether a task is still wanted running.
    let mut slots: BTreeMap<&str, (u64, bool)> = BTreeMap::new();
    for view in tasks {
        let slot = slots.entry(view.name.as_str()).or_default();
        if matches!(
            view.task.status.state,
            TaskState::Failed | TaskState::Rejected
        ) {
            slot.0 += 1;
        } else if view.task.desired_state == DesiredState::Running {
            slot.1 = true;
        }
    }
    let errors = last_errors(tasks);
    slots.into_iter().find_map(|(name, (failures, live))| {
        (!live && failures > allowed).then(|| {
            format!(
                "task {name} failed {failures} time{} and the restart policy allows no more: {}",
                if failures == 1 { "" } else { "s" },
                errors
                    .get(name)
                    .map_or("no error recorded", |(_, err)| err.as_str())
            )
        })
    })
}

/// Shows progress until every slot runs (Docker's `overall progress` display, one
/// line printed per change since output may not be a terminal); gives up with the
/// tasks' own error when the restart policy allows no more attempts, or when
/// `deadline` passes.
async fn converge(client: &Client, service: &str, deadline: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last_printed = String::new();
    // Nodes report a port they could not open with their next heartbeat after their
    // mesh took the routes: a service with published ports is judged only after that.
    let report_wait = port_report_wait(client).await;
    let mut converged_at: Option<Instant> = None;
    loop {
        let view: ServiceView = client.call::<api::ServiceInspect>(service, &()).await?;
        let tasks: Vec<TaskView> = client.call::<api::ServiceTasks>(service, &()).await?;
        let text = progress_text(&view, &tasks);
        if text != last_printed {
            outln!("{text}");
            last_printed = text;
        }
        if !view.port_faults.is_empty() {
            bail!(
                "service {service} cannot serve its published ports: {}",
                view.port_faults.join("; ")
            );
        }
        let waited_for_ports = view.service.spec.ports.is_empty()
            || converged_at.is_some_and(|at| at.elapsed() >= report_wait);
        if converged(&view) && !waited_for_ports {
            converged_at.get_or_insert_with(Instant::now);
        } else if converged(&view) {
            if view.service.spec.mode.is_job() {
                outln!("verify: Job complete");
            } else {
                outln!("verify: Service converged");
            }
            return Ok(());
        }
        if let Some(reason) = restarts_exhausted(&view.service.spec, &tasks) {
            bail!("service {service} did not converge: {reason}");
        }
        if started.elapsed() > deadline {
            let errors = last_errors(&tasks);
            let last = errors
                .values()
                .max_by_key(|(at, _)| *at)
                .map(|(_, err)| format!("; last error: {}", one_line(err, 200)))
                .unwrap_or_default();
            bail!(
                "service {service} has not converged after {} (--progress-deadline){last}: see `hoist service ps {service}`",
                crate::output::duration(deadline.as_millis() as u64)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How long after convergence a service with published ports waits for the nodes'
/// reports: two heartbeat periods and a half-second of slack.
async fn port_report_wait(client: &Client) -> Duration {
    let period_ms = client
        .call::<api::Info>(&(), &())
        .await
        .ok()
        .map(|info| info.heartbeat_period_ms)
        .filter(|period| *period > 0)
        .unwrap_or(1_000u64);
    Duration::from_millis(period_ms.saturating_mul(2) + 500)
}

/// The progress display: the overall count, then a line per slot.
fn progress_text(view: &ServiceView, tasks: &[TaskView]) -> String {
    let mut lines = vec![if view.service.spec.mode.is_job() {
        format!(
            "job progress: {} out of {} complete; active tasks: {}",
            view.completed, view.desired, view.running
        )
    } else {
        format!(
            "overall progress: {} out of {} tasks",
            view.running, view.desired
        )
    }];
    let errors = last_errors(tasks);
    let mut slots: BTreeMap<String, &TaskView> = BTreeMap::new();
    for task in tasks
        .iter()
        .filter(|view| view.task.desired_state == DesiredState::Running)
    {
        slots.entry(task.name.clone()).or_insert(task);
    }
    let total = view.desired.max(slots.len() as u64);
    for (index, (name, task)) in slots.iter().enumerate() {
        let last_error = errors.get(name).map(|(_, err)| err.as_str());
        lines.push(format!(
            "{}/{}: {:<9} {}",
            index + 1,
            total,
            slot_label(task, last_error),
            bar(progress_step(task.task.status.state))
        ));
    }
    lines.join("\n")
}

/// `service ls`'s REPLICAS: running out of desired, and a job's completions (Docker
/// writes `2/6 (3/6 completed)`).
fn replicas_text(view: &ServiceView) -> String {
    if view.service.spec.mode.is_job() {
        format!(
            "{}/{} ({}/{} completed)",
            view.running, view.desired, view.completed, view.desired
        )
    } else {
        format!("{}/{}", view.running, view.desired)
    }
}

/// Whether `create`, `update` or `scale` may stop showing progress: every slot runs,
/// or, for a job, every completion is done.
fn converged(view: &ServiceView) -> bool {
    if view.service.spec.mode.is_job() {
        view.completed >= view.desired
    } else {
        view.running == view.desired
    }
}

fn mode_text(view: &ServiceView) -> &'static str {
    match view.service.spec.mode {
        ServiceMode::Replicated { .. } => "replicated",
        ServiceMode::Global => "global",
        ServiceMode::ReplicatedJob { .. } => "replicated job",
        ServiceMode::GlobalJob => "global job",
    }
}

fn what_runs(spec: &ServiceSpec) -> String {
    match &spec.image {
        Some(image) => image.clone(),
        None => {
            let text = spec.command.join(" ");
            if text.chars().count() > 40 {
                format!("{}…", text.chars().take(39).collect::<String>())
            } else {
                text
            }
        }
    }
}

fn ports_text(spec: &ServiceSpec) -> String {
    spec.ports
        .iter()
        .map(|port| {
            format!(
                "*:{}->{}/{}",
                port.published,
                port.target,
                format!("{:?}", port.protocol).to_lowercase()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `service ls`'s PORTS, saying when a node could not open one.
fn ports_cell(view: &ServiceView) -> String {
    let ports = ports_text(&view.service.spec);
    match view.port_faults.len() {
        0 => ports,
        n => format!(
            "{ports} (unavailable on {n} node{}: see service ps)",
            if n == 1 { "" } else { "s" }
        ),
    }
}

async fn ls(client: &Client, args: ListArgs) -> anyhow::Result<()> {
    let json = wants_json(&args.format)?;
    let mut services: Vec<ServiceView> = client.call::<api::ServiceList>(&(), &()).await?;
    services.sort_by(|a, b| a.service.spec.name.cmp(&b.service.spec.name));
    if args.quiet {
        for view in &services {
            outln!("{}", view.service.id);
        }
        return Ok(());
    }
    if json {
        return print_json(&services);
    }
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|view| {
            vec![
                view.service.id.to_string(),
                view.service.spec.name.clone(),
                mode_text(view).to_string(),
                replicas_text(view),
                what_runs(&view.service.spec),
                ports_cell(view),
            ]
        })
        .collect();
    print_table(
        &["ID", "NAME", "MODE", "REPLICAS", "IMAGE/COMMAND", "PORTS"],
        &rows,
    )?;
    Ok(())
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().collect::<String>() + chars.as_str(),
        None => String::new(),
    }
}

async fn ps(client: &Client, args: PsArgs) -> anyhow::Result<()> {
    let json = wants_json(&args.format)?;
    let tasks: Vec<TaskView> = client.call::<api::ServiceTasks>(&args.service, &()).await?;
    if args.quiet {
        for view in &tasks {
            outln!("{}", view.task.id);
        }
        return Ok(());
    }
    if json {
        return print_json(&tasks);
    }
    let now = now_ms();
    let mut rows = Vec::new();
    let mut previous_name = String::new();
    for view in &tasks {
        let task = &view.task;
        // Docker shows a slot's older tasks under the current one, marked `\_`.
        let name = if view.name == previous_name {
            format!(" \\_ {}", view.name)
        } else {
            view.name.clone()
        };
        previous_name = view.name.clone();
        // One line per task: a multi-line error (a probe's output) shows its first.
        let error = match (&task.status.err, &task.pending_reason) {
            (Some(err), _) => err.lines().next().unwrap_or_default().to_string(),
            (None, Some(reason)) if task.status.state.is_unassigned() => reason.clone(),
            _ => String::new(),
        };
        rows.push(vec![
            task.id.to_string(),
            name,
            view.node_hostname.clone().unwrap_or_default(),
            capitalized(task.desired_state.as_str()),
            format!(
                "{} {}",
                capitalized(task.status.state.as_str()),
                ago(task.status.timestamp_ms, now)
            ),
            error,
        ]);
    }
    print_table(
        &[
            "ID",
            "NAME",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
        ],
        &rows,
    )?;
    // A published port a node could not open is a fault of the service, not of a task.
    let view: ServiceView = client
        .call::<api::ServiceInspect>(&args.service, &())
        .await?;
    for fault in &view.port_faults {
        outln!("{fault}");
    }
    Ok(())
}

async fn inspect(client: &Client, services: Vec<String>, pretty: bool) -> anyhow::Result<()> {
    if services.is_empty() {
        bail!("service inspect needs at least one service");
    }
    let mut views = Vec::new();
    for service in &services {
        let view: ServiceView = client.call::<api::ServiceInspect>(service, &()).await?;
        views.push(view);
    }
    if !pretty {
        return print_json(&views);
    }
    for view in &views {
        let spec = &view.service.spec;
        outln!("ID:\t\t{}", view.service.id);
        outln!("Name:\t\t{}", spec.name);
        outln!("Service Mode:\t{}", capitalized(mode_text(view)));
        if let Some(replicas) = spec.replicas() {
            outln!(" Replicas:\t{replicas}");
        }
        outln!("Running:\t{}/{}", view.running, view.desired);
        outln!("Driver:\t\t{}", spec.driver);
        outln!("Runs:\t\t{}", what_runs(spec));
        if !spec.env.is_empty() {
            outln!("Env:");
            for (key, value) in &spec.env {
                outln!(" {key}={value}");
            }
        }
        if !spec.constraints.is_empty() {
            outln!("Placement:");
            for constraint in &spec.constraints {
                outln!(" Constraint:\t{constraint}");
            }
        }
        if !spec.ports.is_empty() {
            outln!("Ports:\t\t{}", ports_text(spec));
        }
        outln!("Rebalance:\t{:?}", spec.rebalance);
        outln!(
            "Restart Policy:\t{:?}, delay {}, max attempts {}{}",
            spec.restart_policy.condition,
            duration(spec.restart_policy.delay_ms),
            spec.restart_policy
                .max_attempts
                .map(|attempts| attempts.to_string())
                .unwrap_or_else(|| "unlimited".into()),
            spec.restart_policy
                .window_ms
                .map(|window| format!(" in {}", duration(window)))
                .unwrap_or_default()
        );
        outln!("Stop Grace:\t{}", duration(spec.stop_grace_period_ms));
        outln!();
    }
    Ok(())
}

async fn scale(client: &Client, scales: Vec<String>, detach: bool) -> anyhow::Result<()> {
    let mut parsed = Vec::new();
    for text in &scales {
        let Some((name, replicas)) = text.split_once('=') else {
            bail!("invalid scale {text:?}: expected SERVICE=REPLICAS");
        };
        let replicas: i64 = replicas
            .parse()
            .with_context(|| format!("invalid replicas in {text:?}"))?;
        parsed.push((name.to_string(), replicas_arg(replicas)?));
    }
    for (name, replicas) in &parsed {
        let _: ServiceView = client
            .call::<api::ServiceScale>(
                name,
                &ScaleRequest {
                    replicas: *replicas,
                },
            )
            .await?;
        outln!("{name} scaled to {replicas}");
    }
    if !detach {
        for (name, _) in &parsed {
            converge(client, name, progress_deadline(None)).await?;
        }
    }
    Ok(())
}

async fn update(client: &Client, args: UpdateArgs) -> anyhow::Result<()> {
    let view: ServiceView = client
        .call::<api::ServiceInspect>(&args.service, &())
        .await?;
    let mut spec = view.service.spec.clone();
    if let Some(replicas) = args.replicas {
        match spec.mode {
            ServiceMode::Replicated { .. } => {
                spec.mode = ServiceMode::Replicated {
                    replicas: replicas_arg(replicas)?,
                }
            }
            ServiceMode::ReplicatedJob { max_concurrent, .. } => {
                spec.mode = ServiceMode::ReplicatedJob {
                    max_concurrent,
                    total_completions: replicas_arg(replicas)?,
                }
            }
            ServiceMode::Global | ServiceMode::GlobalJob => {
                bail!("--replicas can only be used with replicated mode")
            }
        }
    }
    for key in &args.env_rm {
        spec.env.remove(key);
    }
    for text in &args.env_add {
        let (key, value) = parse_key_value("env", text)?;
        spec.env.insert(key, value);
    }
    for text in &args.constraint_rm {
        let constraint = Constraint::parse(text)?;
        spec.constraints.retain(|existing| *existing != constraint);
    }
    for text in &args.constraint_add {
        spec.constraints.push(Constraint::parse(text)?);
    }
    if let Some(text) = &args.rebalance {
        spec.rebalance = parse_rebalance(text)?;
    }
    if let Some(max) = args.replicas_max_per_node {
        spec.max_replicas_per_node = (max > 0).then_some(max);
    }
    spec.validate()?;
    let updated: ServiceView = client
        .call::<api::ServiceUpdate>(
            &args.service,
            &UpdateServiceRequest {
                version: view.service.version,
                spec,
            },
        )
        .await?;
    outln!("{}", updated.service.spec.name);
    if !args.detach {
        converge(
            client,
            &updated.service.id.to_string(),
            progress_deadline(args.progress_deadline),
        )
        .await?;
    }
    Ok(())
}

async fn logs(
    client: &Client,
    service: &str,
    follow: bool,
    tail: Option<usize>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let query = hoist_api::LogsQuery {
        tail,
        follow,
        task: None,
    };
    let mut response = client.stream::<api::ServiceLogs>(service, &query).await?;
    let mut stdout = std::io::stdout();
    while let Some(chunk) = response.chunk().await.context("reading logs")? {
        // A reader that went away (`| head`) ends the command quietly.
        let written = stdout.write_all(&chunk).and_then(|()| stdout.flush());
        match written {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_view(
        slot: u64,
        state: TaskState,
        desired: DesiredState,
        at: u64,
        err: Option<&str>,
    ) -> TaskView {
        let mut status = hoist_types::task::TaskStatus::new(state, "", at);
        status.err = err.map(str::to_owned);
        TaskView {
            task: hoist_types::task::Task {
                id: hoist_types::TaskId::random(),
                service_id: hoist_types::ServiceId::random(),
                slot,
                node_id: None,
                service_version: 1,
                spec: ServiceSpec::default(),
                desired_state: desired,
                status,
                created_at_ms: at,
                updated_at_ms: at,
                attempt: 0,
                origin: Default::default(),
                pending_reason: None,
            },
            node_hostname: None,
            name: format!("web.{slot}"),
        }
    }

    fn spec_with(condition: RestartCondition, max_attempts: Option<u64>) -> ServiceSpec {
        let mut spec = ServiceSpec::default();
        spec.restart_policy.condition = condition;
        spec.restart_policy.max_attempts = max_attempts;
        spec
    }

    #[test]
    fn a_slot_out_of_restarts_is_reported_with_its_error() {
        use DesiredState::{Running, Shutdown};
        use TaskState::{Failed, Pending, Rejected};
        let missing = "cannot start task (no-such-program): No such file or directory";
        let once = vec![task_view(1, Rejected, Running, 10, Some(missing))];
        let twice = vec![
            task_view(1, Failed, Shutdown, 10, Some("task: non-zero exit (1)")),
            task_view(1, Rejected, Shutdown, 20, Some(missing)),
        ];
        let retrying = vec![
            task_view(1, Rejected, Shutdown, 10, Some(missing)),
            task_view(1, Pending, Running, 20, None),
        ];
        // (restart condition, max attempts, tasks, exhausted?)
        let rows: Vec<(RestartCondition, Option<u64>, &Vec<TaskView>, bool)> = vec![
            (RestartCondition::None, None, &once, true),
            (RestartCondition::Any, None, &once, false),
            (RestartCondition::OnFailure, Some(1), &once, false),
            (RestartCondition::OnFailure, Some(1), &twice, true),
            (RestartCondition::Any, Some(0), &retrying, false),
        ];
        for (condition, max_attempts, tasks, exhausted) in rows {
            let verdict = restarts_exhausted(&spec_with(condition, max_attempts), tasks);
            assert_eq!(
                verdict.is_some(),
                exhausted,
                "{condition:?} {max_attempts:?}: {verdict:?}"
            );
            if let Some(reason) = verdict {
                assert!(reason.contains(missing), "the newest error: {reason}");
                assert!(reason.contains("web.1"), "{reason}");
            }
        }
        // A window may allow more attempts later: never judged exhausted.
        let mut windowed = spec_with(RestartCondition::Any, Some(0));
        windowed.restart_policy.window_ms = Some(60_000);
        assert_eq!(restarts_exhausted(&windowed, &twice), None);
    }

    #[test]
    fn a_slot_whose_last_attempt_failed_shows_the_error() {
        let tasks = vec![
            task_view(
                1,
                TaskState::Rejected,
                DesiredState::Shutdown,
                10,
                Some("no such program\nmore"),
            ),
            task_view(1, TaskState::Pending, DesiredState::Running, 20, None),
        ];
        let errors = last_errors(&tasks);
        let label = slot_label(&tasks[1], errors.get("web.1").map(|(_, err)| err.as_str()));
        assert_eq!(label, "pending (last attempt: no such program)");
        let running = task_view(2, TaskState::Running, DesiredState::Running, 30, None);
        assert_eq!(slot_label(&running, Some("old error")), "running");
    }

    #[test]
    fn images_and_commands_are_told_apart() {
        assert!(looks_like_image("nginx:1.25"));
        assert!(looks_like_image("nginxdemos/hello"));
        assert!(!looks_like_image("/usr/bin/env"));
        assert!(!looks_like_image("sh"), "sh is on PATH");
        assert!(looks_like_image("surely-no-such-program-xyz"));
    }

    #[test]
    fn a_process_task_that_ignores_port_is_warned_about() {
        let spec = |driver: &str, command: &[&str], ports: &[&str]| ServiceSpec {
            name: "web".into(),
            driver: driver.parse().unwrap(),
            command: command.iter().map(|word| word.to_string()).collect(),
            ports: ports
                .iter()
                .map(|port| PublishedPort::parse(port).unwrap())
                .collect(),
            ..ServiceSpec::default()
        };
        let warning = port_contract_warning(&spec(
            "process",
            &["python3", "-m", "http.server", "80"],
            &["18080:80"],
        ))
        .expect("a warning");
        assert!(
            warning.contains("$PORT") && warning.contains("target port 80"),
            "{warning}"
        );
        for quiet in [
            spec(
                "process",
                &["sh", "-c", "exec python3 -m http.server $PORT"],
                &["18080:80"],
            ),
            spec("process", &["sleep", "60"], &[]),
            spec("docker", &["nginx"], &["18080:80"]),
        ] {
            assert_eq!(port_contract_warning(&quiet), None, "{:?}", quiet.command);
        }
    }

    #[test]
    fn negative_replicas_are_refused_with_the_flag_named() {
        let err = replicas_arg(-1).unwrap_err().to_string();
        assert!(err.contains("--replicas"), "{err}");
    }
}
