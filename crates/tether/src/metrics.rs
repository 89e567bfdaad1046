//! Counters for `/.tether/metrics`, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::server::Gateway;

/// Monotonic counters; gauges are read from their owners at render time.
#[derive(Default)]
pub struct Metrics {
    /// Pages served on a reattached live session.
    pub pages_reattached: AtomicU64,
    /// Pages served on a new session.
    pub pages_fresh: AtomicU64,
    /// Websockets currently relaying.
    pub tabs: AtomicU64,
    /// Restores run.
    pub restores: AtomicU64,
    /// Replay steps applied, over all restores.
    pub steps_applied: AtomicU64,
    /// Replay steps skipped because the app changed.
    pub steps_skipped: AtomicU64,
    /// Changes recorded into state logs.
    pub changes_recorded: AtomicU64,
    /// Client connections refused because the connection limit was reached.
    pub connections_refused: AtomicU64,
    /// Page requests refused because the session limit was reached.
    pub sessions_refused: AtomicU64,
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
    pub fn page(&self, reattached: bool) {
        if reattached {
            self.pages_reattached.fetch_add(1, Relaxed);
        } else {
            self.pages_fresh.fetch_add(1, Relaxed);
        }
    }

    pub fn tab_opened(&self) {
        self.tabs.fetch_add(1, Relaxed);
    }

    pub fn tab_closed(&self) {
        self.tabs.fetch_sub(1, Relaxed);
    }

    pub fn render(&self, gw: &Gateway) -> String {
        let (live, _) = gw.registry.counts();
        let mut m = Exposition { out: String::new() };
        let count = |c: &AtomicU64| c.load(Relaxed);
        m.one(
            "live_sessions",
            "gauge",
            "Live worker sessions known to this gateway.",
            live,
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
            "Replay steps skipped because the app changed.",
            count(&self.steps_skipped),
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
        self.render_store(gw, &mut m);
        self.render_workers(gw, &mut m);
        m.out
    }

    /// The batching writer's view of the state store.
    fn render_store(&self, gw: &Gateway, m: &mut Exposition) {
        let s = gw.states.writer_stats();
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
            u8::from(gw.states.refusing_writes()),
        );
        m.one(
            "store_pending_snapshots",
            "gauge",
            "Snapshots not yet written to the store.",
            s.pending,
        );
    }

    /// Per worker slot: up, live sessions, restarts.
    fn render_workers(&self, gw: &Gateway, m: &mut Exposition) {
        let slots = gw.slots.len();
        let label = |w: usize| format!("worker=\"{w}\"");
        let endpoints: Vec<_> = (0..slots).map(|w| gw.endpoint(w)).collect();
        m.family(
            "worker_up",
            "gauge",
            "1 while the worker accepts connections, 0 while it restarts.",
            endpoints
                .iter()
                .enumerate()
                .map(|(w, e)| (label(w), u8::from(e.port != 0))),
        );
        m.family(
            "worker_sessions",
            "gauge",
            "Live sessions placed on each worker.",
            gw.registry
                .load(slots)
                .into_iter()
                .enumerate()
                .map(|(w, n)| (label(w), n)),
        );
        m.family(
            "worker_restarts_total",
            "counter",
            "Times each worker was restarted after it exited.",
            endpoints
                .iter()
                .enumerate()
                .map(|(w, e)| (label(w), e.generation.saturating_sub(1))),
        );
    }
}
