//! `hoist daemon`: one node. It serves the control API on a unix socket from the start,
//! and, once the node belongs to a cluster, the TLS listener that carries node-to-node
//! traffic (join, heartbeats, Raft). A manager also runs Raft and the leader's loops.
//!
//! This file starts and stops the process (`run`); each job of the node has a file:
//! `settings` (flags checked into `DaemonConfig`), `daemon` (the `Daemon` handle and
//! its membership slot), `member` (a member and the loops it runs), `lifecycle` (init,
//! join, leave, restore, force-new-cluster), `roles` (starting and stopping Raft as the
//! cluster wants, the worker session's host), `records` (`node.json`, atomic writes),
//! `tls` (mTLS clients, certificate and trust updates, the CA probe before a join),
//! `drivers` (which drivers the node offers), `mesh_feed` (published routes into the
//! mesh), `errors` (failures and their HTTP statuses), `files` (the data directory's
//! permissions), and the listeners and routes (`server`, `routes`, `*_routes`, `limits`).

mod access;
mod ca_routes;
mod cluster_routes;
// The file holding `Daemon` is named for it, inside the module named for the command.
#[allow(clippy::module_inception)]
mod daemon;
mod dispatcher_routes;
mod drivers;
mod errors;
mod files;
mod lifecycle;
mod lifecycle_routes;
mod limits;
mod member;
mod mesh_feed;
mod node_routes;
mod records;
mod roles;
mod routes;
mod server;
mod service_routes;
mod settings;
mod tls;

use std::sync::Arc;

use anyhow::Context;
use hoist_cli::DaemonArgs;

pub use daemon::Daemon;
use settings::{resolve_advertise_addr, DaemonConfig};

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let open_files = limits::raise_open_files_limit();
    let data_dir = args.data_dir.clone();
    files::restrict_umask();
    let tightened = files::secure_data_dir(&data_dir)?;
    if tightened > 0 {
        tracing::info!(dir = %data_dir.display(), entries = tightened, "made the data directory private to the daemon's user");
    }
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| data_dir.join("hoist.sock"));
    let config = DaemonConfig::from_args(&args, open_files)?;
    if config.mesh_dataplane == hoist_mesh::L4Dataplane::Nftables {
        hoist_mesh::kernel::probe(config.listen_addr.ip())
            .await
            .context("--mesh-dataplane nftables needs root (CAP_NET_ADMIN), the nft command, nf_tables in the kernel, IPv4 and IP forwarding")?;
    } else {
        // A daemon killed while it ran the kernel path left its rules; they would keep
        // sending this address's published ports to tasks that may be gone.
        hoist_mesh::kernel::remove_stale(config.listen_addr.ip()).await;
    }
    let daemon = Arc::new(Daemon::new(config));
    let unix = server::serve_unix(daemon.clone(), &socket)
        .await
        .with_context(|| format!("listening on {}", socket.display()))?;
    daemon
        .resume()
        .await
        .context("resuming the node from its data directory")?;
    let metrics = match args.metrics_addr {
        Some(addr) => Some(
            server::serve_metrics(daemon.clone(), addr)
                .await
                .with_context(|| format!("--metrics-addr {addr}"))?,
        ),
        None => None,
    };
    tracing::info!(socket = %socket.display(), "hoist daemon ready");

    // A node whose Raft stopped on a fatal error (a full disk, a failing store) would
    // keep answering as a manager that can no longer commit anything: it exits instead,
    // so that a supervisor or an operator sees why.
    let fatal = tokio::select! {
        _ = wait_for_signal() => None,
        reason = daemon.fatal() => Some(reason),
    };
    tracing::info!("shutting down");
    daemon.shutdown().await;
    unix.abort();
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    let _ = std::fs::remove_file(&socket);
    match fatal {
        Some(reason) => anyhow::bail!(
            "raft stopped on a fatal error, so this node cannot take part in the cluster: {reason}"
        ),
        None => Ok(()),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::error!(error = %err, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
