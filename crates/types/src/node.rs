//! A node as the cluster records it: identity, role, availability chosen by the operator,
//! status observed by the dispatcher, labels and the engine it offers.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// Whether a node takes part in Raft. Every node is a worker; a manager is a worker that
/// also votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Worker,
    Manager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Manager => "manager",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "worker" => Ok(Role::Worker),
            "manager" => Ok(Role::Manager),
            other => Err(format!(
                "unknown role {other:?} (expected worker or manager)"
            )),
        }
    }
}

/// The operator's choice of what the scheduler may do with a node (Swarm's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// Takes new tasks.
    #[default]
    Active,
    /// Keeps its tasks, takes no new ones.
    Pause,
    /// Its tasks move elsewhere.
    Drain,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Active => "Active",
            Availability::Pause => "Pause",
            Availability::Drain => "Drain",
        }
    }
}

impl std::str::FromStr for Availability {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "active" => Ok(Availability::Active),
            "pause" => Ok(Availability::Pause),
            "drain" => Ok(Availability::Drain),
            _ => Err(format!(
                "invalid availability {text:?} (expected active, pause or drain)"
            )),
        }
    }
}

/// What the dispatcher last observed of a node's heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Joined but no heartbeat seen yet by the current leader.
    #[default]
    Unknown,
    Ready,
    Down,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Unknown => "Unknown",
            NodeStatus::Ready => "Ready",
            NodeStatus::Down => "Down",
        }
    }
}

/// The container engine (or its absence) a node reports, so constraints can match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EngineInfo {
    /// Drivers this node can run tasks with, e.g. `["process", "docker"]`.
    pub drivers: Vec<String>,
    /// Docker Engine version, when one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_version: Option<String>,
    /// Docker's storage driver (overlay2, zfs, btrfs, fuse-overlayfs...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_driver: Option<String>,
    /// The node's operating system and CPU architecture, as Docker names them
    /// (`linux`, `x86_64`): `node.platform.os` and `node.platform.arch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// The Docker Engine's own labels (its `--label`s): `engine.labels.KEY`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A node as stored in the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub hostname: String,
    /// Address other nodes reach this node's TLS listener at.
    pub addr: String,
    /// The role the operator wants; the node renews its certificate to match.
    pub role: Role,
    pub availability: Availability,
    pub status: NodeStatus,
    /// Why the status is what it is, e.g. "heartbeat failure".
    #[serde(default)]
    pub status_message: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub engine: EngineInfo,
    /// CPU cores and memory bytes the node offers to tasks.
    #[serde(default)]
    pub resources: Resources,
    /// Published ports this node's mesh could not open, as it last reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_faults: Vec<PortFault>,
    /// Unix milliseconds, from the leader's clock when the change was proposed.
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

impl Node {
    /// A node as it is first recorded: active and ready, no labels, nothing reported
    /// yet of its engine or resources (its first heartbeat says).
    pub fn new(id: NodeId, hostname: String, addr: String, role: Role, at_ms: u64) -> Node {
        Node {
            id,
            hostname,
            addr,
            role,
            availability: Availability::Active,
            status: NodeStatus::Ready,
            status_message: String::new(),
            labels: BTreeMap::new(),
            engine: EngineInfo::default(),
            resources: Resources::default(),
            port_faults: Vec::new(),
            created_at_ms: at_ms,
            updated_at_ms: at_ms,
        }
    }
}

/// A published port a node's mesh could not open (another process holds it, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortFault {
    pub port: u16,
    /// What the kernel said, e.g. "Address already in use (os error 98)".
    pub reason: String,
}

/// CPU (in nano-CPUs, as Docker counts) and memory (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Resources {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

/// Longest label key; Docker has none, but every node record carries its labels to every
/// manager and into every snapshot.
pub const MAX_LABEL_KEY_LEN: usize = 128;

/// Longest label value.
pub const MAX_LABEL_VALUE_LEN: usize = 1024;

/// Longest hostname: DNS's limit for a whole name.
pub const MAX_HOSTNAME_LEN: usize = 253;

/// Validates a label key as given to `--label-add k=v`.
pub fn validate_label_key(key: &str) -> Result<(), crate::InvalidSpec> {
    if key.is_empty() {
        return Err(crate::InvalidSpec::new("label", "the key is empty"));
    }
    if key.len() > MAX_LABEL_KEY_LEN
        || key
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '=')
    {
        return Err(crate::InvalidSpec::new(
            "label",
            format!(
                "{key:?} is not a valid key (no spaces, control characters or '=', at most {MAX_LABEL_KEY_LEN} bytes)"
            ),
        ));
    }
    Ok(())
}

/// Validates a label value: printed in tables and matched by constraints, so no control
/// characters (a terminal escape in `node inspect` output), and a bounded length.
pub fn validate_label_value(key: &str, value: &str) -> Result<(), crate::InvalidSpec> {
    if value.len() > MAX_LABEL_VALUE_LEN {
        return Err(crate::InvalidSpec::new(
            "label",
            format!(
                "the value of {key:?} is {} bytes long (at most {MAX_LABEL_VALUE_LEN})",
                value.len()
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(crate::InvalidSpec::new(
            "label",
            format!("the value of {key:?} contains a control character"),
        ));
    }
    Ok(())
}

/// Validates a node's name, as given to `--hostname` or sent by a joining node.
pub fn validate_hostname(name: &str) -> Result<(), crate::InvalidSpec> {
    if name.trim().is_empty() {
        return Err(crate::InvalidSpec::new("hostname", "it is empty"));
    }
    if name.len() > MAX_HOSTNAME_LEN {
        return Err(crate::InvalidSpec::new(
            "hostname",
            format!(
                "it is {} bytes long (at most {MAX_HOSTNAME_LEN})",
                name.len()
            ),
        ));
    }
    if let Some(bad) = name.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(crate::InvalidSpec::new(
            "hostname",
            format!("{name:?} contains {bad:?} (no spaces or control characters)"),
        ));
    }
    Ok(())
}

/// Parses a node's address: an IP literal and a port, as Swarm's advertise address is,
/// so that managers can check it against where a node's connections come from.
pub fn parse_node_addr(addr: &str) -> Result<SocketAddr, crate::InvalidSpec> {
    let parsed: SocketAddr = addr.parse().map_err(|_| {
        crate::InvalidSpec::new(
            "address",
            format!("{addr:?} is not IP:PORT (a node's address is an IP address, not a name)"),
        )
    })?;
    if parsed.port() == 0 {
        return Err(crate::InvalidSpec::new(
            "address",
            format!("{addr:?} has port 0"),
        ));
    }
    if parsed.ip().is_unspecified() || parsed.ip().is_multicast() {
        return Err(crate::InvalidSpec::new(
            "address",
            format!("{addr:?} is not an address other nodes can reach"),
        ));
    }
    Ok(parsed)
}

/// Whether `ip` only reaches the machine it is dialled from, or its link: loopback,
/// link-local (169.254.0.0/16, where cloud metadata services answer, and fe80::/10),
/// unspecified, multicast or broadcast.
fn is_local_scope(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Why an endpoint a node reported for one of its tasks must not be used, if it must
/// not. Every node's mesh dials endpoints, so a node may only name itself: the host must
/// be the node's recorded address, never its control port, and never a loopback or
/// link-local address unless the node's own address is one (a test machine, where every
/// node is 127.x).
pub fn check_endpoint(node_addr: &str, endpoint: &str) -> Result<(), String> {
    let node = parse_node_addr(node_addr)
        .map_err(|err| format!("the node's own address is unusable: {err}"))?;
    let parsed: SocketAddr = endpoint
        .parse()
        .map_err(|_| format!("endpoint {endpoint:?} is not IP:PORT"))?;
    if parsed.port() == 0 {
        return Err(format!("endpoint {endpoint} has port 0"));
    }
    let node_ip = node.ip().to_canonical();
    let endpoint_ip = parsed.ip().to_canonical();
    if endpoint_ip != node_ip {
        return Err(format!(
            "endpoint {endpoint} is not on the node's address {node_addr}"
        ));
    }
    if is_local_scope(endpoint_ip) && !node_ip.is_loopback() {
        return Err(format!(
            "endpoint {endpoint} is a loopback or link-local address"
        ));
    }
    if parsed.port() == node.port() {
        return Err(format!(
            "endpoint {endpoint} is the node's control listener"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_on_the_node_itself() {
        let node = "10.0.0.5:2377";
        assert_eq!(check_endpoint(node, "10.0.0.5:30001"), Ok(()));
        for bad in [
            "127.0.0.1:22",
            "169.254.169.254:80",
            "10.0.0.6:30001",
            "10.0.0.5:2377",
            "10.0.0.5:0",
            "example.com:80",
            "[::1]:80",
        ] {
            assert!(check_endpoint(node, bad).is_err(), "{bad} was accepted");
        }
        // A test machine: every node is on loopback, and may name only itself.
        let local = "127.20.3.2:2377";
        assert_eq!(check_endpoint(local, "127.20.3.2:41000"), Ok(()));
        assert!(check_endpoint(local, "127.0.0.1:22").is_err());
        assert!(check_endpoint(local, "127.20.3.1:41000").is_err());
        // A node whose own address is link-local names nothing.
        assert!(check_endpoint("169.254.1.1:2377", "169.254.1.1:80").is_err());
        // An address recorded as a name (older data) cannot vouch for anything.
        assert!(check_endpoint("node1:2377", "10.0.0.5:80").is_err());
        assert_eq!(check_endpoint("[fd00::5]:2377", "[fd00::5]:8080"), Ok(()));
    }

    #[test]
    fn hostnames_and_labels_refuse_control_characters() {
        assert!(validate_hostname("fx1").is_ok());
        assert!(validate_hostname("node-1.example.com").is_ok());
        for bad in [
            "",
            "  ",
            "a b",
            "evil\x1b[31m",
            "tab\there",
            &"x".repeat(254),
        ] {
            assert!(validate_hostname(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(validate_label_key("zone").is_ok());
        assert!(validate_label_key("bad\u{7}key").is_err());
        assert!(validate_label_value("zone", "a").is_ok());
        assert!(validate_label_value("zone", "a\nb").is_err());
        assert!(validate_label_value("zone", &"v".repeat(MAX_LABEL_VALUE_LEN + 1)).is_err());
    }

    #[test]
    fn node_addresses_are_ip_literals() {
        assert!(parse_node_addr("10.0.0.5:2377").is_ok());
        assert!(parse_node_addr("[fd00::5]:2377").is_ok());
        for bad in [
            "node1:2377",
            "10.0.0.5",
            "10.0.0.5:0",
            "0.0.0.0:2377",
            "224.0.0.1:2377",
        ] {
            assert!(parse_node_addr(bad).is_err(), "{bad} was accepted");
        }
    }
}
