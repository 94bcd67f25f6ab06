//! The live endpoint tables the data path reads on every connection and request.
//!
//! Owns: `ServiceRuntime` (one per service, kept across updates by service id) and
//! `EndpointRuntime` (one per endpoint, kept across updates by task id and address), their
//! in-place update, the per-endpoint counters that balancing reads (active connections,
//! ejection deadline, consecutive failures, health), and the `InFlight` guard.
//!
//! Does not know: sockets or HTTP. Picking is delegated to the pure `balance` module; this
//! module only turns atomics into `Candidate`s. Time comes in as milliseconds on the
//! mesh's `Clock`, so nothing here reads a clock by itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hyper::http::uri::Authority;

use crate::balance::{self, Availability, Balancing, Candidate};
use crate::metrics::EndpointMetrics;
use crate::model::{Endpoint, EndpointState};
use crate::upstream::UpstreamPool;

/// Milliseconds since the mesh started; what ejection deadlines are measured in. A
/// monotonic `Instant` behind it, so wall-clock jumps do not eject or revive endpoints.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            epoch: Instant::now(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        // Start at 1 so that 0 can mean "not ejected".
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

/// One endpoint as the data path sees it.
pub(crate) struct EndpointRuntime {
    pub id: String,
    pub addr: SocketAddr,
    /// `host:port` for upstream URIs, parsed once here rather than on every request.
    pub authority: Authority,
    draining: AtomicBool,
    /// Set by the active health checker after `fall` failed checks, cleared after `rise`.
    health_down: AtomicBool,
    /// `Clock` milliseconds until which the endpoint is ejected; 0 when it is not.
    ejected_until_ms: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Connections (L4) or in-flight requests (L7); the least-connections input.
    active: AtomicU32,
    pub metrics: EndpointMetrics,
    /// Idle keep-alive HTTP connections to this endpoint (L7 only).
    pub upstream: UpstreamPool,
}

impl EndpointRuntime {
    fn new(endpoint: &Endpoint) -> Self {
        // A SocketAddr always renders as a valid authority; the fallback is unreachable
        // but keeps this free of unwraps.
        let authority = Authority::try_from(endpoint.addr.to_string().as_str())
            .unwrap_or_else(|_| Authority::from_static("invalid.invalid"));
        EndpointRuntime {
            id: endpoint.id.clone(),
            addr: endpoint.addr,
            authority,
            draining: AtomicBool::new(endpoint.state == EndpointState::Draining),
            health_down: AtomicBool::new(false),
            ejected_until_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            active: AtomicU32::new(0),
            metrics: EndpointMetrics::default(),
            upstream: UpstreamPool::default(),
        }
    }

    pub(crate) fn active(&self) -> u32 {
        self.active.load(Relaxed)
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    pub(crate) fn availability(&self, now_ms: u64) -> Availability {
        if self.draining.load(Relaxed) || self.health_down.load(Relaxed) {
            Availability::Unavailable
        } else if self.ejected_until_ms.load(Relaxed) > now_ms {
            Availability::Ejected
        } else {
            Availability::Ready
        }
    }

    /// Marks the start of a connection or request; the guard ends it.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Relaxed);
        InFlight {
            endpoint: Arc::clone(self),
        }
    }

    pub(crate) fn record_success(&self) {
        // Read first: on the hot path the counter is almost always already zero and a
        // plain load keeps the cache line shared.
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
        }
    }

    /// Counts a failure; ejects at once when `eject_now` (a refused connection) or after
    /// `eject_after` consecutive failures. Returns whether this call ejected.
    pub(crate) fn record_failure(
        &self,
        now_ms: u64,
        ejection_time: Duration,
        eject_after: u32,
        eject_now: bool,
    ) -> bool {
        self.metrics.errors_total.fetch_add(1, Relaxed);
        let failures = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if !eject_now && failures < eject_after {
            return false;
        }
        self.consecutive_failures.store(0, Relaxed);
        let until = now_ms + ejection_time.as_millis() as u64;
        let previous = self.ejected_until_ms.swap(until, Relaxed);
        // Only a fresh ejection counts; extending one does not.
        let fresh = previous <= now_ms;
        if fresh {
            self.metrics.ejections_total.fetch_add(1, Relaxed);
        }
        fresh
    }

    pub(crate) fn set_health_down(&self, down: bool) {
        self.health_down.store(down, Relaxed);
    }
}

/// Holds one unit of an endpoint's `active` count until dropped, wherever the connection
/// or response body ends (completion, error, client gone).
pub(crate) struct InFlight {
    endpoint: Arc<EndpointRuntime>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.active.fetch_sub(1, Relaxed);
    }
}

/// What a service's table holds; replaced whole on update and read through an `Arc`, so
/// a reader never sees a half-applied update and never blocks one for long.
struct ServiceTable {
    service_name: Arc<str>,
    endpoints: Arc<[Arc<EndpointRuntime>]>,
}

/// One service as the data path sees it. Lives as long as the service is in the mesh's
/// set; listeners and in-flight connections hold it through an `Arc`.
pub(crate) struct ServiceRuntime {
    pub service_id: String,
    table: RwLock<ServiceTable>,
    /// Round-robin cursor for least-connections ties.
    cursor: AtomicUsize,
    /// SplitMix64 counter for power-of-two draws, seeded from the service id so a run is
    /// reproducible.
    rng: AtomicU64,
    pub no_endpoint_total: AtomicU64,
}

impl ServiceRuntime {
    pub(crate) fn new(service_id: &str, service_name: &str, endpoints: &[Endpoint]) -> Self {
        let seed = service_id
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
            });
        let service = ServiceRuntime {
            service_id: service_id.to_string(),
            table: RwLock::new(ServiceTable {
                service_name: Arc::from(service_name),
                endpoints: Arc::from(Vec::new()),
            }),
            cursor: AtomicUsize::new(0),
            rng: AtomicU64::new(seed),
            no_endpoint_total: AtomicU64::new(0),
        };
        service.update(service_name, endpoints);
        service
    }

    pub(crate) fn service_name(&self) -> Arc<str> {
        let table = self
            .table
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(&table.service_name)
    }

    /// A snapshot of the endpoints; cheap (one `Arc` clone).
    pub(crate) fn endpoints(&self) -> Arc<[Arc<EndpointRuntime>]> {
        let table = self
            .table
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(&table.endpoints)
    }

    /// Applies a new endpoint list in place. An endpoint whose task id and address are
    /// unchanged keeps its runtime (counters, ejection, health, in-flight work) and only
    /// its state flips; new ones start fresh; removed ones leave the table, while
    /// connections already using them keep their `Arc` and finish.
    pub(crate) fn update(&self, service_name: &str, endpoints: &[Endpoint]) {
        let current = self.endpoints();
        let by_id: HashMap<(&str, SocketAddr), &Arc<EndpointRuntime>> = current
            .iter()
            .map(|endpoint| ((endpoint.id.as_str(), endpoint.addr), endpoint))
            .collect();
        let next: Vec<Arc<EndpointRuntime>> = endpoints
            .iter()
            .map(|endpoint| {
                let Some(existing) = by_id.get(&(endpoint.id.as_str(), endpoint.addr)) else {
                    return Arc::new(EndpointRuntime::new(endpoint));
                };
                let draining = endpoint.state == EndpointState::Draining;
                existing.draining.store(draining, Relaxed);
                if draining {
                    // Idle connections will carry nothing more; in-flight ones finish
                    // and close as their responses end.
                    existing.upstream.clear();
                }
                Arc::clone(existing)
            })
            .collect();
        let mut table = self
            .table
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *table.service_name != *service_name {
            table.service_name = Arc::from(service_name);
        }
        table.endpoints = Arc::from(next);
    }

    /// Chooses an endpoint for new work, skipping those in `tried` (attempts already made
    /// for this connection or request). `None` when nothing can take it.
    pub(crate) fn pick(
        &self,
        balancing: Balancing,
        now_ms: u64,
        tried: &[Arc<EndpointRuntime>],
    ) -> Option<Arc<EndpointRuntime>> {
        let endpoints = self.endpoints();
        let view = |endpoint_idx: usize| {
            let endpoint = &endpoints[endpoint_idx];
            let availability = if tried.iter().any(|done| Arc::ptr_eq(done, endpoint)) {
                Availability::Unavailable
            } else {
                endpoint.availability(now_ms)
            };
            Candidate {
                active: endpoint.active(),
                availability,
            }
        };
        let cursor = self.cursor.fetch_add(1, Relaxed);
        let random = match balancing {
            Balancing::PowerOfTwoChoices => {
                balance::mix64(self.rng.fetch_add(balance::GOLDEN_GAMMA, Relaxed))
            }
            Balancing::LeastConnections => 0,
        };
        let picked = balance::pick(balancing, endpoints.len(), view, cursor, random)
            .map(|endpoint_idx| Arc::clone(&endpoints[endpoint_idx]));
        if picked.is_none() && tried.is_empty() {
            self.no_endpoint_total.fetch_add(1, Relaxed);
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(id: &str, port: u16, state: EndpointState) -> Endpoint {
        Endpoint {
            id: id.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            state,
        }
    }

    #[test]
    fn update_keeps_runtime_of_unchanged_endpoints() {
        let service = ServiceRuntime::new(
            "s",
            "web",
            &[
                endpoint("t1", 1, EndpointState::Active),
                endpoint("t2", 2, EndpointState::Active),
            ],
        );
        let t1 = Arc::clone(&service.endpoints()[0]);
        let guard = t1.begin();
        service.update(
            "web",
            &[
                endpoint("t1", 1, EndpointState::Draining),
                endpoint("t3", 3, EndpointState::Active),
            ],
        );
        let endpoints = service.endpoints();
        assert!(Arc::ptr_eq(&endpoints[0], &t1));
        assert!(t1.is_draining());
        assert_eq!(t1.active(), 1);
        drop(guard);
        assert_eq!(t1.active(), 0);
        assert_eq!(endpoints[1].id, "t3");
        // The draining endpoint is never picked.
        for _ in 0..10 {
            let picked = service.pick(Balancing::LeastConnections, 1, &[]).unwrap();
            assert_eq!(picked.id, "t3");
        }
    }

    #[test]
    fn ejection_expires_and_counts_once() {
        let service = ServiceRuntime::new("s", "web", &[endpoint("t1", 1, EndpointState::Active)]);
        let t1 = Arc::clone(&service.endpoints()[0]);
        let ejection = Duration::from_secs(5);
        assert!(!t1.record_failure(1_000, ejection, 3, false));
        assert!(!t1.record_failure(1_000, ejection, 3, false));
        assert!(t1.record_failure(1_000, ejection, 3, false));
        assert_eq!(t1.availability(1_001), Availability::Ejected);
        assert!(!t1.record_failure(2_000, ejection, 3, true));
        assert_eq!(t1.metrics.ejections_total.load(Relaxed), 1);
        assert_eq!(t1.availability(7_001), Availability::Ready);
        // Fail open: the only endpoint is still chosen while ejected.
        assert!(service
            .pick(Balancing::LeastConnections, 1_500, &[])
            .is_some());
        assert!(service
            .pick(Balancing::LeastConnections, 1_500, &[t1])
            .is_none());
    }
}
