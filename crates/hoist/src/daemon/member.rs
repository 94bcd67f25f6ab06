//! A node that belongs to a cluster (`Member`): who it is, its certificate and clients,
//! the managers it knows, whether it runs Raft, and the loops every member runs (the
//! task reporter, the assignment stream, the mesh feed, the TLS listener), started by
//! [`Daemon::start_member`] and stopped by [`Daemon::stop_member`].
//!
//! Does not touch: when a node becomes or stops being a member (`lifecycle`), starting
//! or stopping Raft (`roles`), nor how files are written (`records`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::anyhow;
use hoist_manager::Manager;
use hoist_pki::{IdentityHandle, NodeIdentity, PeerIdentity};
use hoist_raft::RaftNode;
use hoist_types::{EngineInfo, NodeId, Role};
use hoist_worker::{run_assignments, run_reporter, Agent, AgentConfig, SessionState};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::drivers::node_drivers;
use super::records::{node_file, write_json, NodeRecord};
use super::tls::mtls_client;
use super::{mesh_feed, server, Daemon};

/// A node that belongs to a cluster.
pub struct Member {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub hostname: String,
    pub advertise_addr: String,
    pub(super) identity: IdentityHandle,
    pub(super) files: Mutex<NodeIdentity>,
    pub(super) certificate: Mutex<PeerIdentity>,
    /// Rebuilt whenever the certificate changes: pooled connections keep the identity
    /// they were opened with, and a renewed role must be seen by the servers at once.
    pub(super) http: RwLock<reqwest::Client>,
    /// Where calls to other nodes leave from (see [`mtls_client`]).
    pub(super) source_ip: Option<std::net::IpAddr>,
    pub(super) managers: Mutex<Vec<String>>,
    /// Who may call this node's manager-only routes while it runs no Raft (its state
    /// would say, but it has none): the managers the join answer, then the last heartbeat answer, named.
    pub(super) manager_ids: Mutex<Vec<NodeId>>,
    pub(super) manager: RwLock<Option<ManagerRuntime>>,
    /// The leader has confirmed this manager is a voter.
    pub(super) voter_confirmed: AtomicBool,
    /// What `node.json` says about being a Raft voter with a store (see `NodeRecord`).
    pub(super) raft_voter: AtomicBool,
    /// Why the leader refused to make this manager a voter (it came back with a blank
    /// store): asking again cannot help until an operator steps in.
    pub(super) raft_refused: Mutex<Option<String>>,
    pub(super) data_dir: std::path::PathBuf,
    pub(super) session_state: watch::Sender<SessionState>,
    pub(super) stop: watch::Sender<bool>,
    pub(super) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set when the cluster removed this node; routes then say so.
    pub(super) removed: Mutex<Option<String>>,
    /// Runs the tasks assigned to this node.
    pub agent: Agent,
    /// Serves the published ports on this node.
    pub mesh: Arc<hoist_mesh::Mesh>,
    /// What this node offers to run tasks with, as reported to the managers.
    pub(super) engine: EngineInfo,
    /// Published ports the mesh could not open, as the last update left them (reported
    /// in every heartbeat).
    pub(super) port_faults: watch::Sender<Vec<hoist_types::node::PortFault>>,
}

/// Raft and the manager's loops while this node runs them.
pub(super) struct ManagerRuntime {
    pub(super) manager: Manager,
    pub(super) stop: watch::Sender<bool>,
}

impl Daemon {
    /// Binds the node's TLS listener and starts the member on it.
    pub(super) async fn start_member(
        self: &Arc<Self>,
        record: NodeRecord,
        files: NodeIdentity,
    ) -> anyhow::Result<Arc<Member>> {
        let listener = self.bind_listener().await?;
        self.start_member_on(record, files, listener).await
    }

    /// Makes the member, adopts the tasks still running from before, starts its loops
    /// and its listener, and installs it as this daemon's membership.
    pub(super) async fn start_member_on(
        self: &Arc<Self>,
        record: NodeRecord,
        files: NodeIdentity,
        listener: tokio::net::TcpListener,
    ) -> anyhow::Result<Arc<Member>> {
        let (member, reports, server_config) = self.new_member(record, files).await?;
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
        let mesh_feed = tokio::spawn(mesh_feed::feed_mesh(
            member.mesh.clone(),
            routes_rx,
            member.stop.subscribe(),
            member.port_faults.clone(),
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
        member.track([reporter, assignments, mesh_feed]);
        let tls = server::serve_tls(self.clone(), listener, server_config).await;
        member.track([tls]);
        *self.member.write().unwrap_or_else(|p| p.into_inner()) = Some(member.clone());
        Ok(member)
    }
}

/// What [`Daemon::new_member`] makes: the member, the receiver of its agent's task
/// reports, and the server side of its identity.
type NewMember = (
    Arc<Member>,
    tokio::sync::mpsc::UnboundedReceiver<hoist_state::TaskReport>,
    rustls::ServerConfig,
);

impl Daemon {
    /// The member of `record` with the identity in `files`, its drivers, agent and mesh,
    /// before anything of it runs.
    async fn new_member(
        &self,
        record: NodeRecord,
        files: NodeIdentity,
    ) -> anyhow::Result<NewMember> {
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
            port_faults: watch::channel(Vec::new()).0,
            mesh: Arc::new(self.new_mesh()?),
        });
        Ok((member, reports, server_config))
    }

    fn new_mesh(&self) -> anyhow::Result<hoist_mesh::Mesh> {
        let limits = &self.config.limits;
        Ok(hoist_mesh::Mesh::new(hoist_mesh::MeshConfig {
            listen_ip: self.config.listen_addr.ip(),
            l4_dataplane: self.config.mesh_dataplane,
            idle_timeout: limits.mesh_idle_timeout,
            max_lifetime: limits.mesh_max_lifetime,
            max_open_connections: limits.mesh_max_open_connections(),
            max_connections_per_port: limits.mesh_max_connections_per_port,
            max_connections_per_source: limits.mesh_max_connections_per_source,
            ..hoist_mesh::MeshConfig::default()
        })?)
    }

    /// Stops the member's loops and its mesh; its tasks keep running.
    pub(super) async fn stop_member(&self, member: &Arc<Member>) {
        let _ = member.stop.send(true);
        member.mesh.shutdown().await;
        let tasks: Vec<JoinHandle<()>> = member
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        // The loops see `stop` and end on their own (the assignment runner lets its
        // watchers finish within its grace); only one that overstays is aborted.
        let deadline = tokio::time::Instant::now() + MEMBER_LOOPS_GRACE;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!(node = %member.node_id, "a member loop did not stop in time: aborted");
                task.abort();
            }
        }
    }
}

/// How long a stopping member's loops may take to finish (the assignment runner's own
/// grace for its watchers is 5 s).
const MEMBER_LOOPS_GRACE: std::time::Duration = std::time::Duration::from_secs(6);

impl Member {
    /// Keeps the handles of loops this member started, for [`Daemon::stop_member`].
    pub(super) fn track(&self, handles: impl IntoIterator<Item = JoinHandle<()>>) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(handles);
    }

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

    pub(super) fn save_record(&self) -> anyhow::Result<()> {
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
    pub(super) fn confirm_voter(&self, raft: &RaftNode) -> anyhow::Result<()> {
        raft.allow_voting()
            .map_err(|err| anyhow!("recording the leader's confirmation: {err}"))?;
        self.voter_confirmed.store(true, Ordering::SeqCst);
        if !self.raft_voter.swap(true, Ordering::SeqCst) {
            self.save_record()?;
        }
        Ok(())
    }
}
