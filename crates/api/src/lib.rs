//! The control API: request and response types, error bodies, and the [`Client`] that
//! CLI commands use to talk to a daemon over its unix socket.
//!
//! This is the only crate that knows the wire format (JSON over HTTP, paths under
//! `/v1`); it holds no logic beyond encoding and decoding.

mod client;
mod wire;

pub use client::{Client, ClientError};
pub use wire::*;
