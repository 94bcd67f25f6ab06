//! The L4 (`tcp`) forwarder: one client connection, one endpoint, bytes copied both ways.
//!
//! Owns: choosing and connecting to an endpoint for an accepted connection (stepping over
//! endpoints that refuse or do not answer within the connect timeout, and ejecting them),
//! and the copy loop, bounded by the idle and lifetime timeouts (`limits::copy_bounded`).
//! A connect that fails for lack of descriptors on this node ejects nothing.
//!
//! The copy is tokio's `copy_bidirectional` (userspace, 8 KiB buffers each way), not
//! `splice(2)`: splice would need a pipe pair per connection and raw-fd readiness handling
//! outside tokio's safe API, and on the small-request workloads the mesh is measured on the
//! cost is in the syscalls per message, which splice does not save.
//!
//! Does not know: what the bytes mean, or why an endpoint exists.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;

use crate::limits::{self, ConnectionSlot, CopyEnd};
use crate::mesh::{ListenerShared, PortRoutes, Shared};

pub(crate) async fn forward_connection(
    shared: Arc<Shared>,
    listener: Arc<ListenerShared>,
    mut client: TcpStream,
    peer: SocketAddr,
    // Held for the connection's life: its place under the connection caps.
    _slot: ConnectionSlot,
) {
    let opened = tokio::time::Instant::now();
    let routes = listener.routes();
    let PortRoutes::Tcp(service) = &*routes else {
        return;
    };
    let config = &shared.config;
    let mut tried = Vec::new();
    let mut connected = None;
    for _ in 0..config.max_attempts {
        let now_ms = shared.clock.now_ms();
        let Some(endpoint) = service.pick(config.balancing, now_ms, &tried) else {
            break;
        };
        // Counted as active from the connect on, so concurrent accepts spread out
        // instead of all choosing the same idle endpoint.
        let in_flight = endpoint.begin();
        let started = Instant::now();
        let outcome =
            tokio::time::timeout(config.connect_timeout, TcpStream::connect(endpoint.addr))
                .await
                .map_err(|_elapsed| std::io::Error::from(std::io::ErrorKind::TimedOut))
                .and_then(|connect| connect);
        match outcome {
            Ok(upstream) => {
                endpoint.metrics.latency.observe(started.elapsed());
                endpoint.record_success();
                connected = Some((endpoint, in_flight, upstream));
                break;
            }
            Err(error) if limits::is_local_exhaustion(&error) => {
                // This node is out of descriptors: no endpoint would do better, and
                // none is at fault, so none is ejected.
                tracing::warn!(
                    service_id = %service.service_id,
                    endpoint = %endpoint.id,
                    %error,
                    "no descriptor left on this node to reach an endpoint; closing the connection"
                );
                return;
            }
            Err(error) => {
                // Refused or unanswered: the task is gone or its node is, so eject at
                // once rather than waiting for more failures.
                let ejected = endpoint.record_failure(now_ms, config.ejection_time, 1, true);
                tracing::warn!(
                    service_id = %service.service_id,
                    endpoint = %endpoint.id,
                    addr = %endpoint.addr,
                    %error,
                    ejected,
                    "connect to endpoint failed; trying another"
                );
                drop(in_flight);
                tried.push(endpoint);
            }
        }
    }
    let Some((endpoint, _in_flight, mut upstream)) = connected else {
        tracing::debug!(
            service_id = %service.service_id,
            %peer,
            "no endpoint could take the connection; closing it"
        );
        return;
    };
    endpoint.metrics.connections_total.fetch_add(1, Relaxed);
    let _ = upstream.set_nodelay(true);
    tokio::select! {
        ended = limits::copy_bounded(
            &mut client,
            &mut upstream,
            config.idle_timeout,
            config.max_lifetime,
            opened,
        ) => match ended {
            // Resets from either side are how many TCP sessions end; not a mesh fault.
            CopyEnd::Closed(Err(error)) => {
                tracing::debug!(%peer, endpoint = %endpoint.id, %error, "tcp session ended with an error");
            }
            CopyEnd::Closed(Ok(())) => {}
            CopyEnd::Idle => {
                tracing::debug!(%peer, endpoint = %endpoint.id, idle_timeout = ?config.idle_timeout, "tcp session idle; closed");
            }
            CopyEnd::Lifetime => {
                tracing::debug!(%peer, endpoint = %endpoint.id, max_lifetime = ?config.max_lifetime, "tcp session reached its maximum lifetime; closed");
            }
        },
        _ = shared.shutdown.cancelled() => {}
    }
}
