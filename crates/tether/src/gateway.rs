//! What every request shares: the keys, the live-session registry, the worker slots, users'
//! histories and the metrics.
//!
//! It sits below the HTTP layer and knows nothing of routes. Handlers borrow what they need
//! from it; the relay of one websocket is handed only the handles it uses
//! ([`Gateway::registry`], [`Gateway::states`], [`Gateway::metrics`]).

use std::sync::Arc;

use tokio::time::Instant;

use crate::auth::Keys;
use crate::config::Config;
use crate::metrics::{Gauges, Metrics, WorkerGauge};
use crate::session::budget::Budget;
use crate::session::registry::{Context, Generations, Page, Registry, Why};
use crate::state::States;
use crate::workers::{memory, Endpoint, Lease, Reloader, Target, Versions, Workers, MEMORY_SAMPLE};

/// Shared by every request.
pub struct Gateway {
    /// Keys for cookies, session ids and tokens.
    keys: Keys,
    /// Live sessions; shared with each relay, which releases its session when it ends.
    registry: Arc<Registry>,
    /// Where each worker slot's current process listens.
    workers: Workers,
    /// App names (script stems), in command-line order.
    apps: Vec<String>,
    /// Settings.
    config: Config,
    /// Users' state logs and their durable store; shared with each relay, which records.
    states: Arc<States>,
    /// Counters for `/.tether/metrics`; shared with each relay.
    metrics: Arc<Metrics>,
    /// Logs of refusals at the session limit, at most one per [`LogThrottle`] period.
    session_refusals: LogThrottle,
    /// Logs of workers past `--worker-memory`, likewise.
    memory_warnings: LogThrottle,
    /// The Panel and Bokeh the workers run, which decide how a restore orders its steps.
    versions: Versions,
    /// Bytes of unfinished browser messages, over all websockets.
    budget: Arc<Budget>,
    /// Starts new generations of the workers; set once at start-up.
    reloader: std::sync::OnceLock<Arc<Reloader>>,
    /// What is known of each worker slot's memory, for `--worker-memory`.
    memory: std::sync::Mutex<Vec<memory::Gauge>>,
    /// New sessions per worker slot whose page the worker is still building: counted live
    /// by the registry, but not yet in the worker's memory.
    building: Vec<std::sync::atomic::AtomicUsize>,
}

/// Longest a new visitor waits for a worker to free the session dropped to make room for
/// theirs: the worker frees it in a moment, but may build the new one first.
const ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How often the worker's memory is read while a visitor waits for room.
const ROOM_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// A new session a worker is building; see [`Gateway::admit`].
pub struct Building<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Building<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Generations for Workers {
    fn generation(&self, worker: usize) -> u64 {
        self.endpoint(worker).generation
    }
}

impl Gateway {
    /// A gateway over running workers and an open state store.
    pub fn new(
        keys: Keys,
        config: Config,
        apps: Vec<String>,
        workers: Workers,
        states: States,
        versions: Versions,
    ) -> Gateway {
        let budget = Budget::new(config.limits.max_buffered_bytes);
        let memory = std::sync::Mutex::new(vec![memory::Gauge::default(); workers.len()]);
        Gateway {
            memory,
            building: (0..workers.len()).map(|_| Default::default()).collect(),
            keys,
            registry: Arc::new(Registry::new(config.live_ttl, config.limits.max_sessions)),
            workers,
            apps,
            config,
            states: Arc::new(states),
            metrics: Arc::new(Metrics::default()),
            session_refusals: LogThrottle::default(),
            memory_warnings: LogThrottle::default(),
            versions,
            budget,
            reloader: std::sync::OnceLock::new(),
        }
    }

    /// Gives the gateway what reloads the workers (once, at start-up).
    pub fn set_reloader(&self, reloader: Arc<Reloader>) {
        let _ = self.reloader.set(reloader);
    }

    /// What reloads the workers, once set.
    pub fn reloader(&self) -> Option<&Arc<Reloader>> {
        self.reloader.get()
    }

    /// The bound on unfinished browser messages, shared by every websocket.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// The Panel and Bokeh the workers run.
    pub fn versions(&self) -> Versions {
        self.versions
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn states(&self) -> &Arc<States> {
        &self.states
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The app names, in command-line order.
    pub fn apps(&self) -> &[String] {
        &self.apps
    }

    /// The app of this name, if the gateway serves one.
    pub fn app(&self, name: &str) -> Option<&str> {
        self.apps.iter().find(|a| *a == name).map(String::as_str)
    }

    pub fn endpoint(&self, worker: usize) -> Endpoint {
        self.workers.endpoint(worker)
    }

    /// The process worker slot `worker` runs now.
    pub fn target(&self, worker: usize) -> Target {
        self.workers.target(worker)
    }

    /// A hold on the process worker slot `worker` runs now, for a websocket to it.
    pub fn lease(&self, worker: usize) -> Option<Lease> {
        self.workers.lease(worker)
    }

    /// The private directory of the workers' sockets.
    pub fn socket_dir(&self) -> std::path::PathBuf {
        self.workers.dir().to_owned()
    }

    /// Worker slots that accept connections now.
    pub fn workers_up(&self) -> usize {
        self.workers.up()
    }

    /// The healthy worker with the fewest live sessions.
    pub fn least_loaded(&self) -> usize {
        let load = self.registry.load(self.workers.len());
        self.least_of(&load, |_| true).unwrap_or(0)
    }

    /// Of the healthy workers that pass `fits`, the one with the fewest sessions in `load`.
    fn least_of(&self, load: &[usize], fits: impl Fn(usize) -> bool) -> Option<usize> {
        (0..self.workers.len())
            .filter(|&w| self.endpoint(w).up && fits(w))
            .min_by_key(|&w| load[w])
    }

    /// What the registry needs for one decision, now.
    ///
    /// Under `--worker-memory` a new session goes to the least loaded worker with room for
    /// it, by each worker's memory read now; when none has room, to the least loaded one,
    /// which first drops an idle session.
    pub fn context(&self, has_state: bool, may_wait: bool) -> Context<'_> {
        let load = self.registry.load(self.workers.len());
        let any = |_| true;
        let (worker, make_room) = match self.config.worker_memory {
            None => (self.least_of(&load, any), false),
            Some(bound) => {
                let mut gauges = self.memory.lock().unwrap_or_else(|p| p.into_inner());
                for w in 0..gauges.len() {
                    self.read_memory(&mut gauges[w], w, &load);
                }
                let room = |w: usize| gauges.get(w).is_none_or(|g| g.has_room(bound, load[w]));
                match self.least_of(&load, room) {
                    Some(w) => (Some(w), false),
                    None => (self.least_of(&load, any), true),
                }
            }
        };
        let worker = worker.unwrap_or(0);
        Context {
            now: Instant::now(),
            generation: &self.workers,
            worker,
            has_state,
            may_wait,
            make_room,
        }
    }

    /// Admits the new session of `page` to its worker's memory, if it is one: it counts as
    /// memory to come until the returned guard drops, once the worker has built it. If an
    /// idle session was dropped to make room, this first waits (at most [`ROOM_WAIT`]) until
    /// the worker's memory, read now, has room, so the worker does not hold both.
    pub async fn admit(&self, page: &Page) -> Option<Building<'_>> {
        let Page::Fresh { worker, freed, .. } = *page else {
            return None;
        };
        let n = self.building.get(worker)?;
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let building = Building(n);
        if freed {
            self.wait_for_room(worker).await;
        }
        Some(building)
    }

    /// Under `--worker-memory`, waits (at most [`ROOM_WAIT`]) until worker slot `worker`'s
    /// memory, read now, has room for the sessions it is building.
    async fn wait_for_room(&self, worker: usize) {
        let Some(bound) = self.config.worker_memory else {
            return;
        };
        let until = Instant::now() + ROOM_WAIT;
        loop {
            let load = self.registry.load(self.workers.len());
            let fits = {
                let mut gauges = self.memory.lock().unwrap_or_else(|p| p.into_inner());
                let Some(g) = gauges.get_mut(worker) else {
                    return;
                };
                self.read_memory(g, worker, &load);
                g.predicted(load[worker]) <= bound
            };
            if fits || Instant::now() >= until {
                return;
            }
            tokio::time::sleep(ROOM_POLL).await;
        }
    }

    /// Reads worker slot `worker`'s memory now into its gauge, beside the sessions already in
    /// it: those of `load`, less the ones still being built.
    fn read_memory(&self, gauge: &mut memory::Gauge, worker: usize, load: &[usize]) {
        let generation = self.endpoint(worker).generation;
        let Some(rss) = self
            .workers
            .processes(worker)
            .and_then(|p| p.memory_now(generation))
        else {
            return;
        };
        gauge.observe(rss, generation, self.built(worker, load));
    }

    /// Of worker slot `worker`'s `load` live sessions, those its worker has built.
    fn built(&self, worker: usize, load: &[usize]) -> usize {
        let building = self
            .building
            .get(worker)
            .map_or(0, |n| n.load(std::sync::atomic::Ordering::Relaxed));
        load[worker].saturating_sub(building)
    }

    /// Keeps each worker under `--worker-memory` (with no bound, returns at once): every
    /// [`MEMORY_SAMPLE`] the workers' memory is read, and a worker over its bound drops as
    /// many idle sessions as it is over by, least recently used first.
    pub async fn keep_memory(self: Arc<Self>) {
        let Some(bound) = self.config.worker_memory else {
            return;
        };
        let mut tick = tokio::time::interval(MEMORY_SAMPLE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let load = self.registry.load(self.workers.len());
            let mut shed = Vec::new();
            {
                let mut gauges = self.memory.lock().unwrap_or_else(|p| p.into_inner());
                for (w, g) in gauges.iter_mut().enumerate() {
                    self.read_memory(g, w, &load);
                    shed.push((w, g.excess(bound, load[w])));
                }
            }
            for (w, n) in shed {
                let dropped = self.registry.evict(Some(w), n, Why::Memory, Instant::now());
                if n == 0 || !self.memory_warnings.due() {
                    continue;
                }
                if dropped == 0 {
                    tracing::warn!(
                        worker = w,
                        "worker past --worker-memory with no idle session left to drop; new visitors wait for tabs to close, so raise --worker-memory if this lasts"
                    );
                } else {
                    tracing::warn!(
                        worker = w,
                        dropped,
                        wanted = n,
                        "worker past --worker-memory; dropped its least recently used idle sessions"
                    );
                }
            }
        }
    }

    /// Tells the workers to discard the sessions the registry dropped to make room, in
    /// batches: one command per worker for all that were dropped meanwhile.
    pub async fn discard_evicted(self: Arc<Self>) {
        let Some(mut evicted) = self.registry.evictions() else {
            return;
        };
        let mut batch = Vec::new();
        while evicted.recv_many(&mut batch, 256).await > 0 {
            let mut by_process: std::collections::BTreeMap<(usize, u64), Vec<String>> =
                Default::default();
            for e in batch.drain(..) {
                self.metrics.session_evicted(e.why == Why::Memory);
                tracing::debug!(worker = e.worker, why = ?e.why, "dropped an idle live session");
                by_process
                    .entry((e.worker, e.generation))
                    .or_default()
                    .push(e.session_id);
            }
            for ((worker, generation), ids) in by_process {
                self.workers.expire(worker, generation, ids).await;
            }
        }
    }

    /// A new visitor was refused at `--max-sessions` or `--worker-memory` (every session
    /// connected): counted, and logged at most every 10 s.
    pub fn session_refused(&self) {
        let refused = self.metrics.session_refused();
        if self.session_refusals.due() {
            tracing::warn!(
                max = self.config.limits.max_sessions,
                refused,
                "session limit reached with every live session connected; refusing new visitors until a tab closes"
            );
        }
    }

    /// The gauges for `/.tether/metrics`, read now.
    pub fn gauges(&self) -> Gauges {
        let (live_sessions, _) = self.registry.counts();
        let load = self.registry.load(self.workers.len());
        let workers = (0..self.workers.len())
            .map(|w| {
                let e = self.endpoint(w);
                let processes = self.workers.processes(w);
                WorkerGauge {
                    up: e.up,
                    sessions: load[w],
                    restarts: processes.map_or(0, |p| p.restarts()),
                    generation: e.generation,
                    draining: processes.map_or(0, |p| p.draining()),
                    memory: processes
                        .and_then(|p| p.memory_now(e.generation))
                        .unwrap_or(0),
                }
            })
            .collect();
        Gauges {
            live_sessions,
            store: self.states.writer_stats(),
            store_failing: self.states.refusing_writes(),
            buffered_bytes: self.budget.used(),
            workers,
            reloads: self.reloader().map_or((0, 0), |r| r.counts()),
        }
    }
}

/// A connection slot. Held by the HTTP connection, and by its websocket once upgraded.
#[derive(Clone)]
pub struct ConnectionPermit(#[allow(dead_code)] Arc<tokio::sync::OwnedSemaphorePermit>);

impl ConnectionPermit {
    pub fn new(permit: tokio::sync::OwnedSemaphorePermit) -> ConnectionPermit {
        ConnectionPermit(Arc::new(permit))
    }
}

/// Least time between two log lines about refusals at a limit.
const REFUSAL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Says when a repeated event may be logged again: at most once per 10 s.
#[derive(Default)]
pub struct LogThrottle(std::sync::Mutex<Option<Instant>>);

impl LogThrottle {
    /// True (and the clock restarts) when the last log was long enough ago, or never.
    pub fn due(&self) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() > REFUSAL_LOG_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}
