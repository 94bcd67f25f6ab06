//! Feeds this node's mesh: turns the published routes the dispatcher pushes into the
//! mesh's `ServiceRoute`s and applies each new set, keeping what the mesh can serve
//! (`hoist_mesh::servable` decides which services of a clashing set that is) and
//! retrying ports another process held.
//!
//! Does not touch: which routes exist (the dispatcher decides), nor the mesh's tables
//! and listeners (the mesh changes them in place).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// The mesh's view of the published routes the dispatcher pushed.
pub(super) fn mesh_services(routes: &[hoist_api::PublishedRoute]) -> Vec<hoist_mesh::ServiceRoute> {
    routes
        .iter()
        .map(|route| hoist_mesh::ServiceRoute {
            // One mesh entry per published port of a service.
            service_id: format!("{}/{}", route.service_id, route.published),
            service_name: route.service_name.clone(),
            published: route.published,
            protocol: match route.protocol {
                hoist_types::service::Protocol::Tcp => hoist_mesh::Protocol::Tcp,
                hoist_types::service::Protocol::Http => hoist_mesh::Protocol::Http,
            },
            routes: route
                .routes
                .iter()
                .map(|rule| hoist_mesh::HostPathRoute {
                    host: rule.host.clone(),
                    path_prefix: rule.path_prefix.clone(),
                })
                .collect(),
            health: route
                .health_path
                .as_ref()
                .map(|path| hoist_mesh::HealthCheck {
                    path: path.clone(),
                    ..hoist_mesh::HealthCheck::default()
                }),
            endpoints: route
                .endpoints
                .iter()
                .filter_map(|endpoint| {
                    let addr = endpoint.addr.parse().ok()?;
                    Some(hoist_mesh::Endpoint {
                        id: endpoint.task_id.clone(),
                        addr,
                        state: if endpoint.draining {
                            hoist_mesh::EndpointState::Draining
                        } else {
                            hoist_mesh::EndpointState::Active
                        },
                    })
                })
                .collect(),
        })
        .collect()
}

/// Applies every new route set to the mesh: listeners open and close, endpoint tables
/// change in place, nothing restarts.
pub(super) async fn feed_mesh(
    mesh: Arc<hoist_mesh::Mesh>,
    mut routes: watch::Receiver<Vec<hoist_api::PublishedRoute>>,
    mut stop: watch::Receiver<bool>,
    port_faults: watch::Sender<Vec<hoist_types::node::PortFault>>,
) {
    loop {
        let servable = hoist_mesh::servable(mesh_services(&routes.borrow_and_update()));
        for left_out in &servable.left_out {
            tracing::warn!(service = %left_out.service_name, error = %left_out.error, "published port left out of the mesh");
        }
        let services = servable.services;
        let mut retry = false;
        match mesh.set_services(services).await {
            Ok(report) => {
                retry = !report.failed.is_empty();
                let faults = faults_of(&report.failed);
                port_faults.send_if_modified(|current| {
                    let changed = *current != faults;
                    *current = faults;
                    changed
                });
                for port in &report.opened {
                    tracing::info!(port, "mesh listening");
                }
                for port in &report.closed {
                    tracing::info!(port, "mesh closed");
                }
                for err in &report.failed {
                    tracing::warn!(error = %err, "mesh update incomplete; retrying");
                }
            }
            // Stopped for good (the node was removed, or is shutting down).
            Err(hoist_mesh::MeshError::ShutDown) => return,
            Err(err) => tracing::warn!(error = %err, "mesh update refused"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            changed = routes.changed() => if changed.is_err() { return },
            // A port another process held may be free now.
            _ = tokio::time::sleep(Duration::from_secs(2)), if retry => {}
        }
    }
}

/// The ports an update could not open, one fault each, in port order.
fn faults_of(failed: &[hoist_mesh::MeshError]) -> Vec<hoist_types::node::PortFault> {
    let mut faults: Vec<hoist_types::node::PortFault> = failed
        .iter()
        .filter_map(|error| match error {
            hoist_mesh::MeshError::Bind { addr, source } => Some(hoist_types::node::PortFault {
                port: addr.port(),
                reason: source.to_string(),
            }),
            _ => None,
        })
        .collect();
    faults.sort_by_key(|fault| fault.port);
    faults.dedup_by_key(|fault| fault.port);
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(service: &str, host: Option<&str>) -> hoist_api::PublishedRoute {
        hoist_api::PublishedRoute {
            service_id: service.into(),
            service_name: service.into(),
            published: 8080,
            target: 80,
            protocol: hoist_types::service::Protocol::Http,
            mode: hoist_types::service::PortMode::Ingress,
            health_path: None,
            routes: host
                .map(|host| {
                    vec![hoist_types::service::HttpRoute {
                        host: Some(host.into()),
                        path_prefix: None,
                    }]
                })
                .unwrap_or_default(),
            endpoints: Vec::new(),
        }
    }

    #[test]
    fn a_clashing_route_is_left_out_instead_of_blocking_the_others() {
        let routes = vec![
            route("a", Some("a.test")),
            route("b", Some("a.test")),
            route("c", Some("c.test")),
        ];
        let served: Vec<String> = hoist_mesh::servable(mesh_services(&routes))
            .services
            .into_iter()
            .map(|service| service.service_name)
            .collect();
        assert_eq!(served, vec!["a".to_string(), "c".to_string()]);
    }
}
