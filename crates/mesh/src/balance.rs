//! Choosing an endpoint: pure functions over a view of the endpoints.
//!
//! Owns: the balancing algorithms (least-connections with a round-robin tie-break, and
//! power-of-two-choices), the rule that draining and unhealthy endpoints are never chosen
//! and ejected ones only when nothing else is left, and the small seeded random source.
//!
//! Does not know: sockets, clocks, atomics or locks. The caller turns its endpoint table
//! into `Candidate`s (through a closure, so no allocation per pick) and passes the random
//! value and the round-robin cursor in. Same inputs, same answer.

use serde::{Deserialize, Serialize};

/// How an endpoint is chosen among the ready ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balancing {
    /// The endpoint with the fewest active connections (L4) or in-flight requests (L7);
    /// ties go to the first one at or after the round-robin cursor, so an idle service is
    /// served in strict rotation. O(n) per pick: right for the few replicas a service has.
    #[default]
    LeastConnections,
    /// Two endpoints drawn at random, the less loaded one wins (Mitzenmacher; Envoy's
    /// `LEAST_REQUEST`). O(1) per pick, for services with many endpoints.
    PowerOfTwoChoices,
}

/// Whether an endpoint may be chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Takes new work.
    Ready,
    /// Passively ejected for a while (refused connection, repeated failures). Chosen only
    /// when no endpoint is ready ("fail open"), so a blip that ejects every endpoint does
    /// not turn into seconds of total outage.
    Ejected,
    /// Draining, failed its health checks, or already tried for this request: never chosen.
    Unavailable,
}

/// What the balancer sees of one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Active connections (L4) or in-flight requests (L7) through this mesh.
    pub active: u32,
    pub availability: Availability,
}

/// Picks the index of the endpoint to use among `n_endpoints`, or `None` when every
/// endpoint is unavailable. `cursor` drives the round-robin tie-break and `random` the
/// power-of-two draw; callers advance both on every pick.
pub fn pick(
    balancing: Balancing,
    n_endpoints: usize,
    view: impl Fn(usize) -> Candidate,
    cursor: usize,
    random: u64,
) -> Option<usize> {
    let ready = match balancing {
        Balancing::LeastConnections => {
            least_connections(n_endpoints, &view, cursor, Availability::Ready)
        }
        Balancing::PowerOfTwoChoices => power_of_two_choices(n_endpoints, &view, random),
    };
    // Fail open: an ejected endpoint is a better bet than a certain 503.
    ready.or_else(|| least_connections(n_endpoints, &view, cursor, Availability::Ejected))
}

/// The endpoint with availability `wanted` and the fewest active, scanning from `cursor`
/// so that ties rotate.
pub fn least_connections(
    n_endpoints: usize,
    view: impl Fn(usize) -> Candidate,
    cursor: usize,
    wanted: Availability,
) -> Option<usize> {
    if n_endpoints == 0 {
        return None;
    }
    let start = cursor % n_endpoints;
    let mut best: Option<(usize, u32)> = None;
    for offset in 0..n_endpoints {
        let endpoint_idx = (start + offset) % n_endpoints;
        let candidate = view(endpoint_idx);
        if candidate.availability != wanted {
            continue;
        }
        match best {
            Some((_, best_active)) if best_active <= candidate.active => {}
            _ => best = Some((endpoint_idx, candidate.active)),
        }
        if candidate.active == 0 {
            // Nothing beats an idle endpoint, and the first idle one after the cursor is
            // the round-robin choice.
            break;
        }
    }
    best.map(|(endpoint_idx, _)| endpoint_idx)
}

/// Power of two choices over the ready endpoints. When the draw lands on unavailable
/// endpoints it falls back to a least-connections scan, so a mostly-draining service still
/// gets an answer.
pub fn power_of_two_choices(
    n_endpoints: usize,
    view: impl Fn(usize) -> Candidate,
    random: u64,
) -> Option<usize> {
    let ready = |endpoint_idx: usize| {
        let candidate = view(endpoint_idx);
        (candidate.availability == Availability::Ready).then_some(candidate.active)
    };
    match n_endpoints {
        0 => return None,
        1 => return ready(0).map(|_| 0),
        _ => {}
    }
    // Two distinct indices from the two halves of one random word ("fast range": a
    // multiply and a shift instead of a modulo).
    let first = bounded(random as u32, n_endpoints);
    let mut second = bounded((random >> 32) as u32, n_endpoints - 1);
    if second >= first {
        second += 1;
    }
    match (ready(first), ready(second)) {
        (Some(active_first), Some(active_second)) => Some(if active_second < active_first {
            second
        } else {
            first
        }),
        (Some(_), None) => Some(first),
        (None, Some(_)) => Some(second),
        (None, None) => least_connections(n_endpoints, view, first, Availability::Ready),
    }
}

/// Maps a 32-bit random value onto `0..bound` without a division (Lemire).
fn bounded(random: u32, bound: usize) -> usize {
    ((random as u64 * bound as u64) >> 32) as usize
}

/// SplitMix64's output function: turns a counter into a well-mixed 64-bit value. The
/// runtime keeps an atomic counter per service and feeds `counter += GOLDEN_GAMMA`
/// through this, which is lock-free and deterministic for a given seed.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The SplitMix64 increment.
pub const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A seeded SplitMix64 generator, for tests, benchmarks and simulations.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Availability::*;

    fn table(entries: &[(u32, Availability)]) -> Vec<Candidate> {
        entries
            .iter()
            .map(|&(active, availability)| Candidate {
                active,
                availability,
            })
            .collect()
    }

    #[test]
    fn least_connections_prefers_fewest_and_rotates_ties() {
        let endpoints = table(&[(2, Ready), (1, Ready), (1, Ready)]);
        let view = |i: usize| endpoints[i];
        assert_eq!(least_connections(3, view, 0, Ready), Some(1));
        assert_eq!(least_connections(3, view, 2, Ready), Some(2));

        let idle = table(&[(0, Ready), (0, Ready), (0, Ready)]);
        let picks: Vec<_> = (0..6)
            .map(|cursor| pick(Balancing::LeastConnections, 3, |i| idle[i], cursor, 0))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2].map(Some));
    }

    #[test]
    fn draining_and_unhealthy_are_never_chosen() {
        let endpoints = table(&[(0, Unavailable), (9, Ready), (0, Unavailable)]);
        for cursor in 0..5 {
            for balancing in [Balancing::LeastConnections, Balancing::PowerOfTwoChoices] {
                let picked = pick(balancing, 3, |i| endpoints[i], cursor, cursor as u64 * 77);
                assert_eq!(picked, Some(1));
            }
        }
        let none = table(&[(0, Unavailable), (0, Unavailable)]);
        assert_eq!(
            pick(Balancing::PowerOfTwoChoices, 2, |i| none[i], 0, 1),
            None
        );
        assert_eq!(
            pick(Balancing::LeastConnections, 0, |i| none[i], 0, 1),
            None
        );
    }

    #[test]
    fn ejected_only_when_nothing_is_ready() {
        let endpoints = table(&[(0, Ejected), (5, Ready)]);
        assert_eq!(
            pick(Balancing::LeastConnections, 2, |i| endpoints[i], 0, 0),
            Some(1)
        );
        let all_ejected = table(&[(3, Ejected), (1, Ejected), (0, Unavailable)]);
        assert_eq!(
            pick(Balancing::PowerOfTwoChoices, 3, |i| all_ejected[i], 0, 42),
            Some(1)
        );
    }

    #[test]
    fn power_of_two_spreads_evenly_and_prefers_less_loaded() {
        let mut rng = SplitMix64::new(7);
        let idle = table(&[(0, Ready); 4]);
        let mut counts = [0usize; 4];
        for _ in 0..40_000 {
            let picked = power_of_two_choices(4, |i| idle[i], rng.next_u64()).unwrap();
            counts[picked] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
        // A heavily loaded endpoint is chosen only when both draws land on it, which two
        // distinct draws never do.
        let loaded = table(&[(100, Ready), (0, Ready), (0, Ready)]);
        for _ in 0..1_000 {
            let picked = power_of_two_choices(3, |i| loaded[i], rng.next_u64()).unwrap();
            assert_ne!(picked, 0);
        }
    }

    #[test]
    fn simulated_least_connections_keeps_load_balanced() {
        // Requests of random length over 3 endpoints: a new request never goes to an
        // endpoint busier than another ready one, and the totals come out even.
        let mut rng = SplitMix64::new(1);
        let mut active = [0u32; 3];
        let mut totals = [0u32; 3];
        let mut in_flight: Vec<(usize, u64)> = Vec::new();
        for step in 0..30_000u64 {
            in_flight.retain(|&(endpoint_idx, done_at)| {
                let running = done_at > step;
                if !running {
                    active[endpoint_idx] -= 1;
                }
                running
            });
            let view = |i: usize| Candidate {
                active: active[i],
                availability: Ready,
            };
            let picked = pick(Balancing::LeastConnections, 3, view, step as usize, 0).unwrap();
            assert_eq!(active[picked], *active.iter().min().unwrap());
            active[picked] += 1;
            totals[picked] += 1;
            in_flight.push((picked, step + 1 + rng.next_u64() % 20));
        }
        for total in totals {
            assert!((9_000..11_000).contains(&total), "{totals:?}");
        }
    }

    #[test]
    fn seeded_rng_is_deterministic() {
        let mut a = SplitMix64::new(99);
        let mut b = SplitMix64::new(99);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }
}
