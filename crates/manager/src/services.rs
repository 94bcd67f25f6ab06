//! Services as the operator sees them: create, update, scale, remove, list, and the
//! tasks of one service.

use std::collections::BTreeSet;

use hoist_api::{ServiceView, TaskView};
use hoist_orchestrator::service_replica_counts;
use hoist_state::{Change, ClusterState};
use hoist_types::service::{Service, ServiceMode, ServiceSpec, AUTO_PUBLISHED_PORTS};
use hoist_types::ServiceId;

use crate::{now_ms, Conflict, Input, Manager, ManagerError, Object, Result};

/// A task with its node's name, as `service ps` and `service logs` show it.
fn task_view(state: &ClusterState, task: &hoist_types::task::Task) -> TaskView {
    TaskView {
        node_hostname: task
            .node_id
            .and_then(|node_id| state.nodes.get(&node_id))
            .map(|node| node.hostname.clone()),
        name: task.name(),
        task: task.clone(),
    }
}

fn view(state: &ClusterState, service: &Service) -> ServiceView {
    let counts = service_replica_counts(service, state.tasks.values());
    ServiceView {
        service: service.clone(),
        running: counts.running,
        desired: counts.desired,
        completed: counts.completed,
        port_faults: port_faults(state, service),
    }
}

/// The service's published ports that a node could not open: every ready node for an
/// ingress port (the mesh serves it everywhere), the nodes running one of its tasks for a
/// host port. Pure.
fn port_faults(state: &ClusterState, service: &Service) -> Vec<String> {
    let mut faults = Vec::new();
    for port in &service.spec.ports {
        for node in state.nodes.values() {
            if node.status != hoist_types::NodeStatus::Ready {
                continue;
            }
            let Some(fault) = node.port_faults.iter().find(|f| f.port == port.published) else {
                continue;
            };
            let concerned = port.mode == hoist_types::service::PortMode::Ingress
                || state.tasks.values().any(|task| {
                    task.service_id == service.id && task.node_id == Some(node.id) && task.is_live()
                });
            if concerned {
                faults.push(format!(
                    "port {} cannot be opened on node {}: {}",
                    port.published, node.hostname, fault.reason
                ));
            }
        }
    }
    faults
}

/// Refuses more replicas than the cluster allows, naming the limit and how to raise it.
pub(crate) fn check_replicas(state: &ClusterState, spec: &ServiceSpec) -> Result<()> {
    let max = state.settings.max_replicas;
    match spec.replicas() {
        Some(replicas) if replicas > max => Err(ManagerError::invalid(Input::Replicas, format!(
            "invalid replicas: {replicas} is above this cluster's maximum of {max} replicas per service (raise it with `hoist cluster update --max-replicas N`, at most {})",
            hoist_state::MAX_REPLICAS_CEILING
        ))),
        _ => Ok(()),
    }
}

/// Checks `spec` against the cluster. `stored` is the spec it replaces (`None` for a
/// new service): mounts of a kind no driver supports are refused only when they are
/// new, so that a service stored before that check (by an older version) can still be
/// scaled or have its other fields changed. The mounts themselves are the operator's
/// to fix, with an update that changes them.
fn check_spec(
    state: &ClusterState,
    own: Option<ServiceId>,
    stored: Option<&ServiceSpec>,
    spec: &ServiceSpec,
) -> Result<()> {
    spec.validate()
        .and_then(|()| match stored {
            Some(stored) if stored.mounts == spec.mounts => Ok(()),
            _ => spec.check_supported(),
        })
        .map_err(|err| ManagerError::invalid(Input::ServiceSpec, err.to_string()))?;
    check_replicas(state, spec)?;
    if let Some(other) = state
        .services
        .values()
        .find(|service| Some(service.id) != own && service.spec.name == spec.name)
    {
        return Err(ManagerError::refused(
            Conflict::ServiceName,
            format!(
                "a service named {:?} already exists ({})",
                other.spec.name, other.id
            ),
        ));
    }
    spec.check_port_conflicts(own, state.services.values())
        .map_err(|err| ManagerError::refused(Conflict::PublishedPort, err.to_string()))
}

/// Gives every port published without a number the lowest one of
/// [`AUTO_PUBLISHED_PORTS`] that no other service publishes (and this one does not
/// either), as Swarm does. Pure.
fn assign_published_ports(
    state: &ClusterState,
    own: Option<ServiceId>,
    spec: &mut ServiceSpec,
) -> Result<()> {
    let mut taken: BTreeSet<u16> = state
        .services
        .values()
        .filter(|service| Some(service.id) != own)
        .flat_map(|service| service.spec.ports.iter().map(|port| port.published))
        .collect();
    taken.extend(spec.ports.iter().map(|port| port.published));
    for port in spec.ports.iter_mut().filter(|port| port.published == 0) {
        let free = AUTO_PUBLISHED_PORTS
            .clone()
            .find(|candidate| !taken.contains(candidate))
            .ok_or_else(|| {
                ManagerError::refused(
                    Conflict::PublishedPort,
                    format!(
                        "no free port left in {}-{} to publish target port {}",
                        AUTO_PUBLISHED_PORTS.start(),
                        AUTO_PUBLISHED_PORTS.end(),
                        port.target
                    ),
                )
            })?;
        port.published = free;
        taken.insert(free);
    }
    Ok(())
}

impl Manager {
    /// Validates and stores a new service. Nothing is stored when anything is wrong.
    pub async fn create_service(&self, spec: ServiceSpec) -> Result<ServiceView> {
        let mut spec = spec;
        let state = self.read(ClusterState::clone).await?;
        assign_published_ports(&state, None, &mut spec)?;
        check_spec(&state, None, None, &spec)?;
        let at_ms = now_ms();
        let service = Service {
            id: ServiceId::random(),
            spec,
            version: 1,
            created_at_ms: at_ms,
            updated_at_ms: at_ms,
        };
        let service_id = service.id;
        self.propose(Change::CreateService { service }).await?;
        tracing::info!(service = %service_id, "service created");
        self.inspect_service(&service_id.to_string()).await
    }

    pub async fn list_services(&self) -> Result<Vec<ServiceView>> {
        self.read(|state| {
            state
                .services
                .values()
                .map(|service| view(state, service))
                .collect()
        })
        .await
    }

    pub async fn inspect_service(&self, reference: &str) -> Result<ServiceView> {
        self.read(|state| {
            state
                .find_service(reference)
                .map(|service| view(state, service))
        })
        .await?
        .map_err(ManagerError::not_found(Object::Service, reference))
    }

    /// Replaces the spec, if `version` is still the current one.
    pub async fn update_service(
        &self,
        reference: &str,
        version: u64,
        spec: ServiceSpec,
    ) -> Result<ServiceView> {
        let state = self.read(ClusterState::clone).await?;
        let service = state
            .find_service(reference)
            .map_err(ManagerError::not_found(Object::Service, reference))?;
        if service.version != version {
            return Err(ManagerError::refused(Conflict::OutOfSequence, format!(
                "update out of sequence: service {} is at version {}, the update was made from version {version}; retry",
                service.spec.name, service.version
            )));
        }
        let mut spec = spec;
        assign_published_ports(&state, Some(service.id), &mut spec)?;
        check_spec(&state, Some(service.id), Some(&service.spec), &spec)?;
        let service_id = service.id;
        self.propose(Change::UpdateService {
            service_id,
            spec,
            at_ms: now_ms(),
        })
        .await?;
        self.inspect_service(&service_id.to_string()).await
    }

    pub async fn scale_service(&self, reference: &str, replicas: u64) -> Result<ServiceView> {
        let service = self
            .read(|state| state.find_service(reference).cloned())
            .await?
            .map_err(ManagerError::not_found(Object::Service, reference))?;
        if matches!(service.spec.mode, ServiceMode::Global) {
            return Err(ManagerError::invalid(
                Input::ScaleGlobal,
                format!(
                    "{}: scale can only be used with replicated mode",
                    service.spec.name
                ),
            ));
        }
        let mut spec = service.spec.clone();
        spec.mode = ServiceMode::Replicated { replicas };
        self.update_service(&service.id.to_string(), service.version, spec)
            .await
    }

    pub async fn remove_service(&self, reference: &str) -> Result<ServiceId> {
        let service_id = self
            .read(|state| state.find_service(reference).map(|service| service.id))
            .await?
            .map_err(ManagerError::not_found(Object::Service, reference))?;
        self.propose(Change::RemoveService { service_id }).await?;
        tracing::info!(service = %service_id, "service removed");
        Ok(service_id)
    }

    /// The tasks of a service, newest first within each slot.
    pub async fn service_tasks(&self, reference: &str) -> Result<Vec<TaskView>> {
        self.read(|state| {
            let service = state.find_service(reference)?;
            Ok(state
                .service_tasks(service.id)
                .into_iter()
                .map(|task| task_view(state, task))
                .collect())
        })
        .await?
        .map_err(ManagerError::not_found(Object::Service, reference))
    }

    /// The one task whose id `reference` is (or begins, unambiguously): `service logs`
    /// takes a task as well as a service, as Docker's does.
    pub async fn find_task(&self, reference: &str) -> Result<TaskView> {
        self.read(|state| {
            let matching: Vec<&hoist_types::task::Task> = state
                .tasks
                .values()
                .filter(|task| !reference.is_empty() && task.id.to_string().starts_with(reference))
                .collect();
            match matching.as_slice() {
                [task] => Ok(task_view(state, task)),
                [] => Err(format!("no such task or service: {reference}")),
                many => Err(format!(
                    "task id prefix {reference:?} is ambiguous ({} tasks match)",
                    many.len()
                )),
            }
        })
        .await?
        .map_err(ManagerError::not_found(Object::Service, reference))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_types::service::{Mount, MountKind, PublishedPort};

    fn stored_with_volume() -> (ClusterState, Service) {
        let mut spec = ServiceSpec {
            name: "old".into(),
            command: vec!["sleep".into(), "60".into()],
            ..ServiceSpec::default()
        };
        spec.mounts.push(Mount {
            kind: MountKind::Volume,
            source: "data".into(),
            target: "/data".into(),
            readonly: false,
        });
        let service = Service {
            id: ServiceId::random(),
            spec,
            version: 1,
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        let mut state = ClusterState::default();
        state.services.insert(service.id, service.clone());
        (state, service)
    }

    #[test]
    fn ports_without_a_number_get_the_lowest_free_one_of_the_range() {
        let (mut state, stored) = stored_with_volume();
        let mut taken = stored.clone();
        taken.id = ServiceId::random();
        taken.spec.name = "taken".into();
        taken.spec.ports = vec![PublishedPort::parse("30000:80").unwrap()];
        state.services.insert(taken.id, taken);
        let mut spec = ServiceSpec {
            name: "new".into(),
            ports: vec![
                PublishedPort::parse("80").unwrap(),
                PublishedPort::parse("30001:81").unwrap(),
                PublishedPort::parse("82/http").unwrap(),
            ],
            ..ServiceSpec::default()
        };
        assign_published_ports(&state, None, &mut spec).unwrap();
        let published: Vec<u16> = spec.ports.iter().map(|port| port.published).collect();
        assert_eq!(published, vec![30002, 30001, 30003]);
        // Given numbers are kept, and an update re-picks nothing.
        let before = spec.clone();
        assign_published_ports(&state, None, &mut spec).unwrap();
        assert_eq!(spec, before);
    }

    #[test]
    fn unsupported_mounts_are_refused_when_new_and_kept_when_unchanged() {
        let (state, service) = stored_with_volume();
        let err = check_spec(
            &state,
            None,
            None,
            &ServiceSpec {
                name: "new".into(),
                ..service.spec.clone()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");

        // Scaling (or any change but the mounts) of the stored service goes through.
        let mut scaled = service.spec.clone();
        scaled.mode = ServiceMode::Replicated { replicas: 3 };
        check_spec(&state, Some(service.id), Some(&service.spec), &scaled).unwrap();

        // Changing the mounts brings the check back: another volume is refused...
        let mut changed = service.spec.clone();
        changed.mounts[0].target = "/other".into();
        let err = check_spec(&state, Some(service.id), Some(&service.spec), &changed).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
        // ...and replacing it with a bind mount is how the operator fixes the service.
        changed.mounts[0] = Mount {
            kind: MountKind::Bind,
            source: "/srv/data".into(),
            target: "/data".into(),
            readonly: false,
        };
        check_spec(&state, Some(service.id), Some(&service.spec), &changed).unwrap();
    }
}
