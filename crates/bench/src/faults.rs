//! `hoist-bench faults [--seeds N] [--seed S] [--kills N] [--scenario NAME]`: the long
//! form of the fault-injection suite (`crates/hoist/tests/faults.rs` is the short one).
//!
//! Runs every scenario of `hoist_testkit::faults` (or only NAME) once per seed, with
//! `--kills` SIGKILLs of managers during writes (and a third as many leader kills), on
//! daemons of the release `hoist` binary next to this one, then prints a table of
//! scenarios x checker violations with timings ("replicas", "slot twice" and
//! "down/drained" count what the final state shows and what the watcher saw at any
//! sampled instant). Seeds are S, S+1, ... (S defaults to
//! `HOIST_FAULT_SEED`, else random); any row replays with
//! `HOIST_FAULT_SEED=<seed> cargo test -p hoist --test faults` (short form) or
//! `--seed <seed> --seeds 1 --scenario NAME` here. Exits non-zero if anything was
//! violated; the full report of every failing run is printed above the table.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use anyhow::{bail, Context};
use hoist_testkit::check::CHECKERS;
use hoist_testkit::{fault_seed, run_scenario, Report, Scenario, Size};

fn seconds(duration: Option<Duration>) -> String {
    duration.map_or("-".to_string(), |took| format!("{:.2}", took.as_secs_f64()))
}

/// One row of the table; `Err` when the scenario could not even run.
fn row(scenario: Scenario, seed: u64, report: &Result<Report, String>) -> Vec<String> {
    let mut cells = vec![scenario.name().to_string(), seed.to_string()];
    match report {
        Ok(report) => {
            cells.extend(
                CHECKERS
                    .iter()
                    .map(|checker| report.count(checker).to_string()),
            );
            cells.push(format!(
                "{}/{}/{}",
                report.acked_writes, report.failed_writes, report.reads
            ));
            let key_timing = match scenario {
                Scenario::LeaderKills => report.median("leader SIGKILL -> new leader"),
                Scenario::LeaderIsolated => {
                    report.median("leader isolated -> majority write acknowledged")
                }
                Scenario::WorkerPartition => report.median("worker cut -> Down and replaced"),
                Scenario::ManagerKills => report.median("restart -> follows a leader"),
                Scenario::QuorumLoss => report.median("force-new-cluster -> write accepted"),
            };
            cells.push(seconds(key_timing));
            cells.push(seconds(report.median("settle")));
            cells.push(format!("{:.1}", report.elapsed.as_secs_f64()));
        }
        Err(panic) => {
            cells.extend(CHECKERS.iter().map(|_| "-".to_string()));
            cells.push(format!("PANIC: {panic}"));
            cells.extend(["-".to_string(), "-".to_string(), "-".to_string()]);
        }
    }
    cells
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|arg| arg == name)
        .and_then(|index| args.get(index + 1))
        .map(String::as_str)
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let bin = super::hoist_binary()?;
    let seeds = super::arg_value(args, "--seeds", 3)?;
    let kills = super::arg_value(args, "--kills", 30)?;
    let first_seed = match flag(args, "--seed") {
        Some(text) => text.parse().context("--seed needs a number")?,
        None => fault_seed(),
    };
    let scenarios: Vec<Scenario> = match flag(args, "--scenario") {
        Some(name) => match Scenario::from_name(name) {
            Some(scenario) => vec![scenario],
            None => {
                let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                bail!("unknown scenario {name:?}; known: {}", known.join(", "))
            }
        },
        None => Scenario::ALL.to_vec(),
    };
    let size = Size::long(kills);
    println!(
        "fault suite: {} scenarios x {seeds} seeds from {first_seed}; {} manager kills, {} leader kills per run",
        scenarios.len(),
        size.manager_kills,
        size.leader_kills
    );
    let mut rows = Vec::new();
    let mut violations = 0;
    for seed in first_seed..first_seed + seeds as u64 {
        for scenario in &scenarios {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                run_scenario(&bin, *scenario, seed, size)
            }))
            .map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                    .unwrap_or_else(|| "unknown panic".to_string())
            });
            match &outcome {
                Ok(report) if report.violations() > 0 => {
                    violations += report.violations();
                    println!("{}", report.render());
                }
                Ok(_) => {}
                Err(panic) => {
                    violations += 1;
                    println!("{} (seed {seed}) panicked: {panic}", scenario.name());
                }
            }
            rows.push(row(*scenario, seed, &outcome));
        }
    }
    let mut header = vec!["scenario", "seed"];
    header.extend(CHECKERS);
    header.extend(["acked/indet./reads", "key timing s", "settle s", "total s"]);
    println!();
    crate::print_table(&header, &rows);
    println!();
    println!("key timing: leader-kills = SIGKILL -> new leader; leader-isolated = isolation -> majority write acknowledged; worker-partition = cut -> Down and replaced; manager-kills = restart -> follows a leader; quorum-loss = force-new-cluster -> write accepted (medians).");
    if violations > 0 {
        eprintln!("{violations} violations (reports above the table)");
        std::process::exit(1);
    }
    Ok(())
}
