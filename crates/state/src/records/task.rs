//! The stored form of a task and its observed status.

use hoist_types::task::{DesiredState, Task, TaskEndpoint, TaskOrigin, TaskState, TaskStatus};
use serde::{Deserialize, Serialize};

use super::{
    mirror_enum, NodeIdRecord, RecordError, ServiceIdRecord, ServiceSpecRecord, TaskIdRecord,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: TaskIdRecord,
    pub service_id: ServiceIdRecord,
    pub slot: u64,
    pub node_id: Option<NodeIdRecord>,
    pub service_version: u64,
    pub spec: ServiceSpecRecord,
    pub desired_state: DesiredStateRecord,
    pub status: TaskStatusRecord,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub attempt: u64,
    /// Missing (tasks from before origins were kept): created.
    #[serde(default)]
    pub origin: TaskOriginRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStateRecord {
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Orphaned,
}
mirror_enum!(TaskStateRecord <=> TaskState {
    New, Pending, Assigned, Accepted, Preparing, Starting, Running, Complete, Shutdown,
    Failed, Rejected, Orphaned,
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredStateRecord {
    Running,
    Shutdown,
    Remove,
}
mirror_enum!(DesiredStateRecord <=> DesiredState { Running, Shutdown, Remove });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TaskOriginRecord {
    #[default]
    Created,
    Restart,
    Replacement,
    Rebalance,
    Update,
}
mirror_enum!(TaskOriginRecord <=> TaskOrigin { Created, Restart, Replacement, Rebalance, Update });

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEndpointRecord {
    pub target_port: u16,
    pub addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatusRecord {
    pub state: TaskStateRecord,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
    pub timestamp_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<TaskEndpointRecord>,
}

impl From<TaskEndpoint> for TaskEndpointRecord {
    fn from(endpoint: TaskEndpoint) -> Self {
        TaskEndpointRecord {
            target_port: endpoint.target_port,
            addr: endpoint.addr,
        }
    }
}

impl From<TaskEndpointRecord> for TaskEndpoint {
    fn from(record: TaskEndpointRecord) -> Self {
        TaskEndpoint {
            target_port: record.target_port,
            addr: record.addr,
        }
    }
}

impl From<TaskStatus> for TaskStatusRecord {
    fn from(status: TaskStatus) -> Self {
        TaskStatusRecord {
            state: status.state.into(),
            message: status.message,
            err: status.err,
            timestamp_ms: status.timestamp_ms,
            exit_code: status.exit_code,
            endpoints: status.endpoints.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<TaskStatusRecord> for TaskStatus {
    fn from(record: TaskStatusRecord) -> Self {
        TaskStatus {
            state: record.state.into(),
            message: record.message,
            err: record.err,
            timestamp_ms: record.timestamp_ms,
            exit_code: record.exit_code,
            endpoints: record.endpoints.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<Task> for TaskRecord {
    fn from(task: Task) -> Self {
        TaskRecord {
            id: task.id.into(),
            service_id: task.service_id.into(),
            slot: task.slot,
            node_id: task.node_id.map(Into::into),
            service_version: task.service_version,
            spec: task.spec.into(),
            desired_state: task.desired_state.into(),
            status: task.status.into(),
            created_at_ms: task.created_at_ms,
            updated_at_ms: task.updated_at_ms,
            attempt: task.attempt,
            origin: task.origin.into(),
            pending_reason: task.pending_reason,
        }
    }
}

impl TryFrom<TaskRecord> for Task {
    type Error = RecordError;

    fn try_from(record: TaskRecord) -> Result<Self, RecordError> {
        Ok(Task {
            id: record.id.into(),
            service_id: record.service_id.into(),
            slot: record.slot,
            node_id: record.node_id.map(Into::into),
            service_version: record.service_version,
            spec: record.spec.try_into()?,
            desired_state: record.desired_state.into(),
            status: record.status.into(),
            created_at_ms: record.created_at_ms,
            updated_at_ms: record.updated_at_ms,
            attempt: record.attempt,
            origin: record.origin.into(),
            pending_reason: record.pending_reason,
        })
    }
}
