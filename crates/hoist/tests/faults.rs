//! The fault-injection suite, short form: real daemons, SIGKILL and SIGSTOP, and
//! partitions through the test kit's TCP fault proxy, under a recorded client workload;
//! every checker must report 0 violations, in the final state and at every instant the
//! test kit's watcher sampled (slots twice, tasks on Down or drained nodes, replicas short
//! after the settle point).
//!
//! Every scenario is seeded, with the same seed on every run ([`SEED`]) unless
//! `HOIST_FAULT_SEED` says otherwise: it prints `HOIST_FAULT_SEED=<n>`, and
//! `HOIST_FAULT_SEED=<n> cargo test -p hoist --test faults <scenario>` replays its
//! choices of victims and timings. The long form is
//! `cargo build --release -p hoist && cargo run --release -p hoist-bench -- faults --seeds 5 --kills 30`.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hoist_testkit::hoist_bin;
use hoist_testkit::{fault_seed_or, run_scenario, Scenario, Size};

/// The short form's seed: fixed, so that CI runs are comparable and replayable.
const SEED: u64 = 20261202;

fn no_violations(scenario: Scenario) {
    let seed = fault_seed_or(SEED);
    let report = run_scenario(hoist_bin!(), scenario, seed, Size::short());
    eprintln!("{}", report.render());
    assert_eq!(
        report.violations(),
        0,
        "{} found violations (report above); replay with HOIST_FAULT_SEED={seed}",
        scenario.name()
    );
}

#[test]
fn leader_sigkilled_several_times_under_write_load() {
    no_violations(Scenario::LeaderKills);
}

#[test]
fn leader_isolated_in_a_minority_or_paused_never_serves_a_stale_read() {
    no_violations(Scenario::LeaderIsolated);
}

#[test]
fn worker_partitioned_and_healed_never_runs_a_slot_twice() {
    no_violations(Scenario::WorkerPartition);
}

#[test]
fn managers_sigkilled_during_writes_lose_no_acknowledged_change() {
    no_violations(Scenario::ManagerKills);
}

#[test]
fn quorum_loss_refuses_writes_and_force_new_cluster_keeps_every_acknowledged_change() {
    no_violations(Scenario::QuorumLoss);
}
