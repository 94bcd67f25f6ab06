//! Active health checks: a pure up/down tracker and the loop that runs the checks.
//!
//! Owns: `HealthTracker` (HAProxy's rise/fall counting, no I/O) and `run_checker`, one
//! task per service with a `HealthCheck`, which probes every endpoint each interval and
//! flips the endpoint's health flag on transitions.
//!
//! Does not know: why an endpoint exists or what the cluster thinks of its task. A
//! failing check only takes the endpoint out of this node's rotation; it reports nothing
//! to anyone except through logs and metrics. A probe that fails because this node is
//! out of descriptors is no verdict at all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::client::conn::http1;
use hyper::http::uri::Authority;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::body::FullBody;
use crate::limits;
use crate::model::{HealthCheck, Protocol};
use crate::table::{EndpointRuntime, ServiceRuntime};

/// A change of an endpoint's health, as reported by `HealthTracker::observe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthTransition {
    WentDown,
    CameUp,
}

/// Counts consecutive check results the way HAProxy does: a healthy endpoint goes down
/// after `fall` failures in a row, an unhealthy one comes back after `rise` passes in a
/// row. It starts healthy, as HAProxy does, so a new endpoint takes traffic at once and
/// a freshly started node does not answer 503 while the first checks run.
#[derive(Clone, Debug)]
pub struct HealthTracker {
    rise: u32,
    fall: u32,
    healthy: bool,
    /// Consecutive results that disagree with `healthy`.
    streak: u32,
}

impl HealthTracker {
    pub fn new(rise: u32, fall: u32) -> Self {
        HealthTracker {
            rise: rise.max(1),
            fall: fall.max(1),
            healthy: true,
            streak: 0,
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    pub fn observe(&mut self, passed: bool) -> Option<HealthTransition> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.healthy = passed;
        self.streak = 0;
        Some(if passed {
            HealthTransition::CameUp
        } else {
            HealthTransition::WentDown
        })
    }
}

/// Checks `service`'s endpoints every `check.interval` until `shutdown` fires.
pub(crate) async fn run_checker(
    service: Arc<ServiceRuntime>,
    protocol: Protocol,
    check: HealthCheck,
    shutdown: CancellationToken,
) {
    let mut trackers: HashMap<(String, SocketAddr), HealthTracker> = HashMap::new();
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let endpoints = service.endpoints();
        let mut probes = JoinSet::new();
        for (endpoint_idx, endpoint) in endpoints.iter().enumerate() {
            let addr = endpoint.addr;
            let authority = endpoint.authority.clone();
            let check = check.clone();
            probes.spawn(async move {
                let verdict = tokio::time::timeout(
                    check.timeout,
                    probe(protocol, addr, authority, &check.path),
                )
                .await
                .unwrap_or(Some(false));
                (endpoint_idx, verdict)
            });
        }
        let mut results = Vec::with_capacity(endpoints.len());
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                joined = probes.join_next() => match joined {
                    Some(Ok(result)) => results.push(result),
                    // A panicking probe counts as no result rather than killing the loop.
                    Some(Err(_)) => {}
                    None => break,
                },
            }
        }
        for (endpoint_idx, verdict) in results {
            let endpoint = &endpoints[endpoint_idx];
            let Some(passed) = verdict else {
                // This node could not open a socket: says nothing about the endpoint.
                tracing::warn!(
                    service_id = %service.service_id,
                    endpoint = %endpoint.id,
                    "health check skipped: no descriptor left on this node"
                );
                continue;
            };
            let tracker = trackers
                .entry((endpoint.id.clone(), endpoint.addr))
                .or_insert_with(|| HealthTracker::new(check.rise, check.fall));
            apply(&service, endpoint, tracker.observe(passed));
        }
        // Forget endpoints that left the table so the map does not grow forever.
        trackers.retain(|(id, addr), _| {
            endpoints
                .iter()
                .any(|endpoint| endpoint.id == *id && endpoint.addr == *addr)
        });
    }
}

fn apply(
    service: &ServiceRuntime,
    endpoint: &EndpointRuntime,
    transition: Option<HealthTransition>,
) {
    match transition {
        Some(HealthTransition::WentDown) => {
            endpoint.set_health_down(true);
            tracing::warn!(
                service_id = %service.service_id,
                endpoint = %endpoint.id,
                addr = %endpoint.addr,
                "endpoint failed its health checks; out of rotation"
            );
        }
        Some(HealthTransition::CameUp) => {
            endpoint.set_health_down(false);
            tracing::info!(
                service_id = %service.service_id,
                endpoint = %endpoint.id,
                addr = %endpoint.addr,
                "endpoint passed its health checks; back in rotation"
            );
        }
        None => {}
    }
}

/// One check: whether the endpoint passed, or `None` when this node could not even open
/// a socket (out of descriptors), which must not count against the endpoint. HTTP checks
/// open a fresh connection every time, as HAProxy does, so a half-dead endpoint cannot
/// pass on an old keep-alive connection.
async fn probe(
    protocol: Protocol,
    addr: SocketAddr,
    authority: Authority,
    path: &str,
) -> Option<bool> {
    let stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(error) if limits::is_local_exhaustion(&error) => return None,
        Err(_) => return Some(false),
    };
    if protocol == Protocol::Tcp {
        return Some(true);
    }
    Some(probe_http(stream, authority, path).await)
}

async fn probe_http(stream: TcpStream, authority: Authority, path: &str) -> bool {
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, connection)) = http1::handshake(TokioIo::new(stream)).await else {
        return false;
    };
    let Ok(request) = Request::get(path)
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::USER_AGENT, "hoist-mesh-health")
        .header(hyper::header::CONNECTION, "close")
        .body(FullBody::new(Bytes::new()))
    else {
        return false;
    };
    // The connection is driven here, beside the request, so no task outlives the check;
    // it ends by itself after the response (`Connection: close`) or on an error, which
    // also fails the request.
    let exchange = async {
        let response = sender.send_request(request).await.ok()?;
        let status = response.status();
        Some(status.is_success() || status.is_redirection())
    };
    let (passed, _connection_result) = tokio::join!(exchange, connection);
    passed.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_rise_and_fall() {
        let mut tracker = HealthTracker::new(2, 3);
        assert!(tracker.is_healthy());
        assert_eq!(tracker.observe(false), None);
        assert_eq!(tracker.observe(false), None);
        // A pass resets the streak.
        assert_eq!(tracker.observe(true), None);
        assert_eq!(tracker.observe(false), None);
        assert_eq!(tracker.observe(false), None);
        assert_eq!(tracker.observe(false), Some(HealthTransition::WentDown));
        assert!(!tracker.is_healthy());
        assert_eq!(tracker.observe(true), None);
        assert_eq!(tracker.observe(false), None);
        assert_eq!(tracker.observe(true), None);
        assert_eq!(tracker.observe(true), Some(HealthTransition::CameUp));
    }
}
