//! How long the worker waits before it tries the leader again: exponential, capped, and
//! jittered, so that the workers of a cluster do not all retry in the same instant after
//! a leader change.
//!
//! Pure: the randomness is passed in, so a test can seed it. It knows nothing of what is
//! retried.

use std::time::Duration;

use rand::Rng;

/// The first wait after a failure, before jitter: what the fixed retry used to be.
pub(crate) const BASE: Duration = Duration::from_millis(200);

/// The longest wait before jitter: a leader is usually elected within a second or two,
/// and a worker should notice within about that much more.
pub(crate) const CAP: Duration = Duration::from_secs(1);

/// Consecutive failures of one retried operation.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BASE, CAP)
    }
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            failures: 0,
        }
    }

    /// The operation succeeded: the next failure waits the base again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// The wait after one more failure: the base doubled per failure so far, capped,
    /// then drawn between half of that and all of it ("equal jitter"), so a retry never
    /// comes sooner than half the base.
    pub(crate) fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(self.failures))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        half + rng.gen_range(Duration::ZERO..=ceiling - half)
    }

    /// [`Backoff::next_delay`] drawn from the thread's generator.
    pub(crate) fn next(&mut self) -> Duration {
        self.next_delay(&mut rand::thread_rng())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn waits_double_up_to_the_cap_with_jitter_and_start_again_after_a_success() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        let ceilings_ms = [200, 400, 800, 1_000, 1_000, 1_000];
        for ceiling_ms in ceilings_ms {
            let delay = backoff.next_delay(&mut rng);
            assert!(
                delay >= Duration::from_millis(ceiling_ms / 2)
                    && delay <= Duration::from_millis(ceiling_ms),
                "{delay:?} outside [{}, {ceiling_ms}] ms",
                ceiling_ms / 2
            );
        }
        backoff.reset();
        let delay = backoff.next_delay(&mut rng);
        assert!(delay >= Duration::from_millis(100) && delay <= Duration::from_millis(200));
    }

    #[test]
    fn workers_that_fail_together_do_not_retry_together() {
        let mut rng = StdRng::seed_from_u64(11);
        let delays: Vec<Duration> = (0..10)
            .map(|_| Backoff::default().next_delay(&mut rng))
            .collect();
        let mut distinct = delays.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 5, "{delays:?}");
    }

    #[test]
    fn many_failures_neither_overflow_nor_pass_the_cap() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut backoff = Backoff::default();
        for _ in 0..200 {
            assert!(backoff.next_delay(&mut rng) <= CAP);
        }
    }
}
