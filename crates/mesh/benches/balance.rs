//! Micro-benchmark of the pure balancers: nanoseconds per pick for a few endpoint counts.
//! Run with `cargo bench -p hoist-mesh --bench balance`; a plain `main` (no criterion), so
//! it prints one line per case and needs nothing beyond the crate.
//!
//! Knows only the public, pure `balance` API: no sockets, no runtime.

use std::hint::black_box;
use std::time::Instant;

use hoist_mesh::{pick, Availability, Balancing, Candidate, SplitMix64};

fn main() {
    const PICKS: usize = 2_000_000;
    println!("{:<22} {:>9} {:>10}", "balancing", "endpoints", "ns/pick");
    for n_endpoints in [3usize, 10, 100, 1000] {
        // Uneven load and one endpoint in ten draining, as in a rolling update.
        let mut rng = SplitMix64::new(42);
        let endpoints: Vec<Candidate> = (0..n_endpoints)
            .map(|endpoint_idx| Candidate {
                active: (rng.next_u64() % 16) as u32,
                availability: if endpoint_idx % 10 == 9 {
                    Availability::Unavailable
                } else {
                    Availability::Ready
                },
            })
            .collect();
        for balancing in [Balancing::LeastConnections, Balancing::PowerOfTwoChoices] {
            let started = Instant::now();
            let mut checksum = 0usize;
            for cursor in 0..PICKS {
                let picked = pick(
                    balancing,
                    black_box(n_endpoints),
                    |i| endpoints[i],
                    cursor,
                    rng.next_u64(),
                );
                checksum = checksum.wrapping_add(picked.unwrap_or(0));
            }
            black_box(checksum);
            let ns_per_pick = started.elapsed().as_nanos() as f64 / PICKS as f64;
            println!(
                "{:<22} {:>9} {:>10.1}",
                format!("{balancing:?}"),
                n_endpoints,
                ns_per_pick
            );
        }
    }
}
