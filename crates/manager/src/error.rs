//! Why a manager operation was refused: [`ManagerError`], one variant per kind of answer
//! the caller can act on (the daemon maps each onto one HTTP status), each saying what
//! it is about (which input, which object, which conflict, which denial) beside the
//! sentence the operator reads.
//!
//! The sentences are the API's error messages (tests and scripts match on them), so
//! each is written once where the refusal is decided and carried here unchanged.
//! Knows nothing of HTTP.

use hoist_types::NodeId;

/// Why a manager operation was refused. Each variant is a kind the caller can act on;
/// `Display` is the operator's sentence.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ManagerError {
    /// The request itself is wrong (a flag, a spec, a token).
    #[error("{reason}")]
    Invalid { input: Input, reason: String },
    /// The request names something the cluster does not hold, or names it ambiguously.
    #[error("{reason}")]
    NotFound {
        object: Object,
        /// The id, id prefix or name as the caller gave it.
        reference: String,
        reason: String,
    },
    /// The request is well-formed but the cluster's state forbids it now (quorum,
    /// a node still up).
    #[error("{reason}")]
    Refused { conflict: Conflict, reason: String },
    /// The caller's certificate or token does not allow this.
    #[error("{reason}")]
    Forbidden { denial: Denial, reason: String },
    /// The cluster cannot decide now; retrying later may succeed.
    #[error("{reason}")]
    NoQuorum { cause: Unavailable, reason: String },
    /// Only the leader does this; it is at `leader_addr` if known.
    #[error("this manager is not the leader")]
    NotLeader { leader_addr: Option<String> },
    /// The caller asked too often; it may retry later.
    #[error("{reason}")]
    TooMany { node: NodeId, reason: String },
    /// Something this manager should have been able to do failed (its CA, Raft).
    #[error("{reason}")]
    Internal { reason: String },
}

/// What part of a request was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A service spec (`ServiceSpec::validate` and what new specs must also pass).
    ServiceSpec,
    /// More replicas than the cluster's maximum.
    Replicas,
    /// `scale` of a global service.
    ScaleGlobal,
    /// A node label to add or remove.
    NodeLabel,
    /// The joining node's hostname or address.
    JoinRequest,
    /// A certificate signing request the CA would not sign.
    CertificateRequest,
    /// A heartbeat over its limits.
    Heartbeat,
    /// A task status report over its limits.
    StatusReport,
    /// Cluster settings out of range.
    Settings,
}

/// What kind of thing was not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Node,
    Service,
}

/// Which state of the cluster stands in the request's way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Removing or demoting the last manager.
    LastManager,
    /// Removing or demoting a manager would leave no reachable majority.
    Quorum,
    /// Removing a manager without demoting it first (and without --force).
    ManagerNotDemoted,
    /// Removing a node that is not down (without --force).
    NodeUp,
    /// Abandoning a join of a node that already took part in the cluster.
    AlreadyJoined,
    /// A voter that came back with a blank Raft store.
    BlankVoter,
    /// Another service has the name.
    ServiceName,
    /// Another service publishes the port.
    PublishedPort,
    /// An update made from a version that is no longer the current one.
    OutOfSequence,
    /// The node already follows an assignment stream here.
    AssignmentStream,
    /// A CA rotation is already under way.
    CaRotation,
    /// The state machine refused the change (`hoist_state::ChangeError`).
    Change,
}

/// Why a caller was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// A join secret of a token that was rotated.
    RetiredToken,
    /// A join secret of no token of this cluster.
    InvalidToken,
    /// A token of the other role than the one the node asked to join as.
    TokenRole,
    /// A join from another address than the node claims.
    SourceAddress,
    /// The node is not (or no longer) a member of the cluster.
    NotMember,
    /// The node is not meant to be a manager.
    NotManager,
}

/// Why the cluster cannot decide now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// A majority of managers is not reachable.
    Quorum,
    /// The node is being demoted, so it is not added back to the group meanwhile.
    Demoting,
}

impl ManagerError {
    pub(crate) fn invalid(input: Input, reason: impl Into<String>) -> Self {
        ManagerError::Invalid {
            input,
            reason: reason.into(),
        }
    }

    /// For `map_err` on the state's lookups, whose message names the reference.
    pub(crate) fn not_found(object: Object, reference: &str) -> impl FnOnce(String) -> Self {
        let reference = reference.to_string();
        move |reason| ManagerError::NotFound {
            object,
            reference,
            reason,
        }
    }

    pub(crate) fn refused(conflict: Conflict, reason: impl Into<String>) -> Self {
        ManagerError::Refused {
            conflict,
            reason: reason.into(),
        }
    }

    pub(crate) fn forbidden(denial: Denial, reason: impl Into<String>) -> Self {
        ManagerError::Forbidden {
            denial,
            reason: reason.into(),
        }
    }

    pub(crate) fn internal(reason: impl Into<String>) -> Self {
        ManagerError::Internal {
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_the_reason_alone() {
        let errors = [
            ManagerError::invalid(Input::Replicas, "too many"),
            ManagerError::not_found(Object::Node, "abc")("node abc not found".into()),
            ManagerError::refused(Conflict::Quorum, "would lose quorum"),
            ManagerError::forbidden(Denial::InvalidToken, "invalid join token"),
            ManagerError::internal("no CA"),
        ];
        let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "too many",
                "node abc not found",
                "would lose quorum",
                "invalid join token",
                "no CA"
            ]
        );
        let ManagerError::NotFound { reference, .. } = &errors[1] else {
            panic!("{:?}", errors[1]);
        };
        assert_eq!(reference, "abc");
    }
}
