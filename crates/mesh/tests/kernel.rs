//! The nftables data path on real sockets and the real kernel: round-robin forwarding,
//! endpoint updates, draining, health checks and clean-up. Needs root and `nft`; without
//! them each test says so and passes, unless HOIST_REQUIRE_NFTABLES is set (as `.ci/run`
//! does when it runs as root), where it fails.
//!
//! Each test listens on its own 127.77.0.x address, which names its own nftables table,
//! so the tests run in parallel with each other and with the userspace tests on 127.0.0.1.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use hoist_mesh::{kernel, HealthCheck, L4Dataplane, Mesh, MeshConfig};
use tokio::net::TcpStream;

fn kernel_usable() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .map(|line| line.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    let nft = std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if root && nft {
        return true;
    }
    let why = format!("needs root and nft (root: {root}, nft: {nft})");
    if !root && std::env::var_os("HOIST_REQUIRE_ROOT").is_some() {
        panic!("HOIST_REQUIRE_ROOT is set but the kernel data path {why}");
    }
    if std::env::var_os("HOIST_REQUIRE_NFTABLES").is_some() {
        panic!("HOIST_REQUIRE_NFTABLES is set but the kernel data path {why}");
    }
    eprintln!("skipping: the kernel data path {why}");
    false
}

fn table_exists(listen_ip: IpAddr) -> bool {
    std::process::Command::new("nft")
        .args(["list", "table", "ip", &kernel::table_name(listen_ip)])
        .output()
        .is_ok_and(|output| output.status.success())
}

async fn kernel_mesh(listen_ip: &str, services: Vec<hoist_mesh::ServiceRoute>) -> Mesh {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let mesh = Mesh::new(MeshConfig {
        listen_ip: listen_ip.parse().unwrap(),
        l4_dataplane: L4Dataplane::Nftables,
        ..test_config()
    })
    .unwrap();
    let report = mesh.set_services(services).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    mesh
}

/// One request on a new connection; the body names the backend that answered.
async fn one_connection(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (status, body) = raw_exchange(
        &mut stream,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_forwards_round_robin_follows_updates_and_keeps_draining_flows() {
    if !kernel_usable() {
        return;
    }
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let port = free_port();
    let listen = "127.77.0.1";
    let mesh = kernel_mesh(
        listen,
        vec![tcp_service("db", port, vec![a.endpoint(), b.endpoint()])],
    )
    .await;
    let addr: SocketAddr = format!("{listen}:{port}").parse().unwrap();

    for _ in 0..20 {
        one_connection(addr).await;
    }
    assert_eq!((a.hits(), b.hits()), (10, 10), "round robin over two");
    let accepted = metric(
        &mesh.render_metrics(),
        "hoist_mesh_port_connections_total",
        "",
    );
    assert_eq!(
        accepted,
        Some(0.0),
        "the mesh's own listener saw connections the kernel should have forwarded"
    );
    // The kernel's per-endpoint counters reach the metrics within a couple of seconds.
    let counted = wait_until(Duration::from_secs(10), || {
        let text = mesh.render_metrics();
        ["task-a", "task-b"].iter().all(|id| {
            metric(
                &text,
                "hoist_mesh_endpoint_connections_total",
                &format!("endpoint=\"{id}\""),
            ) == Some(10.0)
        })
    })
    .await;
    assert!(counted, "metrics:\n{}", mesh.render_metrics());

    // A keep-alive connection to a, then a drains: new connections go to b only, the open
    // one keeps being served by a.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    let mut kept_backend = String::new();
    for _ in 0..2 {
        let (status, body) = raw_exchange(&mut kept, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(status, 200);
        kept_backend = body;
        if kept_backend == "a" {
            break;
        }
        kept = TcpStream::connect(addr).await.unwrap();
    }
    assert_eq!(kept_backend, "a", "two new connections in a row went to b");
    mesh.set_endpoints("db", &[a.draining_endpoint(), b.endpoint()])
        .unwrap();
    let drained = wait_until_async(Duration::from_secs(5), || async {
        let mut answers = Vec::new();
        for _ in 0..6 {
            answers.push(one_connection(addr).await);
        }
        answers.iter().all(|backend| backend == "b")
    })
    .await;
    assert!(drained, "new connections still reach the draining endpoint");
    let (status, body) = raw_exchange(&mut kept, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "a"),
        "the drained flow was cut"
    );

    mesh.shutdown().await;
    assert!(
        !table_exists(listen.parse().unwrap()),
        "the mesh's nftables table outlived its shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_its_health_check_leaves_the_kernel_path() {
    if !kernel_usable() {
        return;
    }
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let port = free_port();
    let listen = "127.77.0.2";
    let mut service = tcp_service("db", port, vec![a.endpoint(), b.endpoint()]);
    service.health = Some(HealthCheck {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        fall: 1,
        rise: 1,
        ..HealthCheck::default()
    });
    let mesh = kernel_mesh(listen, vec![service]).await;
    let addr: SocketAddr = format!("{listen}:{port}").parse().unwrap();
    for _ in 0..4 {
        one_connection(addr).await;
    }
    assert!(a.hits() > 0 && b.hits() > 0);

    a.kill();
    let hits_before = b.hits();
    let moved = wait_until_async(Duration::from_secs(5), || async {
        // A refused connection (still routed to a) is what the wait is for.
        let mut all_b = true;
        for _ in 0..4 {
            match TcpStream::connect(addr).await {
                Ok(mut stream) => {
                    let answer = raw_exchange(
                        &mut stream,
                        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    )
                    .await;
                    all_b &= matches!(answer, Ok((200, ref body)) if body == "b");
                }
                Err(_) => all_b = false,
            }
        }
        all_b
    })
    .await;
    assert!(moved, "connections still reach the dead endpoint");
    assert!(b.hits() > hits_before);
    drop(mesh);
    // Dropping the mesh without a shutdown removes the rules too.
    assert!(!table_exists(listen.parse().unwrap()));
}

/// `wait_until` for conditions that need to await.
async fn wait_until_async<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `nft -c` checks a script against the kernel without applying it.
fn nft_accepts(script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-c", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| error.to_string())?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .map_err(|error| error.to_string())?;
    let output = child
        .wait_with_output()
        .map_err(|error| error.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).to_string())
    }
}

#[test]
fn every_shape_of_ruleset_is_accepted_by_nft() {
    if !kernel_usable() {
        return;
    }
    let many: Vec<kernel::KernelPort> = (1..=300u16)
        .map(|port| kernel::KernelPort {
            published: 20000 + port,
            endpoints: (0..(port % 5))
                .map(|host| SocketAddr::from(([10, 1, (port % 250) as u8, host as u8 + 1], port)))
                .collect(),
        })
        .collect();
    for listen in ["0.0.0.0", "127.77.0.3", "10.2.3.4"] {
        let listen: IpAddr = listen.parse().unwrap();
        for ports in [&many[..], &many[..1], &[]] {
            let script = kernel::render("hoist_mesh_check", listen, ports);
            if let Err(error) = nft_accepts(&script) {
                panic!(
                    "nft refused the ruleset for {listen} with {} ports: {error}\n{script}",
                    ports.len()
                );
            }
        }
    }
}
