//! The node's lifecycle: not in a cluster, then a member (after `init`, `join`, or a
//! restart with a data directory), possibly a manager, and back out on `leave`.
//!
//! Lifecycle steps are serialized by one async mutex, so an `init` racing a `join` or a
//! promotion racing a demotion cannot interleave. What a node must find again after a
//! restart is in `node.json` (who it is, where the managers are) and `identity.json`
//! (its key and certificates, mode 0600); a manager also has its Raft store, without
//! which a node that `node.json` records as a Raft voter refuses to start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use hoist_api::{
    BackupFile, ForceNewClusterResponse, InitRequest, InitResponse, JoinClusterRequest,
    JoinClusterResponse, JoinRequest, JoinResponse, NotLeaderBody, RaftJoinRequest, RestoreRequest,
};
use hoist_driver::{Driver, ProcessDriver};
use hoist_manager::{bootstrap_cluster, BootstrapConfig, Manager, ManagerError};
use hoist_pki::{IdentityHandle, JoinToken, NodeCsr, NodeIdentity, PeerIdentity};
use hoist_raft::{RaftConfig, RaftNode};
use hoist_state::ClusterSettings;
use hoist_types::{EngineInfo, NodeId, Role};
use hoist_worker::{
    run_assignments, run_reporter, run_session, Agent, AgentConfig, SessionHost, SessionState,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{identity_file, node_file, raft_dir, server};

pub struct DaemonConfig {
    pub data_dir: PathBuf,
    pub listen_addr: SocketAddr,
    pub advertise_addr: Option<String>,
    pub hostname: String,
    /// What forwards `tcp` published ports on this node.
    pub mesh_dataplane: hoist_mesh::L4Dataplane,
    pub raft: RaftConfig,
    /// Time and size bounds set by `hoist daemon` flags.
    pub limits: super::limits::Limits,
}

/// What `node.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeRecord {
    node_id: NodeId,
    cluster_id: String,
    hostname: String,
    advertise_addr: String,
    managers: Vec<String>,
    /// The managers' node ids, from the join answer and then every heartbeat answer;
    /// empty in a record an older version wrote, until the first heartbeat.
    #[serde(default)]
    manager_ids: Vec<NodeId>,
    /// Whether this node has been confirmed as a Raft voter and keeps a store in
    /// `raft/`: at start, a voter whose store is missing, empty or unreadable refuses to
    /// run. Absent from older versions, which then go by the certificate's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raft_voter: Option<bool>,
}

/// A lifecycle failure, with the HTTP status that says its kind.
#[derive(Debug)]
pub struct LifecycleError {
    pub status: u16,
    pub message: String,
}

impl LifecycleError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        LifecycleError {
            status,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for LifecycleError {
    fn from(err: anyhow::Error) -> Self {
        LifecycleError::new(500, format!("{err:#}"))
    }
}

pub struct Daemon {
    config: DaemonConfig,
    member: RwLock<Option<Arc<Member>>>,
    lifecycle: tokio::sync::Mutex<()>,
    /// Set when Raft stopped on a fatal error (a full disk, a storage error): the node
    /// can no longer take part in the cluster, so the daemon exits with the reason.
    fatal: watch::Sender<Option<String>>,
}

/// A node that belongs to a cluster.
pub struct Member {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub hostname: String,
    pub advertise_addr: String,
    identity: IdentityHandle,
    files: Mutex<NodeIdentity>,
    certificate: Mutex<PeerIdentity>,
    /// Rebuilt whenever the certificate changes: pooled connections keep the identity
    /// they were opened with, and a renewed role must be seen by the servers at once.
    http: RwLock<reqwest::Client>,
    /// Where calls to other nodes leave from (see [`mtls_client`]).
    source_ip: Option<std::net::IpAddr>,
    managers: Mutex<Vec<String>>,
    /// Who may call this node's manager-only routes while it runs no Raft (its state
    /// would say, but it has none): the managers the join answer, then the last heartbeat answer, named.
    manager_ids: Mutex<Vec<NodeId>>,
    manager: RwLock<Option<ManagerRuntime>>,
    /// The leader has confirmed this manager is a voter.
    voter_confirmed: AtomicBool,
    /// What `node.json` says about being a Raft voter with a store (see `NodeRecord`).
    raft_voter: AtomicBool,
    /// Why the leader refused to make this manager a voter (it came back with a blank
    /// store): asking again cannot help until an operator steps in.
    raft_refused: Mutex<Option<String>>,
    data_dir: PathBuf,
    session_state: watch::Sender<SessionState>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set when the cluster removed this node; routes then say so.
    removed: Mutex<Option<String>>,
    /// Runs the tasks assigned to this node.
    pub agent: Agent,
    /// Serves the published ports on this node.
    pub mesh: Arc<hoist_mesh::Mesh>,
    /// What this node offers to run tasks with, as reported to the managers.
    engine: EngineInfo,
}

struct ManagerRuntime {
    manager: Manager,
    stop: watch::Sender<bool>,
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

    fn default_advertise(&self) -> Result<String, LifecycleError> {
        if let Some(addr) = &self.config.advertise_addr {
            return Ok(addr.clone());
        }
        if self.config.listen_addr.ip().is_unspecified() {
            return Err(LifecycleError::new(
                400,
                format!(
                    "could not choose an address to advertise: the daemon listens on {}; pass --advertise-addr",
                    self.config.listen_addr
                ),
            ));
        }
        Ok(self.config.listen_addr.to_string())
    }

    /// Picks the node up where it was: a member if its data directory says so.
    pub async fn resume(self: &Arc<Self>) -> anyhow::Result<()> {
        let dir = &self.config.data_dir;
        let record_path = node_file(dir);
        if !record_path.exists() {
            return Ok(());
        }
        let record: NodeRecord = read_json(&record_path)?;
        let files: NodeIdentity = read_json(&identity_file(dir))?;
        let is_manager_cert = files.peer()?.role == Role::Manager;
        // A voter without its store could vote twice in one term (it forgot whom it
        // voted for) and would hand the leader a log that went back: it must not run.
        if record.raft_voter.unwrap_or(is_manager_cert) {
            if let Err(err) = hoist_raft::check_store(&raft_dir(dir)) {
                bail!(
                    "{err}: node {} ({}) is a raft voter according to {}, and a voter must not start without its store, or it could vote twice in one term. To bring it back, restore {} from a backup of this node's data directory; or, on a manager, run `hoist node demote {}` and `hoist node rm --force {}`, then empty {} and join this node again with a manager token",
                    record.node_id,
                    record.hostname,
                    record_path.display(),
                    raft_dir(dir).display(),
                    record.hostname,
                    record.hostname,
                    dir.display(),
                );
            }
        }
        let _guard = self.lifecycle.lock().await;
        let member = self.start_member(record, files).await?;
        let raft_exists = raft_dir(dir).join("raft.redb").exists();
        if member.cert_role() == Role::Manager && raft_exists {
            // A manager dropped while it was away (force-new-cluster, removal) must not
            // start Raft with its old membership: with another dropped manager it could
            // elect a leader and fork the cluster. Ask the others first.
            if let Some(message) = refused_by_peers(&member).await {
                tracing::error!(node = %member.node_id, %message, "this manager was dropped from the cluster; not starting raft");
                *member.removed.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
                return Ok(());
            }
            self.start_manager(&member).await?;
        }
        self.start_session(&member);
        tracing::info!(node = %member.node_id, role = %member.cert_role(), "resumed cluster membership");
        Ok(())
    }

    /// The node's TLS listener.
    async fn bind_listener(&self) -> anyhow::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(self.config.listen_addr)
            .await
            .with_context(|| format!("listening on {}", self.config.listen_addr))
    }

    async fn start_member(
        self: &Arc<Self>,
        record: NodeRecord,
        files: NodeIdentity,
    ) -> anyhow::Result<Arc<Member>> {
        let listener = self.bind_listener().await?;
        self.start_member_on(record, files, listener).await
    }

    async fn start_member_on(
        self: &Arc<Self>,
        record: NodeRecord,
        files: NodeIdentity,
        listener: tokio::net::TcpListener,
    ) -> anyhow::Result<Arc<Member>> {
        let identity = IdentityHandle::new(&files)?;
        let certificate = files.peer()?;
        let source_ip = Some(self.config.listen_addr.ip()).filter(|ip| !ip.is_unspecified());
        let http = mtls_client(&identity, source_ip, hoist_pki::Dialled::Manager)?;
        let server_config = hoist_pki::server_config(&identity)?;
        let (stop, _) = watch::channel(false);
        let (session_state, _) = watch::channel(SessionState::default());
        let (drivers, engine) = node_drivers(
            &self.config.data_dir,
            record.node_id,
            self.config.limits.log_limits,
        )
        .await?;
        let endpoint_host = record
            .advertise_addr
            .rsplit_once(':')
            .map(|(host, _)| host.to_string())
            .unwrap_or_else(|| record.advertise_addr.clone());
        let (agent, reports) = Agent::new(
            AgentConfig {
                node_id: record.node_id,
                node_name: record.hostname.clone(),
                endpoint_host,
                tasks_dir: self.config.data_dir.join("tasks"),
            },
            drivers,
        );
        let member = Arc::new(Member {
            node_id: record.node_id,
            cluster_id: record.cluster_id,
            hostname: record.hostname,
            advertise_addr: record.advertise_addr,
            identity,
            files: Mutex::new(files),
            certificate: Mutex::new(certificate),
            http: RwLock::new(http),
            source_ip,
            managers: Mutex::new(record.managers),
            manager_ids: Mutex::new(record.manager_ids),
            manager: RwLock::new(None),
            voter_confirmed: AtomicBool::new(false),
            raft_voter: AtomicBool::new(record.raft_voter.unwrap_or(false)),
            raft_refused: Mutex::new(None),
            data_dir: self.config.data_dir.clone(),
            session_state,
            stop,
            tasks: Mutex::new(Vec::new()),
            removed: Mutex::new(None),
            agent,
            engine,
            mesh: Arc::new(hoist_mesh::Mesh::new(hoist_mesh::MeshConfig {
                listen_ip: self.config.listen_addr.ip(),
                l4_dataplane: self.config.mesh_dataplane,
                idle_timeout: self.config.limits.mesh_idle_timeout,
                max_lifetime: self.config.limits.mesh_max_lifetime,
                max_open_connections: self.config.limits.mesh_max_open_connections(),
                max_connections_per_port: self.config.limits.mesh_max_connections_per_port,
                max_connections_per_source: self.config.limits.mesh_max_connections_per_source,
                ..hoist_mesh::MeshConfig::default()
            })?),
        });
        member.agent.adopt().await;
        let reporter = {
            let for_http = member.clone();
            tokio::spawn(run_reporter(
                move || for_http.http(),
                reports,
                member.session_state.subscribe(),
                member.stop.subscribe(),
            ))
        };
        let (routes_tx, routes_rx) = watch::channel(Vec::new());
        let mesh_feed = tokio::spawn(feed_mesh(
            member.mesh.clone(),
            routes_rx,
            member.stop.subscribe(),
        ));
        let assignments = {
            let for_http = member.clone();
            tokio::spawn(run_assignments(
                move || for_http.http(),
                member.agent.clone(),
                routes_tx,
                member.session_state.subscribe(),
                member.stop.subscribe(),
            ))
        };
        member
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([reporter, assignments, mesh_feed]);
        let tls = server::serve_tls(self.clone(), listener, server_config).await;
        member
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tls);
        *self.member.write().unwrap_or_else(|p| p.into_inner()) = Some(member.clone());
        Ok(member)
    }

    fn start_session(self: &Arc<Self>, member: &Arc<Member>) {
        let host = Arc::new(SessionHandle {
            daemon: self.clone(),
            member: member.clone(),
        });
        let handle = tokio::spawn(run_session(
            host,
            member.session_state.clone(),
            member.stop.subscribe(),
        ));
        member
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle);
    }

    /// Starts Raft and the manager's loops on this member.
    async fn start_manager(&self, member: &Arc<Member>) -> anyhow::Result<Manager> {
        if let Some(runtime) = member
            .manager
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(runtime.manager.clone());
        }
        let raft = RaftNode::start(
            member.node_id.0,
            &raft_dir(&member.data_dir),
            self.config.raft,
            member.http(),
        )
        .await?;
        let manager = Manager::new(member.node_id, raft);
        let (stop, stop_rx) = watch::channel(false);
        {
            let watcher = manager.clone();
            let stop_rx = stop_rx.clone();
            tokio::spawn(async move { watcher.run_node_watch(stop_rx).await });
        }
        {
            let raft = manager.raft().clone();
            let fatal = self.fatal.clone();
            let node_id = member.node_id;
            let mut stop_rx = stop_rx.clone();
            tokio::spawn(async move {
                tokio::select! {
                    reason = raft.fatal() => {
                        tracing::error!(node = %node_id, %reason, "raft stopped on a fatal error");
                        fatal.send_replace(Some(reason));
                    }
                    _ = stop_rx.changed() => {}
                }
            });
        }
        {
            let orchestrator = manager.clone();
            tokio::spawn(async move { orchestrator.run_orchestrator(stop_rx).await });
        }
        *member.manager.write().unwrap_or_else(|p| p.into_inner()) = Some(ManagerRuntime {
            manager: manager.clone(),
            stop,
        });
        tracing::info!(node = %member.node_id, "manager started");
        Ok(manager)
    }

    /// Stops Raft and the manager's loops, keeping the store.
    async fn halt_manager(&self, member: &Arc<Member>) -> bool {
        let runtime = member
            .manager
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match runtime {
            Some(runtime) => {
                let _ = runtime.stop.send(true);
                runtime.manager.raft().shutdown().await;
                member.voter_confirmed.store(false, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Stops Raft here and forgets its store: a demoted manager that comes back later
    /// joins afresh, never with a stale membership.
    async fn stop_manager(&self, member: &Arc<Member>) {
        if self.halt_manager(member).await {
            // Recorded before the store goes, so a crash in between never leaves a
            // node that believes it is a voter without its store.
            member.raft_voter.store(false, Ordering::SeqCst);
            if let Err(err) = member.save_record() {
                tracing::warn!(error = %err, "recording that this node is no longer a raft voter");
            }
            if let Err(err) = std::fs::remove_dir_all(raft_dir(&member.data_dir)) {
                tracing::warn!(error = %err, "removing the raft store");
            }
            tracing::info!(node = %member.node_id, "manager stopped: this node is now a worker");
        }
    }

    /// `hoist init --force-new-cluster`: this manager's log becomes a new one-voter
    /// group with every node, service and task kept; the other managers are dropped.
    pub async fn force_new_cluster(
        self: &Arc<Self>,
        dry_run: bool,
    ) -> Result<ForceNewClusterResponse, LifecycleError> {
        let _guard = self.lifecycle.lock().await;
        let member = self.member().ok_or_else(|| {
            LifecycleError::new(
                409,
                "this node is not part of a cluster: it has no state to recover (use `hoist init`, or `hoist restore FILE`)",
            )
        })?;
        let manager = member.manager().ok_or_else(|| {
            LifecycleError::new(
                409,
                "this node is not a manager: it holds no copy of the cluster state to recover from",
            )
        })?;
        let quorum =
            tokio::time::timeout(Duration::from_secs(3), manager.raft().linearizable_read()).await;
        if let Ok(Ok(())) = quorum {
            let leader = manager.raft().leader_addr().unwrap_or_default();
            return Err(LifecycleError::new(
                409,
                format!(
                    "a quorum of managers is reachable (the leader is at {leader}): forcing a new cluster would split it in two. Remove managers with `hoist node demote` and `hoist node rm` instead"
                ),
            ));
        }
        let node_id = member.node_id;
        if dry_run {
            return Ok(manager.local(|state| recovery_summary(state, node_id, false)));
        }
        self.halt_manager(&member).await;
        let dir = raft_dir(&member.data_dir);
        let addr = member.advertise_addr.clone();
        let recovered = tokio::task::spawn_blocking(move || {
            let recovered = hoist_raft::read_full_state(&dir)?;
            hoist_raft::reseed_single_voter(&dir, node_id.0, &addr, &recovered)?;
            Ok::<_, hoist_raft::StoreError>(recovered)
        })
        .await
        .map_err(|err| LifecycleError::new(500, err.to_string()))?
        .map_err(|err| LifecycleError::new(500, format!("rewriting the raft store: {err}")))?;
        let response = recovery_summary(&recovered.state, node_id, true);
        let dropped: Vec<NodeId> = recovered
            .state
            .managers()
            .filter(|node| node.id != node_id)
            .map(|node| node.id)
            .collect();
        self.start_leading_alone(&member, dropped).await?;
        tracing::warn!(node = %node_id, dropped = ?response.dropped_managers, "forced a new cluster from this manager's state");
        Ok(response)
    }

    /// Starts Raft on a reseeded store, waits to lead, and records the dropped managers.
    async fn start_leading_alone(
        &self,
        member: &Arc<Member>,
        dropped: Vec<NodeId>,
    ) -> Result<(), LifecycleError> {
        let manager = self.start_manager(member).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !manager.is_leader() {
            if tokio::time::Instant::now() > deadline {
                return Err(LifecycleError::new(
                    500,
                    "this manager did not become the leader of the new group",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        manager
            .propose(hoist_state::Change::ForceNewCluster {
                survivor: member.node_id,
                dropped,
                at_ms: hoist_manager::now_ms(),
            })
            .await
            .map_err(|err| {
                LifecycleError::new(500, format!("recording the new membership: {err}"))
            })?;
        member.voter_confirmed.store(true, Ordering::SeqCst);
        member.raft_voter.store(true, Ordering::SeqCst);
        *member.managers.lock().unwrap_or_else(|p| p.into_inner()) =
            vec![member.advertise_addr.clone()];
        *member.manager_ids.lock().unwrap_or_else(|p| p.into_inner()) = vec![member.node_id];
        member.save_record()?;
        Ok(())
    }

    /// A consistent copy of the cluster state, from any manager.
    pub async fn backup(&self) -> Result<BackupFile, LifecycleError> {
        let member = self
            .member()
            .ok_or_else(|| LifecycleError::new(503, "this node is not part of a cluster"))?;
        let manager = member.manager().ok_or_else(|| {
            LifecycleError::new(
                503,
                "this node is not a manager: run the backup on a manager",
            )
        })?;
        let state = manager
            .read(hoist_state::ClusterState::clone)
            .await
            .map_err(|err| LifecycleError::new(503, err.to_string()))?;
        Ok(BackupFile::new(
            hoist_manager::now_ms(),
            member.node_id,
            state,
        ))
    }

    /// `hoist restore FILE` on a daemon in no cluster: it takes over the identity of the
    /// manager the backup came from and leads a new one-voter group with its state.
    pub async fn restore(
        self: &Arc<Self>,
        request: RestoreRequest,
    ) -> Result<ForceNewClusterResponse, LifecycleError> {
        let _guard = self.lifecycle.lock().await;
        if self.member().is_some() {
            return Err(LifecycleError::new(
                409,
                "this node is already part of a cluster: restore on a fresh daemon (or `hoist leave` first)",
            ));
        }
        let backup = request.backup;
        if let Err(err) = hoist_state::persist::check_version("the backup", backup.format) {
            return Err(LifecycleError::new(400, err.to_string()));
        }
        let state = backup.state;
        let node_id = backup.from_node;
        let node = state.nodes.get(&node_id).cloned().ok_or_else(|| {
            LifecycleError::new(
                400,
                format!(
                    "the backup's manager {node_id} is not in its own state: the file is damaged"
                ),
            )
        })?;
        let ca = state.ca.clone().ok_or_else(|| {
            LifecycleError::new(400, "the backup holds no CA: the file is damaged")
        })?;
        let advertise_addr = match request.advertise_addr {
            Some(addr) => addr,
            None => self.default_advertise()?,
        };
        let internal = |err: hoist_pki::PkiError| LifecycleError::new(500, err.to_string());
        let authority =
            hoist_pki::ClusterCa::from_pem(&ca.cert_pem, &ca.key_pem).map_err(internal)?;
        let csr = NodeCsr::generate().map_err(internal)?;
        let chain_pem = authority
            .sign_csr(
                &csr.csr_pem,
                node_id,
                Role::Manager,
                &state.cluster_id,
                Duration::from_secs(state.settings.cert_expiry_secs),
            )
            .map_err(internal)?;
        let files = NodeIdentity {
            key_pem: csr.key_pem,
            chain_pem,
            ca_pem: ca.cert_pem.clone(),
        };
        let record = NodeRecord {
            node_id,
            cluster_id: state.cluster_id.clone(),
            hostname: node.hostname.clone(),
            advertise_addr: advertise_addr.clone(),
            managers: vec![advertise_addr.clone()],
            manager_ids: vec![node_id],
            // Set once it leads the restored group (`start_leading_alone`).
            raft_voter: Some(false),
        };
        let dropped: Vec<NodeId> = state
            .managers()
            .filter(|other| other.id != node_id)
            .map(|other| other.id)
            .collect();
        let response = recovery_summary(&state, node_id, true);
        let result = async {
            let dir = raft_dir(&self.config.data_dir);
            let _ = std::fs::remove_dir_all(&dir);
            let recovered = hoist_raft::RecoveredState {
                state,
                last_log_id: None,
                term: 0,
            };
            let addr = advertise_addr.clone();
            tokio::task::spawn_blocking(move || {
                hoist_raft::reseed_single_voter(&dir, node_id.0, &addr, &recovered)
            })
            .await??;
            write_secret_json(&identity_file(&self.config.data_dir), &files)?;
            write_json(&node_file(&self.config.data_dir), &record)?;
            let member = self.start_member(record, files).await?;
            self.start_leading_alone(&member, dropped)
                .await
                .map_err(|err| anyhow!(err.message))?;
            self.start_session(&member);
            anyhow::Ok(())
        }
        .await;
        if let Err(err) = result {
            self.abandon_membership().await;
            return Err(err.into());
        }
        tracing::warn!(node = %node_id, "restored the cluster from a backup");
        Ok(response)
    }

    pub async fn init(
        self: &Arc<Self>,
        request: InitRequest,
    ) -> Result<InitResponse, LifecycleError> {
        let _guard = self.lifecycle.lock().await;
        if self.member().is_some() {
            return Err(LifecycleError::new(
                409,
                "this node is already part of a cluster: use `hoist leave` before creating a new one",
            ));
        }
        let advertise_addr = match request.advertise_addr {
            Some(addr) => {
                super::validate_addr(&addr).map_err(|err| {
                    LifecycleError::new(400, format!("--advertise-addr: {err:#}"))
                })?;
                addr
            }
            None => self.default_advertise()?,
        };
        let mut settings = ClusterSettings::default();
        if let Some(period) = request.heartbeat_period_ms {
            if !(50..=60_000).contains(&period) {
                return Err(LifecycleError::new(
                    400,
                    "--heartbeat-period must be between 50ms and 60s",
                ));
            }
            settings.heartbeat_period_ms = period;
        }
        if let Some(grace) = request.heartbeat_grace {
            if grace == 0 {
                return Err(LifecycleError::new(
                    400,
                    "--heartbeat-grace must be at least 1",
                ));
            }
            settings.heartbeat_grace = grace;
        }
        if let Some(expiry) = request.cert_expiry_secs {
            // Short lifetimes exist for tests of renewal; production keeps the default.
            if expiry < 10 {
                return Err(LifecycleError::new(
                    400,
                    "--cert-expiry must be at least 10s",
                ));
            }
            settings.cert_expiry_secs = expiry;
        }
        let bootstrap = bootstrap_cluster(&BootstrapConfig {
            hostname: self.config.hostname.clone(),
            advertise_addr: advertise_addr.clone(),
            settings,
        })
        .map_err(|err| LifecycleError::new(500, err.to_string()))?;
        let record = NodeRecord {
            node_id: bootstrap.node_id,
            cluster_id: bootstrap.cluster_id.clone(),
            hostname: self.config.hostname.clone(),
            advertise_addr: advertise_addr.clone(),
            managers: vec![advertise_addr.clone()],
            manager_ids: vec![bootstrap.node_id],
            // Written only once this node leads the new group.
            raft_voter: Some(true),
        };
        let result = async {
            let _ = std::fs::remove_dir_all(raft_dir(&self.config.data_dir));
            let member = self
                .start_member(record.clone(), bootstrap.identity.clone())
                .await?;
            let manager = self.start_manager(&member).await?;
            manager
                .raft()
                .initialize(&advertise_addr)
                .await
                .map_err(|err| anyhow!("starting raft: {err}"))?;
            manager
                .propose(bootstrap.change.clone())
                .await
                .map_err(|err| anyhow!("recording the new cluster: {err}"))?;
            member.voter_confirmed.store(true, Ordering::SeqCst);
            // Written last: a crash before this point leaves a node that is not in a
            // cluster, which `init` can simply be run on again.
            write_secret_json(&identity_file(&self.config.data_dir), &bootstrap.identity)?;
            write_json(&node_file(&self.config.data_dir), &record)?;
            self.start_session(&member);
            anyhow::Ok(())
        }
        .await;
        if let Err(err) = result {
            self.abandon_membership().await;
            return Err(err.into());
        }
        tracing::info!(node = %bootstrap.node_id, cluster = %bootstrap.cluster_id, "cluster initialized");
        Ok(bootstrap.response)
    }

    pub async fn join(
        self: &Arc<Self>,
        request: JoinClusterRequest,
    ) -> Result<JoinClusterResponse, LifecycleError> {
        let _guard = self.lifecycle.lock().await;
        if self.member().is_some() {
            return Err(LifecycleError::new(
                409,
                "this node is already part of a cluster: use `hoist leave` before joining another one",
            ));
        }
        let token = JoinToken::parse(&request.token)
            .map_err(|err| LifecycleError::new(400, err.to_string()))?;
        super::validate_addr(&request.manager_addr)
            .map_err(|err| LifecycleError::new(400, format!("manager address: {err:#}")))?;
        let advertise_addr = match request.advertise_addr {
            Some(addr) => {
                super::validate_addr(&addr).map_err(|err| {
                    LifecycleError::new(400, format!("--advertise-addr: {err:#}"))
                })?;
                addr
            }
            None => self.default_advertise()?,
        };
        // The manager records the address as the node's only if the join comes from it.
        let source_ip = hoist_types::node::parse_node_addr(&advertise_addr)
            .map_err(|err| LifecycleError::new(400, format!("--advertise-addr: {err}")))?
            .ip();
        if request.manager_addr == advertise_addr
            || request.manager_addr == self.config.listen_addr.to_string()
        {
            return Err(LifecycleError::new(
                400,
                format!(
                    "{} is this node's own address: give the address of a manager of the cluster to join",
                    request.manager_addr
                ),
            ));
        }
        // Taken before the manager records the node: a node that cannot listen must not
        // be left in the cluster's list by a join that then fails.
        let listener = self.bind_listener().await.map_err(|err| {
            LifecycleError::new(
                409,
                format!("{err:#}: this node cannot serve the cluster, so it did not ask to join"),
            )
        })?;
        let ca_pem = probe_ca(&request.manager_addr, &token.ca_digest).await?;
        let csr = NodeCsr::generate().map_err(|err| LifecycleError::new(500, err.to_string()))?;
        let pinned = reqwest::Client::builder()
            .local_address(source_ip)
            .use_preconfigured_tls(
                hoist_pki::pinned_config(&ca_pem)
                    .map_err(|err| LifecycleError::new(500, err.to_string()))?,
            )
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|err| LifecycleError::new(500, err.to_string()))?;
        let response = pinned
            .post(format!("https://{}/v1/join", request.manager_addr))
            .json(&JoinRequest {
                secret: token.secret.clone(),
                expected_role: request.expected_role,
                hostname: self.config.hostname.clone(),
                addr: advertise_addr.clone(),
                csr_pem: csr.csr_pem,
            })
            .send()
            .await
            .map_err(|err| {
                LifecycleError::new(
                    502,
                    format!("joining through {}: {err}", request.manager_addr),
                )
            })?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let message = hoist_api::ErrorBody::message_of(text);
            return Err(LifecycleError::new(
                status.as_u16(),
                format!("the manager refused the join: {message}"),
            ));
        }
        let joined: JoinResponse = response
            .json()
            .await
            .map_err(|err| LifecycleError::new(502, format!("bad join response: {err}")))?;
        let files = NodeIdentity {
            key_pem: csr.key_pem,
            chain_pem: joined.chain_pem.clone(),
            ca_pem: joined.ca_pem.clone(),
        };
        let mut managers = joined.managers.clone();
        if !managers.contains(&request.manager_addr) {
            managers.insert(0, request.manager_addr.clone());
        }
        let record = NodeRecord {
            node_id: joined.node_id,
            cluster_id: joined.cluster_id.clone(),
            hostname: self.config.hostname.clone(),
            advertise_addr: advertise_addr.clone(),
            managers,
            manager_ids: joined.manager_ids.clone(),
            // Set once the leader confirms it as a voter.
            raft_voter: Some(false),
        };
        let admitted = files.clone();
        let result = async {
            write_secret_json(&identity_file(&self.config.data_dir), &files)?;
            write_json(&node_file(&self.config.data_dir), &record)?;
            let member = self.start_member_on(record, files, listener).await?;
            if joined.role == Role::Manager {
                let _ = std::fs::remove_dir_all(raft_dir(&self.config.data_dir));
                self.start_manager(&member).await?;
                self.request_voter(&member).await?;
            }
            self.start_session(&member);
            anyhow::Ok(())
        }
        .await;
        if let Err(err) = result {
            self.abandon_membership().await;
            self.withdraw_join(&admitted, &request.manager_addr, joined.node_id)
                .await;
            return Err(err.into());
        }
        tracing::info!(node = %joined.node_id, role = %joined.role, "joined the cluster");
        Ok(JoinClusterResponse {
            node_id: joined.node_id,
            role: joined.role,
        })
    }

    /// After a join the manager admitted failed here: asks it to take the node's record
    /// back, so the cluster does not list a node that never came. Best effort: a
    /// manager that cannot be reached leaves a node that goes Down, for `node rm`.
    async fn withdraw_join(&self, files: &NodeIdentity, manager_addr: &str, node_id: NodeId) {
        let source_ip = Some(self.config.listen_addr.ip()).filter(|ip| !ip.is_unspecified());
        let client = IdentityHandle::new(files)
            .and_then(|identity| hoist_pki::client_config(&identity, hoist_pki::Dialled::Manager))
            .map_err(anyhow::Error::from)
            .and_then(|config| {
                reqwest::Client::builder()
                    .use_preconfigured_tls(config)
                    .local_address(source_ip)
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(anyhow::Error::from)
            });
        let outcome = match client {
            Ok(client) => client
                .post(format!("https://{manager_addr}/v1/join/abandon"))
                .json(&serde_json::Value::Null)
                .send()
                .await
                .map_err(anyhow::Error::from)
                .and_then(|response| {
                    response
                        .error_for_status()
                        .map(|_| ())
                        .map_err(anyhow::Error::from)
                }),
            Err(err) => Err(err),
        };
        match outcome {
            Ok(()) => tracing::info!(node = %node_id, "the failed join was taken back"),
            Err(err) => {
                tracing::warn!(node = %node_id, error = %format!("{err:#}"), "the failed join could not be taken back: remove the node with `hoist node rm`")
            }
        }
    }

    /// Asks the leader to make this manager a voter, following redirects.
    async fn request_voter(&self, member: &Arc<Member>) -> anyhow::Result<()> {
        let raft = member
            .manager()
            .map(|manager| manager.raft().clone())
            .context("raft is not running on this node")?;
        if let Some(message) = member
            .raft_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            bail!("{message}");
        }
        let body = RaftJoinRequest {
            addr: member.advertise_addr.clone(),
            unconfirmed_store: !raft.may_vote(),
            raft_incarnation: raft.incarnation(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut candidates = member.known_managers();
        let mut last_error = String::from("no manager known");
        while tokio::time::Instant::now() < deadline {
            let Some(addr) = candidates.pop() else {
                candidates = member.known_managers();
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            if addr == member.advertise_addr {
                continue;
            }
            let response = member
                .http()
                .post(format!("https://{addr}/v1/raft/join-me"))
                .json(&body)
                .timeout(Duration::from_secs(20))
                .send()
                .await;
            match response {
                Ok(response) if response.status().is_success() => {
                    member.confirm_voter(&raft)?;
                    tracing::info!(node = %member.node_id, leader = %addr, "this manager is now a raft voter");
                    return Ok(());
                }
                Ok(response) if response.status() == reqwest::StatusCode::CONFLICT => {
                    // The leader refused this voter for good (it came back with a blank
                    // store): asking again on every heartbeat cannot change that.
                    let text = response.text().await.unwrap_or_default();
                    let message = format!(
                        "the leader at {addr} refused this manager: {}",
                        hoist_api::ErrorBody::message_of(text)
                    );
                    tracing::error!(node = %member.node_id, %message, "not a raft voter; this node does not vote");
                    *member
                        .raft_refused
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
                    bail!("{message}");
                }
                Ok(response) if response.status() == reqwest::StatusCode::FORBIDDEN => {
                    // The cluster no longer wants this node as a manager (a demotion
                    // committed meanwhile): the next heartbeat answer says so, and asking
                    // again until the deadline would only hold up the session.
                    let text = response.text().await.unwrap_or_default();
                    bail!(
                        "the manager at {addr} did not add this node: {}",
                        hoist_api::ErrorBody::message_of(text)
                    );
                }
                Ok(response) if response.status() == reqwest::StatusCode::MISDIRECTED_REQUEST => {
                    let body: Option<NotLeaderBody> = response.json().await.ok();
                    if let Some(leader) = body.and_then(|body| body.leader_addr) {
                        candidates.push(leader);
                    } else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    last_error = format!(
                        "{addr}: {status}: {}",
                        response.text().await.unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => last_error = format!("{addr}: {err}"),
            }
        }
        bail!("could not become a raft voter: {last_error}")
    }

    pub async fn leave(self: &Arc<Self>, force: bool) -> Result<(), LifecycleError> {
        let _guard = self.lifecycle.lock().await;
        let Some(member) = self.member() else {
            return Err(LifecycleError::new(
                409,
                "this node is not part of a cluster",
            ));
        };
        if member.is_manager() && !force {
            let managers = member
                .manager()
                .map(|manager| manager.raft().membership().voters.len())
                .unwrap_or(1);
            return Err(LifecycleError::new(
                409,
                format!(
                    "this node is a manager ({managers} managers in the cluster): leaving would lose a manager, and with it possibly the quorum. Demote it first with `hoist node demote {}`, or use --force",
                    member.hostname
                ),
            ));
        }
        self.abandon_membership().await;
        tracing::info!(node = %member.node_id, "left the cluster");
        Ok(())
    }

    /// Stops everything a membership started and forgets it on disk.
    async fn abandon_membership(&self) {
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

    async fn stop_member(&self, member: &Arc<Member>) {
        let _ = member.stop.send(true);
        member.mesh.shutdown().await;
        let tasks: Vec<JoinHandle<()>> = member
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for task in tasks {
            task.abort();
        }
    }

    /// Stops the node, keeping its data for the next start.
    pub async fn shutdown(&self) {
        let member = self.member();
        if let Some(member) = member {
            self.stop_member(&member).await;
            let runtime = member
                .manager
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(runtime) = runtime {
                let _ = runtime.stop.send(true);
                runtime.manager.raft().shutdown().await;
            }
        }
    }
}

/// What a recovery keeps (counts) and drops (the other managers), for the operator.
fn recovery_summary(
    state: &hoist_state::ClusterState,
    survivor: NodeId,
    applied: bool,
) -> ForceNewClusterResponse {
    ForceNewClusterResponse {
        node_id: survivor,
        cluster_id: state.cluster_id.clone(),
        nodes: state.nodes.len(),
        services: state.services.len(),
        tasks: state.tasks.len(),
        dropped_managers: state
            .managers()
            .filter(|node| node.id != survivor)
            .map(|node| node.hostname.clone())
            .collect(),
        applied,
    }
}

/// The drivers this node offers: the process driver always, and the Docker Engine's
/// when one answers (at `DOCKER_HOST` or /var/run/docker.sock). Containers are owned by
/// the node id, so daemons sharing one engine never touch each other's.
async fn node_drivers(
    data_dir: &Path,
    node_id: NodeId,
    log_limits: hoist_driver::LogLimits,
) -> anyhow::Result<(Vec<Arc<dyn Driver>>, EngineInfo)> {
    let process: Arc<dyn Driver> = Arc::new(ProcessDriver::with_log_limits(
        data_dir.join("driver"),
        log_limits,
    )?);
    let mut drivers = vec![process];
    let mut engine = EngineInfo::default();
    let connect = tokio::time::timeout(
        Duration::from_secs(3),
        hoist_driver::DockerDriver::connect(node_id.to_string()),
    )
    .await;
    match connect {
        Ok(Ok(docker)) => {
            if let Ok(description) = docker.engine_info().await {
                engine.docker_version = Some(description.version);
                engine.storage_driver = Some(description.storage_driver);
            }
            tracing::info!(version = ?engine.docker_version, storage = ?engine.storage_driver, "docker engine found");
            drivers.push(Arc::new(docker));
        }
        Ok(Err(err)) => tracing::info!(error = %err, "no docker engine: the docker driver is off"),
        Err(_) => {
            tracing::info!("the docker engine did not answer in 3 s: the docker driver is off")
        }
    }
    Ok((drivers, engine))
}

/// The mesh's view of the published routes the dispatcher pushed.
pub(crate) fn mesh_services(routes: &[hoist_api::PublishedRoute]) -> Vec<hoist_mesh::ServiceRoute> {
    routes
        .iter()
        .map(|route| hoist_mesh::ServiceRoute {
            // One mesh entry per published port of a service.
            service_id: format!("{}/{}", route.service_id, route.published),
            service_name: route.service_name.clone(),
            published: route.published,
            protocol: match route.protocol {
                hoist_types::service::Protocol::Tcp => hoist_mesh::Protocol::Tcp,
                hoist_types::service::Protocol::Http => hoist_mesh::Protocol::Http,
            },
            routes: route
                .routes
                .iter()
                .map(|rule| hoist_mesh::HostPathRoute {
                    host: rule.host.clone(),
                    path_prefix: rule.path_prefix.clone(),
                })
                .collect(),
            health: route
                .health_path
                .as_ref()
                .map(|path| hoist_mesh::HealthCheck {
                    path: path.clone(),
                    ..hoist_mesh::HealthCheck::default()
                }),
            endpoints: route
                .endpoints
                .iter()
                .filter_map(|endpoint| {
                    let addr = endpoint.addr.parse().ok()?;
                    Some(hoist_mesh::Endpoint {
                        id: endpoint.task_id.clone(),
                        addr,
                        state: if endpoint.draining {
                            hoist_mesh::EndpointState::Draining
                        } else {
                            hoist_mesh::EndpointState::Active
                        },
                    })
                })
                .collect(),
        })
        .collect()
}

/// The largest prefix-consistent subset the mesh accepts: a service whose routes clash
/// with those already taken is left out (and logged) rather than blocking every other
/// service's update on this node.
fn servable(services: Vec<hoist_mesh::ServiceRoute>) -> Vec<hoist_mesh::ServiceRoute> {
    if hoist_mesh::validate_services(&services).is_ok() {
        return services;
    }
    let mut accepted: Vec<hoist_mesh::ServiceRoute> = Vec::new();
    for service in services {
        accepted.push(service);
        if let Err(err) = hoist_mesh::validate_services(&accepted) {
            if let Some(refused) = accepted.pop() {
                tracing::warn!(service = %refused.service_name, error = %err, "published port left out of the mesh");
            }
        }
    }
    accepted
}

/// Applies every new route set to the mesh: listeners open and close, endpoint tables
/// change in place, nothing restarts.
async fn feed_mesh(
    mesh: Arc<hoist_mesh::Mesh>,
    mut routes: watch::Receiver<Vec<hoist_api::PublishedRoute>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let services = servable(mesh_services(&routes.borrow_and_update()));
        let mut retry = false;
        match mesh.set_services(services).await {
            Ok(report) => {
                retry = !report.failed.is_empty();
                for port in &report.opened {
                    tracing::info!(port, "mesh listening");
                }
                for port in &report.closed {
                    tracing::info!(port, "mesh closed");
                }
                for err in &report.failed {
                    tracing::warn!(error = %err, "mesh update incomplete; retrying");
                }
            }
            // Stopped for good (the node was removed, or is shutting down).
            Err(hoist_mesh::MeshError::ShutDown) => return,
            Err(err) => tracing::warn!(error = %err, "mesh update refused"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            changed = routes.changed() => if changed.is_err() { return },
            // A port another process held may be free now.
            _ = tokio::time::sleep(Duration::from_secs(2)), if retry => {}
        }
    }
}

/// Asks the other known managers whether they still accept this node; returns the
/// refusal if one says no. Unreachable managers say nothing.
async fn refused_by_peers(member: &Arc<Member>) -> Option<String> {
    let request = hoist_api::HeartbeatRequest {
        addr: member.advertise_addr.clone(),
        engine: EngineInfo::default(),
        resources: Default::default(),
        cert_role: member.cert_role(),
        raft_running: false,
    };
    for addr in member.managers() {
        if addr == member.advertise_addr {
            continue;
        }
        let response = member
            .http()
            .post(format!("https://{addr}/v1/dispatcher/heartbeat"))
            .json(&request)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if let Ok(response) = response {
            if response.status() == reqwest::StatusCode::FORBIDDEN {
                let text = response.text().await.unwrap_or_default();
                let message = hoist_api::ErrorBody::message_of(text);
                return Some(message);
            }
        }
    }
    None
}

/// Connects to the manager without trusting it, reads the CA it presents, and checks
/// the digest against the token's before anything secret is sent.
async fn probe_ca(addr: &str, expected_digest: &str) -> Result<String, LifecycleError> {
    let (config, captured) =
        hoist_pki::join_probe_config().map_err(|err| LifecycleError::new(500, err.to_string()))?;
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| {
            LifecycleError::new(
                502,
                format!("cannot reach the manager at {addr}: timed out"),
            )
        })?
        .map_err(|err| {
            LifecycleError::new(502, format!("cannot reach the manager at {addr}: {err}"))
        })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(hoist_pki::SERVER_NAME)
        .map_err(|err| LifecycleError::new(500, err.to_string()))?;
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, stream))
        .await
        .map_err(|_| LifecycleError::new(502, format!("TLS handshake with {addr} timed out")))?
        .map_err(|err| {
            LifecycleError::new(502, format!("TLS handshake with {addr} failed: {err}"))
        })?;
    let Some((digest, pem)) = captured.ca() else {
        return Err(LifecycleError::new(
            502,
            format!("the manager at {addr} presented no certificate chain: refusing to join"),
        ));
    };
    if !digest.eq_ignore_ascii_case(expected_digest) {
        return Err(LifecycleError::new(
            403,
            format!("the manager at {addr} presented a CA whose digest does not match the token: refusing to join"),
        ));
    }
    // Unverified here, so only for the message: the join request's own connection
    // verifies the chain and the role before the secret leaves (`pinned_config`).
    match captured.unverified_leaf() {
        Some(Ok(server)) if server.role != Role::Manager => Err(LifecycleError::new(
            403,
            format!(
                "the node at {addr} presented a {} certificate (node {}), not a manager's: only a manager admits nodes, so the join secret was not sent",
                server.role, server.node_id
            ),
        )),
        Some(Err(err)) => Err(LifecycleError::new(
            403,
            format!(
                "the node at {addr} presented no node certificate of a cluster ({err}): the join secret was not sent"
            ),
        )),
        _ => Ok(pem),
    }
}

/// The client for calls to other nodes, presenting this node's certificate.
///
/// Connections leave from the node's own listen address when it has a specific one, so
/// that peers (and a test's fault proxy) can tell nodes sharing a host apart by source.
fn mtls_client(
    identity: &IdentityHandle,
    source_ip: Option<std::net::IpAddr>,
    dialled: hoist_pki::Dialled,
) -> anyhow::Result<reqwest::Client> {
    let client_config = hoist_pki::client_config(identity, dialled)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(client_config)
        .local_address(source_ip)
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .context("building the TLS client")
}

impl Member {
    /// The client for calls to managers: it refuses a server without a manager
    /// certificate.
    pub fn http(&self) -> reqwest::Client {
        self.http.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A client for calls to one node whatever its role (reading task output from the
    /// node that ran the task): it refuses any other node's certificate.
    pub fn http_to_node(&self, node_id: NodeId) -> anyhow::Result<reqwest::Client> {
        mtls_client(
            &self.identity,
            self.source_ip,
            hoist_pki::Dialled::Node(node_id),
        )
    }

    pub fn manager(&self) -> Option<Manager> {
        self.manager
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|runtime| runtime.manager.clone())
    }

    pub fn is_manager(&self) -> bool {
        self.manager
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    pub fn cert_role(&self) -> Role {
        self.certificate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .role
    }

    pub fn cert_not_after(&self) -> i64 {
        self.certificate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .not_after
    }

    pub fn managers(&self) -> Vec<String> {
        self.managers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where to look for the leader: the managers the last heartbeat answer named, and
    /// while this node runs Raft, the members of its group. A leader that has just
    /// demoted itself heard no answer naming the managers that remain, and would
    /// otherwise only ever ask itself.
    pub fn known_managers(&self) -> Vec<String> {
        let mut managers = self.managers();
        if let Some(manager) = self.manager() {
            let membership = manager.raft().membership();
            for addr in membership
                .voters
                .values()
                .chain(membership.learners.values())
            {
                if !managers.contains(addr) {
                    managers.push(addr.clone());
                }
            }
        }
        managers
    }

    /// The managers' node ids as last heard; empty when not known yet.
    pub fn manager_ids(&self) -> Vec<NodeId> {
        self.manager_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn removed_message(&self) -> Option<String> {
        self.removed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn leader_hint(&self) -> Option<String> {
        self.session_state.borrow().leader_addr.clone()
    }

    /// What this node's heartbeat session last learned, for `info`.
    pub fn session(&self) -> SessionState {
        self.session_state.borrow().clone()
    }

    fn save_record(&self) -> anyhow::Result<()> {
        write_json(
            &node_file(&self.data_dir),
            &NodeRecord {
                node_id: self.node_id,
                cluster_id: self.cluster_id.clone(),
                hostname: self.hostname.clone(),
                advertise_addr: self.advertise_addr.clone(),
                managers: self.managers(),
                manager_ids: self.manager_ids(),
                raft_voter: Some(self.raft_voter.load(Ordering::SeqCst)),
            },
        )
    }

    /// Records that the leader confirmed this manager as a voter: from now on it votes,
    /// and it refuses to start without its store.
    fn confirm_voter(&self, raft: &RaftNode) -> anyhow::Result<()> {
        raft.allow_voting()
            .map_err(|err| anyhow!("recording the leader's confirmation: {err}"))?;
        self.voter_confirmed.store(true, Ordering::SeqCst);
        if !self.raft_voter.swap(true, Ordering::SeqCst) {
            self.save_record()?;
        }
        Ok(())
    }
}

/// The daemon as the worker session sees it.
struct SessionHandle {
    daemon: Arc<Daemon>,
    member: Arc<Member>,
}

impl SessionHost for SessionHandle {
    fn node_id(&self) -> NodeId {
        self.member.node_id
    }

    fn http(&self) -> reqwest::Client {
        self.member.http()
    }

    fn advertise_addr(&self) -> String {
        self.member.advertise_addr.clone()
    }

    fn engine(&self) -> EngineInfo {
        let mut engine = self.member.engine.clone();
        engine.drivers = self.member.agent.driver_names();
        engine
    }

    fn certificate(&self) -> (Role, i64, u64) {
        let certificate = self
            .member
            .certificate
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        (certificate.role, certificate.not_after, 0)
    }

    fn raft_running(&self) -> bool {
        self.member.is_manager()
    }

    fn managers(&self) -> Vec<String> {
        self.member.known_managers()
    }

    fn set_managers(&self, managers: Vec<String>, manager_ids: Vec<NodeId>) {
        let changed = {
            let mut current = self
                .member
                .managers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut current_ids = self
                .member
                .manager_ids
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let changed = *current != managers || *current_ids != manager_ids;
            *current = managers;
            *current_ids = manager_ids;
            changed
        };
        if changed {
            if let Err(err) = self.member.save_record() {
                tracing::warn!(error = %err, "saving the manager list");
            }
        }
    }

    fn install_certificate(&self, key_pem: String, chain_pem: String) -> Result<(), String> {
        let mut files = self.member.files.lock().unwrap_or_else(|p| p.into_inner());
        let renewed = NodeIdentity {
            key_pem,
            chain_pem,
            ca_pem: files.ca_pem.clone(),
        };
        let peer = renewed.peer().map_err(|err| err.to_string())?;
        if peer.node_id != self.member.node_id {
            return Err(format!(
                "the renewed certificate is for node {}, not this one",
                peer.node_id
            ));
        }
        write_secret_json(&identity_file(&self.member.data_dir), &renewed)
            .map_err(|err| format!("{err:#}"))?;
        self.member
            .identity
            .replace(&renewed)
            .map_err(|err| err.to_string())?;
        let http = mtls_client(
            &self.member.identity,
            self.member.source_ip,
            hoist_pki::Dialled::Manager,
        )
        .map_err(|err| format!("{err:#}"))?;
        *self.member.http.write().unwrap_or_else(|p| p.into_inner()) = http;
        *self
            .member
            .certificate
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = peer;
        *files = renewed;
        Ok(())
    }

    fn set_trust(&self, trust_pem: &str) -> Result<(), String> {
        let mut files = self.member.files.lock().unwrap_or_else(|p| p.into_inner());
        if files.ca_pem == trust_pem {
            return Ok(());
        }
        let updated = NodeIdentity {
            ca_pem: trust_pem.to_string(),
            ..files.clone()
        };
        self.member
            .identity
            .set_trust(trust_pem)
            .map_err(|err| err.to_string())?;
        // Kept on disk too, so a restart does not come back trusting a dropped CA; if it
        // cannot be, the node stays as it was and the next heartbeat tries again.
        if let Err(err) = write_secret_json(&identity_file(&self.member.data_dir), &updated) {
            let _ = self.member.identity.set_trust(&files.ca_pem);
            return Err(format!("{err:#}"));
        }
        let cas = trust_pem.matches("BEGIN CERTIFICATE").count();
        tracing::info!(node = %self.member.node_id, cas, "trusted CAs updated");
        *files = updated;
        Ok(())
    }

    fn issued_by(&self, ca_digest: &str) -> bool {
        self.member
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .issued_by(ca_digest)
    }

    async fn become_role(&self, role: Role) -> Result<(), String> {
        let member = &self.member;
        match role {
            Role::Manager => {
                if member.is_manager() && member.voter_confirmed.load(Ordering::SeqCst) {
                    return Ok(());
                }
                let _guard = self.daemon.lifecycle.lock().await;
                if !member.is_manager() {
                    let _ = std::fs::remove_dir_all(raft_dir(&member.data_dir));
                    self.daemon
                        .start_manager(member)
                        .await
                        .map_err(|err| format!("{err:#}"))?;
                }
                let Some(raft) = member.manager().map(|manager| manager.raft().clone()) else {
                    return Err("raft is not running on this node".into());
                };
                // A voter in the membership whose store began blank here is not
                // confirmed by that: it may be a voter that lost its store, which only
                // the leader can tell apart (and refuses).
                if raft.may_vote() && raft.membership().voters.contains_key(&member.node_id.0) {
                    return member
                        .confirm_voter(&raft)
                        .map_err(|err| format!("{err:#}"));
                }
                self.daemon
                    .request_voter(member)
                    .await
                    .map_err(|err| format!("{err:#}"))
            }
            Role::Worker => {
                if !member.is_manager() {
                    return Ok(());
                }
                let _guard = self.daemon.lifecycle.lock().await;
                self.daemon.stop_manager(member).await;
                Ok(())
            }
        }
    }

    fn removed(&self, message: String) {
        *self
            .member
            .removed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(message);
        // As Swarm does when a node leaves: the cluster has given this node's tasks to
        // others, so copies left running, or a mesh still answering on published ports
        // from routes that no longer update, would only serve stale versions.
        let member = Arc::clone(&self.member);
        tokio::spawn(async move {
            // Side by side: a long request still streaming through the mesh must not keep
            // the tasks running.
            tokio::join!(member.mesh.shutdown(), member.agent.stop_all());
            tracing::warn!(node = %member.node_id, "removed from the cluster: the mesh and every task are stopped");
        });
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file.
/// Private like everything in the data directory (see `files`).
fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    write_file(path, &serde_json::to_vec_pretty(value)?, 0o600)
}

fn write_secret_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    write_file(path, &serde_json::to_vec_pretty(value)?, 0o600)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Turns a manager refusal into the daemon's error type.
pub fn manager_error_status(err: &ManagerError) -> u16 {
    match err {
        ManagerError::Invalid(_) => 400,
        ManagerError::NotFound(_) => 404,
        ManagerError::Refused(_) => 409,
        ManagerError::Forbidden(_) => 403,
        ManagerError::NoQuorum(_) => 503,
        ManagerError::TooMany(_) => 429,
        ManagerError::NotLeader { .. } => 421,
        ManagerError::Internal(_) => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(service: &str, host: Option<&str>) -> hoist_api::PublishedRoute {
        hoist_api::PublishedRoute {
            service_id: service.into(),
            service_name: service.into(),
            published: 8080,
            target: 80,
            protocol: hoist_types::service::Protocol::Http,
            mode: hoist_types::service::PortMode::Ingress,
            health_path: None,
            routes: host
                .map(|host| {
                    vec![hoist_types::service::HttpRoute {
                        host: Some(host.into()),
                        path_prefix: None,
                    }]
                })
                .unwrap_or_default(),
            endpoints: Vec::new(),
        }
    }

    #[test]
    fn a_clashing_route_is_left_out_instead_of_blocking_the_others() {
        let routes = vec![
            route("a", Some("a.test")),
            route("b", Some("a.test")),
            route("c", Some("c.test")),
        ];
        let served: Vec<String> = servable(mesh_services(&routes))
            .into_iter()
            .map(|service| service.service_name)
            .collect();
        assert_eq!(served, vec!["a".to_string(), "c".to_string()]);
    }
}
