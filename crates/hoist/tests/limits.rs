//! Bounded input and bounded connections, through a real daemon: request bodies over a
//! route's limit, join attempts over the rate, slow and idle clients of the control
//! listener.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use hoist_testkit::hoist_bin;
use hoist_testkit::{tls_stream, Cluster, ClusterOptions};

/// A field of `/proc/PID/status` in KiB (VmHWM: the peak resident set).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The status line of what the server answered on `stream`, or what ended it.
fn read_status_line(stream: &mut impl Read) -> String {
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                if response.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(err) if response.is_empty() => return format!("read failed: {err}"),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// POSTs a 100 MB body to `/v1/join` without a certificate (declared, or chunked with
/// no length), writing until the server stops taking it; returns its status line.
fn post_100_mb(addr: &str, chunked: bool) -> String {
    const TOTAL: usize = 100 * 1024 * 1024;
    let mut tls = tls_stream(addr).expect("TLS session without a certificate");
    tls.sock
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let head = if chunked {
        "POST /v1/join HTTP/1.1\r\nHost: hoist\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
    } else {
        format!("POST /v1/join HTTP/1.1\r\nHost: hoist\r\nContent-Type: application/json\r\nContent-Length: {TOTAL}\r\n\r\n")
    };
    tls.write_all(head.as_bytes()).expect("request head");
    let chunk = vec![b' '; 256 * 1024];
    let mut sent = 0;
    while sent < TOTAL {
        let written = if chunked {
            tls.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .and_then(|()| tls.write_all(&chunk))
                .and_then(|()| tls.write_all(b"\r\n"))
        } else {
            tls.write_all(&chunk)
        };
        if written.is_err() {
            // The server answered and stopped reading, or closed: what it said is
            // waiting to be read.
            break;
        }
        sent += chunk.len();
    }
    read_tls_status_line(&mut tls)
}

/// Like [`read_status_line`], reading TLS records straight from the socket: after a
/// refused write, rustls would first try to flush what it still holds, and fail.
fn read_tls_status_line(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
) -> String {
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tls.conn.read_tls(&mut tls.sock) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if response.is_empty() => return format!("read failed: {err}"),
            Err(_) => break,
        }
        if let Err(err) = tls.conn.process_new_packets() {
            return format!("TLS failed: {err}");
        }
        while let Ok(n) = tls.conn.reader().read(&mut buf) {
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
        }
        if response.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
fn closed_within(stream: &mut impl Read, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    while started.elapsed() < within {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

/// Every task output file (`output.log` and its rotated copies) under `data_dir`.
fn output_files(data_dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![data_dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("output.log"))
            {
                found.push(path);
            }
        }
    }
    found
}

fn create_task(cluster: &Cluster, name: &str, script: &str) {
    cluster.hoist_ok(
        0,
        &[
            "service", "create", "--detach", "--name", name, "--driver", "process", "sh", "-c",
            script,
        ],
    );
}

/// A script that runs the real binary under `prlimit --nofile=256:256`, so the daemon
/// (and every CLI call) starts with 256 descriptors, soft and hard.
fn binary_under_fd_limit(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("hoist-256-fds");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec prlimit --nofile=256:256 {} \"$@\"\n",
            hoist_bin!().display()
        ),
    )
    .expect("writing the wrapper");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("wrapper mode");
    script
}

/// One manager started under `prlimit --nofile=256:256` with small caps, for every check
/// of this file: each is a function of its own, run in turn on the same cluster to keep
/// the suite short. (A worker cannot answer `node ls`, so the node under the limit is
/// the manager, which also serves the published ports.)
#[test]
fn bounded_input_and_connections() {
    let wrapper_dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(
        &binary_under_fd_limit(wrapper_dir.path()),
        ClusterOptions {
            managers: 1,
            extra_daemon_args: [
                "--control-header-timeout",
                "2s",
                "--log-max-size",
                "256KiB",
                "--log-max-files",
                "2",
                "--mesh-idle-timeout",
                "3s",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        },
    );
    let pid = cluster.nodes[0].pid().expect("daemon pid");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("open files line");
    assert!(
        open_files.split_whitespace().nth(3) == Some("256"),
        "{open_files}"
    );
    // Started first, so their output is written while the other checks run.
    create_task(
        &cluster,
        "chatty",
        "seq 1 200000; sleep 3; echo chatty-done; sleep 600",
    );
    create_task(
        &cluster,
        "longline",
        "head -c 100000 /dev/zero | tr '\\0' x; echo; echo after-long-line; sleep 600",
    );
    oversized_join_bodies_get_413_without_growing_memory(&cluster);
    // Before the join flood: its 429s would answer the slow join before its body.
    slow_bodies_and_connection_floods_are_closed(&cluster);
    join_floods_get_429(&cluster);
    slow_and_idle_control_clients_are_closed(&cluster);
    task_output_is_rotated_at_its_cap_and_long_lines_cut(&cluster);
    a_thousand_idle_connections_leave_the_node_working(&cluster);
    let log = std::fs::read_to_string(&cluster.nodes[0].log).unwrap_or_default();
    assert!(
        !log.contains("Too many open files"),
        "the daemon ran out of descriptors:\n{}",
        cluster.log_tail(0, 40)
    );
}

/// 100 MB bodies to the open join route: refused with 413, never buffered.
fn oversized_join_bodies_get_413_without_growing_memory(cluster: &Cluster) {
    let addr = cluster.nodes[0].listen_addr();
    let pid = cluster.nodes[0].pid().expect("manager pid");
    let peak_before = proc_status_kib(pid, "VmHWM");
    let declared = post_100_mb(&addr, false);
    assert!(declared.contains(" 413 "), "declared length: {declared}");
    let streamed = post_100_mb(&addr, true);
    assert!(streamed.contains(" 413 "), "chunked body: {streamed}");
    let peak_after = proc_status_kib(pid, "VmHWM");
    eprintln!(
        "manager VmHWM: {peak_before} KiB before two 100 MB join bodies, {peak_after} KiB after"
    );
    assert!(
        peak_after < peak_before + 16 * 1024,
        "peak RSS grew from {peak_before} KiB to {peak_after} KiB"
    );
    // The manager still answers.
    cluster.hoist_ok(0, &["node", "ls"]);
}

/// A join whose body trickles in (64 KiB declared, a byte every 300 ms) is closed at the
/// 2 s deadline, as a slow head is; connections from one address beyond its share (32
/// with 256 descriptors) are closed at once, and the node still answers.
fn slow_bodies_and_connection_floods_are_closed(cluster: &Cluster) {
    let addr = cluster.nodes[0].listen_addr();
    let mut slow = tls_stream(&addr).expect("TLS session");
    slow.sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    slow.write_all(
        b"POST /v1/join HTTP/1.1\r\nHost: hoist\r\nContent-Type: application/json\r\nContent-Length: 65536\r\n\r\n{",
    )
    .and_then(|()| slow.flush())
    .expect("join head");
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if slow.write_all(b" ").and_then(|()| slow.flush()).is_err() {
            break;
        }
        let until = Instant::now() + Duration::from_millis(300);
        let mut closed = false;
        while Instant::now() < until {
            match slow.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a slow join body was still open after 20 s"
        );
    }
    let answer = String::from_utf8_lossy(&answer);
    eprintln!("slow join body closed after {:?}", started.elapsed());
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed after {:?}, before the deadline: {answer}",
        started.elapsed()
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not received within"), "{answer}");

    // 40 bare connections from one address: the 8 over its share of 32 are closed at
    // once, the others when their handshake times out (2 s).
    let flood: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(&addr).expect("tcp connect"))
        .collect();
    let opened = Instant::now();
    let mut closed = vec![false; flood.len()];
    for stream in &flood {
        stream.set_nonblocking(true).expect("nonblocking");
    }
    // Looked at in rounds for 1 s: half the handshake timeout.
    while opened.elapsed() < Duration::from_secs(1) {
        for (stream, closed) in flood.iter().zip(closed.iter_mut()) {
            let mut byte = [0u8; 1];
            match (&*stream).read(&mut byte) {
                Ok(0) => *closed = true,
                Err(err) if err.kind() != ErrorKind::WouldBlock => *closed = true,
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let closed_at_once = closed.iter().filter(|closed| **closed).count();
    eprintln!("{closed_at_once} of 40 connections from one address closed within 1 s");
    assert!(
        closed_at_once >= 8,
        "{closed_at_once} of 40 connections from one address closed within 1 s"
    );
    drop(flood);
    cluster.hoist_ok(0, &["node", "ls"]);
}

/// Join attempts from one address beyond the burst: 429, and the cluster's membership
/// is unchanged.
fn join_floods_get_429(cluster: &Cluster) {
    let addr = cluster.nodes[0].listen_addr();
    let bad_join = r#"{"secret":"SWMTKN-wrong","hostname":"x","addr":"127.0.0.1:1","csr_pem":""}"#;
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let mut tls = tls_stream(&addr).expect("TLS session");
        let request = format!(
            "POST /v1/join HTTP/1.1\r\nHost: hoist\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{bad_join}",
            bad_join.len()
        );
        tls.write_all(request.as_bytes()).expect("join request");
        statuses.push(read_status_line(&mut tls));
    }
    assert!(
        statuses.iter().any(|status| status.contains(" 403 ")),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().any(|status| status.contains(" 429 ")),
        "{statuses:?}"
    );
    let nodes = cluster.node_ls(0).expect("node ls");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
}

/// Slowloris: a head sent one byte at a time is cut by the 2 s header timeout; an idle
/// TLS session and a bare TCP connection that never says hello too.
fn slow_and_idle_control_clients_are_closed(cluster: &Cluster) {
    let addr = cluster.nodes[0].listen_addr();
    let mut slow = tls_stream(&addr).expect("TLS session");
    slow.sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let started = Instant::now();
    let mut closed = false;
    for byte in b"GET /v1/info HTTP/1.1\r\nHost: hoist\r\nX-Slow: "
        .iter()
        .cycle()
    {
        if slow
            .write_all(&[*byte])
            .and_then(|()| slow.flush())
            .is_err()
        {
            closed = true;
            break;
        }
        if closed_within(&mut slow, Duration::from_millis(300)).is_some() {
            closed = true;
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a slow request head was still open after 20 s"
        );
    }
    assert!(closed);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed after {:?}, before the header timeout",
        started.elapsed()
    );

    let mut idle_tls = tls_stream(&addr).expect("TLS session");
    idle_tls
        .sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let mut idle_tcp = std::net::TcpStream::connect(&addr).expect("tcp connect");
    idle_tcp
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    assert!(
        closed_within(&mut idle_tls, Duration::from_secs(15)).is_some(),
        "an idle TLS session was still open after 15 s"
    );
    assert!(
        closed_within(&mut idle_tcp, Duration::from_secs(15)).is_some(),
        "a connection that never started TLS was still open after 15 s"
    );
    cluster.hoist_ok(0, &["node", "ls"]);
}

/// `chatty` printed about 1.2 MB: its output was rotated at the 256 KiB cap into one
/// copy, and what is kept stays within two files of the cap. `longline` printed a
/// 100,000-byte line: `service logs` shows it cut at 64 KiB, and the next line whole.
fn task_output_is_rotated_at_its_cap_and_long_lines_cut(cluster: &Cluster) {
    const CAP: u64 = 256 * 1024;
    let data_dir = &cluster.nodes[0].data_dir;
    let logs = hoist_testkit::wait_for("chatty's output rotated", Duration::from_secs(30), || {
        let logs = cluster.hoist_ok(0, &["service", "logs", "chatty"]);
        let rotated = output_files(data_dir)
            .iter()
            .any(|path| path.to_string_lossy().ends_with("output.log.1"));
        (rotated && logs.contains("chatty-done")).then_some(logs)
    });
    // Rotation runs once a second; give it a moment past the last write, then every
    // file is within the cap and there is no third one.
    hoist_testkit::wait_for(
        "every output file within the cap",
        Duration::from_secs(10),
        || {
            output_files(data_dir)
                .iter()
                .all(|path| {
                    std::fs::metadata(path)
                        .map(|m| m.len() <= CAP)
                        .unwrap_or(true)
                })
                .then_some(())
        },
    );
    let files = output_files(data_dir);
    assert!(
        files
            .iter()
            .all(|path| !path.to_string_lossy().ends_with(".2")),
        "{files:?}"
    );
    let kept: u64 = files
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|metadata| metadata.len())
        .sum();
    // 1.2 MB printed, at most two files of the cap kept (longline's 100 kB included).
    assert!(
        kept <= 2 * CAP + 110_000,
        "{kept} bytes of output kept in {files:?}"
    );
    // The copy holds the newest output: the last of the numbers, not the first.
    let copy = files
        .iter()
        .filter(|path| path.to_string_lossy().ends_with("output.log.1"))
        .map(|path| std::fs::read_to_string(path).unwrap_or_default())
        .find(|text| text.contains("\n200000\n"))
        .expect("chatty's rotated copy with its last numbers");
    assert!(!copy.contains("\n2\n"), "the oldest output was kept");
    assert!(logs.contains("chatty-done"));

    let logs = hoist_testkit::wait_for("longline's output", Duration::from_secs(30), || {
        let logs = cluster.hoist_ok(0, &["service", "logs", "longline"]);
        logs.contains("after-long-line").then_some(logs)
    });
    let long = logs
        .lines()
        .find(|line| line.contains("xxxx"))
        .expect("the long line");
    let run = long.len() - long.trim_end_matches('x').len();
    assert_eq!(run, 64 * 1024, "the long line kept {run} x's");
}

/// `hello` services behind a `tcp` port (18080) and an `http` port (18081).
fn create_mesh_services(cluster: &Cluster) {
    let hello = hoist_bin!().display().to_string();
    for (name, publish) in [
        ("tcp-hello", "18080:80"),
        ("http-hello", "published=18081,target=80,protocol=http"),
    ] {
        cluster.hoist_ok(
            0,
            &[
                "service", "create", "--detach", "--name", name, "-p", publish, "--driver",
                "process", &hello, "hello",
            ],
        );
    }
    let mesh = format!("{}:18081", cluster.nodes[0].ip);
    hoist_testkit::wait_for("the http port answering", Duration::from_secs(30), || {
        hoist_testkit::http_get(&mesh, "limits-test", "/")
            .ok()
            .filter(|response| response.starts_with("HTTP/1.1 200"))
    });
}

/// Opens a TCP connection to `addr` from `source` (an address of the loopback network).
async fn connect_from(source: &str, addr: &str) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().expect("source address"))?;
    socket.connect(addr.parse().expect("mesh address")).await
}

/// One HTTP/1.1 GET from `source`; the status line.
async fn get_from(source: &str, addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = connect_from(source, addr).await else {
        return "connect failed".into();
    };
    let request = "GET / HTTP/1.1\r\nHost: limits-test\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return "write failed".into();
    }
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response));
    if !matches!(read.await, Ok(Ok(_))) {
        return "read failed".into();
    }
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// How many of `streams` the server has not closed (a read would block).
fn still_open(streams: &[tokio::net::TcpStream]) -> usize {
    let mut buf = [0u8; 64];
    streams
        .iter()
        .filter(|stream| {
            matches!(stream.try_read(&mut buf), Err(err) if err.kind() == ErrorKind::WouldBlock)
        })
        .count()
}

fn metric_sum(cluster: &Cluster, name: &str) -> u64 {
    use std::os::unix::net::UnixStream;
    let mut stream = UnixStream::connect(&cluster.nodes[0].socket).expect("control socket");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: hoist\r\nConnection: close\r\n\r\n"
    )
    .expect("metrics request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("metrics");
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// What the mesh may hold open on a daemon with 256 descriptors: a reserve of 128 for the
/// control plane, and two descriptors per forwarded connection out of the rest.
const MESH_WIDE_CAP: usize = 64;
/// One client address's share: half of the mesh-wide cap.
const PER_SOURCE_CAP: usize = MESH_WIDE_CAP / 2;
/// Client addresses the second flood comes from, and its connections from each: too few
/// for any address to reach its share.
const FLOOD_SOURCES: usize = 25;
const FLOOD_PER_SOURCE: usize = 20;
const _: () = assert!(FLOOD_PER_SOURCE < PER_SOURCE_CAP);

/// The loopback address of flood source `index` (an address no node of any test uses as
/// a client).
fn flood_source(index: usize) -> String {
    format!("127.0.{}.{}", 200 + index / 200, 1 + index % 200)
}

/// The first flood, from one client address: the connections it opened, how many the
/// mesh holds open, and when it began (each held connection is idle from its own start).
struct OneAddressFlood {
    opened_at: Instant,
    idle: Vec<tokio::net::TcpStream>,
    held: usize,
}

/// The flood sources whose connections in `spread` the server still holds open.
fn still_open_sources(spread: &[(usize, tokio::net::TcpStream)]) -> Vec<usize> {
    let mut buf = [0u8; 64];
    spread
        .iter()
        .filter(|(_, stream)| {
            matches!(stream.try_read(&mut buf), Err(err) if err.kind() == ErrorKind::WouldBlock)
        })
        .map(|(source, _)| *source)
        .collect::<Vec<usize>>()
}

/// 1,000 idle connections to the `tcp` port of a daemon with 256 descriptors. The first
/// 500 from one client address: the mesh holds its per-source share (half of its 64) and
/// closes the rest at once, and another client's HTTP requests succeed. The other 500
/// from 25 other addresses, 20 each, so none can reach its share: the mesh-wide cap
/// (what the descriptor reserve leaves) is what holds them, `hoist node ls` still answers, no endpoint is ejected,
/// and the idle connections are closed by the 3 s idle timeout, after which other
/// clients are served again.
fn a_thousand_idle_connections_leave_the_node_working(cluster: &Cluster) {
    create_mesh_services(cluster);
    let ip = cluster.nodes[0].ip;
    let tcp_port = format!("{ip}:18080");
    let http_port = format!("{ip}:18081");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let flood = flood_from_one_address(&tcp_port).await;
        others_are_served_meanwhile(cluster, &http_port, &flood).await;
        let spread = flood_from_many_addresses(cluster, &tcp_port, &flood.idle).await;
        the_idle_timeout_closes_them_all(cluster, &http_port, &flood, &spread).await;
    });
}

/// 500 connections from 127.0.0.1: the mesh closes what is over its per-source share at
/// once and holds the rest open.
async fn flood_from_one_address(tcp_port: &str) -> OneAddressFlood {
    // Before the first connect: each held connection is idle from its own start.
    let opened_at = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..500 {
        // A refused connection is closed by the server after the handshake; one the
        // kernel could not even queue fails here. Both count as turned away.
        if let Ok(stream) = connect_from("127.0.0.1", tcp_port).await {
            idle.push(stream);
        }
    }
    eprintln!("500 connections attempted in {:?}", opened_at.elapsed());
    // The mesh closes what is over its caps at once; what it holds stays open.
    let mut held = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        held = still_open(&idle);
        if held <= PER_SOURCE_CAP {
            break;
        }
    }
    eprintln!("{held} of {} idle connections held open", idle.len());
    assert!(
        (1..=PER_SOURCE_CAP).contains(&held),
        "{held} of {} idle connections held open",
        idle.len()
    );
    OneAddressFlood {
        opened_at,
        idle,
        held,
    }
}

/// The control plane and other clients still work meanwhile; no held connection closes
/// before the idle timeout, and no endpoint is ejected.
async fn others_are_served_meanwhile(cluster: &Cluster, http_port: &str, flood: &OneAddressFlood) {
    let nodes = cluster.node_ls(0).expect("node ls answers");
    assert_eq!(nodes.len(), 1);
    for attempt in 0..20 {
        let status = get_from("127.0.0.2", http_port).await;
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "HTTP request {attempt} from another client: {status}"
        );
    }
    let elapsed = flood.opened_at.elapsed();
    if elapsed < Duration::from_millis(2500) {
        assert_eq!(
            still_open(&flood.idle),
            flood.held,
            "held connections closed after {elapsed:?}, before the idle timeout"
        );
    }
    assert!(metric_sum(cluster, "hoist_mesh_port_refused_total") > 0);
    assert_eq!(
        metric_sum(cluster, "hoist_mesh_endpoint_ejections_total"),
        0
    );
}

/// 500 more from 25 other addresses, 20 each, taking turns: no address can reach
/// its share, so what closes the rest is the mesh-wide cap. The connections opened,
/// with the source each came from.
async fn flood_from_many_addresses(
    cluster: &Cluster,
    tcp_port: &str,
    idle: &[tokio::net::TcpStream],
) -> Vec<(usize, tokio::net::TcpStream)> {
    let spread_at = Instant::now();
    let mut spread = Vec::new();
    for attempt in 0..FLOOD_SOURCES * FLOOD_PER_SOURCE {
        let source = attempt % FLOOD_SOURCES;
        if let Ok(stream) = connect_from(&flood_source(source), tcp_port).await {
            spread.push((source, stream));
        }
    }
    eprintln!(
        "500 connections from {FLOOD_SOURCES} addresses attempted in {:?}",
        spread_at.elapsed()
    );
    let mut spread_held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        spread_held = still_open_sources(&spread);
        if spread_held.len() + still_open(idle) <= MESH_WIDE_CAP {
            break;
        }
    }
    let first_held = still_open(idle);
    let total_held = first_held + spread_held.len();
    eprintln!(
        "{total_held} connections held open: {first_held} from 127.0.0.1, {} from {} of the {FLOOD_SOURCES} other addresses",
        spread_held.len(),
        spread_held.iter().collect::<std::collections::BTreeSet<_>>().len()
    );
    assert!(
        total_held <= MESH_WIDE_CAP,
        "{total_held} connections held open, over the mesh-wide {MESH_WIDE_CAP}"
    );
    // More than one address's share is held, so the per-source cap alone is not
    // what holds them...
    assert!(
        total_held > PER_SOURCE_CAP,
        "only {total_held} connections held open"
    );
    // ...and, as no flood address can reach its share, those closed at once were
    // closed by the mesh-wide cap.
    assert!(
        spread_held.len() < spread.len(),
        "{} of {} connections from {FLOOD_SOURCES} addresses held open",
        spread_held.len(),
        spread.len()
    );
    let open_metric = metric_sum(cluster, "hoist_mesh_port_open_connections");
    assert!(
        open_metric <= MESH_WIDE_CAP as u64,
        "hoist_mesh_port_open_connections says {open_metric}"
    );
    // The descriptors in reserve keep the control plane working.
    let nodes = cluster
        .node_ls(0)
        .expect("node ls answers with the mesh full");
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        metric_sum(cluster, "hoist_mesh_endpoint_ejections_total"),
        0
    );
    spread
}

/// The idle timeout (3 s) closes every held connection, and none before it; nothing is
/// ejected, and there is room again: another client is served.
async fn the_idle_timeout_closes_them_all(
    cluster: &Cluster,
    http_port: &str,
    flood: &OneAddressFlood,
    spread: &[(usize, tokio::net::TcpStream)],
) {
    let OneAddressFlood {
        opened_at,
        idle,
        held,
    } = flood;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut first_close = None;
    loop {
        let open = still_open(idle);
        if open < *held && first_close.is_none() {
            first_close = Some(opened_at.elapsed());
        }
        if open == 0 && still_open_sources(spread).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} idle connections still open 20 s later"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first_close = first_close.unwrap_or_default();
    assert!(
        first_close >= Duration::from_millis(2500),
        "the first held connection closed after {first_close:?}, before the idle timeout"
    );
    assert_eq!(
        metric_sum(cluster, "hoist_mesh_endpoint_ejections_total"),
        0
    );
    cluster.node_ls(0).expect("node ls answers afterwards");
    // Room again: another client is served.
    for attempt in 0..5 {
        let status = get_from("127.0.0.2", http_port).await;
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "HTTP request {attempt} after the idle timeout: {status}"
        );
    }
}
