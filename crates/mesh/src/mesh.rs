//! The `Mesh` handle: the listeners of the published ports and the updates fed to them.
//!
//! Owns: `Mesh` (the daemon's whole interface: `new`, `set_services`, `set_endpoints`,
//! `render_metrics`, `local_addr`, `shutdown`), the per-port listeners and their accept
//! loops, the per-port route tables, the health checker tasks, and shutdown.
//!
//! Does not know: cluster state, Raft or tasks. The daemon computes the wanted
//! `ServiceRoute`s and pushes them; the mesh diffs them against what it runs. Updates
//! never restart a listener that stays, never drop an established connection, and swap
//! route and endpoint tables atomically under the data path.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balance::Availability;
use crate::coarse_timer::CoarseTimer;
use crate::error::MeshError;
use crate::health;
use crate::kernel::{self, KernelPort, NftTable};
use crate::limits::Admission;
use crate::model::{
    validate_services, Endpoint, HealthCheck, L4Dataplane, MeshConfig, Protocol, ServiceRoute,
};
use crate::route::{self, HttpRule};
use crate::table::{Clock, EndpointRuntime, ServiceRuntime};
use crate::{l4, l7, metrics};

/// How often the kernel ruleset is re-rendered even without an update, so that health
/// check verdicts reach it. Half a second keeps a failed endpoint's exit from the kernel
/// path well inside the one second the userspace path is held to.
const KERNEL_RESYNC_INTERVAL: Duration = Duration::from_millis(500);

/// How often the kernel's per-endpoint connection counters are added to the metrics (and
/// always before the table is replaced, which resets them). Each read runs `nft` once.
const KERNEL_COUNTER_INTERVAL: Duration = Duration::from_secs(2);

/// What every listener and connection task shares; built once in `Mesh::new`.
pub(crate) struct Shared {
    pub config: MeshConfig,
    pub clock: Clock,
    /// Fired by `Mesh::shutdown` (or dropping the `Mesh`): accept loops stop, L4 copies
    /// stop, L7 connections shut down gracefully, health checkers stop.
    pub shutdown: CancellationToken,
    /// Every task the mesh spawns, so shutdown can wait for all of them.
    pub tracker: TaskTracker,
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
    /// Per-request deadlines (request head, upstream answer); see `coarse_timer`.
    pub coarse_timer: CoarseTimer,
    /// Set when `tcp` ports are forwarded by the kernel.
    kernel: Option<KernelPath>,
    /// Open connections and their caps (see `limits`).
    pub admission: Arc<Admission>,
}

/// The kernel data path's state: its table and what was last applied to it.
struct KernelPath {
    table: NftTable,
    /// Held across `nft` runs so two syncs never interleave.
    applied: tokio::sync::Mutex<KernelApplied>,
    /// Woken by `set_endpoints`, so endpoint changes reach the kernel at once.
    wake: tokio::sync::Notify,
    removed: std::sync::atomic::AtomicBool,
}

/// What the kernel's table holds, and how far its counters have been read.
#[derive(Default)]
struct KernelApplied {
    /// `None` until the first sync.
    script: Option<String>,
    /// Endpoint chain name to the endpoint it forwards to, for the applied script.
    chains: HashMap<String, Arc<EndpointRuntime>>,
    /// Endpoint chain name to the connections already added to the endpoint's metrics.
    counted: HashMap<String, u64>,
    last_harvest: Option<std::time::Instant>,
}

/// The services one published port serves.
pub(crate) enum PortRoutes {
    Tcp(Arc<ServiceRuntime>),
    Http {
        rules: Vec<HttpRule>,
        /// Indexed by `HttpRule::target`.
        services: Vec<Arc<ServiceRuntime>>,
    },
}

/// One published port as its connection tasks see it.
pub(crate) struct ListenerShared {
    pub published: u16,
    pub protocol: Protocol,
    pub local_addr: SocketAddr,
    /// Swapped whole by updates; each connection (L4) or request (L7) clones the `Arc`.
    routes: RwLock<Arc<PortRoutes>>,
    pub accepted_total: AtomicU64,
    pub unrouted_total: AtomicU64,
    pub header_timeouts_total: AtomicU64,
    /// Connections open on this port now.
    pub open: AtomicUsize,
    /// Connections closed at once because a cap was reached.
    pub refused_total: AtomicU64,
}

impl ListenerShared {
    pub(crate) fn routes(&self) -> Arc<PortRoutes> {
        let routes = self
            .routes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(&routes)
    }

    fn set_routes(&self, routes: PortRoutes) {
        let mut current = self
            .routes
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = Arc::new(routes);
    }
}

/// A running listener, as the update logic owns it.
struct Listener {
    shared: Arc<ListenerShared>,
    /// Stops this listener's accept loop only; its connections keep running.
    stop: CancellationToken,
    accept_task: JoinHandle<()>,
}

/// A service the mesh carries, with its running health checker if it has one.
struct ServiceEntry {
    runtime: Arc<ServiceRuntime>,
    checker: Option<Checker>,
}

struct Checker {
    check: HealthCheck,
    protocol: Protocol,
    stop: CancellationToken,
}

/// What the update logic owns; behind an async mutex because updates bind sockets and
/// wait for closed listeners, and two updates must not interleave.
#[derive(Default)]
struct MeshState {
    services: HashMap<String, ServiceEntry>,
    listeners: BTreeMap<u16, Listener>,
    /// The coarse timer's sweeper (and the kernel path's resync loop) are started by the
    /// first update, which is the first call that is sure to run inside a tokio runtime.
    sweeper_started: bool,
    shut_down: bool,
}

/// What `render_metrics`, `set_endpoints` and `local_addr` read without waiting for an
/// update in progress.
#[derive(Default)]
struct Views {
    services: HashMap<String, Arc<ServiceRuntime>>,
    listeners: Vec<Arc<ListenerShared>>,
}

/// What one `set_services` call changed.
#[derive(Debug, Default)]
pub struct UpdateReport {
    /// Published ports that started listening.
    pub opened: Vec<u16>,
    /// Published ports that stopped listening.
    pub closed: Vec<u16>,
    /// Ports that could not be opened (`MeshError::Bind`), and a kernel ruleset that could
    /// not be applied (`MeshError::Kernel`: the listeners serve those ports meanwhile); the
    /// next update retries them.
    pub failed: Vec<MeshError>,
}

/// The routing mesh of one node. Not `Clone`: the daemon owns it, and dropping it stops
/// every listener and connection (call `shutdown` to wait for them).
pub struct Mesh {
    shared: Arc<Shared>,
    state: tokio::sync::Mutex<MeshState>,
    views: Arc<RwLock<Views>>,
}

impl Mesh {
    /// Builds a mesh with no services. Starts nothing; the first `set_services` opens
    /// listeners, so it must run inside a tokio runtime.
    pub fn new(config: MeshConfig) -> Result<Mesh, MeshError> {
        config.validate()?;
        let coarse_timer = CoarseTimer::default();
        let mut http1 = http1::Builder::new();
        http1
            .timer(coarse_timer.clone())
            .header_read_timeout(config.header_read_timeout)
            .max_header_size(config.max_header_bytes)
            // The read buffer must hold a maximal head plus what a client pipelines
            // behind it; twice the head limit keeps hyper's floor satisfied.
            .max_buf_size(config.max_header_bytes * 2);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
            // A PING every 20 s finds dead h2 clients, whose streams would otherwise hold
            // endpoint in-flight counts.
            .keep_alive_interval(Duration::from_secs(20));

        let kernel = (config.l4_dataplane == L4Dataplane::Nftables).then(|| KernelPath {
            table: NftTable::new(kernel::table_name(config.listen_ip)),
            applied: tokio::sync::Mutex::new(KernelApplied::default()),
            wake: tokio::sync::Notify::new(),
            removed: std::sync::atomic::AtomicBool::new(false),
        });
        let admission = Arc::new(Admission::new(&config));
        Ok(Mesh {
            shared: Arc::new(Shared {
                admission,
                config,
                clock: Clock::new(),
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
                http1,
                http2,
                coarse_timer,
                kernel,
            }),
            state: tokio::sync::Mutex::new(MeshState::default()),
            views: Arc::new(RwLock::new(Views::default())),
        })
    }

    /// Makes the mesh serve exactly `services`: opens listeners for new published ports,
    /// closes those no longer published, and updates route and endpoint tables in place.
    /// The set is validated first and refused whole if invalid. Bind failures (per port)
    /// and kernel path failures are reported in the `UpdateReport`, not as an `Err`.
    pub async fn set_services(
        &self,
        services: Vec<ServiceRoute>,
    ) -> Result<UpdateReport, MeshError> {
        validate_services(&services)?;
        let mut state = self.state.lock().await;
        if state.shut_down {
            return Err(MeshError::ShutDown);
        }
        let mut report = UpdateReport::default();
        self.start_background_once(&mut state);
        self.update_service_entries(&mut state, &services);

        // Group by published port, keeping the caller's order within a port so equal
        // routes resolve the same way every time.
        let mut wanted: BTreeMap<u16, (Protocol, Vec<&ServiceRoute>)> = BTreeMap::new();
        for service in &services {
            wanted
                .entry(service.published)
                .or_insert_with(|| (service.protocol, Vec::new()))
                .1
                .push(service);
        }
        close_unwanted_listeners(&mut state, &wanted, &mut report).await;
        for (published, (protocol, port_services)) in wanted {
            self.serve_port(&mut state, published, protocol, &port_services, &mut report)
                .await;
        }

        self.refresh_views(&state);
        if let Err(error) = sync_kernel(&self.shared, &self.views).await {
            tracing::warn!(%error, "kernel data path not updated; the mesh's listeners serve its ports");
            report.failed.push(error);
        }
        Ok(report)
    }

    /// The sweeper of the coarse clock, and the kernel path's resync loop, start with
    /// the first set of services.
    fn start_background_once(&self, state: &mut MeshState) {
        if state.sweeper_started {
            return;
        }
        state.sweeper_started = true;
        self.shared.tracker.spawn(
            self.shared
                .coarse_timer
                .clone()
                .run_sweeper(self.shared.shutdown.clone()),
        );
        if self.shared.kernel.is_some() {
            self.shared.tracker.spawn(kernel_resync_loop(
                Arc::clone(&self.shared),
                Arc::clone(&self.views),
            ));
        }
    }

    /// Updates the runtime of every service still served in place (its endpoints keep
    /// their counters), creates the new ones, and stops the health checks of the
    /// services that left.
    fn update_service_entries(&self, state: &mut MeshState, services: &[ServiceRoute]) {
        let mut previous = std::mem::take(&mut state.services);
        for service in services {
            let entry = match previous.remove(&service.service_id) {
                Some(mut entry) => {
                    entry
                        .runtime
                        .update(&service.service_name, &service.endpoints);
                    self.reconcile_checker(&mut entry, service);
                    entry
                }
                None => {
                    let mut entry = ServiceEntry {
                        runtime: Arc::new(ServiceRuntime::new(
                            &service.service_id,
                            &service.service_name,
                            &service.endpoints,
                        )),
                        checker: None,
                    };
                    self.reconcile_checker(&mut entry, service);
                    entry
                }
            };
            state.services.insert(service.service_id.clone(), entry);
        }
        for (service_id, entry) in previous {
            if let Some(checker) = entry.checker {
                checker.stop.cancel();
            }
            tracing::info!(%service_id, "service left the mesh");
        }
    }

    /// Gives an open port its new routes, or opens it; a port that cannot be opened is
    /// reported, not an error of the whole update.
    async fn serve_port(
        &self,
        state: &mut MeshState,
        published: u16,
        protocol: Protocol,
        port_services: &[&ServiceRoute],
        report: &mut UpdateReport,
    ) {
        let runtimes: Vec<Arc<ServiceRuntime>> = port_services
            .iter()
            .filter_map(|service| state.services.get(&service.service_id))
            .map(|entry| Arc::clone(&entry.runtime))
            .collect();
        let routes = match protocol {
            Protocol::Tcp => match runtimes.into_iter().next() {
                Some(runtime) => PortRoutes::Tcp(runtime),
                None => return,
            },
            Protocol::Http => PortRoutes::Http {
                rules: route::build_rules(port_services.len(), |service_idx| {
                    &port_services[service_idx].routes
                }),
                services: runtimes,
            },
        };
        if let Some(listener) = state.listeners.get(&published) {
            listener.shared.set_routes(routes);
            return;
        }
        match self.open_listener(published, protocol, routes).await {
            Ok(listener) => {
                tracing::info!(
                    published,
                    protocol = protocol.as_str(),
                    addr = %listener.shared.local_addr,
                    "published port open"
                );
                state.listeners.insert(published, listener);
                report.opened.push(published);
            }
            Err(error) => {
                tracing::warn!(published, %error, "published port could not be opened");
                report.failed.push(error);
            }
        }
    }

    /// Replaces the endpoints of one service without touching its routes or listeners:
    /// the cheap path for the common update (a task started, stopped or began draining).
    pub fn set_endpoints(&self, service_id: &str, endpoints: &[Endpoint]) -> Result<(), MeshError> {
        let mut seen = std::collections::HashSet::new();
        if let Some(duplicate) = endpoints.iter().find(|endpoint| !seen.insert(&endpoint.id)) {
            return Err(MeshError::InvalidRoute {
                service_id: service_id.to_string(),
                reason: format!("endpoint {} appears twice", duplicate.id),
            });
        }
        let views = self
            .views
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let runtime = views
            .services
            .get(service_id)
            .ok_or_else(|| MeshError::UnknownService {
                service_id: service_id.to_string(),
            })?;
        runtime.update(&runtime.service_name(), endpoints);
        if let Some(kernel) = &self.shared.kernel {
            kernel.wake.notify_one();
        }
        Ok(())
    }

    /// The address a published port is bound to, once it is open.
    pub fn local_addr(&self, published: u16) -> Option<SocketAddr> {
        let views = self
            .views
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        views
            .listeners
            .iter()
            .find(|listener| listener.published == published)
            .map(|listener| listener.local_addr)
    }

    /// Every counter of the mesh in the Prometheus text format (version 0.0.4).
    pub fn render_metrics(&self) -> String {
        let (services, listeners) = {
            let views = self
                .views
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut services: Vec<Arc<ServiceRuntime>> = views.services.values().cloned().collect();
            services.sort_by(|a, b| a.service_id.cmp(&b.service_id));
            (services, views.listeners.clone())
        };
        metrics::render(&services, &listeners, self.shared.clock.now_ms())
    }

    /// Stops accepting on every port, ends L4 connections, lets in-flight L7 requests
    /// finish (hyper's graceful shutdown), stops health checks, and waits for all of it.
    /// A client streaming a long response keeps this waiting: callers that need a bound
    /// wrap it in `tokio::time::timeout` (what is left then ends with the runtime).
    pub async fn shutdown(&self) {
        let mut state = self.state.lock().await;
        state.shut_down = true;
        self.shared.shutdown.cancel();
        for (_, listener) in std::mem::take(&mut state.listeners) {
            let _ = listener.accept_task.await;
        }
        // The kernel's rules go first: they would take new connections for as long as
        // in-flight L7 requests keep the wait below going. Forwarded flows keep their
        // conntrack entries and finish.
        if let Some(kernel) = &self.shared.kernel {
            // Holding `applied` keeps a late sync from recreating the table.
            let _applied = kernel.applied.lock().await;
            if !kernel
                .removed
                .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                if let Err(error) = kernel.table.remove().await {
                    tracing::warn!(%error, table = kernel.table.name(), "kernel rules not removed");
                }
            }
        }
        state.services.clear();
        self.refresh_views(&state);
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
    }

    fn reconcile_checker(&self, entry: &mut ServiceEntry, service: &ServiceRoute) {
        let unchanged = match (&entry.checker, &service.health) {
            (Some(checker), Some(check)) => {
                checker.check == *check && checker.protocol == service.protocol
            }
            (None, None) => true,
            _ => false,
        };
        if unchanged {
            return;
        }
        if let Some(checker) = entry.checker.take() {
            checker.stop.cancel();
        }
        // A new checker starts every endpoint healthy (as HAProxy does), so clear what an
        // old checker had taken out; without a checker nothing could ever bring them back.
        for endpoint in entry.runtime.endpoints().iter() {
            endpoint.set_health_down(false);
        }
        if let Some(check) = &service.health {
            let stop = self.shared.shutdown.child_token();
            self.shared.tracker.spawn(health::run_checker(
                Arc::clone(&entry.runtime),
                service.protocol,
                check.clone(),
                stop.clone(),
            ));
            entry.checker = Some(Checker {
                check: check.clone(),
                protocol: service.protocol,
                stop,
            });
        }
    }

    async fn open_listener(
        &self,
        published: u16,
        protocol: Protocol,
        routes: PortRoutes,
    ) -> Result<Listener, MeshError> {
        let addr = SocketAddr::new(self.shared.config.listen_ip, published);
        let socket = TcpListener::bind(addr)
            .await
            .map_err(|source| MeshError::Bind { addr, source })?;
        let local_addr = socket
            .local_addr()
            .map_err(|source| MeshError::Bind { addr, source })?;
        let shared = Arc::new(ListenerShared {
            published,
            protocol,
            local_addr,
            routes: RwLock::new(Arc::new(routes)),
            accepted_total: AtomicU64::new(0),
            unrouted_total: AtomicU64::new(0),
            header_timeouts_total: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            refused_total: AtomicU64::new(0),
        });
        let stop = self.shared.shutdown.child_token();
        let accept_task = self.shared.tracker.spawn(accept_loop(
            Arc::clone(&self.shared),
            Arc::clone(&shared),
            socket,
            stop.clone(),
        ));
        Ok(Listener {
            shared,
            stop,
            accept_task,
        })
    }

    fn refresh_views(&self, state: &MeshState) {
        let mut views = self
            .views
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        views.services = state
            .services
            .iter()
            .map(|(service_id, entry)| (service_id.clone(), Arc::clone(&entry.runtime)))
            .collect();
        views.listeners = state
            .listeners
            .values()
            .map(|listener| Arc::clone(&listener.shared))
            .collect();
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // Without this, dropping the handle would leave listeners running with nothing
        // left to stop them.
        self.shared.shutdown.cancel();
        if let Some(kernel) = &self.shared.kernel {
            // Rules left behind would keep sending the port's traffic to endpoints that
            // no longer answer for it. `removed` first, so a sync still running sees it
            // (syncs also stop on the cancelled token above).
            if !kernel
                .removed
                .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                kernel.table.remove_blocking();
            }
        }
    }
}

/// The `tcp` ports the kernel should forward, with the endpoints that take new
/// connections: the ready ones, or, when none is ready, the ejected ones (the same "fail
/// open" the userspace balancer applies). Draining and unhealthy endpoints never.
fn kernel_ports(
    views: &RwLock<Views>,
    now_ms: u64,
) -> Vec<(KernelPort, Vec<Arc<EndpointRuntime>>)> {
    let listeners = {
        let views = views
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        views.listeners.clone()
    };
    let mut ports = Vec::new();
    for listener in listeners {
        if listener.protocol != Protocol::Tcp {
            continue;
        }
        let routes = listener.routes();
        let PortRoutes::Tcp(service) = &*routes else {
            continue;
        };
        let endpoints = service.endpoints();
        let with = |wanted: Availability| -> Vec<Arc<EndpointRuntime>> {
            endpoints
                .iter()
                .filter(|endpoint| endpoint.availability(now_ms) == wanted)
                .cloned()
                .collect()
        };
        let mut chosen = with(Availability::Ready);
        if chosen.is_empty() {
            chosen = with(Availability::Ejected);
        }
        let port = KernelPort {
            published: listener.published,
            endpoints: chosen.iter().map(|endpoint| endpoint.addr).collect(),
        };
        ports.push((port, chosen));
    }
    ports.sort_by_key(|(port, _)| port.published);
    ports
}

/// Adds the connections the kernel forwarded since the last read to each endpoint's
/// `connections_total`. A failed read is logged and retried at the next one.
async fn harvest_counters(table: &NftTable, applied: &mut KernelApplied) {
    applied.last_harvest = Some(std::time::Instant::now());
    if applied.chains.is_empty() {
        return;
    }
    let counts = match table.read_counters().await {
        Ok(counts) => counts,
        Err(error) => {
            // Most likely the table is gone (`nft flush ruleset`, a firewall reload):
            // forgetting what was applied makes the next sync put it back.
            tracing::warn!(%error, table = table.name(), "kernel connection counters not read; the rules will be reapplied");
            applied.script = None;
            return;
        }
    };
    for (chain, packets) in counts {
        let Some(endpoint) = applied.chains.get(&chain) else {
            continue;
        };
        let counted = applied.counted.entry(chain).or_insert(0);
        let fresh = packets.saturating_sub(*counted);
        *counted = packets;
        endpoint
            .metrics
            .connections_total
            .fetch_add(fresh, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Brings the kernel's ruleset in line with the mesh's tables; a no-op when nothing the
/// kernel sees has changed, or when the mesh has no kernel path.
async fn sync_kernel(shared: &Shared, views: &RwLock<Views>) -> Result<(), MeshError> {
    let Some(kernel) = &shared.kernel else {
        return Ok(());
    };
    let mut applied = kernel.applied.lock().await;
    if kernel.removed.load(std::sync::atomic::Ordering::SeqCst) || shared.shutdown.is_cancelled() {
        return Ok(());
    }
    let wanted = kernel_ports(views, shared.clock.now_ms());
    let ports: Vec<KernelPort> = wanted.iter().map(|(port, _)| port.clone()).collect();
    let script = kernel::render(kernel.table.name(), shared.config.listen_ip, &ports);
    let chains: HashMap<String, Arc<EndpointRuntime>> = wanted
        .into_iter()
        .filter(|(port, _)| kernel::can_carry(shared.config.listen_ip, &port.endpoints))
        .flat_map(|(port, endpoints)| {
            endpoints
                .into_iter()
                .enumerate()
                .map(move |(index, endpoint)| {
                    (kernel::endpoint_chain(port.published, index), endpoint)
                })
        })
        .collect();
    if applied.script.as_deref() == Some(script.as_str()) {
        if applied
            .last_harvest
            .is_none_or(|at| at.elapsed() >= KERNEL_COUNTER_INTERVAL)
        {
            harvest_counters(&kernel.table, &mut applied).await;
        }
        // Same rules, but a task that took over an old one's address is a new endpoint:
        // its connections from now on are its own.
        applied.chains = chains;
        return Ok(());
    }
    // Replacing the table zeroes its counters: take what they hold first.
    harvest_counters(&kernel.table, &mut applied).await;
    if let Err(error) = kernel.table.apply(&script).await {
        // The old rules would go on sending new connections to endpoints that may be
        // gone; without them the listeners take the ports, as the log line promises.
        if let Err(remove_error) = kernel.table.remove().await {
            tracing::warn!(error = %remove_error, table = kernel.table.name(), "stale kernel rules not removed");
        }
        *applied = KernelApplied::default();
        return Err(error);
    }
    tracing::debug!(
        table = kernel.table.name(),
        ports = ports.len(),
        "kernel data path updated"
    );
    applied.script = Some(script);
    applied.counted.clear();
    applied.chains = chains;
    Ok(())
}

async fn kernel_resync_loop(shared: Arc<Shared>, views: Arc<RwLock<Views>>) {
    let Some(kernel) = &shared.kernel else {
        return;
    };
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => break,
            _ = kernel.wake.notified() => {}
            _ = tokio::time::sleep(KERNEL_RESYNC_INTERVAL) => {}
        }
        match sync_kernel(&shared, &views).await {
            Ok(()) => last_error = None,
            Err(error) => {
                // Once per distinct error: a missing privilege would otherwise log twice a
                // second forever.
                let text = error.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(%error, "kernel data path not updated; the mesh's listeners serve its ports");
                }
                last_error = Some(text);
            }
        }
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: Arc<ListenerShared>,
    socket: TcpListener,
    stop: CancellationToken,
) {
    // The pause after a failed accept: 10 ms doubling to 1 s, back to 10 ms after a
    // success. A failing accept (EMFILE) returns at once; without a pause the loop would
    // spin a core while the descriptors stay taken.
    const FIRST_PAUSE: Duration = Duration::from_millis(10);
    const MAX_PAUSE: Duration = Duration::from_secs(1);
    let mut pause = FIRST_PAUSE;
    // Refusals are logged at most once a second per port, with how many there were.
    let mut refused_since_log = 0u64;
    let mut last_refusal_log: Option<std::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = socket.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                pause = FIRST_PAUSE;
                listener
                    .accepted_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let slot = match shared.admission.admit(
                    &listener,
                    shared.config.max_connections_per_port,
                    peer.ip(),
                ) {
                    Ok(slot) => slot,
                    Err(refusal) => {
                        // Closed at once: the client learns now, and the descriptor is
                        // back before the next accept.
                        drop(stream);
                        listener
                            .refused_total
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        refused_since_log += 1;
                        if last_refusal_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
                        {
                            tracing::warn!(
                                published = listener.published,
                                client = %peer.ip(),
                                cap = refusal.as_str(),
                                refused = refused_since_log,
                                open = shared.admission.open_total(),
                                "connection cap reached; closing new connections"
                            );
                            refused_since_log = 0;
                            last_refusal_log = Some(std::time::Instant::now());
                        }
                        continue;
                    }
                };
                // Small requests and responses must not wait for Nagle's delayed ACK.
                let _ = stream.set_nodelay(true);
                let connection_shared = Arc::clone(&shared);
                let connection_listener = Arc::clone(&listener);
                match listener.protocol {
                    Protocol::Tcp => shared.tracker.spawn(l4::forward_connection(
                        connection_shared,
                        connection_listener,
                        stream,
                        peer,
                        slot,
                    )),
                    Protocol::Http => shared.tracker.spawn(l7::serve_connection(
                        connection_shared,
                        connection_listener,
                        stream,
                        peer,
                        slot,
                    )),
                };
            }
            Err(error) => {
                // Usually EMFILE/ENFILE: back off instead of spinning on an accept that
                // keeps failing, and keep serving what is already open.
                tracing::warn!(published = listener.published, %error, ?pause, "accept failed");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

/// Closes the listeners of ports no longer published (or published with another
/// protocol), waiting for each accept loop to drop its socket so the port is really
/// closed, and free to rebind, when this returns.
async fn close_unwanted_listeners(
    state: &mut MeshState,
    wanted: &BTreeMap<u16, (Protocol, Vec<&ServiceRoute>)>,
    report: &mut UpdateReport,
) {
    let to_close: Vec<u16> = state
        .listeners
        .iter()
        .filter(|(published, listener)| {
            wanted
                .get(published)
                .is_none_or(|(protocol, _)| *protocol != listener.shared.protocol)
        })
        .map(|(published, _)| *published)
        .collect();
    for published in to_close {
        if let Some(listener) = state.listeners.remove(&published) {
            listener.stop.cancel();
            let _ = listener.accept_task.await;
            tracing::info!(published, "published port closed");
            report.closed.push(published);
        }
    }
}
