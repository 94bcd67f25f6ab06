//! The worker side of every node: the session with the leader's dispatcher.
//!
//! The session beats every heartbeat period, follows the leader when a manager says it
//! is not, renews the node certificate before it expires or when the cluster wants the
//! node in another role, and asks its host to start or stop being a manager to match.
//! It never talks to Raft: what the cluster wants reaches it only through the
//! dispatcher's answers.

mod agent;
mod backoff;
pub mod host;
mod plan;
mod session;

pub use agent::{run_assignments, run_reporter, Agent, AgentConfig};

pub use session::{run_session, HeldCertificate, SessionHost, SessionState};
