//! How often one node may renew its certificate when nothing about it changed: a
//! renewal costs the leader a linearizable read and a signature, and any member may ask
//! for one, so routine renewals are counted per node.
//!
//! A renewal that changes something is never counted: a new role (promotion, demotion)
//! or a certificate from a CA other than the current one (a rotation). Those are
//! operator-driven and rare, and a node must not be kept on its old role or CA.
//!
//! Does not know: who the caller is (the TLS layer proved it) or what the certificate
//! says (the caller decides what is routine).

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota};
use hoist_types::NodeId;

/// Routine renewals one node may make at once: a node renews at half its certificate's
/// life, so a handful covers retries of a renewal whose answer was lost.
pub(crate) const RENEW_BURST: u32 = 5;

/// The longest wait for one more routine renewal once the burst is spent: at least
/// three a minute.
const LONGEST_INTERVAL: Duration = Duration::from_secs(20);

/// Nodes remembered before those whose allowance has refilled are forgotten.
const MAX_KEYS: usize = 10_000;

pub(crate) struct RenewLimiter {
    /// The certificate lifetime the limiter was built for, and the limiter: rebuilt
    /// (its counts start over) when the `cert_expiry` setting changes.
    current: Mutex<(Duration, Arc<DefaultKeyedRateLimiter<NodeId>>)>,
}

/// One routine renewal per quarter of the certificate's life (a node needs one per
/// half), and at least one per [`LONGEST_INTERVAL`]: short lifetimes (tests use 10 s)
/// renew more often than a few a minute.
fn interval(cert_expiry: Duration) -> Duration {
    (cert_expiry / 4)
        .min(LONGEST_INTERVAL)
        .max(Duration::from_millis(100))
}

fn keyed_limiter(cert_expiry: Duration) -> Arc<DefaultKeyedRateLimiter<NodeId>> {
    let burst = NonZeroU32::new(RENEW_BURST).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(interval(cert_expiry))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    Arc::new(DefaultKeyedRateLimiter::hashmap(quota))
}

impl Default for RenewLimiter {
    fn default() -> Self {
        RenewLimiter {
            current: Mutex::new((Duration::ZERO, keyed_limiter(Duration::ZERO))),
        }
    }
}

impl RenewLimiter {
    /// Whether `node` may renew now. `routine` is false when the renewal changes the
    /// node's role or CA: always allowed, and not counted.
    pub(crate) fn allow(&self, node: NodeId, routine: bool, cert_expiry: Duration) -> bool {
        if !routine {
            return true;
        }
        let limiter = {
            let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            if current.0 != cert_expiry {
                *current = (cert_expiry, keyed_limiter(cert_expiry));
            }
            current.1.clone()
        };
        if limiter.len() > MAX_KEYS {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter.check_key(&node).is_ok()
    }

    /// The wait between routine renewals once the burst is spent, for messages.
    pub(crate) fn interval(cert_expiry: Duration) -> Duration {
        interval(cert_expiry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY90: Duration = Duration::from_secs(90 * 24 * 3600);

    #[test]
    fn routine_renewals_are_limited_per_node_and_changes_never_are() {
        let limiter = RenewLimiter::default();
        let noisy = NodeId(1);
        let quiet = NodeId(2);
        let allowed = (0..RENEW_BURST * 4)
            .filter(|_| limiter.allow(noisy, true, DAY90))
            .count();
        assert_eq!(allowed, RENEW_BURST as usize, "one interval is 20 s");
        assert!(!limiter.allow(noisy, true, DAY90));
        // A promotion, a demotion or a CA rotation goes through even now...
        assert!((0..10).all(|_| limiter.allow(noisy, false, DAY90)));
        // ...and costs nothing from the node's allowance.
        assert!(!limiter.allow(noisy, true, DAY90));
        assert!(
            limiter.allow(quiet, true, DAY90),
            "other nodes are not affected"
        );
    }

    #[test]
    fn short_lifetimes_allow_renewal_at_half_life() {
        assert_eq!(
            RenewLimiter::interval(Duration::from_secs(10)),
            Duration::from_millis(2500)
        );
        assert_eq!(RenewLimiter::interval(DAY90), Duration::from_secs(20));
        let limiter = RenewLimiter::default();
        let node = NodeId(3);
        let expiry = Duration::from_millis(400);
        assert!((0..RENEW_BURST).all(|_| limiter.allow(node, true, expiry)));
        assert!(!limiter.allow(node, true, expiry));
        // One more is allowed again after a quarter of the lifetime (100 ms), well within
        // the half life a node waits between renewals.
        let refused_at = std::time::Instant::now();
        let deadline = refused_at + Duration::from_secs(5);
        while !limiter.allow(node, true, expiry) {
            assert!(std::time::Instant::now() < deadline, "never refilled");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(refused_at.elapsed() >= Duration::from_millis(50));
    }
}
