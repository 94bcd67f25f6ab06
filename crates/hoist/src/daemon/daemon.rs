//! `Daemon`: the handle every listener and route holds. It owns the node's settings, the
//! slot for its membership (empty until `init`, `join`, `restore` or a resumed data
//! directory fills it), the mutex that serializes lifecycle steps (so an `init` racing a
//! `join`, or a promotion racing a demotion, cannot interleave), and the fatal signal a
//! failed Raft raises; and how it shuts down.
//!
//! Does not touch: the steps themselves (`lifecycle`, `roles`), what a member runs
//! (`member`), nor HTTP (`routes`).

use std::sync::{Arc, RwLock};

use anyhow::Context;
use tokio::sync::watch;

use super::errors::LifecycleError;
use super::member::Member;
use super::records::{identity_file, node_file, raft_dir};
use super::DaemonConfig;

pub struct Daemon {
    pub(super) config: DaemonConfig,
    pub(super) member: RwLock<Option<Arc<Member>>>,
    pub(super) lifecycle: tokio::sync::Mutex<()>,
    /// Set when Raft stopped on a fatal error (a full disk, a storage error): the node
    /// can no longer take part in the cluster, so the daemon exits with the reason.
    pub(super) fatal: watch::Sender<Option<String>>,
}

impl Daemon {
    pub fn new(config: DaemonConfig) -> Self {
        Daemon {
            config,
            member: RwLock::new(None),
            lifecycle: tokio::sync::Mutex::new(()),
            fatal: watch::channel(None).0,
        }
    }

    /// Waits until Raft stops on a fatal error and returns the reason.
    pub async fn fatal(&self) -> String {
        let mut fatal = self.fatal.subscribe();
        loop {
            if let Some(reason) = fatal.borrow_and_update().clone() {
                return reason;
            }
            if fatal.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    pub fn hostname(&self) -> &str {
        &self.config.hostname
    }

    pub fn limits(&self) -> &super::limits::Limits {
        &self.config.limits
    }

    pub fn member(&self) -> Option<Arc<Member>> {
        self.member
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn default_advertise(&self) -> Result<String, LifecycleError> {
        if let Some(addr) = &self.config.advertise_addr {
            return Ok(addr.clone());
        }
        if self.config.listen_addr.ip().is_unspecified() {
            return Err(LifecycleError::BadRequest(format!(
                "could not choose an address to advertise: the daemon listens on {}; pass --advertise-addr",
                self.config.listen_addr
            )));
        }
        Ok(self.config.listen_addr.to_string())
    }

    /// The node's TLS listener.
    pub(super) async fn bind_listener(&self) -> anyhow::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(self.config.listen_addr)
            .await
            .with_context(|| format!("listening on {}", self.config.listen_addr))
    }

    /// Stops everything a membership started and forgets it on disk.
    pub(super) async fn abandon_membership(&self) {
        let member = self
            .member
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(member) = member {
            self.stop_member(&member).await;
            self.stop_manager(&member).await;
            // A node that leaves takes its tasks down with it, as Swarm does.
            member.agent.stop_all().await;
        }
        let dir = &self.config.data_dir;
        for path in [node_file(dir), identity_file(dir)] {
            let _ = std::fs::remove_file(path);
        }
        let _ = std::fs::remove_dir_all(raft_dir(dir));
    }

    /// Stops the node, keeping its data for the next start.
    pub async fn shutdown(&self) {
        let member = self.member();
        if let Some(member) = member {
            self.stop_member(&member).await;
            self.halt_manager(&member).await;
        }
    }
}
