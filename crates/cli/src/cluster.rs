//! `hoist cluster inspect` and `hoist cluster update` (Docker's `swarm inspect` and
//! `swarm update`): the cluster-wide settings stored in the replicated state. Other
//! `cluster` subcommands live in their own files beside this one.

use clap::{Args, Subcommand};
use hoist_api::endpoint as api;
use hoist_api::{Client, ClusterUpdateRequest, ClusterView};

use crate::output::{duration, print_json};
use crate::parse_duration_ms;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster's id and settings.
    Inspect(ClusterInspectArgs),
    /// Change cluster settings (on a manager).
    Update(ClusterUpdateArgs),
    /// Show the cluster's CA, or rotate it.
    Ca(crate::cluster_ca::CaArgs),
}

#[derive(Debug, Args)]
pub struct ClusterInspectArgs {
    /// Print a readable summary instead of JSON.
    #[arg(long)]
    pub pretty: bool,
}

#[derive(Debug, Args)]
pub struct ClusterUpdateArgs {
    /// The most replicas one service may ask for (default 10000, at most 1000000).
    #[arg(long)]
    pub max_replicas: Option<u64>,
    /// Join attempts per second each manager accepts from one source address, after a
    /// first burst (0: no limit; default 5).
    #[arg(long)]
    pub join_rate_limit: Option<u32>,
    /// Ended tasks kept per slot (default 5, at most 64).
    #[arg(long)]
    pub task_history_limit: Option<u32>,
    /// Lifetime of node certificates issued from now on, e.g. 2160h (at least 1h).
    #[arg(long, value_parser = parse_duration_ms)]
    pub cert_expiry: Option<u64>,
}

pub async fn run(client: &Client, command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Ca(args) => crate::cluster_ca::run(client, args).await,
        ClusterCommand::Inspect(args) => {
            let view: ClusterView = client.call::<api::ClusterInspect>(&(), &()).await?;
            if args.pretty {
                print_pretty(&view)
            } else {
                print_json(&view)
            }
        }
        ClusterCommand::Update(args) => {
            let request = ClusterUpdateRequest {
                max_replicas: args.max_replicas,
                join_rate_limit: args.join_rate_limit,
                task_history_limit: args.task_history_limit,
                cert_expiry_secs: args.cert_expiry.map(|ms| ms / 1000),
            };
            if request.max_replicas.is_none()
                && request.join_rate_limit.is_none()
                && request.task_history_limit.is_none()
                && request.cert_expiry_secs.is_none()
            {
                anyhow::bail!(
                    "nothing to update: give --max-replicas, --join-rate-limit, --task-history-limit or --cert-expiry"
                );
            }
            let _: ClusterView = client.call::<api::ClusterUpdate>(&(), &request).await?;
            outln!("Cluster updated.");
            Ok(())
        }
    }
}

fn print_pretty(view: &ClusterView) -> anyhow::Result<()> {
    let settings = &view.settings;
    outln!("ID:                  {}", view.cluster_id);
    outln!("Max replicas:        {} per service", settings.max_replicas);
    let join_rate = if settings.join_rate_limit == 0 {
        "no limit".to_string()
    } else {
        format!("{} per second per source address", settings.join_rate_limit)
    };
    outln!("Join rate limit:     {join_rate}");
    outln!("Task history limit:  {}", settings.task_history_limit);
    outln!(
        "Certificate expiry:  {}",
        duration(settings.cert_expiry_secs.saturating_mul(1000))
    );
    outln!(
        "Heartbeat:           every {}, down after {} missed",
        duration(settings.heartbeat_period_ms),
        settings.heartbeat_grace
    );
    Ok(())
}
