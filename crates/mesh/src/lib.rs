//! Hoist's routing mesh: every node listens on every published port and forwards to the
//! service's endpoints, at L4 (`tcp`, whole connections) or L7 (`http`, each request).
//!
//! Owns: endpoint tables and their in-place updates, balancing (least-connections and
//! power-of-two-choices, pure), the L4 forwarder, the L7 proxy with host/path routing,
//! retries, passive ejection and active health checks, and the mesh's metrics.
//!
//! Does not know: cluster state, Raft, tasks or nodes. The daemon feeds it
//! `ServiceRoute`s (`Mesh::set_services`, `Mesh::set_endpoints`) built from whatever it
//! knows, and serves `Mesh::render_metrics` wherever it likes.
//!
//! Layout: `model` (what is fed in, and which of it can be served), `balance`, `route` and the tracker in `health` (pure
//! decisions), `table` (live endpoint tables), `l4` and `l7` (data paths) with `upstream`
//! (keep-alive connections to endpoints), `kernel` (the nftables data path `tcp` ports may
//! use instead of `l4`), `body` (body types) and `coarse_timer` (per-request deadlines),
//! `mesh` (the handle, listeners, updates, shutdown), `metrics`.

mod balance;
mod body;
mod coarse_timer;
mod error;
mod health;
pub mod kernel;
mod l4;
mod l7;
mod limits;
mod mesh;
mod metrics;
mod model;
mod route;
mod table;
mod upstream;

pub use balance::{
    least_connections, mix64, pick, power_of_two_choices, Availability, Balancing, Candidate,
    SplitMix64, GOLDEN_GAMMA,
};
pub use error::MeshError;
pub use health::{HealthTracker, HealthTransition};
pub use mesh::{Mesh, UpdateReport};
pub use model::{
    servable, validate_services, Endpoint, EndpointState, HealthCheck, HostPathRoute, L4Dataplane,
    LeftOut, MeshConfig, Protocol, Servable, ServiceRoute, MIN_HEADER_BYTES,
};
