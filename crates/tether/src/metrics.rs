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
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP tether_{name} {help}\n# TYPE tether_{name} {kind}\ntether_{name} {value}"
            );
        };
        metric(
            "live_sessions",
            "gauge",
            "Live worker sessions known to this gateway.",
            live as u64,
        );
        metric(
            "connected_tabs",
            "gauge",
            "Websockets currently relayed.",
            self.tabs.load(Relaxed),
        );
        metric(
            "pages_reattached_total",
            "counter",
            "Pages served on a reattached live session.",
            self.pages_reattached.load(Relaxed),
        );
        metric(
            "pages_fresh_total",
            "counter",
            "Pages served on a new session.",
            self.pages_fresh.load(Relaxed),
        );
        metric(
            "restores_total",
            "counter",
            "Sessions restored from saved state.",
            self.restores.load(Relaxed),
        );
        metric(
            "restore_steps_applied_total",
            "counter",
            "Replay steps applied.",
            self.steps_applied.load(Relaxed),
        );
        metric(
            "restore_steps_skipped_total",
            "counter",
            "Replay steps skipped because the app changed.",
            self.steps_skipped.load(Relaxed),
        );
        metric(
            "changes_recorded_total",
            "counter",
            "User changes recorded.",
            self.changes_recorded.load(Relaxed),
        );
        for w in 0..gw.slots.len() {
            let e = gw.endpoint(w);
            let _ = writeln!(
                out,
                "tether_worker_up{{worker=\"{w}\"}} {}",
                u8::from(e.port != 0)
            );
            let _ = writeln!(
                out,
                "tether_worker_restarts_total{{worker=\"{w}\"}} {}",
                e.generation.saturating_sub(1)
            );
        }
        out
    }
}
