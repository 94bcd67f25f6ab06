//! The `hoist` binary: parses the command line and runs the daemon, or a client command
//! against one. This is the only place that picks concrete implementations and wires
//! the crates together.

mod daemon;
mod demo;
mod hello;

use clap::Parser;
use hoist_cli::{Cli, Command};

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOIST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=off"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("hoist: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Daemon(args) => {
                init_tracing();
                daemon::run(args).await
            }
            Command::Hello(args) => {
                init_tracing();
                hello::run(args).await
            }
            Command::Demo(args) => demo::run(args).await,
            command => hoist_cli::run_client(cli.host.as_deref(), command).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of our output went away (`| head -1`): it has all it wanted.
        Err(err) if err.downcast_ref::<hoist_cli::StdoutClosed>().is_some() => {
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("Error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
