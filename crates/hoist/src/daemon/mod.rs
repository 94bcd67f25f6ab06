//! `hoist daemon`: one node. It serves the control API on a unix socket from the start,
//! and, once the node belongs to a cluster, the TLS listener that carries node-to-node
//! traffic (join, heartbeats, Raft). A manager also runs Raft and the leader's loops.

mod ca_routes;
mod cluster_routes;
mod files;
mod limits;
mod member;
mod routes;
mod server;
mod service_routes;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hoist_cli::DaemonArgs;

pub use member::Daemon;

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
    let hostname = match args.hostname.clone() {
        Some(name) => {
            hoist_types::node::validate_hostname(&name).context("--hostname")?;
            name
        }
        None => {
            let name = machine_hostname();
            hoist_types::node::validate_hostname(&name).with_context(|| {
                format!("the machine's hostname {name:?} (choose one with --hostname)")
            })?;
            name
        }
    };
    let listen_addr: std::net::SocketAddr = args
        .listen_addr
        .parse()
        .with_context(|| format!("--listen-addr {:?} is not IP:PORT", args.listen_addr))?;
    let advertise_addr = args
        .advertise_addr
        .as_deref()
        .map(resolve_advertise_addr)
        .transpose()
        .context("--advertise-addr")?;
    if let Some(advertise) = &advertise_addr {
        validate_addr(advertise).context("--advertise-addr")?;
    }
    let mesh_dataplane = match args.mesh_dataplane {
        hoist_cli::MeshDataplane::Userspace => hoist_mesh::L4Dataplane::Userspace,
        hoist_cli::MeshDataplane::Nftables => hoist_mesh::L4Dataplane::Nftables,
    };
    if mesh_dataplane == hoist_mesh::L4Dataplane::Nftables {
        hoist_mesh::kernel::probe(listen_addr.ip())
            .await
            .context("--mesh-dataplane nftables needs root (CAP_NET_ADMIN), the nft command, nf_tables in the kernel, IPv4 and IP forwarding")?;
    } else {
        // A daemon killed while it ran the kernel path left its rules; they would keep
        // sending this address's published ports to tasks that may be gone.
        hoist_mesh::kernel::remove_stale(listen_addr.ip()).await;
    }
    let daemon = Arc::new(Daemon::new(member::DaemonConfig {
        data_dir,
        listen_addr,
        advertise_addr,
        hostname,
        mesh_dataplane,
        raft: hoist_raft::RaftConfig {
            snapshot_every: args.raft_snapshot_interval,
            keep_after_snapshot: args.raft_snapshot_interval / 2,
            ..hoist_raft::RaftConfig::default()
        },
        limits: limits::Limits {
            control_header_timeout: Duration::from_millis(args.control_header_timeout),
            log_limits: hoist_driver::LogLimits {
                max_size: args.log_max_size,
                max_files: args.log_max_files,
            },
            open_files,
            mesh_idle_timeout: Duration::from_millis(args.mesh_idle_timeout),
            mesh_max_lifetime: Duration::from_millis(args.mesh_max_lifetime),
            mesh_max_connections_per_port: usize::try_from(args.mesh_max_connections)
                .unwrap_or(usize::MAX),
            mesh_max_connections_per_source: usize::try_from(args.mesh_max_connections_per_source)
                .unwrap_or(usize::MAX),
        },
    }));
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

/// Checks HOST:PORT (an IP or a name, and a port).
pub fn validate_addr(addr: &str) -> anyhow::Result<()> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("{addr:?} is not HOST:PORT"))?;
    if host.is_empty() {
        anyhow::bail!("{addr:?} has no host");
    }
    port.parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
        .with_context(|| format!("{addr:?} has no valid port"))?;
    Ok(())
}

/// `--advertise-addr` as Docker takes it: IP:PORT as it is, or an interface name and a
/// port (`enp1s0:2377`), which becomes the interface's first IPv4 address (its first
/// IPv6 one if it has none). A node's address is always an IP: anything else is refused.
pub fn resolve_advertise_addr(addr: &str) -> anyhow::Result<String> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("{addr:?} is not IP:PORT or INTERFACE:PORT"))?;
    port.parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
        .with_context(|| format!("{addr:?} has no valid port"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(addr.to_string());
    }
    if host.is_empty() {
        anyhow::bail!("{addr:?} has no IP address or interface name");
    }
    let mut found = false;
    let (mut v4, mut v6) = (None, None);
    for interface in nix::ifaddrs::getifaddrs().context("listing this machine's interfaces")? {
        if interface.interface_name != host {
            continue;
        }
        found = true;
        let Some(address) = interface.address else {
            continue;
        };
        if let Some(inet) = address.as_sockaddr_in() {
            v4.get_or_insert(inet.ip());
        } else if let Some(inet6) = address.as_sockaddr_in6() {
            v6.get_or_insert(inet6.ip());
        }
    }
    match (v4, v6) {
        (Some(ip), _) => Ok(format!("{ip}:{port}")),
        (None, Some(ip)) => Ok(format!("[{ip}]:{port}")),
        (None, None) if found => anyhow::bail!("interface {host:?} has no IP address"),
        (None, None) => anyhow::bail!(
            "{host:?} is neither an IP address nor a network interface of this machine"
        ),
    }
}

fn machine_hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Where a node keeps what it must find again after a restart.
pub(crate) fn node_file(dir: &std::path::Path) -> PathBuf {
    dir.join("node.json")
}

pub(crate) fn identity_file(dir: &std::path::Path) -> PathBuf {
    dir.join("identity.json")
}

pub(crate) fn raft_dir(dir: &std::path::Path) -> PathBuf {
    dir.join("raft")
}

#[cfg(test)]
mod tests {
    use super::resolve_advertise_addr;

    #[test]
    fn an_advertise_address_is_an_ip_or_an_interface_name() {
        assert_eq!(
            resolve_advertise_addr("10.0.0.1:2377").unwrap(),
            "10.0.0.1:2377"
        );
        assert_eq!(resolve_advertise_addr("[::1]:2377").unwrap(), "[::1]:2377");
        assert_eq!(resolve_advertise_addr("lo:2377").unwrap(), "127.0.0.1:2377");
        let err = format!(
            "{:#}",
            resolve_advertise_addr("nosuchif0:2377").unwrap_err()
        );
        assert!(
            err.contains("neither an IP address nor a network interface"),
            "{err}"
        );
        assert!(resolve_advertise_addr("lo").is_err());
        assert!(resolve_advertise_addr(":2377").is_err());
        let err = format!("{:#}", resolve_advertise_addr("lo:99999").unwrap_err());
        assert!(err.contains("\"lo:99999\" has no valid port"), "{err}");
    }
}
