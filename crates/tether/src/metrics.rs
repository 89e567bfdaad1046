//! Counters for `/.tether/metrics`, and their rendering in the Prometheus text format.
//!
//! The counters are private; each is moved by the method named for the event it counts.
//! Gauges belong to their owners (the registry, the workers, the writer), which the caller
//! reads into a [`Gauges`] snapshot at render time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::record::SkipReason;
use crate::store::WriterStats;

/// Monotonic counters, plus the one gauge the relay keeps itself (connected tabs).
#[derive(Default)]
pub struct Metrics {
    /// Pages served on a reattached live session.
    pages_reattached: AtomicU64,
    /// Pages served on a new session.
    pages_fresh: AtomicU64,
    /// Websockets currently relaying.
    tabs: AtomicU64,
    /// Restores run.
    restores: AtomicU64,
    /// Replay steps applied, over all restores.
    steps_applied: AtomicU64,
    /// Replay steps not applied where the user applied them, in all.
    steps_skipped: AtomicU64,
    /// The same, by reason, in [`SkipReason::ALL`] order.
    steps_skipped_by: [AtomicU64; SkipReason::ALL.len()],
    /// Changes recorded into state logs.
    changes_recorded: AtomicU64,
    /// Client connections refused because the connection limit was reached.
    connections_refused: AtomicU64,
    /// Page requests refused because the session limit was reached.
    sessions_refused: AtomicU64,
    /// Idle live sessions dropped to make room: at `--max-sessions`, and past
    /// `--worker-memory`.
    sessions_evicted: [AtomicU64; 2],
}

/// The gauges owned elsewhere, read at one moment for one rendering.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Live sessions in the registry.
    pub live_sessions: usize,
    /// The batching writer's counters.
    pub store: WriterStats,
    /// The store refuses writes right now.
    pub store_failing: bool,
    /// Bytes of unfinished browser messages held now.
    pub buffered_bytes: usize,
    /// One per worker slot, in slot order.
    pub workers: Vec<WorkerGauge>,
    /// Reloads (`SIGHUP`, `tether reload`, `--dev`) that started the new version, and those
    /// that did not.
    pub reloads: (u64, u64),
}

/// What `/.tether/metrics` shows of one worker slot.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerGauge {
    /// It accepts connections (not restarting).
    pub up: bool,
    /// Live sessions placed on it.
    pub sessions: usize,
    /// Times it was restarted after it exited.
    pub restarts: u64,
    /// The generation of its current process: bumped by every restart and reload.
    pub generation: u64,
    /// Old processes still running until their tabs close or move.
    pub draining: usize,
    /// Resident memory of its current process, in bytes (0: not known).
    pub memory: u64,
}

/// Writes metric families in the text format: `# HELP`, `# TYPE`, then the samples.
struct Exposition {
    /// The text so far.
    out: String,
}

impl Exposition {
    /// One family with a single unlabelled sample.
    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help, [("", value)]);
    }

    /// One family with a sample per label set (`""` for none), e.g. `worker="0"`.
    fn family<V: std::fmt::Display>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (impl AsRef<str>, V)>,
    ) {
        let out = &mut self.out;
        let _ = writeln!(
            out,
            "# HELP tether_{name} {help}\n# TYPE tether_{name} {kind}"
        );
        for (labels, value) in samples {
            let labels = labels.as_ref();
            if labels.is_empty() {
                let _ = writeln!(out, "tether_{name} {value}");
            } else {
                let _ = writeln!(out, "tether_{name}{{{labels}}} {value}");
            }
        }
    }
}

impl Metrics {
    /// A page was served, on a reattached session or a new one.
    pub fn page(&self, reattached: bool) {
        if reattached {
            self.pages_reattached.fetch_add(1, Relaxed);
        } else {
            self.pages_fresh.fetch_add(1, Relaxed);
        }
    }

    /// A websocket started relaying.
    pub fn tab_opened(&self) {
        self.tabs.fetch_add(1, Relaxed);
    }

    /// A websocket stopped relaying.
    pub fn tab_closed(&self) {
        self.tabs.fetch_sub(1, Relaxed);
    }

    /// A restore ran, applying so many steps and skipping so many for each reason (in
    /// [`SkipReason::ALL`] order; all 0 when it failed).
    pub fn restored(&self, applied: usize, skipped: &[usize; SkipReason::ALL.len()]) {
        self.restores.fetch_add(1, Relaxed);
        self.steps_applied.fetch_add(applied as u64, Relaxed);
        for (counter, n) in self.steps_skipped_by.iter().zip(skipped) {
            counter.fetch_add(*n as u64, Relaxed);
            self.steps_skipped.fetch_add(*n as u64, Relaxed);
        }
    }

    /// Changes were recorded into a state log.
    pub fn recorded(&self, changes: usize) {
        self.changes_recorded.fetch_add(changes as u64, Relaxed);
    }

    /// A client connection was refused at the connection limit.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }

    /// An idle live session was dropped to make room, at the session limit or past the
    /// worker memory bound.
    pub fn session_evicted(&self, memory: bool) {
        self.sessions_evicted[usize::from(memory)].fetch_add(1, Relaxed);
    }

    /// A page was refused at the session limit; returns how many have been, this one included.
    pub fn session_refused(&self) -> u64 {
        self.sessions_refused.fetch_add(1, Relaxed) + 1
    }

    /// The exposition text of every counter and of `gauges`.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut m = Exposition { out: String::new() };
        let count = |c: &AtomicU64| c.load(Relaxed);
        m.one(
            "live_sessions",
            "gauge",
            "Live worker sessions known to this gateway.",
            gauges.live_sessions,
        );
        m.one(
            "connected_tabs",
            "gauge",
            "Websockets currently relayed.",
            count(&self.tabs),
        );
        m.one(
            "pages_reattached_total",
            "counter",
            "Pages served on a reattached live session.",
            count(&self.pages_reattached),
        );
        m.one(
            "pages_fresh_total",
            "counter",
            "Pages served on a new session.",
            count(&self.pages_fresh),
        );
        m.one(
            "restores_total",
            "counter",
            "Sessions restored from saved state.",
            count(&self.restores),
        );
        m.one(
            "restore_steps_applied_total",
            "counter",
            "Replay steps applied.",
            count(&self.steps_applied),
        );
        m.one(
            "restore_steps_skipped_total",
            "counter",
            "Replay steps not applied where the user applied them.",
            count(&self.steps_skipped),
        );
        m.family(
            "restore_steps_skipped_by_reason_total",
            "counter",
            "Replay steps not applied, by reason: no_model and type_differs (the app changed), ref_unresolved, refused (the worker said ERROR), replaced (the target was replaced after the step).",
            SkipReason::ALL.iter().map(|r| {
                (
                    format!("reason=\"{}\"", r.as_str()),
                    count(&self.steps_skipped_by[r.index()]),
                )
            }),
        );
        m.one(
            "changes_recorded_total",
            "counter",
            "User changes recorded.",
            count(&self.changes_recorded),
        );
        m.one(
            "connections_refused_total",
            "counter",
            "Client connections refused at the connection limit.",
            count(&self.connections_refused),
        );
        m.one(
            "sessions_refused_total",
            "counter",
            "Pages refused at the session limit (--max-sessions).",
            count(&self.sessions_refused),
        );
        m.family(
            "sessions_evicted_total",
            "counter",
            "Idle live sessions dropped to make room, by reason: session_limit (--max-sessions) and memory (--worker-memory). Their users are restored at their next visit.",
            [
                ("reason=\"session_limit\"", count(&self.sessions_evicted[0])),
                ("reason=\"memory\"", count(&self.sessions_evicted[1])),
            ],
        );
        m.one(
            "buffered_bytes",
            "gauge",
            "Bytes of browser messages begun and not finished, over all websockets (--max-buffered-bytes).",
            gauges.buffered_bytes,
        );
        render_store(gauges, &mut m);
        render_workers(gauges, &mut m);
        m.out
    }
}

/// The batching writer's view of the state store.
fn render_store(gauges: &Gauges, m: &mut Exposition) {
    let s = &gauges.store;
    // NaN until the first batch is written: no latency has been measured yet.
    let latency = s
        .last_latency
        .map_or("NaN".to_owned(), |d| d.as_secs_f64().to_string());
    m.one(
        "store_write_latency_seconds",
        "gauge",
        "For the last batch written: from its oldest change to the store's commit.",
        latency,
    );
    m.one(
        "store_snapshots_written_total",
        "counter",
        "State snapshots written to the store.",
        s.snapshots_written,
    );
    m.one(
        "store_batches_written_total",
        "counter",
        "Batches written to the store.",
        s.batches_written,
    );
    m.one(
        "store_write_errors_total",
        "counter",
        "Failed batch writes (each retry counts).",
        s.write_errors,
    );
    m.one(
        "store_snapshots_dropped_total",
        "counter",
        "Snapshots dropped unwritten because too many were waiting while the store failed.",
        s.dropped,
    );
    m.one(
        "store_failing",
        "gauge",
        "1 while the store refuses writes (full, read-only or down) and changes wait in memory.",
        u8::from(gauges.store_failing),
    );
    m.one(
        "store_pending_snapshots",
        "gauge",
        "Snapshots not yet written to the store.",
        s.pending,
    );
}

/// Per worker slot: up, live sessions, restarts.
fn render_workers(gauges: &Gauges, m: &mut Exposition) {
    let label = |w: usize| format!("worker=\"{w}\"");
    let workers = &gauges.workers;
    m.family(
        "worker_up",
        "gauge",
        "1 while the worker accepts connections, 0 while it restarts.",
        workers
            .iter()
            .enumerate()
            .map(|(w, g)| (label(w), u8::from(g.up))),
    );
    m.family(
        "worker_sessions",
        "gauge",
        "Live sessions placed on each worker.",
        workers
            .iter()
            .enumerate()
            .map(|(w, g)| (label(w), g.sessions)),
    );
    m.family(
        "worker_restarts_total",
        "counter",
        "Times each worker was restarted after it exited.",
        workers
            .iter()
            .enumerate()
            .map(|(w, g)| (label(w), g.restarts)),
    );
    m.family(
        "worker_generation",
        "gauge",
        "Generation of each worker's current process, bumped by every restart and reload.",
        workers
            .iter()
            .enumerate()
            .map(|(w, g)| (label(w), g.generation)),
    );
    m.family(
        "worker_draining",
        "gauge",
        "Old processes of each worker still serving their connected tabs after a reload.",
        workers
            .iter()
            .enumerate()
            .map(|(w, g)| (label(w), g.draining)),
    );
    m.family(
        "worker_memory_bytes",
        "gauge",
        "Resident memory of each worker's current process (bounded by --worker-memory).",
        workers
            .iter()
            .enumerate()
            .map(|(w, g)| (label(w), g.memory)),
    );
    let (ok, refused) = gauges.reloads;
    m.family(
        "reloads_total",
        "counter",
        "Reloads of the app by result: ok started the new version, failed kept the old one.",
        [
            ("result=\"ok\"".to_owned(), ok),
            ("result=\"failed\"".to_owned(), refused),
        ],
    );
}
