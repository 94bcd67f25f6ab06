//! Creating a cluster, and admitting nodes into it: join tokens are checked, the node's
//! certificate request is signed with the role its token grants, and the node is
//! recorded. Also certificate renewal and a manager's request to become a voter.

use std::net::IpAddr;
use std::time::Duration;

use hoist_api::{InitResponse, JoinRequest, JoinResponse, RenewResponse};
use hoist_pki::{ClusterCa, JoinToken, NodeCsr, NodeIdentity, PeerIdentity};
use hoist_state::{CaMaterial, Change, ClusterSettings, ClusterState, JoinTokens};
use hoist_types::{Availability, Node, NodeId, NodeStatus, Role};

use crate::{now_ms, Conflict, Denial, Input, Manager, ManagerError, Object, Result, Unavailable};

/// What `hoist init` asks for.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    pub hostname: String,
    pub advertise_addr: String,
    pub settings: ClusterSettings,
}

/// What a renewal needs from the state.
struct Renewal {
    role: Role,
    /// Whether the caller's certificate comes from the CA that signs now.
    same_ca: bool,
    ca: ClusterCa,
    cluster_id: String,
    cert_expiry: Duration,
}

/// A new cluster's first node, before Raft has it: its identity and the first change.
pub struct Bootstrap {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub identity: NodeIdentity,
    pub change: Change,
    pub response: InitResponse,
}

/// Creates the CA, the tokens and the first manager's certificate. Nothing is stored:
/// the daemon starts Raft with this identity and proposes `change`.
pub fn bootstrap_cluster(config: &BootstrapConfig) -> Result<Bootstrap> {
    let internal = |err: hoist_pki::PkiError| ManagerError::internal(err.to_string());
    let node_id = NodeId::random();
    let cluster_id = NodeId::random().to_string();
    let ca = ClusterCa::generate(&cluster_id).map_err(internal)?;
    let digest = ca.digest().map_err(internal)?;
    let csr = NodeCsr::generate().map_err(internal)?;
    let chain_pem = ca
        .sign_csr(
            &csr.csr_pem,
            node_id,
            Role::Manager,
            &cluster_id,
            Duration::from_secs(config.settings.cert_expiry_secs),
        )
        .map_err(internal)?;
    let tokens = JoinTokens {
        worker_secret: JoinToken::new_secret(),
        manager_secret: JoinToken::new_secret(),
        retired: Vec::new(),
    };
    let at_ms = now_ms();
    let first_manager = Node {
        id: node_id,
        hostname: config.hostname.clone(),
        addr: config.advertise_addr.clone(),
        role: Role::Manager,
        availability: Availability::Active,
        status: NodeStatus::Ready,
        status_message: String::new(),
        labels: Default::default(),
        engine: Default::default(),
        resources: Default::default(),
        port_faults: Vec::new(),
        created_at_ms: at_ms,
        updated_at_ms: at_ms,
    };
    let response = InitResponse {
        node_id,
        cluster_id: cluster_id.clone(),
        worker_token: JoinToken::format(&digest, &tokens.worker_secret),
        manager_token: JoinToken::format(&digest, &tokens.manager_secret),
        advertise_addr: config.advertise_addr.clone(),
    };
    let identity = NodeIdentity {
        key_pem: csr.key_pem,
        chain_pem,
        ca_pem: ca.cert_pem().to_string(),
    };
    let change = Change::InitCluster {
        cluster_id: cluster_id.clone(),
        ca: CaMaterial {
            cert_pem: ca.cert_pem().to_string(),
            key_pem: ca.key_pem().to_string(),
            digest,
            ..Default::default()
        },
        tokens,
        settings: config.settings,
        first_manager,
        at_ms,
    };
    Ok(Bootstrap {
        node_id,
        cluster_id,
        identity,
        change,
        response,
    })
}

/// Compares secrets in time independent of where they differ (subtle's constant-time
/// equality; only the length, which every secret shares, shows).
fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Which role a presented secret grants, or why it grants none.
pub(crate) fn role_for_secret(state: &ClusterState, secret: &str) -> Result<Role> {
    if same_secret(secret, &state.tokens.manager_secret) {
        return Ok(Role::Manager);
    }
    if same_secret(secret, &state.tokens.worker_secret) {
        return Ok(Role::Worker);
    }
    if let Some(retired) = state
        .tokens
        .retired
        .iter()
        .find(|retired| same_secret(secret, &retired.secret))
    {
        return Err(ManagerError::forbidden(Denial::RetiredToken, format!(
            "this {} join token was rotated and is no longer valid: get the current one with `hoist join-token {}` on a manager",
            retired.role, retired.role
        )));
    }
    Err(ManagerError::forbidden(Denial::InvalidToken,
        "invalid join token: its secret matches neither the worker nor the manager token of this cluster",
    ))
}

/// What admitting one node needs from the current state.
struct Admission {
    role: Role,
    ca: ClusterCa,
    cluster_id: String,
    cert_expiry: Duration,
    managers: Vec<String>,
    manager_ids: Vec<NodeId>,
    /// The CAs to trust (two during a rotation, when other nodes may still present
    /// certificates of the previous CA).
    trust_pem: String,
}

/// Refuses a secret of another role than the one the joining node asked for.
fn check_expected_role(role: Role, expected: Option<Role>) -> Result<()> {
    match expected {
        Some(expected) if expected != role => Err(ManagerError::forbidden(Denial::TokenRole, format!(
            "this is a {role} join token, but the node asked to join as a {expected}: get the {expected} token with `hoist join-token {expected}`"
        ))),
        _ => Ok(()),
    }
}

/// The CA that signs now; during a rotation its chains carry the cross-signed
/// certificate.
pub(crate) fn ca_of(state: &ClusterState) -> Result<ClusterCa> {
    let material = state
        .ca
        .as_ref()
        .ok_or_else(|| ManagerError::internal("the cluster has no CA"))?;
    let ca = ClusterCa::from_pem(&material.cert_pem, &material.key_pem)
        .map_err(|err| ManagerError::internal(format!("loading the cluster CA: {err}")))?;
    Ok(ca.with_cross_signed(
        material
            .rotation
            .as_ref()
            .map(|rotation| rotation.cross_signed_pem.clone()),
    ))
}

impl Manager {
    /// Admits a node presenting a join secret, signing its certificate request.
    ///
    /// The secret is compared with the locally applied state first: a wrong one is
    /// refused without a quorum round trip, and nothing but the tokens is looked at.
    /// Only then does a linearizable read confirm it against the current state (a token
    /// rotated since this manager applied the rotation is refused there), reading just
    /// what admission needs rather than a copy of the whole state.
    ///
    /// `source` is the IP address the request came from (`None` on the local socket):
    /// the node's address must be on it, since the joining node dials from its own
    /// advertise address, and every node later trusts that address for the node.
    pub async fn join(&self, request: JoinRequest, source: Option<IpAddr>) -> Result<JoinResponse> {
        hoist_types::node::validate_hostname(&request.hostname).map_err(|err| {
            ManagerError::invalid(Input::JoinRequest, format!("the joining node's {err}"))
        })?;
        let addr = hoist_types::node::parse_node_addr(&request.addr).map_err(|err| {
            ManagerError::invalid(Input::JoinRequest, format!("the joining node's {err}"))
        })?;
        if let Some(source) = source {
            if source.to_canonical() != addr.ip().to_canonical() {
                tracing::warn!(%source, claimed = %request.addr, "join refused: address is not the source");
                return Err(ManagerError::forbidden(Denial::SourceAddress, format!(
                    "the join came from {source}, but the node gave its address as {}: a node joins from its own advertise address (check --advertise-addr)",
                    request.addr
                )));
            }
        }
        let role = self.local(|state| role_for_secret(state, &request.secret))?;
        check_expected_role(role, request.expected_role)?;
        let admission = self
            .read(|state| -> Result<Admission> {
                Ok(Admission {
                    role: role_for_secret(state, &request.secret)?,
                    ca: ca_of(state)?,
                    cluster_id: state.cluster_id.clone(),
                    cert_expiry: Duration::from_secs(state.settings.cert_expiry_secs),
                    managers: state.managers().map(|node| node.addr.clone()).collect(),
                    manager_ids: state.managers().map(|node| node.id).collect(),
                    trust_pem: state
                        .ca
                        .as_ref()
                        .map(|material| material.trust_pem())
                        .unwrap_or_default(),
                })
            })
            .await??;
        let Admission {
            role,
            ca,
            cluster_id,
            cert_expiry,
            managers,
            manager_ids,
            trust_pem,
        } = admission;
        check_expected_role(role, request.expected_role)?;
        let node_id = NodeId::random();
        let chain_pem = ca
            .sign_csr(&request.csr_pem, node_id, role, &cluster_id, cert_expiry)
            .map_err(|err| ManagerError::invalid(Input::CertificateRequest, err.to_string()))?;
        let at_ms = now_ms();
        let node = Node {
            id: node_id,
            hostname: request.hostname.clone(),
            addr: request.addr.clone(),
            role,
            availability: Availability::Active,
            status: NodeStatus::Unknown,
            status_message: "joined, no heartbeat yet".into(),
            labels: Default::default(),
            engine: Default::default(),
            resources: Default::default(),
            port_faults: Vec::new(),
            created_at_ms: at_ms,
            updated_at_ms: at_ms,
        };
        self.propose(Change::AddNode { node }).await?;
        tracing::info!(node = %node_id, hostname = %request.hostname, %role, "node joined");
        Ok(JoinResponse {
            node_id,
            role,
            cluster_id,
            chain_pem,
            ca_pem: trust_pem,
            managers,
            manager_ids,
        })
    }

    /// Takes back the record of a node whose join failed on its side after it was
    /// admitted (it could not start): only a node that has never sent a heartbeat and
    /// is no Raft member, so a running node cannot remove itself this way.
    pub async fn abandon_join(&self, peer: &PeerIdentity) -> Result<()> {
        let node = self
            .read(|state| state.nodes.get(&peer.node_id).cloned())
            .await?
            .ok_or_else(|| {
                ManagerError::not_found(Object::Node, &peer.node_id.to_string())(format!(
                    "node {} is not in the cluster",
                    peer.node_id
                ))
            })?;
        let membership = self.raft().membership();
        if node.status != NodeStatus::Unknown
            || membership.voters.contains_key(&peer.node_id.0)
            || membership.learners.contains_key(&peer.node_id.0)
        {
            return Err(ManagerError::refused(
                Conflict::AlreadyJoined,
                format!(
                    "node {} has already taken part in the cluster: remove it with `hoist node rm`",
                    node.hostname
                ),
            ));
        }
        self.propose(Change::RemoveNode {
            node_id: node.id,
            at_ms: now_ms(),
        })
        .await?;
        tracing::warn!(node = %node.id, hostname = %node.hostname, "join abandoned by the node: its record is removed");
        Ok(())
    }

    /// Issues a fresh certificate for a member, with the role the cluster now wants for
    /// it (so renewal is also how promotion and demotion reach the node). Reads only the
    /// node's role, the CA and the lifetime setting. A renewal that changes neither the
    /// role nor the CA is counted against the node's allowance (`renewals`): at most a
    /// few a minute, so a member cannot keep the leader signing.
    pub async fn renew(&self, peer: &PeerIdentity, csr_pem: &str) -> Result<RenewResponse> {
        let renewal = self
            .read(|state| -> Result<Renewal> {
                let node = state.nodes.get(&peer.node_id).ok_or_else(|| {
                    ManagerError::forbidden(
                        Denial::NotMember,
                        format!("node {} is not a member of this cluster", peer.node_id),
                    )
                })?;
                let ca_cert = state
                    .ca
                    .as_ref()
                    .map(|material| material.cert_pem.as_str())
                    .unwrap_or_default();
                Ok(Renewal {
                    role: node.role,
                    same_ca: hoist_pki::ca_subject(ca_cert).ok().as_deref()
                        == Some(peer.issuer.as_str()),
                    ca: ca_of(state)?,
                    cluster_id: state.cluster_id.clone(),
                    cert_expiry: Duration::from_secs(state.settings.cert_expiry_secs),
                })
            })
            .await??;
        let routine = renewal.role == peer.role && renewal.same_ca;
        if !self
            .inner
            .renewals
            .allow(peer.node_id, routine, renewal.cert_expiry)
        {
            tracing::warn!(node = %peer.node_id, "certificate renewals over the rate limit");
            return Err(ManagerError::TooMany {
                node: peer.node_id,
                reason: format!(
                "node {} renews its certificate too often: at most {} at once, then one every {:?}, unless its role or the CA changed; retry later",
                peer.node_id,
                crate::renewals::RENEW_BURST,
                crate::renewals::RenewLimiter::interval(renewal.cert_expiry)
            ),
            });
        }
        let role = renewal.role;
        let chain_pem = renewal
            .ca
            .sign_csr(
                csr_pem,
                peer.node_id,
                role,
                &renewal.cluster_id,
                renewal.cert_expiry,
            )
            .map_err(|err| ManagerError::invalid(Input::CertificateRequest, err.to_string()))?;
        tracing::info!(node = %peer.node_id, %role, routine, "certificate renewed");
        Ok(RenewResponse { chain_pem, role })
    }

    /// Makes a manager that holds a manager certificate a Raft voter. Leader only; waits
    /// until the node has caught up as a learner.
    ///
    /// `unconfirmed_store` is the manager's word that its Raft store began blank and no
    /// leader has confirmed it since: from a node that is already a voter, that means it
    /// lost its store, may have voted in a term it no longer remembers, and is refused,
    /// unless this leader made it a voter during the same start of its Raft
    /// (`incarnation`): then the request is a retry whose answer was lost.
    pub async fn add_voter(
        &self,
        peer: &PeerIdentity,
        addr: &str,
        unconfirmed_store: bool,
        incarnation: u64,
    ) -> Result<()> {
        self.require_leader()?;
        let wanted = self
            .read(|state| state.nodes.get(&peer.node_id).map(|node| node.role))
            .await?;
        if wanted != Some(Role::Manager) {
            return Err(ManagerError::forbidden(
                Denial::NotManager,
                format!("node {} is not meant to be a manager", peer.node_id),
            ));
        }
        if self.dispatcher().lock().demoting.contains(&peer.node_id) {
            return Err(ManagerError::NoQuorum {
                cause: Unavailable::Demoting,
                reason: format!(
                    "node {} is being demoted: it is not added back to the raft group",
                    peer.node_id
                ),
            });
        }
        if self
            .raft()
            .membership()
            .voters
            .contains_key(&peer.node_id.0)
        {
            let retried = incarnation != 0
                && self.raft().added_voter_incarnation(peer.node_id.0) == Some(incarnation);
            if unconfirmed_store && !retried {
                tracing::error!(node = %peer.node_id, addr, "a raft voter came back with a blank store: refused");
                return Err(ManagerError::refused(Conflict::BlankVoter, format!(
                    "node {} is already a raft voter but came back with a blank raft store: it may have voted in a term it no longer remembers, so it may not vote again. Restore its data directory from a backup, or demote and remove it (`hoist node demote`, `hoist node rm --force`) and join it again",
                    peer.node_id
                )));
            }
            return Ok(());
        }
        tracing::info!(node = %peer.node_id, addr, "adding manager to the raft group");
        self.raft()
            .add_voter(peer.node_id.0, addr, incarnation)
            .await?;
        // A demotion may have committed while the node caught up (a leader that demoted
        // itself hands the role change over while its heartbeats still say it runs
        // Raft): a voter whose role is no longer manager would count towards every
        // quorum without ever voting again, so it goes straight back out.
        let still_wanted = self
            .read(|state| state.nodes.get(&peer.node_id).map(|node| node.role))
            .await?;
        if still_wanted != Some(Role::Manager) {
            tracing::warn!(node = %peer.node_id, "demoted while it was added to the raft group: removed again");
            self.raft().remove_voter(peer.node_id.0).await?;
            return Err(ManagerError::forbidden(
                Denial::NotManager,
                format!("node {} is not meant to be a manager", peer.node_id),
            ));
        }
        Ok(())
    }

    /// Replaces the secret of `role`'s token; the old token stops working at once.
    /// Only `POST` reaches this: a read must never change anything.
    pub async fn rotate_join_token(&self, role: Role) -> Result<String> {
        self.propose(Change::RotateToken {
            role,
            new_secret: JoinToken::new_secret(),
        })
        .await?;
        tracing::info!(%role, "join token rotated");
        self.join_token(role).await
    }

    /// The current token for `role`.
    pub async fn join_token(&self, role: Role) -> Result<String> {
        self.read(|state| {
            let digest = state
                .ca
                .as_ref()
                .map(|ca| ca.digest.clone())
                .unwrap_or_default();
            let secret = match role {
                Role::Worker => &state.tokens.worker_secret,
                Role::Manager => &state.tokens.manager_secret,
            };
            JoinToken::format(&digest, secret)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_select_roles_and_rotated_ones_say_so() {
        let mut state = ClusterState::default();
        state.tokens.worker_secret = "w".repeat(32);
        state.tokens.manager_secret = "m".repeat(32);
        state.tokens.retired.push(hoist_state::RetiredSecret {
            role: Role::Worker,
            secret: "o".repeat(32),
        });
        assert_eq!(
            role_for_secret(&state, &"w".repeat(32)).unwrap(),
            Role::Worker
        );
        assert_eq!(
            role_for_secret(&state, &"m".repeat(32)).unwrap(),
            Role::Manager
        );
        let rotated = role_for_secret(&state, &"o".repeat(32)).unwrap_err();
        assert!(rotated.to_string().contains("rotated"), "{rotated}");
        let wrong = role_for_secret(&state, &"x".repeat(32)).unwrap_err();
        assert!(wrong.to_string().contains("invalid join token"), "{wrong}");
    }
}
