//! Which drivers a node offers: the process driver always, and the Docker Engine's when
//! one answers, with what the engine says about itself for the managers.
//!
//! Does not touch: what the drivers run (the worker's agent drives them), nor placement.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hoist_driver::{Driver, ProcessDriver};
use hoist_types::{EngineInfo, NodeId};

/// The drivers this node offers: the process driver always, and the Docker Engine's
/// when one answers (at `DOCKER_HOST` or /var/run/docker.sock). Containers are owned by
/// the node id, so daemons sharing one engine never touch each other's.
pub(super) async fn node_drivers(
    data_dir: &Path,
    node_id: NodeId,
    log_limits: hoist_driver::LogLimits,
) -> anyhow::Result<(Vec<Arc<dyn Driver>>, EngineInfo)> {
    let process: Arc<dyn Driver> = Arc::new(ProcessDriver::with_log_limits(
        data_dir.join("driver"),
        log_limits,
    )?);
    let mut drivers = vec![process];
    let mut engine = EngineInfo {
        // Docker's names for them (`uname` and Go both say `linux`; `x86_64`, `aarch64`).
        os: Some(std::env::consts::OS.to_owned()),
        arch: Some(std::env::consts::ARCH.to_owned()),
        ..EngineInfo::default()
    };
    let connect = tokio::time::timeout(
        Duration::from_secs(3),
        hoist_driver::DockerDriver::connect(node_id.to_string()),
    )
    .await;
    match connect {
        Ok(Ok(docker)) => {
            if let Ok(description) = docker.engine_info().await {
                engine.docker_version = Some(description.version);
                engine.storage_driver = Some(description.storage_driver);
                engine.labels = description.labels;
            }
            tracing::info!(version = ?engine.docker_version, storage = ?engine.storage_driver, "docker engine found");
            drivers.push(Arc::new(docker));
        }
        Ok(Err(err)) => tracing::info!(error = %err, "no docker engine: the docker driver is off"),
        Err(_) => {
            tracing::info!("the docker engine did not answer in 3 s: the docker driver is off")
        }
    }
    Ok((drivers, engine))
}
