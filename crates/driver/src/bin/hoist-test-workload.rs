//! The docker driver tests' workload: the entrypoint of the images they build
//! (`tests/docker.rs`), one role per first argument. It exists for those tests only
//! and touches nothing of the driver: it is the program a container runs.
//!
//! - `serve`: answers every connection on `$PORT` with one line describing itself
//!   (task, service, node, port, the bind-mounted `/data/hello.txt`, whether `/data`
//!   is writable); ignores SIGTERM when `HOIST_TEST_IGNORE_TERM` is set.
//! - `exit`: a stderr line, then `line 1`..`line 5` on stdout, then exits with
//!   `HOIST_TEST_EXIT_CODE` (3 when unset).
//! - `sleep`: runs without listening on anything.
//! - `probe`: the health probe: succeeds when something listens on `$PORT` (8080).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

const DEFAULT_PORT: u16 = 8080;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| "-".to_owned())
}

fn port() -> u16 {
    std::env::var("PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(DEFAULT_PORT)
}

fn serve() -> ExitCode {
    if std::env::var_os("HOIST_TEST_IGNORE_TERM").is_some() {
        // SAFETY: installing SIG_IGN has no preconditions.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    }
    let port = port();
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("cannot listen on port {port}: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!("serving on {port}");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let data = std::fs::read_to_string("/data/hello.txt")
            .map(|text| text.trim().to_owned())
            .unwrap_or_else(|_| "-".to_owned());
        let writable = std::fs::write("/data/written-by-task", "x").is_ok();
        let reply = format!(
            "task={} service={} node={} port={port} data={data} writable={writable}\n",
            var("HOIST_TASK"),
            var("HOIST_SERVICE"),
            var("HOIST_NODE"),
        );
        let _ = stream.write_all(reply.as_bytes());
    }
    ExitCode::SUCCESS
}

fn exit() -> ExitCode {
    eprintln!("complaint on stderr");
    // The engine reads stdout and stderr separately; the pause keeps the stderr
    // line before the stdout ones in the log.
    std::thread::sleep(Duration::from_millis(300));
    for n_line in 1..=5 {
        println!("line {n_line}");
    }
    let code = std::env::var("HOIST_TEST_EXIT_CODE")
        .ok()
        .and_then(|code| code.parse().ok())
        .unwrap_or(3u8);
    ExitCode::from(code)
}

fn sleep() -> ExitCode {
    println!("sleeping");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn probe() -> ExitCode {
    if TcpStream::connect(("127.0.0.1", port())).is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("serve") => serve(),
        Some("exit") => exit(),
        Some("sleep") => sleep(),
        Some("probe") => probe(),
        other => {
            eprintln!("usage: hoist-test-workload serve|exit|sleep|probe (got {other:?})");
            ExitCode::from(2)
        }
    }
}
