//! The errors the mesh hands back to its caller (the daemon).
//!
//! Owns: `MeshError`, the one error type of the public API. Every variant is something the
//! caller can act on: fix a config or a route, retry a bind later. Failures of a single
//! client connection or request are not errors of the API: they become HTTP statuses,
//! closed connections, log lines and metrics.
//!
//! Does not know: how the daemon reports errors to the operator.

use std::net::SocketAddr;

/// What went wrong when configuring or updating the mesh.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// A `MeshConfig` field is out of range; nothing was started.
    #[error("invalid mesh config: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    /// A `ServiceRoute` cannot be served as given (port clash, duplicate id, bad route);
    /// the whole update was refused and the previous tables stay in force.
    #[error("invalid route for service {service_id}: {reason}")]
    InvalidRoute { service_id: String, reason: String },
    /// `set_endpoints` named a service the mesh does not carry.
    #[error("unknown service {service_id}")]
    UnknownService { service_id: String },
    /// A published port could not be opened (in use, no permission). The other ports of
    /// the same update were applied; the next update tries this port again.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The kernel data path (nftables) could not be set up or updated; the userspace
    /// listeners keep serving the ports.
    #[error("kernel data path: {reason}")]
    Kernel { reason: String },
    /// The mesh was shut down; it takes no more updates.
    #[error("the mesh is shut down")]
    ShutDown,
}
