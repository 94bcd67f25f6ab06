//! `Change`: the payload of every Raft log entry, and its application to the state.

use std::collections::BTreeMap;

use hoist_types::node::Resources;
use hoist_types::service::{Service, ServiceSpec};
use hoist_types::task::{DesiredState, Task, TaskState, TaskStatus};
use hoist_types::{Availability, EngineInfo, Node, NodeId, NodeStatus, Role, ServiceId, TaskId};
use serde::{Deserialize, Serialize};

use crate::cluster::{
    CaMaterial, CaRotation, ClusterSettings, ClusterState, JoinTokens, RetiredSecret,
    RETIRED_SECRETS_KEPT,
};
use crate::records::ChangeRecord;

/// One replicated change. Stored and sent as a [`ChangeRecord`], the persisted form:
/// add variants (to both), never reorder or repurpose them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ChangeRecord", try_from = "ChangeRecord")]
pub enum Change {
    /// `hoist init`: the cluster's identity, CA, tokens and first manager.
    InitCluster {
        cluster_id: String,
        ca: CaMaterial,
        tokens: JoinTokens,
        settings: ClusterSettings,
        first_manager: Node,
        at_ms: u64,
    },
    /// A node joined with a valid token and received its certificate.
    AddNode { node: Node },
    /// `node update`: availability and labels. `None` leaves a field as it is.
    UpdateNode {
        node_id: NodeId,
        availability: Option<Availability>,
        label_add: BTreeMap<String, String>,
        label_rm: Vec<String>,
        at_ms: u64,
    },
    /// `node promote|demote`.
    SetNodeRole {
        node_id: NodeId,
        role: Role,
        at_ms: u64,
    },
    /// The dispatcher saw a node's heartbeats start or stop.
    SetNodeStatus {
        node_id: NodeId,
        status: NodeStatus,
        message: String,
        at_ms: u64,
    },
    /// What a node reports of itself on its first heartbeat to a leader.
    SetNodeDescription {
        node_id: NodeId,
        addr: String,
        engine: EngineInfo,
        /// CPUs and memory the node has (zero: not reported, as by an older node).
        resources: Resources,
        /// Published ports its mesh could not open.
        port_faults: Vec<hoist_types::node::PortFault>,
        at_ms: u64,
    },
    /// `node rm` or `leave`: the node and its certificate are gone for good.
    RemoveNode { node_id: NodeId, at_ms: u64 },
    /// `join-token --rotate`.
    RotateToken { role: Role, new_secret: String },
    /// `service create`: validated by the proposer and again here.
    CreateService { service: Service },
    /// `service update` / `scale`: a new spec; the version goes up by one.
    UpdateService {
        service_id: ServiceId,
        spec: ServiceSpec,
        at_ms: u64,
    },
    /// `service rm`: the orchestrator then stops and deletes its tasks.
    RemoveService { service_id: ServiceId },
    /// What the orchestrator and the scheduler decided in one pass, applied in order.
    /// Edits that no longer fit the state are skipped, not refused: the state may have
    /// moved between the leader's read and this apply.
    EditTasks { edits: Vec<TaskEdit>, at_ms: u64 },
    /// Observed states reported by the workers that run the tasks.
    ReportTaskStatus {
        node_id: NodeId,
        reports: Vec<TaskReport>,
    },
    /// A surviving manager forced a new one-manager Raft group (or a backup was
    /// restored): the other old managers are gone for good, and their certificates are
    /// refused, so they cannot come back with the old membership.
    ForceNewCluster {
        survivor: NodeId,
        dropped: Vec<NodeId>,
        at_ms: u64,
    },
    /// A no-op used to confirm that the log accepts writes (and by benchmarks).
    Noop,
    /// `hoist cluster update`: the whole new settings, checked against the current ones.
    UpdateSettings { settings: ClusterSettings },
    /// `cluster ca --rotate`: signs with a new CA from now on, trusting the old one too
    /// until every node holds a certificate of the new one.
    RotateCa {
        cert_pem: String,
        key_pem: String,
        digest: String,
        /// The new CA's certificate signed by the current CA.
        cross_signed_pem: String,
        at_ms: u64,
    },
    /// A node was seen presenting a certificate of the CA whose digest is `digest`.
    /// When every node has, the rotation ends and the old CA is trusted no more.
    NoteCaRenewal { node_id: NodeId, digest: String },
}

/// One edit of the task table (from the orchestrator or the scheduler). Stored as a
/// [`TaskEditRecord`](crate::records::TaskEditRecord) inside a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEdit {
    /// Insert a new task (skipped if the id exists or its service is gone).
    Create { task: Box<Task> },
    /// Move the desired state forward (never back).
    SetDesired {
        task_id: TaskId,
        desired: DesiredState,
    },
    /// Remove a task record (history pruning, removed services).
    Delete { task_id: TaskId },
    /// The scheduler placed a pending task.
    Assign { task_id: TaskId, node_id: NodeId },
    /// The scheduler could not place it, and says why.
    SetPendingReason { task_id: TaskId, reason: String },
}

/// A worker's report of one task's observed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    pub task_id: TaskId,
    pub status: TaskStatus,
}

/// What an applied change produced, returned to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ChangeOutcome {
    /// The state version after this change.
    pub version: u64,
}

/// Why a change was refused. The state is untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ChangeError {
    #[error("the cluster is already initialized")]
    AlreadyInitialized,
    #[error("the cluster is not initialized")]
    NotInitialized,
    #[error("node {0} not found")]
    NodeNotFound(NodeId),
    #[error("node {0} already exists")]
    NodeExists(NodeId),
    #[error("node {0} was removed from the cluster and cannot come back with the same identity")]
    NodeRemoved(NodeId),
    #[error("{0}")]
    Invalid(String),
    #[error("service {0} not found")]
    ServiceNotFound(ServiceId),
    #[error("a service named {0:?} already exists")]
    ServiceNameTaken(String),
}

/// `node update`: availability and labels (`None` keeps the availability).
fn update_node(
    node: &mut Node,
    availability: Option<Availability>,
    label_add: &BTreeMap<String, String>,
    label_rm: &[String],
    at_ms: u64,
) {
    if let Some(availability) = availability {
        node.availability = availability;
    }
    for key in label_rm {
        node.labels.remove(key);
    }
    for (key, value) in label_add {
        node.labels.insert(key.clone(), value.clone());
    }
    node.updated_at_ms = at_ms;
}

/// The new CA signs from now on; the old one stays trusted until every node renewed.
fn start_ca_rotation(
    ca: &mut CaMaterial,
    cert_pem: &str,
    key_pem: &str,
    digest: &str,
    cross_signed_pem: &str,
    at_ms: u64,
) {
    ca.rotation = Some(CaRotation {
        previous_cert_pem: std::mem::replace(&mut ca.cert_pem, cert_pem.to_owned()),
        previous_digest: std::mem::replace(&mut ca.digest, digest.to_owned()),
        cross_signed_pem: cross_signed_pem.to_owned(),
        started_at_ms: at_ms,
        renewed: Default::default(),
    });
    ca.key_pem = key_pem.to_owned();
}

impl ClusterState {
    /// Applies one change. On error nothing was modified.
    pub fn apply(&mut self, change: &Change) -> Result<ChangeOutcome, ChangeError> {
        self.check(change)?;
        self.apply_checked(change);
        self.version += 1;
        Ok(ChangeOutcome {
            version: self.version,
        })
    }

    /// Every reason to refuse, before anything is touched.
    fn check(&self, change: &Change) -> Result<(), ChangeError> {
        let initialized = self.is_initialized();
        match change {
            Change::InitCluster { .. } if initialized => Err(ChangeError::AlreadyInitialized),
            Change::InitCluster { .. } | Change::Noop => Ok(()),
            _ if !initialized => Err(ChangeError::NotInitialized),
            Change::AddNode { node } => {
                if self.removed_nodes.contains(&node.id) {
                    Err(ChangeError::NodeRemoved(node.id))
                } else if self.nodes.contains_key(&node.id) {
                    Err(ChangeError::NodeExists(node.id))
                } else {
                    Ok(())
                }
            }
            Change::UpdateNode {
                node_id, label_add, ..
            } => {
                self.existing(*node_id)?;
                for (key, value) in label_add {
                    hoist_types::node::validate_label_key(key)
                        .and_then(|()| hoist_types::node::validate_label_value(key, value))
                        .map_err(|err| ChangeError::Invalid(err.to_string()))?;
                }
                Ok(())
            }
            Change::SetNodeRole { node_id, .. }
            | Change::SetNodeStatus { node_id, .. }
            | Change::SetNodeDescription { node_id, .. }
            | Change::RemoveNode { node_id, .. } => self.existing(*node_id),
            Change::CreateService { service } => {
                if self.services.contains_key(&service.id) {
                    return Err(ChangeError::Invalid(format!(
                        "service id {} already exists",
                        service.id
                    )));
                }
                self.check_service_spec(None, &service.spec)
            }
            Change::UpdateService {
                service_id, spec, ..
            } => {
                if !self.services.contains_key(service_id) {
                    return Err(ChangeError::ServiceNotFound(*service_id));
                }
                self.check_service_spec(Some(*service_id), spec)
            }
            Change::RemoveService { service_id } => {
                if self.services.contains_key(service_id) {
                    Ok(())
                } else {
                    Err(ChangeError::ServiceNotFound(*service_id))
                }
            }
            Change::EditTasks { .. } => Ok(()),
            Change::ForceNewCluster { survivor, .. } => self.existing(*survivor),
            Change::ReportTaskStatus { .. } => Ok(()),
            Change::RotateCa { digest, .. } => match &self.ca {
                None => Err(ChangeError::Invalid("the cluster has no CA".into())),
                Some(ca) if ca.rotation.is_some() => Err(ChangeError::Invalid(
                    "a CA rotation is already under way: wait until every node holds a certificate of the new CA".into(),
                )),
                Some(ca) if ca.digest == *digest || ca.retired.contains(digest) => Err(
                    ChangeError::Invalid("the new CA is one this cluster already had".into()),
                ),
                Some(_) => Ok(()),
            },
            Change::NoteCaRenewal { .. } => Ok(()),
            Change::RotateToken { new_secret, .. } => {
                if new_secret.len() < 16 {
                    Err(ChangeError::Invalid("token secret too short".into()))
                } else {
                    Ok(())
                }
            }
            Change::UpdateSettings { settings } => self.check_settings(settings),
        }
    }

    fn check_service_spec(
        &self,
        own: Option<ServiceId>,
        spec: &ServiceSpec,
    ) -> Result<(), ChangeError> {
        spec.validate()
            .map_err(|err| ChangeError::Invalid(err.to_string()))?;
        if let Some(other) = self
            .services
            .values()
            .find(|service| Some(service.id) != own && service.spec.name == spec.name)
        {
            return Err(ChangeError::ServiceNameTaken(other.spec.name.clone()));
        }
        spec.check_port_conflicts(own, self.services.values())
            .map_err(|err| ChangeError::Invalid(err.to_string()))
    }

    /// New settings must be in range, and the replica maximum may not fall below a
    /// service that already asks for more (scale it down first).
    pub fn check_settings(&self, settings: &ClusterSettings) -> Result<(), ChangeError> {
        settings
            .check_update(&self.settings)
            .map_err(ChangeError::Invalid)?;
        if settings.max_replicas < self.settings.max_replicas {
            let over = self.services.values().find_map(|service| {
                service
                    .spec
                    .replicas()
                    .filter(|replicas| *replicas > settings.max_replicas)
                    .map(|replicas| (service.spec.name.clone(), replicas))
            });
            if let Some((name, replicas)) = over {
                return Err(ChangeError::Invalid(format!(
                    "--max-replicas {}: service {name} asks for more ({replicas}); scale it down first",
                    settings.max_replicas
                )));
            }
        }
        Ok(())
    }

    fn existing(&self, node_id: NodeId) -> Result<(), ChangeError> {
        if self.nodes.contains_key(&node_id) {
            Ok(())
        } else {
            Err(ChangeError::NodeNotFound(node_id))
        }
    }

    fn apply_checked(&mut self, change: &Change) {
        match change {
            Change::InitCluster {
                cluster_id,
                ca,
                tokens,
                settings,
                first_manager,
                at_ms,
            } => {
                self.cluster_id = cluster_id.clone();
                self.created_at_ms = *at_ms;
                self.ca = Some(ca.clone());
                self.tokens = tokens.clone();
                self.settings = *settings;
                self.nodes.insert(first_manager.id, first_manager.clone());
            }
            Change::AddNode { node } => {
                self.nodes.insert(node.id, node.clone());
            }
            Change::UpdateNode {
                node_id,
                availability,
                label_add,
                label_rm,
                at_ms,
            } => {
                let Some(node) = self.nodes.get_mut(node_id) else {
                    return;
                };
                update_node(node, *availability, label_add, label_rm, *at_ms);
            }
            Change::SetNodeRole {
                node_id,
                role,
                at_ms,
            } => self.edit_node(node_id, *at_ms, |node| node.role = *role),
            Change::SetNodeStatus {
                node_id,
                status,
                message,
                at_ms,
            } => self.edit_node(node_id, *at_ms, |node| {
                node.status = *status;
                node.status_message = message.clone();
            }),
            Change::SetNodeDescription {
                node_id,
                addr,
                engine,
                resources,
                port_faults,
                at_ms,
            } => self.edit_node(node_id, *at_ms, |node| {
                node.addr = addr.clone();
                node.engine = engine.clone();
                node.resources = *resources;
                node.port_faults = port_faults.clone();
            }),
            Change::RemoveNode { node_id, .. } => self.remove_node(*node_id),
            Change::RotateToken { role, new_secret } => self.rotate_token(*role, new_secret),
            Change::CreateService { service } => {
                self.services.insert(service.id, service.clone());
            }
            Change::UpdateService {
                service_id,
                spec,
                at_ms,
            } => self.update_service(service_id, spec, *at_ms),
            Change::RemoveService { service_id } => {
                self.services.remove(service_id);
            }
            Change::EditTasks { edits, at_ms } => {
                for edit in edits {
                    self.apply_task_edit(edit, *at_ms);
                }
            }
            Change::ReportTaskStatus { node_id, reports } => {
                for report in reports {
                    self.apply_task_report(*node_id, report);
                }
            }
            Change::ForceNewCluster {
                survivor,
                dropped,
                at_ms,
            } => self.force_new_cluster(*survivor, dropped, *at_ms),
            Change::Noop => {}
            Change::UpdateSettings { settings } => self.settings = *settings,
            Change::RotateCa {
                cert_pem,
                key_pem,
                digest,
                cross_signed_pem,
                at_ms,
            } => {
                if let Some(ca) = &mut self.ca {
                    start_ca_rotation(ca, cert_pem, key_pem, digest, cross_signed_pem, *at_ms);
                }
            }
            Change::NoteCaRenewal { node_id, digest } => self.note_ca_renewal(*node_id, digest),
        }
    }

    /// Changes a node that exists (a change about a removed node is a no-op) and stamps
    /// the time.
    fn edit_node(&mut self, node_id: &NodeId, at_ms: u64, edit: impl FnOnce(&mut Node)) {
        if let Some(node) = self.nodes.get_mut(node_id) {
            edit(node);
            node.updated_at_ms = at_ms;
        }
    }

    /// `node rm` or `leave`: gone for good, its certificate refused from now on.
    fn remove_node(&mut self, node_id: NodeId) {
        self.nodes.remove(&node_id);
        self.removed_nodes.insert(node_id);
        // The rotation may have been waiting for this node only.
        self.finish_ca_rotation_if_done();
    }

    /// `service update`: the new spec, one version up.
    fn update_service(&mut self, service_id: &ServiceId, spec: &ServiceSpec, at_ms: u64) {
        if let Some(service) = self.services.get_mut(service_id) {
            service.spec = spec.clone();
            service.version += 1;
            service.updated_at_ms = at_ms;
        }
    }

    /// A node presented a certificate of the CA being rotated to.
    fn note_ca_renewal(&mut self, node_id: NodeId, digest: &str) {
        if let Some(ca) = &mut self.ca {
            if let Some(rotation) = &mut ca.rotation {
                if ca.digest == digest && self.nodes.contains_key(&node_id) {
                    rotation.renewed.insert(node_id);
                }
            }
        }
        self.finish_ca_rotation_if_done();
    }

    /// `join-token --rotate`: the old secret is kept, refused, so a join with it can
    /// say that its token was rotated.
    fn rotate_token(&mut self, role: Role, new_secret: &str) {
        let slot = match role {
            Role::Worker => &mut self.tokens.worker_secret,
            Role::Manager => &mut self.tokens.manager_secret,
        };
        let old = std::mem::replace(slot, new_secret.to_owned());
        self.tokens
            .retired
            .push(RetiredSecret { role, secret: old });
        let excess = self
            .tokens
            .retired
            .len()
            .saturating_sub(RETIRED_SECRETS_KEPT);
        self.tokens.retired.drain(..excess);
    }

    /// The survivor of a forced recovery is the only manager left; the dropped ones are
    /// gone for good.
    fn force_new_cluster(&mut self, survivor: NodeId, dropped: &[NodeId], at_ms: u64) {
        for node_id in dropped {
            if *node_id != survivor {
                self.nodes.remove(node_id);
                self.removed_nodes.insert(*node_id);
            }
        }
        if let Some(node) = self.nodes.get_mut(&survivor) {
            node.role = Role::Manager;
            node.status = NodeStatus::Ready;
            node.updated_at_ms = at_ms;
        }
        self.finish_ca_rotation_if_done();
    }

    /// Ends a rotation once every node presents a certificate of the new CA: from then
    /// on the old CA is trusted nowhere.
    fn finish_ca_rotation_if_done(&mut self) {
        let Some(ca) = &mut self.ca else { return };
        let Some(rotation) = &ca.rotation else { return };
        if self
            .nodes
            .keys()
            .all(|node_id| rotation.renewed.contains(node_id))
        {
            let previous = rotation.previous_digest.clone();
            ca.retired.push(previous);
            ca.rotation = None;
        }
    }

    fn apply_task_edit(&mut self, edit: &TaskEdit, at_ms: u64) {
        match edit {
            TaskEdit::Create { task } => {
                if !self.tasks.contains_key(&task.id)
                    && self.services.contains_key(&task.service_id)
                {
                    self.tasks.insert(task.id, task.as_ref().clone());
                }
            }
            TaskEdit::SetDesired { task_id, desired } => {
                if let Some(task) = self.tasks.get_mut(task_id) {
                    if task.desired_state < *desired {
                        task.desired_state = *desired;
                        task.updated_at_ms = at_ms;
                    }
                }
            }
            TaskEdit::Delete { task_id } => {
                self.tasks.remove(task_id);
            }
            TaskEdit::Assign { task_id, node_id } => {
                let node_usable = self.nodes.contains_key(node_id);
                if let Some(task) = self.tasks.get_mut(task_id) {
                    if node_usable
                        && task.status.state.is_unassigned()
                        && task.desired_state == DesiredState::Running
                    {
                        task.node_id = Some(*node_id);
                        task.status = TaskStatus::new(TaskState::Assigned, "assigned", at_ms);
                        task.pending_reason = None;
                        task.updated_at_ms = at_ms;
                    }
                }
            }
            TaskEdit::SetPendingReason { task_id, reason } => {
                if let Some(task) = self.tasks.get_mut(task_id) {
                    if task.status.state.is_unassigned()
                        && task.pending_reason.as_deref() != Some(reason)
                    {
                        task.pending_reason = Some(reason.clone());
                        task.updated_at_ms = at_ms;
                    }
                }
            }
        }
    }

    /// Only the node a task is assigned to may report it, and observed states only move
    /// forward (the same state again may carry new detail, such as endpoints).
    fn apply_task_report(&mut self, node_id: NodeId, report: &TaskReport) {
        let Some(task) = self.tasks.get_mut(&report.task_id) else {
            return;
        };
        if task.node_id != Some(node_id) {
            return;
        }
        let current = task.status.state;
        let next = report.status.state;
        if next == current || current.can_move_to(next) {
            task.updated_at_ms = report.status.timestamp_ms;
            task.status = report.status.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, role: Role) -> Node {
        Node::new(
            NodeId(id),
            format!("n{id}"),
            format!("127.0.0.{id}:2377"),
            role,
            1,
        )
    }

    fn initialized() -> ClusterState {
        let mut state = ClusterState::default();
        state
            .apply(&Change::InitCluster {
                cluster_id: "c1".into(),
                ca: CaMaterial {
                    cert_pem: "cert".into(),
                    key_pem: "key".into(),
                    digest: "d".into(),
                    ..Default::default()
                },
                tokens: JoinTokens {
                    worker_secret: "w".repeat(32),
                    manager_secret: "m".repeat(32),
                    retired: vec![],
                },
                settings: ClusterSettings::default(),
                first_manager: node(1, Role::Manager),
                at_ms: 1,
            })
            .unwrap();
        state
    }

    #[test]
    fn a_ca_rotation_trusts_both_cas_until_every_node_renewed_then_only_the_new_one() {
        let mut state = initialized();
        state
            .apply(&Change::AddNode {
                node: node(2, Role::Worker),
            })
            .unwrap();
        let rotate = |digest: &str| Change::RotateCa {
            cert_pem: format!("cert-{digest}"),
            key_pem: "key2".into(),
            digest: digest.into(),
            cross_signed_pem: "cross".into(),
            at_ms: 5,
        };
        assert!(state.apply(&rotate("d")).is_err(), "the current CA again");
        state.apply(&rotate("d2")).unwrap();
        let before = state.clone();
        assert!(
            state.apply(&rotate("d3")).is_err(),
            "one rotation at a time"
        );
        assert_eq!(state, before, "a refused change changes nothing");
        let ca = state.ca.clone().unwrap();
        assert_eq!(ca.trust_pem(), "cert-d2cert");
        assert_eq!(ca.key_pem, "key2");
        let renewal = |node_id: u64, digest: &str| Change::NoteCaRenewal {
            node_id: NodeId(node_id),
            digest: digest.into(),
        };
        state.apply(&renewal(1, "d2")).unwrap();
        // A certificate of the old CA, or a node that is not in the cluster, counts for
        // nothing.
        state.apply(&renewal(2, "d")).unwrap();
        state.apply(&renewal(9, "d2")).unwrap();
        assert!(state.ca.as_ref().unwrap().rotation.is_some());
        state.apply(&renewal(2, "d2")).unwrap();
        let ca = state.ca.clone().unwrap();
        assert!(ca.rotation.is_none());
        assert_eq!(ca.trust_pem(), "cert-d2");
        assert_eq!(ca.retired, vec!["d".to_string()]);
        assert!(state.apply(&rotate("d")).is_err(), "a retired CA");
        // Removing the last node that had not renewed also ends a rotation.
        state.apply(&rotate("d4")).unwrap();
        state.apply(&renewal(1, "d4")).unwrap();
        state
            .apply(&Change::RemoveNode {
                node_id: NodeId(2),
                at_ms: 6,
            })
            .unwrap();
        assert!(state.ca.as_ref().unwrap().rotation.is_none());
    }

    #[test]
    fn changes_before_init_are_refused() {
        let mut state = ClusterState::default();
        let err = state.apply(&Change::AddNode {
            node: node(2, Role::Worker),
        });
        assert_eq!(err, Err(ChangeError::NotInitialized));
        assert_eq!(state, ClusterState::default());
    }

    #[test]
    fn a_removed_node_cannot_be_added_again() {
        let mut state = initialized();
        state
            .apply(&Change::AddNode {
                node: node(2, Role::Worker),
            })
            .unwrap();
        state
            .apply(&Change::RemoveNode {
                node_id: NodeId(2),
                at_ms: 2,
            })
            .unwrap();
        assert!(!state.node_is_member(NodeId(2)));
        let before = state.clone();
        assert_eq!(
            state.apply(&Change::AddNode {
                node: node(2, Role::Worker)
            }),
            Err(ChangeError::NodeRemoved(NodeId(2)))
        );
        assert_eq!(state, before);
    }

    #[test]
    fn an_invalid_label_leaves_the_node_untouched() {
        let mut state = initialized();
        let before = state.clone();
        let result = state.apply(&Change::UpdateNode {
            node_id: NodeId(1),
            availability: Some(Availability::Drain),
            label_add: [("bad key".to_string(), "v".to_string())].into(),
            label_rm: vec![],
            at_ms: 5,
        });
        assert!(matches!(result, Err(ChangeError::Invalid(_))));
        assert_eq!(state, before);
    }

    #[test]
    fn settings_change_within_range_and_never_below_a_service() {
        let mut state = initialized();
        let mut settings = state.settings;
        settings.max_replicas = 50;
        settings.task_history_limit = 2;
        state.apply(&Change::UpdateSettings { settings }).unwrap();
        assert_eq!(state.settings.max_replicas, 50);
        let mut spec = ServiceSpec {
            name: "web".into(),
            command: vec!["sleep".into(), "1".into()],
            ..ServiceSpec::default()
        };
        spec.mode = hoist_types::service::ServiceMode::Replicated { replicas: 40 };
        state
            .apply(&Change::CreateService {
                service: Service {
                    id: ServiceId::random(),
                    spec,
                    version: 1,
                    created_at_ms: 1,
                    updated_at_ms: 1,
                },
            })
            .unwrap();
        let before = state.clone();
        for bad in [
            ClusterSettings {
                max_replicas: 30,
                ..state.settings
            },
            ClusterSettings {
                max_replicas: 0,
                ..state.settings
            },
            ClusterSettings {
                task_history_limit: 1000,
                ..state.settings
            },
            ClusterSettings {
                cert_expiry_secs: 60,
                ..state.settings
            },
            ClusterSettings {
                heartbeat_grace: 9,
                ..state.settings
            },
        ] {
            let result = state.apply(&Change::UpdateSettings { settings: bad });
            assert!(matches!(result, Err(ChangeError::Invalid(_))), "{bad:?}");
            assert_eq!(state, before);
        }
    }

    #[test]
    fn settings_written_before_the_limits_existed_load_with_defaults() {
        let old = r#"{"heartbeat_period_ms":500,"heartbeat_grace":3,"cert_expiry_secs":7776000}"#;
        let settings: ClusterSettings = serde_json::from_str(old).unwrap();
        assert_eq!(settings.heartbeat_period_ms, 500);
        assert_eq!(settings.max_replicas, crate::DEFAULT_MAX_REPLICAS);
        assert_eq!(
            settings.task_history_limit,
            crate::DEFAULT_TASK_HISTORY_LIMIT
        );
        assert_eq!(settings.join_rate_limit, crate::DEFAULT_JOIN_RATE_LIMIT);
    }

    #[test]
    fn the_a85ac81_fixture_loads_with_default_limits() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../hoist/tests/fixtures/a85ac81/n1/raft/snapshots");
        let text = std::fs::read_to_string(dir.join("snapshot-00000000000000000039.json"))
            .expect("the fixture's snapshot");
        let state: ClusterState = serde_json::from_str(&text).expect("an old snapshot loads");
        assert_eq!(state.settings.heartbeat_period_ms, 500);
        assert_eq!(state.settings.max_replicas, crate::DEFAULT_MAX_REPLICAS);
        assert_eq!(
            state.settings.task_history_limit,
            crate::DEFAULT_TASK_HISTORY_LIMIT
        );
        assert_eq!(state.services.len(), 3);
    }

    #[test]
    fn find_node_by_id_prefix_and_hostname() {
        let mut state = initialized();
        state
            .apply(&Change::AddNode {
                node: node(2, Role::Worker),
            })
            .unwrap();
        assert_eq!(state.find_node("n2").unwrap().id, NodeId(2));
        assert_eq!(state.find_node("0000000000000001").unwrap().id, NodeId(1));
        assert!(state.find_node("000000").is_err(), "ambiguous prefix");
        assert!(state.find_node("nope").is_err());
    }
}
