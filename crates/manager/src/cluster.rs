//! The cluster's settings as the operator sees them: `hoist cluster inspect` and
//! `hoist cluster update` (Docker's `swarm inspect` and `swarm update`).
//!
//! Settings live in the replicated state and change through `Change::UpdateSettings`,
//! whose check (in `hoist_state`) is the one judge of what is allowed; this module only
//! merges the operator's flags into the current settings. Who reads which setting: the
//! orchestrator (`max_replicas`, `task_history_limit`), service create/update/scale
//! (`max_replicas`), certificate signing (`cert_expiry_secs`) and the join endpoint's
//! rate limiter (`join_rate_limit`).

use hoist_api::{ClusterUpdateRequest, ClusterView};
use hoist_state::{Change, ClusterState};

use crate::{Input, Manager, ManagerError, Result};

fn view(state: &ClusterState) -> ClusterView {
    ClusterView {
        cluster_id: state.cluster_id.clone(),
        created_at_ms: state.created_at_ms,
        settings: state.settings,
    }
}

impl Manager {
    pub async fn cluster_view(&self) -> Result<ClusterView> {
        self.read(view).await
    }

    /// Changes the settings named in `update`; nothing changes when one is refused.
    pub async fn update_cluster(&self, update: ClusterUpdateRequest) -> Result<ClusterView> {
        let state = self.read(ClusterState::clone).await?;
        let mut settings = state.settings;
        if let Some(max_replicas) = update.max_replicas {
            settings.max_replicas = max_replicas;
        }
        if let Some(join_rate_limit) = update.join_rate_limit {
            settings.join_rate_limit = join_rate_limit;
        }
        if let Some(task_history_limit) = update.task_history_limit {
            settings.task_history_limit = task_history_limit;
        }
        if let Some(cert_expiry_secs) = update.cert_expiry_secs {
            settings.cert_expiry_secs = cert_expiry_secs;
        }
        state
            .check_settings(&settings)
            .map_err(|err| ManagerError::invalid(Input::Settings, err.to_string()))?;
        if settings != state.settings {
            self.propose(Change::UpdateSettings { settings }).await?;
            tracing::info!(?settings, "cluster settings updated");
        }
        self.cluster_view().await
    }
}
