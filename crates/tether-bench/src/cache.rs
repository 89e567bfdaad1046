//! Live sessions as a cache: what a live session of the demo app costs its worker, and a
//! flood of new visitors against `--worker-memory` set to a few sessions' worth.
//!
//! tether runs the demo app (`examples/catalog.py`) on one real Panel worker. Every visitor
//! is a new browser that loads the page, connects, pulls the document and leaves: its
//! session stays live (idle) in the worker for `--live-ttl`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::procs;
use crate::scenarios::page_load;
use crate::setups::{Setup, Tools};

/// How much to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Sessions opened to measure the cost of one.
    pub sessions: usize,
    /// Visitors in the flood.
    pub flood: usize,
    /// The bound, in sessions beyond the first: `--worker-memory` is the worker's memory with
    /// one session plus this many sessions' cost.
    pub room: usize,
    /// Longest each part may run.
    pub budget: Duration,
}

/// What was measured.
#[derive(Debug, Default, Clone)]
pub struct Cache {
    /// The worker's resident memory with its first session, in KiB.
    pub first_kib: u64,
    /// What each further live session added, in KiB.
    pub per_session_kib: f64,
    /// Sessions that `per_session_kib` was measured over.
    pub sessions: usize,
    /// The `--worker-memory` bound of the flood, in KiB.
    pub bound_kib: u64,
    /// Visitors served in the flood, and those refused (not a 200 page and a working tab).
    pub served: usize,
    pub refused: usize,
    /// The worker's highest resident memory seen during the flood (read after each
    /// visitor), in KiB.
    pub peak_kib: u64,
    /// Idle sessions tether dropped for memory, from its metrics.
    pub evicted: u64,
}

impl Cache {
    /// The peak as a percentage of the bound.
    pub fn peak_percent(&self) -> f64 {
        self.peak_kib as f64 * 100.0 / self.bound_kib.max(1) as f64
    }
}

/// The demo app's name and script.
fn demo(tools: &Tools) -> anyhow::Result<(String, PathBuf)> {
    let script = tools
        .apps
        .first()
        .and_then(|a| a.parent()?.parent())
        .map(|tests| tests.join("../examples/catalog.py"))
        .context("no apps directory")?;
    anyhow::ensure!(
        script.is_file(),
        "the demo app {} is missing",
        script.display()
    );
    Ok(("catalog".to_owned(), script))
}

/// The worker's resident memory, in KiB.
fn worker_kib(setup: &Setup) -> anyhow::Result<u64> {
    let tether = setup.front_pid().context("tether's pid")?;
    let worker = procs::children(tether)
        .into_iter()
        .next()
        .context("tether's worker")?;
    Ok(procs::rss_kib(worker))
}

/// `tether_sessions_evicted_total{reason="memory"}` from tether's metrics.
async fn evicted(addr: std::net::SocketAddr) -> u64 {
    let text = crate::client::get_text(addr, "/.tether/metrics")
        .await
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("tether_sessions_evicted_total{reason=\"memory\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Measures the demo app's cost per live session, then floods a bounded gateway; `None`
/// when the demo app is not beside the benchmark apps (`--apps` elsewhere).
pub async fn run(tools: &Tools, plan: &Plan) -> anyhow::Result<Option<Cache>> {
    let (app, script) = match demo(tools) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("tether-bench: skipping the session cache: {e}");
            return Ok(None);
        }
    };
    let tools = Tools {
        apps: vec![script],
        ..tools.clone()
    };
    let mut out = Cache::default();
    eprintln!(
        "tether-bench: worker memory per live session of the demo app ({} sessions)",
        plan.sessions
    );
    let setup = Setup::start_tether(&tools, "cache-tether", &[]).await?;
    page_load(setup.addr, &app).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    out.first_kib = worker_kib(&setup)?;
    let started = Instant::now();
    while out.sessions < plan.sessions && started.elapsed() < plan.budget {
        page_load(setup.addr, &app).await?;
        out.sessions += 1;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = worker_kib(&setup)?;
    out.per_session_kib = after.saturating_sub(out.first_kib) as f64 / out.sessions.max(1) as f64;
    setup.stop().await?;

    let per = out.per_session_kib.max(64.0);
    out.bound_kib = out.first_kib + (per * plan.room as f64) as u64;
    eprintln!(
        "tether-bench: {} new visitors against --worker-memory {} KiB",
        plan.flood, out.bound_kib
    );
    let bound = format!("{}KiB", out.bound_kib);
    let setup =
        Setup::start_tether(&tools, "cache-bounded", &["--worker-memory".into(), bound]).await?;
    let started = Instant::now();
    for _ in 0..plan.flood {
        if started.elapsed() > plan.budget {
            break;
        }
        // One visitor: page, websocket, ACK, pull; then the tab closes. Errors are refusals.
        match page_load(setup.addr, &app).await {
            Ok(_) => out.served += 1,
            Err(_) => out.refused += 1,
        }
        out.peak_kib = out.peak_kib.max(worker_kib(&setup)?);
    }
    out.evicted = evicted(setup.addr).await;
    setup.stop().await?;
    Ok(Some(out))
}
