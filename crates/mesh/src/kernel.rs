//! The kernel data path for L4 ports: nftables DNAT rules that forward new connections to
//! a published port straight to an endpoint, so the bytes never cross into userspace.
//!
//! Owns: rendering the node's whole ruleset from the ready endpoints of its `tcp` ports
//! (`render`, pure), applying it atomically with `nft -f -` and removing it
//! (`NftTable`), and the mark that tells the postrouting chain which flows to masquerade.
//!
//! Why a kernel path at all: on a small machine a userspace hop costs about half the
//! request rate (client, proxy and backend share the cores, and every message crosses
//! the proxy twice). DNAT costs one conntrack lookup per packet. It is what kube-proxy
//! (iptables, nftables) and Swarm (IPVS) do; IPVS is not in every kernel, nftables is.
//!
//! What the kernel path gives up, and how the mesh makes up for it: endpoints are chosen
//! round-robin (`numgen inc`), not by least connections; a refused connection reaches the
//! client instead of being retried on the next endpoint. The userspace listener stays
//! bound under the rules, so a port whose endpoints are all out of rotation (or one the
//! kernel cannot express, such as IPv6) falls through to it. Health checks, draining and
//! ejections still apply: the ruleset is re-rendered from the same endpoint table the
//! userspace path balances over, and established flows keep their conntrack entry, so a
//! draining endpoint finishes what it serves. Each endpoint has its own chain with a
//! counter, read into the mesh's per-endpoint connection metric every few seconds; the
//! kernel path has no request, error or latency figures.
//!
//! What the host must allow: a connection sent to a task on another node is forwarded
//! by this node, so `net.ipv4.ip_forward` must be 1 (`probe` refuses otherwise) and the
//! FORWARD chains must accept flows with `FLOW_MARK` (Docker sets the iptables FORWARD
//! policy to DROP: add `iptables -I DOCKER-USER -m connmark --mark 0x686f6973 -j ACCEPT`).
//! A Docker task's endpoint is its host port; once ours has rewritten a connection,
//! Docker's own DNAT no longer applies to it (one NAT binding per connection), so it
//! reaches the container through docker-proxy, a userspace hop (reasoned, not measured:
//! the kernel path's tests use the process driver).
//!
//! Does not know: services, tasks or why an endpoint exists; the mesh hands it ports and
//! addresses.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::error::MeshError;

/// The conntrack mark put on flows this ruleset forwarded ("hois" in ASCII), so that the
/// postrouting chain masquerades them when they leave the node: a remote endpoint must
/// answer through us, not straight to a client that never talked to it.
pub const FLOW_MARK: u32 = 0x686f_6973;

/// One published port as the kernel path serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPort {
    pub published: u16,
    /// The endpoints that take new connections, in a stable order.
    pub endpoints: Vec<SocketAddr>,
}

/// The nftables table name for a mesh listening on `listen_ip`. Derived from the address
/// so a daemon restarted on the same address (in either data path mode: the userspace
/// one deletes it) finds what a killed one left behind, and two nodes sharing a host
/// (tests, demos) never touch each other's rules.
pub fn table_name(listen_ip: IpAddr) -> String {
    let mut name = String::from("hoist_mesh_");
    for ch in listen_ip.to_string().chars() {
        name.push(if ch.is_ascii_alphanumeric() { ch } else { '_' });
    }
    name
}

/// Whether the kernel path can carry a port with these endpoints: nftables `ip` tables
/// handle IPv4 only, and a port with no endpoint is left to the userspace listener.
pub fn can_carry(listen_ip: IpAddr, endpoints: &[SocketAddr]) -> bool {
    !listen_ip.is_ipv6() && !endpoints.is_empty() && endpoints.iter().all(SocketAddr::is_ipv4)
}

/// The chain that forwards port `published`'s connections to its `index`th endpoint.
pub fn endpoint_chain(published: u16, index: usize) -> String {
    format!("ep_{published}_{index}")
}

/// The connection counts of the endpoint chains, from `nft -j list table` output: chain
/// name to packets counted (one per forwarded connection).
pub fn parse_counters(json: &str) -> Result<HashMap<String, u64>, MeshError> {
    let document: serde_json::Value =
        serde_json::from_str(json).map_err(|error| MeshError::Kernel {
            reason: format!("nft printed JSON that does not parse: {error}"),
        })?;
    let objects = document["nftables"]
        .as_array()
        .ok_or_else(|| MeshError::Kernel {
            reason: "nft's JSON has no \"nftables\" list".into(),
        })?;
    let mut counts = HashMap::new();
    for rule in objects.iter().filter_map(|object| object.get("rule")) {
        let Some(chain) = rule["chain"]
            .as_str()
            .filter(|chain| chain.starts_with("ep_"))
        else {
            continue;
        };
        let packets = rule["expr"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|expr| expr["counter"]["packets"].as_u64());
        if let Some(packets) = packets {
            *counts.entry(chain.to_string()).or_insert(0) += packets;
        }
    }
    Ok(counts)
}

/// The nft script that makes table `table` hold exactly `ports`, replacing whatever it
/// held, in one transaction (`nft -f` applies a script atomically). Ports that
/// `can_carry` refuses are left out, so they stay with the userspace listener.
pub fn render(table: &str, listen_ip: IpAddr, ports: &[KernelPort]) -> String {
    let carried: Vec<&KernelPort> = ports
        .iter()
        .filter(|port| can_carry(listen_ip, &port.endpoints))
        .collect();
    let mut script = String::new();
    // `add` then `delete` removes a table whether or not it existed, inside the same
    // transaction as the new definition: there is no instant without rules.
    let _ = writeln!(script, "add table ip {table}");
    let _ = writeln!(script, "delete table ip {table}");
    let _ = writeln!(script, "table ip {table} {{");
    for port in &carried {
        // One chain per endpoint, so its counter says how many connections it was given
        // (a nat chain sees only the first packet of a connection).
        let mut targets = String::new();
        for (index, endpoint) in port.endpoints.iter().enumerate() {
            let chain = endpoint_chain(port.published, index);
            let _ = writeln!(script, "  chain {chain} {{");
            let _ = writeln!(script, "    meta l4proto tcp counter dnat to {endpoint}");
            let _ = writeln!(script, "  }}");
            if index > 0 {
                targets.push_str(", ");
            }
            let _ = write!(targets, "{index} : goto {chain}");
        }
        let _ = writeln!(script, "  chain port_{} {{", port.published);
        let _ = writeln!(
            script,
            "    ct mark set {FLOW_MARK:#x} numgen inc mod {} vmap {{ {targets} }}",
            port.endpoints.len()
        );
        let _ = writeln!(script, "  }}");
    }
    // An unspecified listen address means "every local address", as the socket does.
    // Loopback destinations are left to the listener: a connection from 127.0.0.1
    // rewritten to another node could not leave the host (the kernel will not route a
    // 127/8 source out of a real interface).
    let (key_type, dispatch) = if listen_ip.is_unspecified() {
        (
            "inet_service",
            "fib daddr type local ip daddr != 127.0.0.0/8 tcp dport vmap @ports",
        )
    } else {
        (
            "ipv4_addr . inet_service",
            "ip daddr . tcp dport vmap @ports",
        )
    };
    let key = |published: u16| {
        if listen_ip.is_unspecified() {
            published.to_string()
        } else {
            format!("{listen_ip} . {published}")
        }
    };
    let _ = writeln!(script, "  map ports {{");
    let _ = writeln!(script, "    type {key_type} : verdict");
    if !carried.is_empty() {
        let elements: Vec<String> = carried
            .iter()
            .map(|port| format!("{} : goto port_{}", key(port.published), port.published))
            .collect();
        let _ = writeln!(script, "    elements = {{ {} }}", elements.join(", "));
    }
    let _ = writeln!(script, "  }}");
    for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
        let _ = writeln!(script, "  chain {chain} {{");
        // -100 is the dstnat priority, where DNAT belongs (nft 1.0 accepts the name only
        // on some hooks, the number everywhere).
        let _ = writeln!(
            script,
            "    type nat hook {hook} priority -100; policy accept;"
        );
        let _ = writeln!(script, "    {dispatch}");
        let _ = writeln!(script, "  }}");
    }
    let _ = writeln!(script, "  chain postrouting {{");
    let _ = writeln!(
        script,
        "    type nat hook postrouting priority 100; policy accept;"
    );
    let _ = writeln!(
        script,
        "    ct mark {FLOW_MARK:#x} oifname != \"lo\" masquerade"
    );
    let _ = writeln!(script, "  }}");
    let _ = writeln!(script, "}}");
    script
}

/// The node's table in the kernel. Applying replaces it whole; `remove` (or the mesh's
/// shutdown) deletes it.
#[derive(Debug)]
pub struct NftTable {
    name: String,
}

impl NftTable {
    pub fn new(name: String) -> Self {
        NftTable { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `script` through `nft -f -` (one transaction: all or nothing).
    pub async fn apply(&self, script: &str) -> Result<(), MeshError> {
        run_nft(script).await
    }

    /// The connection count of every endpoint chain (see `parse_counters`).
    pub async fn read_counters(&self) -> Result<HashMap<String, u64>, MeshError> {
        let listing = nft(&["-j", "list", "table", "ip", &self.name], None).await?;
        parse_counters(&listing)
    }

    /// Whether the table is in the kernel (false also when nft cannot be run).
    pub async fn exists(&self) -> bool {
        nft(&["list", "table", "ip", &self.name], None)
            .await
            .is_ok()
    }

    /// Deletes the table if it exists.
    pub async fn remove(&self) -> Result<(), MeshError> {
        let name = &self.name;
        run_nft(&format!("add table ip {name}\ndelete table ip {name}\n")).await
    }

    /// `remove` for places that cannot wait (drop of the mesh without a shutdown).
    pub fn remove_blocking(&self) {
        let name = &self.name;
        let script = format!("add table ip {name}\ndelete table ip {name}\n");
        let spawned = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut child) = spawned {
            if let Some(mut stdin) = child.stdin.take() {
                use std::io::Write as _;
                let _ = stdin.write_all(script.as_bytes());
            }
            let _ = child.wait();
        }
    }
}

/// Deletes the table a mesh on `listen_ip` would own, if there is one and this process
/// may: for a mesh started without the kernel path after one that had it was killed.
/// Silent when there is nothing to delete or no right to.
pub async fn remove_stale(listen_ip: IpAddr) {
    if listen_ip.is_ipv6() {
        return;
    }
    let table = NftTable::new(table_name(listen_ip));
    if table.exists().await && table.remove().await.is_ok() {
        tracing::warn!(
            table = table.name(),
            "removed the kernel rules a previous run left behind"
        );
    }
}

/// Checks that the kernel path can work here: an IPv4 listen address, forwarding on (a
/// connection to a task on another node is forwarded by this node), and the right to
/// manage nftables (root or CAP_NET_ADMIN, the `nft` command, nf_tables in the kernel),
/// tried by creating and deleting a scratch table.
pub async fn probe(listen_ip: IpAddr) -> Result<(), MeshError> {
    if listen_ip.is_ipv6() {
        return Err(MeshError::Kernel {
            reason: format!(
                "the nftables path carries IPv4 only, and the mesh listens on {listen_ip}"
            ),
        });
    }
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .map(|value| value.trim() == "1")
        .unwrap_or(false);
    if !forwarding {
        return Err(MeshError::Kernel {
            reason: "net.ipv4.ip_forward is off, so connections sent to tasks on other nodes would be dropped; enable it (sysctl -w net.ipv4.ip_forward=1)".into(),
        });
    }
    let name = format!("{}_probe", table_name(listen_ip));
    run_nft(&format!(
        "add table ip {name}\ndelete table ip {name}\nadd table ip {name}\ndelete table ip {name}\n"
    ))
    .await
}

/// Longest an `nft` run may take; a hung one must not hold the mesh's update lock.
const NFT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn run_nft(script: &str) -> Result<(), MeshError> {
    nft(&["-f", "-"], Some(script)).await.map(drop)
}

/// Runs `nft ARGS`, with `stdin` as its input when given, within `NFT_TIMEOUT`; its
/// standard output when it succeeds.
async fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, MeshError> {
    tokio::time::timeout(NFT_TIMEOUT, nft_untimed(args, stdin))
        .await
        .unwrap_or_else(|_elapsed| {
            Err(MeshError::Kernel {
                reason: format!(
                    "nft {} did not finish within {NFT_TIMEOUT:?}",
                    args.join(" ")
                ),
            })
        })
}

async fn nft_untimed(args: &[&str], stdin: Option<&str>) -> Result<String, MeshError> {
    let kernel_error = |reason: String| MeshError::Kernel { reason };
    let mut child = tokio::process::Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| kernel_error(format!("cannot run nft: {error}")))?;
    if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(script.as_bytes())
            .await
            .map_err(|error| kernel_error(format!("cannot write to nft: {error}")))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|error| kernel_error(format!("nft did not finish: {error}")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(kernel_error(format!(
            "nft {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(published: u16, endpoints: &[&str]) -> KernelPort {
        KernelPort {
            published,
            endpoints: endpoints.iter().map(|addr| addr.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn a_port_becomes_a_round_robin_dnat_behind_the_address_and_port() {
        let listen: IpAddr = "127.0.0.9".parse().unwrap();
        let script = render(
            "hoist_mesh_127_0_0_9",
            listen,
            &[port(8080, &["10.0.0.1:80", "10.0.0.2:8081"])],
        );
        assert!(script.starts_with(
            "add table ip hoist_mesh_127_0_0_9\ndelete table ip hoist_mesh_127_0_0_9\n"
        ));
        assert!(script.contains(&format!(
            "ct mark set {FLOW_MARK:#x} numgen inc mod 2 vmap {{ 0 : goto ep_8080_0, 1 : goto ep_8080_1 }}"
        )));
        assert!(script
            .contains("chain ep_8080_0 {\n    meta l4proto tcp counter dnat to 10.0.0.1:80\n"));
        assert!(script
            .contains("chain ep_8080_1 {\n    meta l4proto tcp counter dnat to 10.0.0.2:8081\n"));
        assert!(script.contains("elements = { 127.0.0.9 . 8080 : goto port_8080 }"));
        assert_eq!(
            script.matches("ip daddr . tcp dport vmap @ports").count(),
            2
        );
        assert!(script.contains(&format!(
            "ct mark {FLOW_MARK:#x} oifname != \"lo\" masquerade"
        )));
    }

    #[test]
    fn an_unspecified_listen_address_matches_every_local_address() {
        let script = render(
            "t",
            "0.0.0.0".parse().unwrap(),
            &[port(9000, &["10.0.0.1:80"])],
        );
        assert!(script.contains("type inet_service : verdict"));
        assert!(script.contains("elements = { 9000 : goto port_9000 }"));
        assert_eq!(
            script
                .matches("fib daddr type local ip daddr != 127.0.0.0/8 tcp dport vmap @ports")
                .count(),
            2
        );
    }

    #[test]
    fn ports_the_kernel_cannot_carry_are_left_to_the_listener() {
        let listen: IpAddr = "127.0.0.1".parse().unwrap();
        let script = render(
            "t",
            listen,
            &[
                port(1, &[]),
                port(2, &["[::1]:80"]),
                port(3, &["10.0.0.1:80"]),
            ],
        );
        assert!(!script.contains("port_1 "));
        assert!(!script.contains("port_2 "));
        assert!(script.contains("chain port_3 {"));
        assert!(script.contains("elements = { 127.0.0.1 . 3 : goto port_3 }"));
        // With nothing to carry the table still exists, empty, so a stale one is replaced.
        let empty = render("t", listen, &[port(1, &[])]);
        assert!(!empty.contains("elements"));
        assert!(empty.contains("map ports {"));
        assert!(!can_carry(
            "::1".parse().unwrap(),
            &["[::1]:80".parse().unwrap()]
        ));
    }

    #[test]
    fn endpoint_counters_are_read_from_nft_json() {
        // Trimmed from `nft -j list table` of nftables 1.0.6.
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "ip", "name": "t", "handle": 1}},
            {"rule": {"family": "ip", "table": "t", "chain": "ep_9_0", "handle": 6, "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
                {"counter": {"packets": 7, "bytes": 420}},
                {"dnat": {"addr": "127.0.0.1", "port": 19001}}]}},
            {"rule": {"family": "ip", "table": "t", "chain": "ep_9_1", "handle": 7, "expr": [
                {"counter": {"packets": 0, "bytes": 0}}]}},
            {"rule": {"family": "ip", "table": "t", "chain": "output", "handle": 10, "expr": [
                {"counter": {"packets": 99, "bytes": 0}}]}}]}"#;
        let counts = parse_counters(json).unwrap();
        assert_eq!(counts.len(), 2);
        assert_eq!(counts["ep_9_0"], 7);
        assert_eq!(counts["ep_9_1"], 0);
        assert!(parse_counters("not json").is_err());
        assert!(parse_counters("{}").is_err());
    }

    #[test]
    fn table_names_are_per_listen_address_and_valid_identifiers() {
        assert_eq!(
            table_name("127.0.3.4".parse().unwrap()),
            "hoist_mesh_127_0_3_4"
        );
        assert_eq!(table_name("::1".parse().unwrap()), "hoist_mesh___1");
    }
}
