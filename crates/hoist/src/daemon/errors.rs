//! What the daemon's own failures are, and the HTTP status each one answers with: the
//! lifecycle's (`init`, `join`, `leave`, `restore`, `backup`, `force-new-cluster`) as
//! [`LifecycleError`], and the manager's refusals (`ManagerError`). Each mapping is one
//! `match` here, so a status never drifts from its kind.
//!
//! Does not touch: response bodies (the routes wrap the message in `ErrorBody`), nor
//! the wording of a message, which the code that fails chooses (tests assert on it).

use hoist_manager::ManagerError;

/// A lifecycle step that failed, by what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// `init`, `join` or `restore` on a node that is already a member.
    #[error("this node is already part of a cluster: {hint}")]
    AlreadyInCluster { hint: &'static str },
    /// A step that needs the node to be a member, on one that is not.
    #[error("{0}")]
    NotInCluster(&'static str),
    /// A step that needs this node to run Raft, on a worker.
    #[error("{0}")]
    NotManager(&'static str),
    /// `force-new-cluster` while a quorum still answers: it would split the cluster.
    #[error("a quorum of managers is reachable (the leader is at {leader}): forcing a new cluster would split it in two. Remove managers with `hoist node demote` and `hoist node rm` instead")]
    QuorumReachable { leader: String },
    /// `leave` without `--force` on a manager.
    #[error("this node is a manager ({managers} managers in the cluster): leaving would lose a manager, and with it possibly the quorum. Demote it first with `hoist node demote {hostname}`, or use --force")]
    ManagerLeaving { managers: usize, hostname: String },
    /// The node cannot bind its listener, so it must not ask to join.
    #[error("{0}: this node cannot serve the cluster, so it did not ask to join")]
    CannotListen(String),
    /// The request (or the file it carries) cannot be acted on as given.
    #[error("{0}")]
    BadRequest(String),
    /// The manager asked to admit this node is not one this node may trust.
    #[error("{0}")]
    Untrusted(String),
    /// The manager refused the join; its status is passed on.
    #[error("the manager refused the join: {message}")]
    JoinRefused { status: u16, message: String },
    /// The manager could not be reached, or answered with something unreadable.
    #[error("{0}")]
    Unreachable(String),
    /// This node cannot serve the request now (`backup` away from a working manager).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: storage, certificates, Raft.
    #[error("{0}")]
    Internal(String),
}

impl LifecycleError {
    /// The HTTP status that says the error's kind.
    pub fn status(&self) -> u16 {
        match self {
            LifecycleError::BadRequest(_) => 400,
            LifecycleError::Untrusted(_) => 403,
            LifecycleError::AlreadyInCluster { .. }
            | LifecycleError::NotInCluster(_)
            | LifecycleError::NotManager(_)
            | LifecycleError::QuorumReachable { .. }
            | LifecycleError::ManagerLeaving { .. }
            | LifecycleError::CannotListen(_) => 409,
            LifecycleError::JoinRefused { status, .. } => *status,
            LifecycleError::Internal(_) => 500,
            LifecycleError::Unreachable(_) => 502,
            LifecycleError::Unavailable(_) => 503,
        }
    }
}

impl From<anyhow::Error> for LifecycleError {
    fn from(err: anyhow::Error) -> Self {
        LifecycleError::Internal(format!("{err:#}"))
    }
}

/// The HTTP status of a manager refusal.
pub fn manager_error_status(err: &ManagerError) -> u16 {
    match err {
        ManagerError::Invalid { .. } => 400,
        ManagerError::NotFound { .. } => 404,
        ManagerError::Refused { .. } => 409,
        ManagerError::Forbidden { .. } => 403,
        ManagerError::NoQuorum { .. } => 503,
        ManagerError::TooMany { .. } => 429,
        ManagerError::NotLeader { .. } => 421,
        ManagerError::Internal { .. } => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::LifecycleError;

    #[test]
    fn a_lifecycle_error_keeps_its_message_and_says_its_kind_by_status() {
        let already = LifecycleError::AlreadyInCluster {
            hint: "use `hoist leave` before joining another one",
        };
        assert_eq!(
            already.to_string(),
            "this node is already part of a cluster: use `hoist leave` before joining another one"
        );
        assert_eq!(already.status(), 409);
        let refused = LifecycleError::JoinRefused {
            status: 401,
            message: "bad secret".into(),
        };
        assert_eq!(
            refused.to_string(),
            "the manager refused the join: bad secret"
        );
        assert_eq!(refused.status(), 401);
        let internal = LifecycleError::from(anyhow::anyhow!("disk").context("writing"));
        assert_eq!(internal.to_string(), "writing: disk");
        assert_eq!(internal.status(), 500);
    }
}
