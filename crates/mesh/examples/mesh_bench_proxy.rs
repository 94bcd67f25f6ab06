//! The mesh as a standalone proxy, for benchmarks (`bench/mesh/run.sh`) and manual tries:
//! one service on one published port, forwarding to the backends named on the command
//! line, on a single-threaded tokio runtime (one core, like the one nginx worker and the
//! one HAProxy thread it is compared with).
//!
//! Usage: `mesh_bench_proxy --protocol tcp|http --port 8080 --backend 127.0.0.1:9001
//! [--backend ...] [--balancing least|p2c] [--dataplane userspace|nftables]`. Stops on
//! SIGINT or SIGTERM. With `--dataplane nftables` (root only) a `tcp` port is forwarded by
//! the kernel and this process only keeps the rules in place.
//!
//! Knows only the public `Mesh` API, as the daemon does.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::ExitCode;

use hoist_mesh::{
    Balancing, Endpoint, EndpointState, L4Dataplane, Mesh, MeshConfig, Protocol, ServiceRoute,
};

struct Args {
    protocol: Protocol,
    port: u16,
    backends: Vec<SocketAddr>,
    balancing: Balancing,
    dataplane: L4Dataplane,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        protocol: Protocol::Tcp,
        port: 0,
        backends: Vec::new(),
        balancing: Balancing::LeastConnections,
        dataplane: L4Dataplane::Userspace,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--protocol" => {
                args.protocol = match value.as_str() {
                    "tcp" => Protocol::Tcp,
                    "http" => Protocol::Http,
                    other => return Err(format!("unknown protocol {other}")),
                }
            }
            "--port" => args.port = value.parse().map_err(|e| format!("--port: {e}"))?,
            "--backend" => args
                .backends
                .push(value.parse().map_err(|e| format!("--backend: {e}"))?),
            "--balancing" => {
                args.balancing = match value.as_str() {
                    "least" => Balancing::LeastConnections,
                    "p2c" => Balancing::PowerOfTwoChoices,
                    other => return Err(format!("unknown balancing {other}")),
                }
            }
            "--dataplane" => args.dataplane = value.parse()?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.port == 0 || args.backends.is_empty() {
        return Err("--port and at least one --backend are required".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("mesh_bench_proxy: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mesh_bench_proxy: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let config = MeshConfig {
        listen_ip: "127.0.0.1".parse().expect("a literal address"),
        balancing: args.balancing,
        l4_dataplane: args.dataplane,
        ..MeshConfig::default()
    };
    let mesh = match Mesh::new(config) {
        Ok(mesh) => mesh,
        Err(error) => {
            eprintln!("mesh_bench_proxy: {error}");
            return ExitCode::FAILURE;
        }
    };
    let endpoints = args
        .backends
        .iter()
        .enumerate()
        .map(|(backend_idx, addr)| Endpoint {
            id: format!("backend-{backend_idx}"),
            addr: *addr,
            state: EndpointState::Active,
        })
        .collect();
    let service = ServiceRoute {
        service_id: "bench".into(),
        service_name: "bench".into(),
        published: args.port,
        protocol: args.protocol,
        routes: vec![],
        health: None,
        endpoints,
    };
    match mesh.set_services(vec![service]).await {
        Ok(report) if report.failed.is_empty() => {}
        Ok(report) => {
            for error in report.failed {
                eprintln!("mesh_bench_proxy: {error}");
            }
            return ExitCode::FAILURE;
        }
        Err(error) => {
            eprintln!("mesh_bench_proxy: {error}");
            return ExitCode::FAILURE;
        }
    }
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                eprintln!("mesh_bench_proxy: cannot watch SIGTERM: {error}");
                return ExitCode::FAILURE;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    mesh.shutdown().await;
    ExitCode::SUCCESS
}
