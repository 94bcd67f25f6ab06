//! The control API: request and response types, error bodies, and the [`Client`] that
//! CLI commands use to talk to a daemon over its unix socket.
//!
//! This is the only crate that knows the wire format (JSON over HTTP, paths under
//! `/v1`); it holds no logic beyond encoding and decoding.

mod client;
mod lines;
mod wire;

pub use client::{Client, ClientError};
pub use lines::{body_lines, LineError, MAX_ASSIGNMENT_LINE, MAX_LOG_LINE};
pub use wire::*;
