//! CA rotation (Swarm's `swarm ca --rotate`): a new CA, cross-signed by the current
//! one, signs every certificate from the rotation on; nodes trust both until each has
//! renewed (the leader sees it in the certificate each heartbeat comes with), and then
//! only the new one.
//!
//! This module decides when a rotation starts and which renewals count. It does not
//! build certificates (the `pki` crate does) nor install them on nodes (the worker
//! session does, from the heartbeat answer).

use hoist_api::CaView;
use hoist_pki::{ca_subject, PeerIdentity};
use hoist_state::{Change, ClusterState};

use crate::join::ca_of;
use crate::{now_ms, Conflict, Manager, ManagerError, Result};

impl Manager {
    /// Starts a rotation: a new CA signs from now on.
    pub async fn rotate_ca(&self) -> Result<CaView> {
        let state = self.read(ClusterState::clone).await?;
        if state.ca.as_ref().is_some_and(|ca| ca.rotation.is_some()) {
            let view = ca_view(&state);
            return Err(ManagerError::refused(Conflict::CaRotation, format!(
                "a CA rotation is already under way: {} of {} nodes hold a certificate of the new CA, waiting for {}. A node that is down holds it up: bring it back, or remove it with `hoist node rm`",
                view.nodes_renewed,
                view.nodes,
                view.waiting_for.join(", ")
            )));
        }
        let current = ca_of(&state)?;
        let (next, cross_signed_pem) = current
            .successor(&state.cluster_id)
            .map_err(|err| ManagerError::internal(format!("creating the new CA: {err}")))?;
        let digest = next
            .digest()
            .map_err(|err| ManagerError::internal(err.to_string()))?;
        self.propose(Change::RotateCa {
            cert_pem: next.cert_pem().to_string(),
            key_pem: next.key_pem().to_string(),
            digest: digest.clone(),
            cross_signed_pem,
            at_ms: now_ms(),
        })
        .await?;
        tracing::warn!(%digest, "CA rotation started: every node renews its certificate");
        self.ca_status().await
    }

    /// The current CA and the progress of a rotation.
    pub async fn ca_status(&self) -> Result<CaView> {
        self.read(ca_view).await
    }

    /// What a heartbeat answer says about trust (the CAs to trust, the digest of the one
    /// that signs), after recording that `peer` renewed if its certificate, verified by
    /// the TLS layer, was signed by the current CA during a rotation.
    pub(crate) fn note_ca_renewal(&self, peer: &PeerIdentity) -> (String, String) {
        let (trust, digest, waiting_for) = self.local(|state| match &state.ca {
            Some(ca) => (
                ca.trust_pem(),
                ca.digest.clone(),
                ca.rotation
                    .as_ref()
                    .filter(|rotation| !rotation.renewed.contains(&peer.node_id))
                    .map(|_| ca.cert_pem.clone()),
            ),
            None => (String::new(), String::new(), None),
        });
        let Some(current_cert) = waiting_for else {
            return (trust, digest);
        };
        if ca_subject(&current_cert).ok().as_deref() != Some(peer.issuer.as_str()) {
            return (trust, digest);
        }
        if !self.dispatcher().lock().ca_in_flight.insert(peer.node_id) {
            return (trust, digest);
        }
        let manager = self.clone();
        let node_id = peer.node_id;
        let renewed_digest = digest.clone();
        self.spawn(async move {
            let change = Change::NoteCaRenewal {
                node_id,
                digest: renewed_digest,
            };
            match manager.propose(change).await {
                Ok(_) => tracing::info!(node = %node_id, "node holds a certificate of the new CA"),
                Err(err) => {
                    tracing::warn!(node = %node_id, error = %err, "recording a CA renewal")
                }
            }
            manager.dispatcher().lock().ca_in_flight.remove(&node_id);
        });
        (trust, digest)
    }
}

fn ca_view(state: &ClusterState) -> CaView {
    let ca = state.ca.clone().unwrap_or_default();
    let renewed = ca.rotation.as_ref().map(|rotation| &rotation.renewed);
    CaView {
        digest: ca.digest.clone(),
        cert_pem: ca.cert_pem.clone(),
        rotating: renewed.is_some(),
        nodes_renewed: renewed.map(|renewed| renewed.len()).unwrap_or(0),
        nodes: state.nodes.len(),
        waiting_for: match renewed {
            Some(renewed) => state
                .nodes
                .values()
                .filter(|node| !renewed.contains(&node.id))
                .map(|node| node.hostname.clone())
                .collect(),
            None => Vec::new(),
        },
        retired: ca.retired.len(),
    }
}
