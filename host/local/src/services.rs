//! The supervisor's book of services: it applies desired state (service
//! definitions, slots, weights), keeps each service's routing table in
//! step, records `state.json` on every change, and answers status, stats,
//! logs and jobs. Changes happen under one mutex that is never held across
//! an await; stopping instances (which takes seconds) happens after it is
//! released.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use http::HeaderName;
use serde::Serialize;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep};

use crate::error::ServiceError;
use crate::instance::{Hooks, Instance, Launch};
use crate::job::{self, JobOutcome};
use crate::metrics::{Metrics, SlotGauge};
use crate::router::{self, Proxy, RouteTable, ServiceRoute, SlotRoute};
use crate::serve::Server;
use crate::spec::{JobSpec, ServiceDef, SlotSpec, WeightEntry, check_name, check_weights};
use crate::state::{self, ProcessRecord, ServiceState, SlotState, State};
use crate::upstream::{self, HttpClient};
use crate::{logs, ports};

/// How long a release change waits for the new instances to be ready
/// before stopping the old ones anyway (a slot must not keep two releases
/// forever; a new release that never gets ready shows in the status).
const REPLACE_TIMEOUT: Duration = Duration::from_secs(60);

struct Service {
    def: Arc<ServiceDef>,
    front: SocketAddr,
    server: Option<Server>,
    route: Arc<ServiceRoute>,
    slots: BTreeMap<String, Slot>,
    weights: Vec<WeightEntry>,
}

struct Slot {
    release: String,
    replicas: u32,
    /// Bumped by each replacement, so that a replacement superseded by a
    /// newer one leaves the retiring to it.
    generation: u64,
    current: Vec<Arc<Instance>>,
    /// Instances of an earlier release (or definition), serving until the
    /// current ones are ready.
    retiring: Vec<Arc<Instance>>,
    route: Arc<SlotRoute>,
    /// Restarts since the current release was applied.
    restarts: Arc<AtomicU64>,
}

impl Slot {
    fn publish(&self) {
        let mut all = self.current.clone();
        all.extend(self.retiring.iter().cloned());
        self.route.set(all);
    }

    fn all(self) -> impl Iterator<Item = Arc<Instance>> {
        self.current.into_iter().chain(self.retiring)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub front: String,
    pub slots: Vec<SlotStatus>,
    pub weights: Vec<WeightEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    pub name: String,
    pub release: String,
    pub desired: u32,
    /// Current instances that pass their health check.
    pub ready: usize,
    /// The ready instances' addresses: what health checks measure (the
    /// contract's `slot-status.endpoints`). `instances` has them all.
    pub endpoints: Vec<String>,
    pub restarts: u64,
    /// Instances of a replaced release still serving.
    pub retiring: usize,
    pub instances: Vec<InstanceStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub index: usize,
    pub endpoint: String,
    pub ready: bool,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub slot: String,
    pub release: String,
    pub window_seconds: u64,
    pub requests: u64,
    pub errors: u64,
    pub error_ratio: Option<f64>,
    pub p50_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
}

fn slot_status(name: &str, slot: &Slot) -> SlotStatus {
    SlotStatus {
        name: name.to_owned(),
        release: slot.release.clone(),
        desired: slot.replicas,
        ready: slot.current.iter().filter(|i| i.is_ready()).count(),
        endpoints: slot
            .current
            .iter()
            .filter(|i| i.is_ready())
            .map(|i| i.endpoint().to_string())
            .collect(),
        restarts: slot.restarts.load(Ordering::SeqCst),
        retiring: slot.retiring.len(),
        instances: slot
            .current
            .iter()
            .map(|i| InstanceStatus {
                index: i.index,
                endpoint: i.endpoint().to_string(),
                ready: i.is_ready(),
                pid: i.pid(),
                restarts: i.restarts(),
                last_exit: i.last_exit(),
            })
            .collect(),
    }
}

fn rebuild_route(service: &Service) {
    let sticky = service
        .def
        .sticky_header
        .as_deref()
        .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok());
    let slots = service
        .weights
        .iter()
        .filter(|w| w.weight > 0)
        .filter_map(|w| Some((service.slots.get(&w.slot)?.route.clone(), w.weight)))
        .collect();
    service.route.set(RouteTable { sticky, slots });
}

async fn stop_all(instances: impl IntoIterator<Item = Arc<Instance>>) {
    let mut stopping = JoinSet::new();
    for instance in instances {
        stopping.spawn(async move { instance.stop().await });
    }
    stopping.join_all().await;
}

enum Replacement {
    Waiting,
    Superseded,
    Done(Vec<Arc<Instance>>),
}

pub struct Core {
    state_dir: PathBuf,
    client: HttpClient,
    pub metrics: Arc<Metrics>,
    services: Mutex<BTreeMap<String, Service>>,
    /// Orders writes of `state.json`, so an older snapshot never lands
    /// after a newer one.
    persist_lock: Mutex<()>,
    /// Set by shutdown and abandon: nothing is recorded after.
    closed: AtomicBool,
    /// Replacement watchers, awaited or aborted with the runtime.
    background: Mutex<Vec<JoinHandle<()>>>,
    me: Weak<Core>,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Core {
    pub fn new(state_dir: PathBuf) -> Arc<Core> {
        Arc::new_cyclic(|me| Core {
            state_dir,
            client: upstream::client(),
            metrics: Arc::default(),
            services: Mutex::default(),
            persist_lock: Mutex::default(),
            closed: AtomicBool::new(false),
            background: Mutex::default(),
            me: me.clone(),
        })
    }

    fn services(&self) -> MutexGuard<'_, BTreeMap<String, Service>> {
        guard(&self.services)
    }

    /// Record the current state. Never called with the services lock held.
    pub fn persist(&self) {
        let _order = guard(&self.persist_lock);
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = state::save(&self.state_dir, &self.snapshot()) {
            tracing::error!(error = %e, dir = %self.state_dir.display(), "cannot record the local runtime's state");
        }
    }

    fn snapshot(&self) -> State {
        let services = self.services();
        let services = services
            .iter()
            .map(|(name, s)| ServiceState {
                name: name.clone(),
                definition: (*s.def).clone(),
                front: s.front,
                slots: s
                    .slots
                    .iter()
                    .map(|(slot_name, slot)| SlotState {
                        name: slot_name.clone(),
                        release: slot.release.clone(),
                        replicas: slot.replicas,
                        processes: slot
                            .current
                            .iter()
                            .chain(&slot.retiring)
                            .filter_map(|i| {
                                Some(ProcessRecord {
                                    instance: i.index,
                                    port: i.endpoint().port(),
                                    pid: i.pid()?,
                                    started: i.started(),
                                })
                            })
                            .collect(),
                    })
                    .collect(),
                weights: s.weights.clone(),
            })
            .collect();
        State { services }
    }

    fn start_instance(
        &self,
        service: &str,
        def: &Arc<ServiceDef>,
        slot_name: &str,
        slot: &Slot,
        index: usize,
    ) -> io::Result<Arc<Instance>> {
        let me = self.me.clone();
        let hooks = Hooks {
            client: self.client.clone(),
            on_change: Arc::new(move || {
                if let Some(core) = me.upgrade() {
                    core.persist();
                }
            }),
            slot_restarts: slot.restarts.clone(),
        };
        let launch = Launch {
            service: service.to_owned(),
            slot: slot_name.to_owned(),
            index,
            release: slot.release.clone(),
            def: def.clone(),
            log: logs::instance_log(&self.state_dir, service, slot_name, index),
        };
        Ok(Instance::start(launch, ports::free_port()?, hooks))
    }

    /// Replace every instance of a slot with new ones of its (new) release
    /// or definition; the old ones serve until the new ones are ready.
    fn roll(
        &self,
        service: &str,
        def: &Arc<ServiceDef>,
        slot_name: &str,
        slot: &mut Slot,
    ) -> io::Result<()> {
        slot.generation += 1;
        slot.restarts = Arc::new(AtomicU64::new(0));
        let old = std::mem::take(&mut slot.current);
        slot.retiring.extend(old);
        for index in 0..slot.replicas as usize {
            let instance = self.start_instance(service, def, slot_name, slot, index)?;
            slot.current.push(instance);
        }
        slot.publish();
        self.watch_replacement(service, slot_name, slot.generation);
        Ok(())
    }

    fn watch_replacement(&self, service: &str, slot: &str, generation: u64) {
        let (me, service, slot) = (self.me.clone(), service.to_owned(), slot.to_owned());
        let deadline = Instant::now() + REPLACE_TIMEOUT;
        let task = tokio::spawn(async move {
            loop {
                sleep(Duration::from_millis(100)).await;
                let Some(core) = me.upgrade() else { return };
                let timed_out = Instant::now() >= deadline;
                match core.check_replacement(&service, &slot, generation, timed_out) {
                    Replacement::Waiting => {}
                    Replacement::Superseded => return,
                    Replacement::Done(old) => {
                        if timed_out {
                            tracing::warn!(%service, %slot, "new instances not ready in time; stopping the old ones anyway");
                        }
                        core.persist();
                        stop_all(old).await;
                        return;
                    }
                }
            }
        });
        let mut background = guard(&self.background);
        background.retain(|t| !t.is_finished());
        background.push(task);
    }

    fn check_replacement(
        &self,
        service: &str,
        slot: &str,
        generation: u64,
        force: bool,
    ) -> Replacement {
        let mut services = self.services();
        let Some(slot) = services
            .get_mut(service)
            .and_then(|s| s.slots.get_mut(slot))
            .filter(|s| s.generation == generation)
        else {
            return Replacement::Superseded;
        };
        if !force && !slot.current.iter().all(|i| i.is_ready()) {
            return Replacement::Waiting;
        }
        let old = std::mem::take(&mut slot.retiring);
        slot.publish();
        Replacement::Done(old)
    }

    /// Create or update a service. An update keeps the front port and, when
    /// the definition changed, replaces the running instances. `front` is
    /// the port to take again when restoring.
    pub fn put_service(
        &self,
        name: &str,
        def: ServiceDef,
        front: Option<SocketAddr>,
    ) -> Result<SocketAddr, ServiceError> {
        check_name("service", name).map_err(ServiceError::Invalid)?;
        def.validate().map_err(ServiceError::Invalid)?;
        let def = Arc::new(def);
        let mut services = self.services();
        let front = match services.get_mut(name) {
            Some(service) => {
                if service.def != def {
                    service.def = def.clone();
                    for (slot_name, slot) in &mut service.slots {
                        self.roll(name, &def, slot_name, slot)?;
                    }
                    rebuild_route(service);
                }
                service.front
            }
            None => {
                let listener = match front.map(ports::listen) {
                    Some(Ok(listener)) => listener,
                    _ => ports::listen(ports::ANY)?,
                };
                let addr = listener.local_addr()?;
                if front.is_some_and(|f| f != addr) {
                    tracing::warn!(
                        service = name,
                        "the recorded front port is taken; now on {addr}"
                    );
                }
                let route = ServiceRoute::new(name);
                let proxy = Proxy {
                    route: route.clone(),
                    client: self.client.clone(),
                    metrics: self.metrics.clone(),
                };
                let service = Service {
                    def,
                    front: addr,
                    server: Some(Server::spawn(listener, router::app(proxy))),
                    route,
                    slots: BTreeMap::new(),
                    weights: Vec::new(),
                };
                rebuild_route(&service);
                services.insert(name.to_owned(), service);
                addr
            }
        };
        drop(services);
        self.persist();
        Ok(front)
    }

    pub fn service_status(&self, name: &str) -> Result<ServiceStatus, ServiceError> {
        let services = self.services();
        let service = services
            .get(name)
            .ok_or_else(|| ServiceError::UnknownService(name.to_owned()))?;
        Ok(ServiceStatus {
            name: name.to_owned(),
            front: service.front.to_string(),
            slots: service
                .slots
                .iter()
                .map(|(n, s)| slot_status(n, s))
                .collect(),
            weights: service.weights.clone(),
        })
    }

    /// Stop everything of a service; false when there was no such service.
    pub async fn delete_service(&self, name: &str) -> bool {
        let Some(mut service) = self.services().remove(name) else {
            return false;
        };
        self.persist();
        if let Some(server) = service.server.take() {
            server.stop().await;
        }
        stop_all(service.slots.into_values().flat_map(Slot::all)).await;
        self.metrics.forget_service(name);
        true
    }

    /// Apply a slot's desired state without waiting for readiness; returns
    /// the instances to stop (a scale-down).
    fn apply_slot(
        &self,
        service: &str,
        slot_name: &str,
        spec: SlotSpec,
    ) -> Result<Vec<Arc<Instance>>, ServiceError> {
        check_name("slot", slot_name).map_err(ServiceError::Invalid)?;
        spec.validate().map_err(ServiceError::Invalid)?;
        let mut services = self.services();
        let svc = services
            .get_mut(service)
            .ok_or_else(|| ServiceError::UnknownService(service.to_owned()))?;
        let def = svc.def.clone();
        let slot = svc
            .slots
            .entry(slot_name.to_owned())
            .or_insert_with(|| Slot {
                release: spec.release.clone(),
                replicas: 0,
                generation: 0,
                current: Vec::new(),
                retiring: Vec::new(),
                route: SlotRoute::new(slot_name),
                restarts: Arc::default(),
            });
        let mut stopping = Vec::new();
        slot.replicas = spec.replicas;
        if slot.release != spec.release {
            slot.release = spec.release;
            self.roll(service, &def, slot_name, slot)?;
        } else {
            let wanted = spec.replicas as usize;
            stopping = slot.current.split_off(wanted.min(slot.current.len()));
            for index in slot.current.len()..wanted {
                let instance = self.start_instance(service, &def, slot_name, slot, index)?;
                slot.current.push(instance);
            }
            slot.publish();
        }
        Ok(stopping)
    }

    pub async fn put_slot(
        &self,
        service: &str,
        slot: &str,
        spec: SlotSpec,
    ) -> Result<SlotStatus, ServiceError> {
        let stopping = self.apply_slot(service, slot, spec)?;
        self.persist();
        stop_all(stopping).await;
        self.slot_status(service, slot)
    }

    fn slot_status(&self, service: &str, slot: &str) -> Result<SlotStatus, ServiceError> {
        let services = self.services();
        let svc = services
            .get(service)
            .ok_or_else(|| ServiceError::UnknownService(service.to_owned()))?;
        svc.slots
            .get(slot)
            .map(|s| slot_status(slot, s))
            .ok_or_else(|| ServiceError::UnknownSlot {
                service: service.to_owned(),
                slot: slot.to_owned(),
            })
    }

    /// Remove a slot; false when there was none. Refused while the slot
    /// has weight, because its traffic would have nowhere to go.
    pub async fn delete_slot(&self, service: &str, slot: &str) -> Result<bool, ServiceError> {
        check_name("slot", slot).map_err(ServiceError::Invalid)?;
        let removed = {
            let mut services = self.services();
            let svc = services
                .get_mut(service)
                .ok_or_else(|| ServiceError::UnknownService(service.to_owned()))?;
            if let Some(w) = svc.weights.iter().find(|w| w.slot == slot && w.weight > 0) {
                return Err(ServiceError::Conflict(format!(
                    "slot `{slot}` still has weight {}; move its traffic with PUT /v1/services/{service}/weights first",
                    w.weight
                )));
            }
            let Some(removed) = svc.slots.remove(slot) else {
                return Ok(false);
            };
            svc.weights.retain(|w| w.slot != slot);
            rebuild_route(svc);
            removed.route.set(Vec::new());
            removed
        };
        self.persist();
        stop_all(removed.all()).await;
        Ok(true)
    }

    pub fn put_weights(
        &self,
        service: &str,
        weights: Vec<WeightEntry>,
    ) -> Result<Vec<WeightEntry>, ServiceError> {
        let mut services = self.services();
        let svc = services
            .get_mut(service)
            .ok_or_else(|| ServiceError::UnknownService(service.to_owned()))?;
        check_weights(&weights, |s| svc.slots.contains_key(s)).map_err(ServiceError::Invalid)?;
        svc.weights = weights.clone();
        rebuild_route(svc);
        drop(services);
        self.persist();
        Ok(weights)
    }

    /// Requests, errors and latency of a slot's current release over the
    /// last `window` seconds.
    pub fn stats(&self, service: &str, slot: &str, window: u64) -> Result<Stats, ServiceError> {
        let release = self.slot_status(service, slot)?.release;
        let counts = self.metrics.window(service, slot, &release, window);
        Ok(Stats {
            slot: slot.to_owned(),
            window_seconds: window,
            requests: counts.requests,
            errors: counts.errors,
            error_ratio: (counts.requests > 0)
                .then(|| counts.errors as f64 / counts.requests as f64),
            p50_seconds: counts.quantile(0.5),
            p90_seconds: counts.quantile(0.9),
            p99_seconds: counts.quantile(0.99),
            release,
        })
    }

    pub async fn run_job(&self, service: &str, spec: JobSpec) -> Result<JobOutcome, ServiceError> {
        let workdir = {
            let services = self.services();
            let svc = services
                .get(service)
                .ok_or_else(|| ServiceError::UnknownService(service.to_owned()))?;
            svc.def.workdir.clone()
        };
        let job = spec.prepare(service).map_err(ServiceError::Invalid)?;
        let log = logs::job_log(&self.state_dir, service, &spec.name);
        Ok(job::run(&spec.name, &job, workdir.as_deref(), &log).await?)
    }

    /// The last `lines` lines an instance wrote.
    pub fn log_tail(
        &self,
        service: &str,
        slot: &str,
        instance: usize,
        lines: usize,
    ) -> Result<String, ServiceError> {
        self.slot_status(service, slot)?;
        let path = logs::instance_log(&self.state_dir, service, slot, instance);
        match logs::tail_lines(&path, lines) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ServiceError::NotFound(format!(
                "instance {instance} of slot `{slot}` has no log"
            ))),
            other => Ok(other?),
        }
    }

    pub fn gauges(&self) -> Vec<SlotGauge> {
        let services = self.services();
        services
            .iter()
            .flat_map(|(service, s)| {
                s.slots.iter().map(move |(slot, sl)| SlotGauge {
                    service: service.clone(),
                    slot: slot.clone(),
                    restarts: sl.restarts.load(Ordering::SeqCst),
                    ready: sl.current.iter().filter(|i| i.is_ready()).count() as u64,
                })
            })
            .collect()
    }

    /// Re-create what a previous host recorded (its processes have been
    /// reaped): services on their old front ports where free, slots with
    /// new instances, weights. A service that no longer validates (its
    /// workdir is gone, say) is skipped with a warning.
    pub fn restore(&self, previous: State) {
        for service in previous.services {
            let name = service.name;
            if let Err(e) = self.put_service(&name, service.definition, Some(service.front)) {
                tracing::warn!(service = %name, error = %e, "cannot restore service");
                continue;
            }
            for slot in service.slots {
                let spec = SlotSpec {
                    release: slot.release,
                    replicas: slot.replicas,
                };
                if let Err(e) = self.apply_slot(&name, &slot.name, spec) {
                    tracing::warn!(service = %name, slot = %slot.name, error = %e, "cannot restore slot");
                }
            }
            if !service.weights.is_empty()
                && let Err(e) = self.put_weights(&name, service.weights)
            {
                tracing::warn!(service = %name, error = %e, "cannot restore weights");
            }
        }
    }

    fn close(&self) -> Vec<Service> {
        {
            let _order = guard(&self.persist_lock);
            self.closed.store(true, Ordering::SeqCst);
        }
        std::mem::take(&mut *self.services())
            .into_values()
            .collect()
    }

    /// Stop every instance and server and remove `state.json`.
    pub async fn shutdown(&self, keep_state: bool) {
        let services = self.close();
        let mut servers = JoinSet::new();
        let mut instances = Vec::new();
        for mut service in services {
            if let Some(server) = service.server.take() {
                servers.spawn(server.stop());
            }
            instances.extend(service.slots.into_values().flat_map(Slot::all));
        }
        servers.join_all().await;
        stop_all(instances).await;
        let watchers = std::mem::take(&mut *guard(&self.background));
        for watcher in watchers {
            let _ = watcher.await;
        }
        if !keep_state && let Err(e) = state::remove(&self.state_dir) {
            tracing::warn!(error = %e, "cannot remove the local runtime's state file");
        }
    }

    /// Stop every task but leave processes and `state.json` as they are.
    pub async fn abandon(&self) {
        let watchers = std::mem::take(&mut *guard(&self.background));
        for watcher in &watchers {
            watcher.abort();
        }
        for mut service in self.close() {
            if let Some(server) = service.server.take() {
                server.abort().await;
            }
            for instance in service.slots.into_values().flat_map(Slot::all) {
                instance.abandon().await;
            }
        }
        for watcher in watchers {
            let _ = watcher.await;
        }
    }
}
