//! The `hoist` command line: the clap command tree and the client commands, which call
//! a daemon's control API and print tables (Docker's columns) or JSON.
//!
//! Holds no cluster logic: every decision is the daemon's. The daemon, `hello` and
//! `demo` commands are declared here but run by the binary.

/// Writes a line to stdout, returning from the enclosing function with
/// [`StdoutClosed`] when the reader has gone away (`| head`), instead of panicking as
/// `println!` does.
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))?
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

/// [`outln!`] without the newline.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))?
    };
}

pub mod cluster;
pub mod cluster_ca;
mod commands;
mod output;
pub mod service;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use commands::{client_for, run_client};
pub use output::{print_table, render_table, StdoutClosed};

/// Hoist: a container orchestrator with built-in load balancing.
///
/// Run `hoist daemon` on every machine, `hoist init` on the first and `hoist join` on
/// the others; then `hoist service create` runs your programs or containers on the
/// cluster, restarts them when they fail and spreads requests to their published
/// ports over every node.
#[derive(Debug, Parser)]
#[command(
    name = "hoist",
    version,
    about = "Hoist: a container orchestrator with built-in load balancing (run services on a cluster of machines, as Docker Swarm mode does)",
    propagate_version = true
)]
pub struct Cli {
    /// Daemon to talk to, as unix://PATH.
    #[arg(long, short = 'H', global = true, env = "HOIST_HOST")]
    pub host: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (the long-running daemon), in the foreground.
    Daemon(DaemonArgs),
    /// Create a cluster with this daemon as its first manager.
    Init(InitArgs),
    /// Join this daemon to a cluster.
    Join(JoinArgs),
    /// Print (or rotate) the join token for workers or managers.
    JoinToken(JoinTokenArgs),
    /// Leave the cluster.
    Leave(LeaveArgs),
    /// Manage nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Show cluster-wide information.
    Info(InfoArgs),
    /// Write a consistent copy of the cluster state to a file (on a manager).
    Backup(BackupArgs),
    /// Start a new cluster on this (fresh) daemon from a backup file.
    Restore(RestoreArgs),
    /// Manage services.
    #[command(subcommand)]
    Service(Box<crate::service::ServiceCommand>),
    /// Show or change cluster-wide settings.
    #[command(subcommand)]
    Cluster(crate::cluster::ClusterCommand),
    /// Run the demo web page (the workload `hoist demo` deploys).
    Hello(HelloArgs),
    /// Start a local cluster of daemons and deploy the hello service on it.
    Demo(DemoArgs),
}

/// Arguments of `hoist hello`.
#[derive(Clone, Debug, Args)]
pub struct HelloArgs {
    /// Address to listen on [default: 0.0.0.0:$PORT when PORT is set, else 0.0.0.0:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Also serve the files of DIR under /files/ and list them on the page
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Arguments of `hoist demo`.
#[derive(Clone, Debug, Args)]
pub struct DemoArgs {
    /// Number of managers.
    #[arg(long, default_value_t = 1)]
    pub managers: usize,
    /// Number of workers.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// A folder every hello replica serves under /files/ (a bind mount; needs root).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Published port of the hello service on every node.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Where the demo keeps its nodes' data (default: a fresh temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct DaemonArgs {
    /// Where this node keeps its state (Raft log, certificates, task files).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Address of the TLS listener for other nodes.
    #[arg(long, default_value = "0.0.0.0:2377")]
    pub listen_addr: String,
    /// Address other nodes reach this one at, IP:PORT or INTERFACE:PORT such as
    /// enp1s0:2377 (default: the listen address).
    #[arg(long)]
    pub advertise_addr: Option<String>,
    /// Node name (default: the machine's hostname); lets several daemons on one machine
    /// carry distinct names.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Control socket (default: DATA_DIR/hoist.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Take a Raft snapshot (and compact the log) every this many applied changes.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..))]
    pub raft_snapshot_interval: u64,
    /// Serve the mesh's Prometheus metrics over plain HTTP at IP:PORT/metrics (they are
    /// always on the control socket at /metrics).
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// What forwards the connections of `tcp` published ports: the mesh's own forwarder
    /// (least connections, retries a refusing task), or nftables DNAT rules in the kernel
    /// (about twice the request rate on a small machine, round-robin; needs root and nft).
    #[arg(long, value_enum, default_value_t = MeshDataplane::Userspace)]
    pub mesh_dataplane: MeshDataplane,
    /// Time a client of the TLS listener (:2377) has for its TLS handshake and for each
    /// request head; an idle keep-alive connection is closed after it too.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration_ms)]
    pub control_header_timeout: u64,
    /// Largest size of a task's output file before it is rotated (process driver; the
    /// docker engine keeps containers' logs by its own log options), e.g. 10MiB.
    #[arg(long, default_value = "10MiB", value_parser = parse_size)]
    pub log_max_size: u64,
    /// Output files kept per task, the one being written included (2: the current one
    /// and one rotated).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub log_max_files: u32,
    /// A published port's connection (`tcp` ports, and `http` connections switched to
    /// another protocol) is closed after this long without a byte either way.
    #[arg(long, default_value = "10m", value_parser = parse_positive_duration_ms)]
    pub mesh_idle_timeout: u64,
    /// A published port's connection is closed this long after it opened, busy or not.
    #[arg(long, default_value = "24h", value_parser = parse_positive_duration_ms)]
    pub mesh_max_lifetime: u64,
    /// Open connections one published port accepts; more are closed at once. The mesh
    /// as a whole also stops short of the open-files limit, keeping descriptors for the
    /// control plane.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub mesh_max_connections: u64,
    /// Open connections one client address may hold over all published ports (never
    /// more than half of what the mesh may open in all).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub mesh_max_connections_per_source: u64,
}

/// A duration as [`parse_duration_ms`] reads it, refusing zero (a timeout of nothing
/// would close every connection at once).
pub fn parse_positive_duration_ms(text: &str) -> Result<u64, String> {
    match parse_duration_ms(text)? {
        0 => Err(format!("{text:?}: the duration must be more than zero")),
        ms => Ok(ms),
    }
}

/// A size in bytes: a number with an optional binary unit (B, KiB, MiB, GiB; K, M and G
/// mean the same, as in Docker's `max-size`). At least 4 KiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let whole_number = || {
        format!("invalid size {text:?}: expected a whole number and a unit, like 10MiB or 512KiB")
    };
    let value: u64 = number.parse().map_err(|_| whole_number())?;
    if unit.starts_with('.') {
        return Err(whole_number());
    }
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {unit:?} (use B, KiB, MiB or GiB)"
            ))
        }
    };
    let bytes = value
        .checked_mul(scale)
        .ok_or_else(|| format!("invalid size {text:?}: too large"))?;
    if bytes < 4096 {
        return Err(format!("invalid size {text:?}: at least 4KiB"));
    }
    Ok(bytes)
}

/// `hoist daemon --mesh-dataplane`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MeshDataplane {
    Userspace,
    Nftables,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Address other nodes reach this one at, IP:PORT or INTERFACE:PORT such as
    /// enp1s0:2377 (default: the daemon's).
    #[arg(long)]
    pub advertise_addr: Option<String>,
    /// How often nodes beat, e.g. 1s or 500ms.
    #[arg(long, value_parser = parse_duration_ms)]
    pub heartbeat_period: Option<u64>,
    /// Missed periods before a node is Down.
    #[arg(long)]
    pub heartbeat_grace: Option<u32>,
    /// Lifetime of node certificates, e.g. 2160h (90 days, the default).
    #[arg(long, value_parser = parse_duration_ms)]
    pub cert_expiry: Option<u64>,
    /// Recover from a lost quorum: this manager's state becomes a new one-manager
    /// cluster, keeping every node, service and task; the other managers are dropped.
    /// With --advertise-addr, that address must be this manager's own (it is kept).
    #[arg(long, conflicts_with_all = ["heartbeat_period", "heartbeat_grace", "cert_expiry"])]
    pub force_new_cluster: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// File to write (it holds the CA key: keep it secret).
    #[arg(long, short)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Address other nodes reach this one at, IP:PORT or INTERFACE:PORT (default: the
    /// daemon's).
    #[arg(long)]
    pub advertise_addr: Option<String>,
    /// A file written by `hoist backup`.
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The worker or manager token from `hoist join-token`.
    #[arg(long)]
    pub token: String,
    /// Refuse unless the token is of this role (worker or manager).
    #[arg(long)]
    pub role: Option<String>,
    /// Address other nodes reach this one at, IP:PORT or INTERFACE:PORT such as
    /// enp1s0:2377 (default: the daemon's).
    #[arg(long)]
    pub advertise_addr: Option<String>,
    /// A manager's address, HOST:PORT.
    pub manager_addr: String,
}

#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    /// worker or manager.
    pub role: String,
    /// Replace the token; the old one stops working at once.
    #[arg(long)]
    pub rotate: bool,
    /// Print the token only.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct LeaveArgs {
    /// Leave even if this node is a manager.
    #[arg(long, short)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// `json` for machine-readable output.
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct ListArgs {
    /// `json` for a JSON array with stable field names.
    #[arg(long)]
    pub format: Option<String>,
    /// Print ids only.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List nodes.
    Ls(ListArgs),
    /// Show nodes as JSON (or --pretty).
    Inspect {
        /// Nodes: id, id prefix, hostname, or `self` for the node this daemon runs.
        node: Vec<String>,
        /// Print a readable summary instead of JSON.
        #[arg(long)]
        pretty: bool,
    },
    /// Change a node's availability or labels.
    Update(NodeUpdateArgs),
    /// Make nodes managers.
    Promote {
        /// Nodes to promote: id, id prefix or hostname.
        nodes: Vec<String>,
    },
    /// Make managers workers.
    Demote {
        /// Managers to demote: id, id prefix or hostname.
        nodes: Vec<String>,
    },
    /// Remove nodes from the cluster.
    Rm {
        /// Remove a node that is still Ready, or a manager without demoting it first.
        #[arg(long, short)]
        force: bool,
        /// Nodes to remove: id, id prefix or hostname.
        nodes: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct NodeUpdateArgs {
    /// active, pause or drain.
    #[arg(long)]
    pub availability: Option<String>,
    /// Add or change a label, KEY=VALUE.
    #[arg(long = "label-add")]
    pub label_add: Vec<String>,
    /// Remove a label by key.
    #[arg(long = "label-rm")]
    pub label_rm: Vec<String>,
    /// The node: id, id prefix or hostname.
    pub node: String,
}

/// A duration flag in Docker's syntax (`500ms`, `1.5s`, `1m30s`, `90d`), in
/// milliseconds; see [`hoist_types::duration`].
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    hoist_types::duration::parse_duration_ms(text).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_ms("1s"), Ok(1_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1.5s"), Ok(1_500));
        assert!(parse_duration_ms("fast").is_err());
        assert!(parse_duration_ms("10 parsecs").is_err());
    }

    #[test]
    fn sizes_and_positive_durations_parse() {
        assert_eq!(parse_size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("512k"), Ok(512 * 1024));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("100").unwrap_err().contains("at least 4KiB"));
        assert!(parse_size("1.5M").unwrap_err().contains("whole number"));
        assert!(parse_size("10 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_size("99999999999G")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_positive_duration_ms("0s")
            .unwrap_err()
            .contains("more than zero"));
        assert_eq!(parse_positive_duration_ms("3s"), Ok(3_000));
    }

    /// Every subcommand, flag and positional argument of `hoist` has help text.
    #[test]
    fn every_command_and_flag_has_help_text() {
        use clap::CommandFactory;
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if command.get_about().is_none() {
                missing.push(format!("command `{path}`"));
            }
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("`{path}` argument {id}"));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_name() == "help" {
                    continue;
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        let root = Cli::command();
        walk(&root, "hoist", &mut missing);
        assert!(missing.is_empty(), "no help text:\n{}", missing.join("\n"));
        let about = root
            .get_about()
            .map(|about| about.to_string())
            .unwrap_or_default();
        assert!(
            about.contains("orchestrator") && !about.contains("clap"),
            "the top-level help describes the tool, not its code: {about:?}"
        );
    }

    #[test]
    fn the_command_tree_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
