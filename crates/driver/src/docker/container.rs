//! The pure half of the docker driver: a [`RunSpec`] turned into the engine's
//! container description, and the engine's answers turned back into our types
//! (endpoints, exits, health), with no I/O.
//!
//! Owns the container's name, its labels (how a driver finds its containers
//! again, and how several nodes sharing one engine keep apart), its environment,
//! port bindings, mounts and limits. Deliberately does not talk to the engine:
//! `mod.rs` does, so everything here is tested from plain values.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HealthConfig, HealthStatusEnum, HostConfig,
    Mount, MountType, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};

use super::HealthState;
use crate::{DriverError, Endpoint, RunSpec, TaskExit};

/// Label holding the task id; with [`LABEL_NODE`] it finds a task's container.
pub(crate) const LABEL_TASK: &str = "hoist.task";
/// Label holding the service id, for operators reading `docker ps`.
pub(crate) const LABEL_SERVICE: &str = "hoist.service";
/// Label holding the owning node's id: a driver only ever lists, adopts or
/// touches containers carrying its own, so daemons sharing an engine (tests,
/// `hoist demo`) never see each other's tasks.
pub(crate) const LABEL_NODE: &str = "hoist.node";
/// Label holding the target ports in the spec's order (`8080,9090`): an adopted
/// task's endpoints come back in the order it was started with, so the first is
/// still the one named by `PORT`.
pub(crate) const LABEL_PORTS: &str = "hoist.ports";

/// Docker's defaults for a HEALTHCHECK that leaves a field unset (nanoseconds
/// in the API; 0 means "use the default").
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_HEALTH_RETRIES: u32 = 3;

/// The container's name: `hoist-<service_name>.<task_id>`, as `docker ps` shows
/// it. Characters Docker refuses in names become `-`.
pub(crate) fn container_name(spec: &RunSpec) -> String {
    let service: String = spec
        .service_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("hoist-{service}.{}", spec.task_id)
}

/// Checks what the docker driver needs of a spec, without touching anything.
pub(crate) fn validate(spec: &RunSpec) -> Result<(), DriverError> {
    validate_task_id(&spec.task_id)?;
    match spec.image.as_deref() {
        None | Some("") => {
            return Err(DriverError::invalid(
                "image",
                "the docker driver needs an image to run",
            ))
        }
        Some(image) if image.chars().any(char::is_whitespace) => {
            return Err(DriverError::invalid(
                "image",
                format!("{image:?} is not an image reference"),
            ))
        }
        Some(_) => {}
    }
    if spec.command.first().is_some_and(String::is_empty) {
        return Err(DriverError::invalid(
            "command",
            "the program (first word) is empty",
        ));
    }
    let mut seen_ports = HashSet::new();
    for &port in &spec.ports {
        if port == 0 {
            return Err(DriverError::invalid("ports", "target port 0 is not a port"));
        }
        if !seen_ports.insert(port) {
            return Err(DriverError::invalid(
                "ports",
                format!("target port {port} is listed twice"),
            ));
        }
    }
    for mount in &spec.mounts {
        if !mount.source.is_absolute() || !mount.target.is_absolute() {
            return Err(DriverError::invalid(
                "mounts",
                format!(
                    "source and target must be absolute paths, got {} -> {}",
                    mount.source.display(),
                    mount.target.display()
                ),
            ));
        }
        if mount.target.parent().is_none() {
            return Err(DriverError::invalid("mounts", "cannot mount over /"));
        }
        if mount.source.to_str().is_none() || mount.target.to_str().is_none() {
            return Err(DriverError::invalid(
                "mounts",
                format!("{} is not UTF-8", mount.source.display()),
            ));
        }
    }
    if let Some(workdir) = &spec.workdir {
        if !workdir.is_absolute() || workdir.to_str().is_none() {
            return Err(DriverError::invalid(
                "workdir",
                format!(
                    "must be an absolute UTF-8 path inside the container, got {}",
                    workdir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Task ids end up in container names and label filters, so only a
/// conservative alphabet is accepted (the process driver's rule too).
pub(crate) fn validate_task_id(task_id: &str) -> Result<(), DriverError> {
    let valid_chars = task_id
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    if task_id.is_empty() || task_id.len() > 128 || task_id.starts_with('.') || !valid_chars {
        return Err(DriverError::invalid(
            "task_id",
            format!("{task_id:?} must be 1 to 128 of [A-Za-z0-9_.-], not starting with '.'"),
        ));
    }
    Ok(())
}

/// The reference the engine should pull: with `:latest` added when it names
/// neither a tag nor a digest, since the pull API given a bare name fetches
/// every tag of the repository.
pub(crate) fn pull_reference(image: &str) -> String {
    let last_component = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last_component.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

/// The port key Docker uses in `ExposedPorts` and `PortBindings`.
fn port_key(target_port: u16) -> String {
    format!("{target_port}/tcp")
}

/// The container to create for `spec`, owned by node `owner`.
pub(crate) fn create_body(spec: &RunSpec, owner: &str) -> ContainerCreateBody {
    let labels = HashMap::from([
        (LABEL_TASK.to_owned(), spec.task_id.clone()),
        (LABEL_SERVICE.to_owned(), spec.service_id.clone()),
        (LABEL_NODE.to_owned(), owner.to_owned()),
        (
            LABEL_PORTS.to_owned(),
            spec.ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
    ]);
    // Host port "" asks the engine for an ephemeral port, read back by inspect.
    let port_bindings = spec
        .ports
        .iter()
        .map(|&target_port| {
            (
                port_key(target_port),
                Some(vec![PortBinding {
                    host_ip: Some("0.0.0.0".to_owned()),
                    host_port: Some(String::new()),
                }]),
            )
        })
        .collect();
    let mounts = spec
        .mounts
        .iter()
        .map(|mount| Mount {
            source: Some(mount.source.to_string_lossy().into_owned()),
            target: Some(mount.target.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(mount.readonly),
            ..Mount::default()
        })
        .collect();
    let limits = spec.limits.unwrap_or_default();
    let to_i64 = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    // Like `docker service create IMAGE ARGS...`: the words after the image replace
    // the image's CMD and are handed to its ENTRYPOINT, which stays.
    // `--entrypoint` replaces the image's ENTRYPOINT, as in Docker.
    let entrypoint: Option<Vec<String>> = spec.entrypoint.clone();
    let cmd = (!spec.command.is_empty()).then(|| spec.command.clone());
    ContainerCreateBody {
        image: spec.image.clone(),
        entrypoint,
        cmd,
        env: Some(
            task_env(spec)
                .into_iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect(),
        ),
        labels: Some(labels),
        exposed_ports: Some(spec.ports.iter().map(|&port| port_key(port)).collect()),
        user: spec.user.clone(),
        healthcheck: match &spec.health {
            Some(check) => Some(HealthConfig {
                test: Some(vec!["CMD-SHELL".to_owned(), check.shell_command.clone()]),
                interval: Some(to_i64(check.interval.as_nanos() as u64)),
                timeout: Some(to_i64(check.timeout.as_nanos() as u64)),
                retries: Some(i64::from(check.retries)),
                start_period: (!check.start_period.is_zero())
                    .then(|| to_i64(check.start_period.as_nanos() as u64)),
                ..HealthConfig::default()
            }),
            // `--no-healthcheck`: Docker's way to turn off the image's HEALTHCHECK.
            None if spec.no_healthcheck => Some(HealthConfig {
                test: Some(vec!["NONE".to_owned()]),
                ..HealthConfig::default()
            }),
            None => None,
        },
        hostname: spec.hostname.clone(),
        working_dir: spec
            .workdir
            .as_ref()
            .map(|dir| dir.to_string_lossy().into_owned()),
        host_config: Some(HostConfig {
            port_bindings: Some(port_bindings),
            mounts: Some(mounts),
            nano_cpus: limits.nano_cpus.map(to_i64),
            memory: limits.memory_bytes.map(to_i64),
            // An init process as PID 1 forwards SIGTERM to the workload, whose
            // default action then ends it as under the process driver; without
            // it a workload that installs no handler ignores SIGTERM (the kernel
            // protects PID 1) and every stop waits out its whole grace period.
            // It also reaps the workload's orphans.
            init: Some(true),
            readonly_rootfs: Some(spec.read_only),
            // Never restarted by the engine: a replacement is a new task, decided
            // by the orchestrator.
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// The workload's environment: the spec's, then ours, which win. `PORT` is the
/// first target port (inside the container the workload listens on its target
/// ports; the host port is the engine's business), and `HOIST_PORT_<target>`
/// matches what the process driver sets, so a workload reads the same variables
/// under both drivers.
pub(crate) fn task_env(spec: &RunSpec) -> Vec<(String, String)> {
    let mut env = spec.env.clone();
    if let Some(first) = spec.ports.first() {
        env.insert("PORT".to_owned(), first.to_string());
    }
    for port in &spec.ports {
        env.insert(format!("HOIST_PORT_{port}"), port.to_string());
    }
    env.insert("HOIST_TASK".to_owned(), spec.task_id.clone());
    env.insert("HOIST_SERVICE".to_owned(), spec.service_name.clone());
    env.insert("HOIST_SERVICE_ID".to_owned(), spec.service_id.clone());
    env.insert("HOIST_NODE".to_owned(), spec.node_name.clone());
    env.insert("HOIST_NODE_ID".to_owned(), spec.node_id.clone());
    env.into_iter().collect()
}

/// The target ports recorded in the container's [`LABEL_PORTS`], in spec order.
fn target_ports(labels: Option<&HashMap<String, String>>) -> Vec<u16> {
    labels
        .and_then(|labels| labels.get(LABEL_PORTS))
        .map(|ports| {
            ports
                .split(',')
                .filter_map(|port| port.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Where each target port of the container is published on the node, in the
/// spec's order. A port without a binding yet (the container is not running)
/// is left out.
pub(crate) fn endpoints(container: &ContainerInspectResponse) -> Vec<Endpoint> {
    let labels = container
        .config
        .as_ref()
        .and_then(|config| config.labels.as_ref());
    let published = container
        .network_settings
        .as_ref()
        .and_then(|settings| settings.ports.as_ref());
    target_ports(labels)
        .into_iter()
        .filter_map(|target_port| {
            let bindings = published?.get(&port_key(target_port))?.as_ref()?;
            // The engine lists one binding per address family; the port is the same.
            let host_port = bindings
                .iter()
                .find_map(|binding| binding.host_port.as_deref()?.parse().ok())?;
            Some(Endpoint {
                target_port,
                host_port,
            })
        })
        .collect()
}

/// The task id a container carries in its labels.
pub(crate) fn task_id_of(labels: Option<&HashMap<String, String>>) -> Option<&str> {
    labels?.get(LABEL_TASK).map(String::as_str)
}

/// How a container ended, from its exit code. Docker reports a container killed
/// by signal N as `128 + N` (and so does the init process for its child), so a
/// code in `129..=192` is read as that signal; a program that chose to
/// `exit(137)` is indistinguishable, as in a shell.
pub(crate) fn exit_from_code(code: i64) -> TaskExit {
    match code {
        129..=192 => TaskExit::Signaled {
            signal: (code - 128) as i32,
        },
        _ => TaskExit::Exited {
            code: i32::try_from(code).unwrap_or(i32::MAX),
        },
    }
}

/// The container's exit when it is no longer running; `None` while it runs (or
/// was created but not started yet, which only happens inside `start`).
pub(crate) fn exit_of(container: &ContainerInspectResponse) -> Option<TaskExit> {
    let state = container.state.as_ref()?;
    if state.running == Some(true) || state.restarting == Some(true) {
        return None;
    }
    if state.oom_killed == Some(true) {
        return Some(TaskExit::OutOfMemory);
    }
    Some(state.exit_code.map_or(TaskExit::Unknown, exit_from_code))
}

/// The container's main pid on the node (its init process), while it runs.
pub(crate) fn pid_of(container: &ContainerInspectResponse) -> Option<u32> {
    let pid = container.state.as_ref()?.pid?;
    u32::try_from(pid).ok().filter(|&pid| pid != 0)
}

/// The container's health, `None` when it has no health check.
pub(crate) fn health_of(container: &ContainerInspectResponse) -> Option<HealthState> {
    let health = container.state.as_ref()?.health.as_ref()?;
    match health.status? {
        HealthStatusEnum::STARTING => Some(HealthState::Starting),
        HealthStatusEnum::HEALTHY => Some(HealthState::Healthy),
        HealthStatusEnum::UNHEALTHY => Some(HealthState::Unhealthy),
        HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
    }
}

/// The output of the container's last health probe, trimmed, for error messages.
pub(crate) fn last_probe_output(container: &ContainerInspectResponse) -> String {
    container
        .state
        .as_ref()
        .and_then(|state| state.health.as_ref())
        .and_then(|health| health.log.as_ref())
        .and_then(|log| log.last())
        .map(|probe| {
            format!(
                "last probe exited {}: {}",
                probe.exit_code.unwrap_or(-1),
                probe.output.as_deref().unwrap_or("").trim()
            )
        })
        .unwrap_or_else(|| "no probe ran".to_owned())
}

/// How long `start` waits for a container with this health check to leave
/// `starting`: its start period plus one interval and timeout per allowed
/// failure, and one more. The engine itself declares the container unhealthy
/// within that time, so this bound only matters if the engine stalls.
pub(crate) fn health_wait_budget(config: &HealthConfig) -> Duration {
    let nanos = |value: Option<i64>, default: Duration| match value {
        Some(nanos) if nanos > 0 => Duration::from_nanos(nanos.unsigned_abs()),
        _ => default,
    };
    let interval = nanos(config.interval, DEFAULT_HEALTH_INTERVAL);
    let timeout = nanos(config.timeout, DEFAULT_HEALTH_TIMEOUT);
    let start_period = nanos(config.start_period, Duration::ZERO);
    let retries = match config.retries {
        Some(retries) if retries > 0 => u32::try_from(retries).unwrap_or(u32::MAX),
        _ => DEFAULT_HEALTH_RETRIES,
    };
    start_period + (interval + timeout).saturating_mul(retries.saturating_add(1))
}

/// True when a container's health config actually probes (`NONE` disables an
/// image's HEALTHCHECK).
pub(crate) fn has_probe(config: Option<&HealthConfig>) -> bool {
    config
        .and_then(|config| config.test.as_ref())
        .and_then(|test| test.first())
        .is_some_and(|kind| kind != "NONE")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use bollard::models::{ContainerConfig, ContainerState, Health, NetworkSettings};

    use super::*;
    use crate::{BindMount, Limits};

    fn spec() -> RunSpec {
        RunSpec {
            task_id: "t1".to_owned(),
            service_id: "svc-1".to_owned(),
            service_name: "web app".to_owned(),
            node_id: "node-1".to_owned(),
            node_name: "n1".to_owned(),
            command: vec!["/bin/serve".to_owned(), "--fast".to_owned()],
            env: BTreeMap::from([
                ("GREETING".to_owned(), "hi".to_owned()),
                ("PORT".to_owned(), "1".to_owned()),
            ]),
            ports: vec![8080, 9090],
            mounts: vec![BindMount {
                source: PathBuf::from("/srv/data"),
                target: PathBuf::from("/data"),
                readonly: true,
            }],
            limits: Some(Limits {
                nano_cpus: Some(500_000_000),
                memory_bytes: Some(64 << 20),
            }),
            stop_grace: Duration::from_secs(5),
            image: Some("hoist-hello:local".to_owned()),
            workdir: None,
            user: None,
            read_only: false,
            health: None,
            no_healthcheck: false,
            hostname: None,
            entrypoint: None,
            state_dir: PathBuf::from("/var/lib/hoist/tasks/t1"),
        }
    }

    #[test]
    fn user_read_only_and_health_check_reach_the_container() {
        let mut spec = spec();
        spec.user = Some("65534".to_owned());
        spec.read_only = true;
        spec.health = Some(crate::HealthCheck {
            shell_command: "test -e /tmp/ok".to_owned(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            retries: 4,
            start_period: Duration::from_secs(30),
        });
        let body = create_body(&spec, "node-1");
        assert_eq!(body.user.as_deref(), Some("65534"));
        assert_eq!(
            body.host_config
                .as_ref()
                .and_then(|host| host.readonly_rootfs),
            Some(true)
        );
        let check = body.healthcheck.expect("health check");
        assert_eq!(
            check.test,
            Some(vec!["CMD-SHELL".to_owned(), "test -e /tmp/ok".to_owned()])
        );
        assert_eq!(check.interval, Some(2_000_000_000));
        assert_eq!(check.timeout, Some(1_000_000_000));
        assert_eq!(check.start_period, Some(30_000_000_000));
        assert_eq!(check.retries, Some(4));
    }

    #[test]
    fn no_healthcheck_hostname_and_entrypoint_reach_the_container() {
        let mut spec = spec();
        spec.no_healthcheck = true;
        spec.hostname = Some("web-1".to_owned());
        spec.entrypoint = Some(vec!["/bin/sh".to_owned()]);
        let body = create_body(&spec, "node-1");
        let check = body.healthcheck.expect("a health config");
        assert_eq!(check.test, Some(vec!["NONE".to_owned()]));
        assert!(!has_probe(Some(&check)));
        assert_eq!(body.hostname.as_deref(), Some("web-1"));
        assert_eq!(body.entrypoint, Some(vec!["/bin/sh".to_owned()]));
        // Without them, the image's own stay.
        let body = create_body(&self::spec(), "node-1");
        assert_eq!(
            (body.healthcheck, body.hostname, body.entrypoint),
            (None, None, None)
        );
    }

    #[test]
    fn create_body_carries_the_spec() {
        let body = create_body(&spec(), "node-1");
        let labels = body.labels.as_ref().expect("labels");
        assert_eq!(labels[LABEL_TASK], "t1");
        assert_eq!(labels[LABEL_SERVICE], "svc-1");
        assert_eq!(labels[LABEL_NODE], "node-1");
        assert_eq!(labels[LABEL_PORTS], "8080,9090");
        assert_eq!(body.entrypoint, None, "the image's entrypoint stays");
        assert_eq!(
            body.cmd,
            Some(vec!["/bin/serve".to_owned(), "--fast".to_owned()])
        );
        let env = body.env.as_ref().expect("env");
        // Ours win over the spec's.
        assert!(env.contains(&"PORT=8080".to_owned()), "{env:?}");
        assert!(!env.contains(&"PORT=1".to_owned()), "{env:?}");
        for expected in [
            "GREETING=hi",
            "HOIST_TASK=t1",
            "HOIST_NODE=n1",
            "HOIST_PORT_9090=9090",
        ] {
            assert!(env.contains(&expected.to_owned()), "{expected} in {env:?}");
        }
        let host = body.host_config.as_ref().expect("host config");
        let bindings = host.port_bindings.as_ref().expect("bindings");
        assert_eq!(bindings.len(), 2);
        let binding = &bindings["9090/tcp"].as_ref().expect("binding")[0];
        assert_eq!(binding.host_port.as_deref(), Some(""));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        let mount = &host.mounts.as_ref().expect("mounts")[0];
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(mount.source.as_deref(), Some("/srv/data"));
        assert_eq!(container_name(&spec()), "hoist-web-app.t1");
    }

    #[test]
    fn empty_command_keeps_the_image_default() {
        let mut spec = spec();
        spec.command.clear();
        let body = create_body(&spec, "node-1");
        assert_eq!((body.entrypoint, body.cmd), (None, None));
    }

    #[test]
    fn validation_needs_an_image() {
        let mut spec = spec();
        assert!(validate(&spec).is_ok());
        spec.image = None;
        assert!(matches!(
            validate(&spec),
            Err(DriverError::InvalidSpec { field: "image", .. })
        ));
        let mut spec = self::spec();
        spec.ports = vec![80, 80];
        assert!(validate(&spec).is_err());
        let mut spec = self::spec();
        spec.task_id = "../x".to_owned();
        assert!(validate(&spec).is_err());
    }

    #[test]
    fn pull_reference_adds_latest_only_when_untagged() {
        assert_eq!(pull_reference("nginx"), "nginx:latest");
        assert_eq!(pull_reference("nginx:1.27"), "nginx:1.27");
        assert_eq!(
            pull_reference("registry:5000/team/app"),
            "registry:5000/team/app:latest"
        );
        assert_eq!(
            pull_reference("registry:5000/team/app:v2"),
            "registry:5000/team/app:v2"
        );
        assert_eq!(pull_reference("app@sha256:abcd"), "app@sha256:abcd");
    }

    #[test]
    fn exit_codes_above_128_are_signals() {
        assert_eq!(exit_from_code(0), TaskExit::Exited { code: 0 });
        assert_eq!(exit_from_code(3), TaskExit::Exited { code: 3 });
        assert_eq!(exit_from_code(128), TaskExit::Exited { code: 128 });
        assert_eq!(exit_from_code(137), TaskExit::Signaled { signal: 9 });
        assert_eq!(exit_from_code(143), TaskExit::Signaled { signal: 15 });
        assert_eq!(exit_from_code(255), TaskExit::Exited { code: 255 });
    }

    #[test]
    fn endpoints_follow_the_labelled_port_order() {
        let binding = |port: &str| {
            Some(vec![
                PortBinding {
                    host_ip: Some("0.0.0.0".to_owned()),
                    host_port: Some(port.to_owned()),
                },
                PortBinding {
                    host_ip: Some("::".to_owned()),
                    host_port: Some(port.to_owned()),
                },
            ])
        };
        let container = ContainerInspectResponse {
            config: Some(ContainerConfig {
                labels: Some(HashMap::from([(
                    LABEL_PORTS.to_owned(),
                    "9090,8080".to_owned(),
                )])),
                ..ContainerConfig::default()
            }),
            network_settings: Some(NetworkSettings {
                ports: Some(HashMap::from([
                    ("8080/tcp".to_owned(), binding("49153")),
                    ("9090/tcp".to_owned(), binding("49154")),
                ])),
                ..NetworkSettings::default()
            }),
            ..ContainerInspectResponse::default()
        };
        assert_eq!(
            endpoints(&container),
            vec![
                Endpoint {
                    target_port: 9090,
                    host_port: 49154
                },
                Endpoint {
                    target_port: 8080,
                    host_port: 49153
                },
            ]
        );
    }

    #[test]
    fn state_gives_exit_and_health() {
        let container =
            |running: bool, code: i64, health: Option<HealthStatusEnum>| ContainerInspectResponse {
                state: Some(ContainerState {
                    running: Some(running),
                    exit_code: Some(code),
                    pid: Some(if running { 42 } else { 0 }),
                    health: health.map(|status| Health {
                        status: Some(status),
                        ..Health::default()
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerInspectResponse::default()
            };
        let running = container(true, 0, Some(HealthStatusEnum::STARTING));
        assert_eq!(exit_of(&running), None);
        assert_eq!(pid_of(&running), Some(42));
        assert_eq!(health_of(&running), Some(HealthState::Starting));
        let ended = container(false, 3, None);
        assert_eq!(exit_of(&ended), Some(TaskExit::Exited { code: 3 }));
        assert_eq!(pid_of(&ended), None);
        assert_eq!(health_of(&ended), None);
    }

    #[test]
    fn health_budget_uses_docker_defaults() {
        let second = 1_000_000_000;
        let config = HealthConfig {
            test: Some(vec!["CMD".to_owned(), "probe".to_owned()]),
            interval: Some(second),
            timeout: Some(2 * second),
            retries: Some(2),
            start_period: None,
            start_interval: None,
        };
        assert!(has_probe(Some(&config)));
        assert_eq!(health_wait_budget(&config), Duration::from_secs(9));
        let defaults = HealthConfig::default();
        assert_eq!(health_wait_budget(&defaults), Duration::from_secs(240));
        let disabled = HealthConfig {
            test: Some(vec!["NONE".to_owned()]),
            ..HealthConfig::default()
        };
        assert!(!has_probe(Some(&disabled)));
        assert!(!has_probe(None));
    }
}
