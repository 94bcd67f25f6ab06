//! The daemon's settings: `DaemonConfig`, made from `hoist daemon`'s flags by
//! [`DaemonConfig::from_args`], which is where every flag is checked (the hostname, the
//! listen and advertise addresses) and turned into the types the node runs with. Also the
//! address checks `init` and `join` apply to addresses they are given.
//!
//! Does not touch: the machine (no listener, no probe of nftables: `run` does those once
//! the settings are valid), nor the cluster's settings (`ClusterSettings`, in the state).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use hoist_cli::DaemonArgs;
use hoist_raft::RaftConfig;

use super::limits::Limits;

pub struct DaemonConfig {
    pub data_dir: PathBuf,
    pub listen_addr: SocketAddr,
    pub advertise_addr: Option<String>,
    pub hostname: String,
    /// What forwards `tcp` published ports on this node.
    pub mesh_dataplane: hoist_mesh::L4Dataplane,
    pub raft: RaftConfig,
    /// Time and size bounds set by `hoist daemon` flags.
    pub limits: Limits,
}

impl DaemonConfig {
    /// Checks the flags and makes the settings from them; an error names the flag.
    /// `open_files` is the open-files limit the daemon was granted.
    pub fn from_args(args: &DaemonArgs, open_files: u64) -> anyhow::Result<DaemonConfig> {
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
        let listen_addr: SocketAddr = args
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
        Ok(DaemonConfig {
            data_dir: args.data_dir.clone(),
            listen_addr,
            advertise_addr,
            hostname,
            mesh_dataplane,
            raft: RaftConfig {
                snapshot_every: args.raft_snapshot_interval,
                keep_after_snapshot: args.raft_snapshot_interval / 2,
                ..RaftConfig::default()
            },
            limits: limits_of(args, open_files),
        })
    }
}

fn limits_of(args: &DaemonArgs, open_files: u64) -> Limits {
    Limits {
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
