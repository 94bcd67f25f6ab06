//! The control API: its endpoints (method, path, request and response types, who may
//! call each: `endpoint.rs`), request and response types, error bodies, and the
//! [`Client`] that CLI commands use to talk to a daemon over its unix socket.
//!
//! This is the only crate that knows the control API's wire format (JSON over HTTP,
//! paths under `/v1`): the daemon mounts its routes from these definitions and every
//! caller builds its paths from them. It holds no logic beyond encoding and decoding.
//! Raft's peer messages are the raft crate's own format.

mod client;
pub mod endpoint;
mod lines;
mod wire;

pub use client::{Client, ClientError};
pub use endpoint::{Access, Empty, Endpoint, MaxBody, NoQuery, Route, ENDPOINTS};
pub use lines::{body_lines, LineError, MAX_ASSIGNMENT_LINE, MAX_LOG_LINE};
pub use wire::*;
