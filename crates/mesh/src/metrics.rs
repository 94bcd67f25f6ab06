//! Counters and histograms of the mesh, and their rendering in the Prometheus text format.
//!
//! Owns: `EndpointMetrics` (updated lock-free on the data path), `Histogram` with fixed
//! buckets, and `render`, which formats a snapshot of the tables.
//!
//! Does not know: how the metrics are served (the daemon exposes `Mesh::render_metrics`
//! on whatever HTTP route it likes) or anything about the cluster beyond the ids it was fed.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::balance::Availability;
use crate::mesh::ListenerShared;
use crate::table::{EndpointRuntime, ServiceRuntime};

/// Upper bounds of the latency buckets in seconds: from a loopback hop (sub-millisecond)
/// to the default 60 s upstream timeout.
const BUCKET_BOUNDS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// A fixed-bucket histogram. Counts per bucket are stored non-cumulative (one increment per
/// observation) and summed when rendered.
#[derive(Default)]
pub(crate) struct Histogram {
    /// One more than the bounds: the last slot is `+Inf`.
    buckets: [AtomicU64; BUCKET_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket_idx = BUCKET_BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKET_BOUNDS.len());
        self.buckets[bucket_idx].fetch_add(1, Relaxed);
        self.sum_nanos
            .fetch_add(elapsed.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }
}

/// Counters of one endpoint. They live as long as the endpoint stays in its service's
/// table (keyed by task id), so they survive updates that leave the endpoint in place.
#[derive(Default)]
pub(crate) struct EndpointMetrics {
    /// L4 connections forwarded to the endpoint.
    pub connections_total: AtomicU64,
    /// L7 requests sent to the endpoint (each retry attempt counts).
    pub requests_total: AtomicU64,
    /// Failed connects, failed or reset requests, and upstream timeouts.
    pub errors_total: AtomicU64,
    /// Times the endpoint was passively ejected.
    pub ejections_total: AtomicU64,
    /// L4: time to connect. L7: time from sending the request to the response head.
    pub latency: Histogram,
}

/// The per-endpoint counter and gauge families.
fn render_endpoint_counters(
    out: &mut String,
    endpoints: &[(&ServiceRuntime, Arc<EndpointRuntime>)],
    now_ms: u64,
) {
    type Counter = fn(&EndpointRuntime, u64) -> u64;
    let families: [(&str, &str, &str, Counter); 6] = [
        (
            "hoist_mesh_endpoint_connections_total",
            "counter",
            "L4 connections forwarded to the endpoint.",
            |endpoint, _| endpoint.metrics.connections_total.load(Relaxed),
        ),
        (
            "hoist_mesh_endpoint_active",
            "gauge",
            "Connections (tcp) or in-flight requests (http) the endpoint is serving now.",
            |endpoint, _| u64::from(endpoint.active()),
        ),
        (
            "hoist_mesh_endpoint_requests_total",
            "counter",
            "HTTP requests sent to the endpoint, retries included.",
            |endpoint, _| endpoint.metrics.requests_total.load(Relaxed),
        ),
        (
            "hoist_mesh_endpoint_errors_total",
            "counter",
            "Failed connects, failed requests and upstream timeouts.",
            |endpoint, _| endpoint.metrics.errors_total.load(Relaxed),
        ),
        (
            "hoist_mesh_endpoint_ejections_total",
            "counter",
            "Times the endpoint was passively ejected.",
            |endpoint, _| endpoint.metrics.ejections_total.load(Relaxed),
        ),
        (
            "hoist_mesh_endpoint_ready",
            "gauge",
            "1 when the endpoint takes new work (active, healthy, not ejected).",
            |endpoint, now_ms| u64::from(endpoint.availability(now_ms) == Availability::Ready),
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (service, endpoint) in endpoints {
            let labels = endpoint_labels(service, endpoint);
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(endpoint, now_ms));
        }
    }
}

/// The per-endpoint latency histograms.
fn render_latency(out: &mut String, endpoints: &[(&ServiceRuntime, Arc<EndpointRuntime>)]) {
    let name = "hoist_mesh_endpoint_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} L4: time to connect; L7: time to the response head.\n# TYPE {name} histogram"
    );
    for (service, endpoint) in endpoints {
        let labels = endpoint_labels(service, endpoint);
        let histogram = &endpoint.metrics.latency;
        let mut cumulative = 0;
        for (bucket_idx, bucket) in histogram.buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            let bound = BUCKET_BOUNDS
                .get(bucket_idx)
                .map_or_else(|| "+Inf".to_string(), |bound| bound.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let sum = histogram.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(
            out,
            "{name}_count{{{labels}}} {}",
            histogram.count.load(Relaxed)
        );
    }
}

/// Writes every metric family for a snapshot of the services and listeners.
pub(crate) fn render(
    services: &[Arc<ServiceRuntime>],
    listeners: &[Arc<ListenerShared>],
    now_ms: u64,
) -> String {
    let mut out = String::with_capacity(4096);
    let endpoints: Vec<(&ServiceRuntime, Arc<EndpointRuntime>)> = services
        .iter()
        .flat_map(|service| {
            service
                .endpoints()
                .iter()
                .map(|endpoint| (service.as_ref(), Arc::clone(endpoint)))
                .collect::<Vec<_>>()
        })
        .collect();

    render_endpoint_counters(&mut out, &endpoints, now_ms);
    render_latency(&mut out, &endpoints);
    let name = "hoist_mesh_service_no_endpoint_total";
    let _ = writeln!(
        out,
        "# HELP {name} Connections or requests turned away because no endpoint could take them.\n# TYPE {name} counter"
    );
    for service in services {
        let _ = writeln!(
            out,
            "{name}{{service_id=\"{}\",service=\"{}\"}} {}",
            escape(&service.service_id),
            escape(&service.service_name()),
            service.no_endpoint_total.load(Relaxed)
        );
    }

    type PortCounter = fn(&ListenerShared) -> u64;
    let port_families: [(&str, &str, PortCounter); 4] = [
        (
            "hoist_mesh_port_connections_total",
            "Client connections accepted on the published port.",
            |listener| listener.accepted_total.load(Relaxed),
        ),
        (
            "hoist_mesh_port_unrouted_total",
            "HTTP requests that matched no host/path route (404).",
            |listener| listener.unrouted_total.load(Relaxed),
        ),
        (
            "hoist_mesh_port_header_timeouts_total",
            "HTTP connections closed with 408 because the request head came too slowly.",
            |listener| listener.header_timeouts_total.load(Relaxed),
        ),
        (
            "hoist_mesh_port_refused_total",
            "Client connections closed at once because a connection cap was reached.",
            |listener| listener.refused_total.load(Relaxed),
        ),
    ];
    for (name, help, value) in port_families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for listener in listeners {
            let _ = writeln!(
                out,
                "{name}{{published=\"{}\",protocol=\"{}\"}} {}",
                listener.published,
                listener.protocol.as_str(),
                value(listener)
            );
        }
    }
    let name = "hoist_mesh_port_open_connections";
    let _ = writeln!(
        out,
        "# HELP {name} Client connections open on the published port now.\n# TYPE {name} gauge"
    );
    for listener in listeners {
        let _ = writeln!(
            out,
            "{name}{{published=\"{}\",protocol=\"{}\"}} {}",
            listener.published,
            listener.protocol.as_str(),
            listener.open.load(Relaxed)
        );
    }
    out
}

fn endpoint_labels(service: &ServiceRuntime, endpoint: &EndpointRuntime) -> String {
    format!(
        "service_id=\"{}\",service=\"{}\",endpoint=\"{}\",addr=\"{}\"",
        escape(&service.service_id),
        escape(&service.service_name()),
        escape(&endpoint.id),
        endpoint.addr
    )
}

/// Label values escape backslash, double quote and newline (the text format's rule).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_when_rendered() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(300));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(100));
        let counts: Vec<u64> = histogram
            .buckets
            .iter()
            .map(|bucket| bucket.load(Relaxed))
            .collect();
        assert_eq!(counts[0], 1);
        assert_eq!(counts[3], 1);
        assert_eq!(counts[BUCKET_BOUNDS.len()], 1);
        assert_eq!(histogram.count.load(Relaxed), 3);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
