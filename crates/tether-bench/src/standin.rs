//! Measurements against a stand-in worker instead of Panel.
//!
//! - **Proxy latency.** The stand-in answers every message at once, in one write, so a
//!   round trip through it shows what the proxy in between adds, free of Panel's work and of
//!   the worker's ~40 ms Nagle/delayed-ACK stalls, which swamp 100 µs at p99.
//! - **Memory per idle websocket.** 10,000 Panel sessions do not fit in this machine's
//!   memory. Every idle tab is still a real browser-like client: its own cookie, a page GET,
//!   a websocket through tether to the stand-in, the ACK, then silence (pings answered).
//!   tether still mints ids, checks tokens, opens an upstream websocket per tab and keeps
//!   its registry and state logs.
//!
//! The stand-in (`fake_worker.py`) runs through a fake `python` that also answers tether's
//! `import panel, bokeh` check (and says it has Panel 1.9.4 and Bokeh 3.9.2).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures_util::stream::{self, StreamExt};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use std::collections::BTreeMap;

use crate::client::{change_patch, Browser, Tab};
use crate::procs;
use crate::scenarios::{change_and_patch, rotated, Cpu, WIDGETS_APP};
use crate::setups::{Kind, Setup, Tools, Worker};
use crate::stats::{ms, Row};

const FAKE_WORKER: &str = include_str!("fake_worker.py");

/// Descriptors tether needs besides two per tab (listener, state file, pipes, worker pool...).
const TETHER_SPARE_FDS: u64 = 200;
/// Tabs opened at once.
const CONCURRENCY: usize = 32;

/// Result of the idle-connection measurement.
#[derive(Debug, Default)]
pub struct Idle {
    /// Tabs asked for.
    pub target: usize,
    /// Tabs held open at the end.
    pub reached: usize,
    /// Why fewer than `target` were attempted, if so.
    pub capped_by: Option<String>,
    /// tether's RSS before the tabs, in KiB.
    pub baseline_kib: u64,
    /// (tabs open, tether RSS in KiB) at each checkpoint.
    pub points: Vec<(usize, u64)>,
    /// Seconds it took to open all tabs.
    pub open_secs: f64,
}

impl Idle {
    /// RSS added per idle tab, in KiB, from the baseline to the last checkpoint.
    pub fn per_tab_kib(&self) -> f64 {
        match self.points.last() {
            Some(&(n, rss)) if n > 0 => (rss as f64 - self.baseline_kib as f64) / n as f64,
            _ => f64::NAN,
        }
    }
}

/// Writes the fake `python` (a shell script) and the stand-in worker; returns the former.
fn install_fake(dir: &Path, real_python: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let worker = dir.join("fake_worker.py");
    std::fs::write(&worker, FAKE_WORKER)?;
    let python = dir.join("python");
    std::fs::write(
        &python,
        format!(
            "#!/bin/sh\n\
             # Stands in for Python with Panel: passes tether's check, runs the stand-in worker.\n\
             case \"$1 $2\" in \"-c import panel, bokeh\"*) echo 1.9.4 3.9.2; exit 0;; esac\n\
             exec '{}' '{}' \"$@\"\n",
            real_python.display(),
            worker.display()
        ),
    )?;
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755))?;
    Ok(python)
}

/// Opens one idle tab and leaves a task holding it.
async fn idle_tab(setup_addr: std::net::SocketAddr) -> anyhow::Result<JoinHandle<()>> {
    let mut b = Browser::new();
    let page = b.page(setup_addr, WIDGETS_APP).await?;
    let mut tab = b
        .connect(setup_addr, WIDGETS_APP, &page.token, 4096)
        .await?;
    let ack = tab.recv().await?;
    anyhow::ensure!(ack.msgtype == "ACK", "expected ACK, got {}", ack.msgtype);
    Ok(tokio::spawn(tab.idle()))
}

/// How much to do against the stand-in.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Round trips per setup.
    pub round_trips: usize,
    /// Longest the round-trip loop may run.
    pub budget: Duration,
    /// Idle tabs to hold through tether; 0 skips.
    pub idle_tabs: usize,
    /// Tab counts at which tether's RSS is read on the way.
    pub checkpoints: Vec<usize>,
    /// Numbers of concurrently active tabs for the cost curve; empty skips it.
    pub active_tabs: Vec<usize>,
    /// Changes per second all active tabs send together, whatever their number.
    pub active_rate: f64,
    /// How long each point of the curve is measured.
    pub active_phase: Duration,
}

/// One point of the cost curve: `tabs` tabs sharing one rate of changes.
#[derive(Debug, Default)]
pub struct Active {
    /// Concurrently active tabs.
    pub tabs: usize,
    /// Round trip of each change (its OK and the patch back), per setup.
    pub round_trip: Row,
    /// The proxy's CPU over the phase (setups with a proxy only).
    pub cpu: BTreeMap<Kind, Cpu>,
}

/// Results against the stand-in.
#[derive(Debug, Default)]
pub struct StandIn {
    /// Round trip (a change in, its OK and a patch back), in milliseconds.
    pub echo: Row,
    pub idle: Option<Idle>,
    /// Costs at each number of active tabs, in [`Plan::active_tabs`] order.
    pub curve: Vec<Active>,
}

/// The most idle tabs tether can hold under this process's open-files limit, and why if
/// that is fewer than `target`.
fn tab_cap(target: usize) -> (usize, Option<String>) {
    let limit = procs::open_files_limit().unwrap_or(1024);
    let cap = (limit.saturating_sub(TETHER_SPARE_FDS) / 2) as usize;
    if target <= cap {
        return (target, None);
    }
    let why = format!(
        "`ulimit -n` is {limit} here (scripts/bench.sh raises it to the hard limit; going \
         higher needs CAP_SYS_RESOURCE), and tether holds two descriptors per tab, one to \
         the browser and one to the worker, so at most {cap} tabs fit"
    );
    (cap, Some(why))
}

/// Runs the stand-in measurements for `kinds`; idle tabs only if tether is among them.
pub async fn run(tools: &Tools, kinds: &[Kind], plan: &Plan) -> anyhow::Result<StandIn> {
    let fake = install_fake(&tools.work.join("fake"), &tools.python)?;
    let tools = Tools {
        python: fake,
        ..tools.clone()
    };
    let (goal, capped_by) = tab_cap(plan.idle_tabs);
    let most_active = plan.active_tabs.iter().copied().max().unwrap_or(0);
    let extra: Vec<String> = [
        "--max-connections",
        &(goal.max(most_active) + 1000).to_string(),
        "--idle-timeout",
        "1h",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut setups = Vec::new();
    for &k in kinds {
        setups.push(Setup::start(k, &tools, Worker::StandIn, "standin-", &extra).await?);
    }
    let mut out = StandIn::default();
    let mut tabs = Vec::new();
    for s in &setups {
        tabs.push(Browser::new().open(s.addr, WIDGETS_APP).await?);
    }
    eprintln!(
        "tether-bench: round trip through a stand-in worker ({} per setup)",
        plan.round_trips
    );
    let idx: Vec<usize> = (0..setups.len()).collect();
    let started = Instant::now();
    for i in 0..plan.round_trips {
        if started.elapsed() > plan.budget {
            break;
        }
        for &s in &rotated(&idx, i) {
            let patch = change_patch("p1", "value", json!(i));
            let t0 = Instant::now();
            change_and_patch(&mut tabs[s], &patch, &format!("\"new\":{i}"), 0).await?;
            out.echo.push(setups[s].kind, ms(t0.elapsed()));
        }
    }
    for t in tabs {
        t.close().await;
    }
    for (i, &n) in plan.active_tabs.iter().enumerate() {
        eprintln!(
            "tether-bench: {n} active tabs sharing {} changes/s",
            plan.active_rate
        );
        let mut point = Active {
            tabs: n,
            ..Active::default()
        };
        for &s in &rotated(&idx, i) {
            active(&setups[s], n, plan, &mut point).await?;
        }
        out.curve.push(point);
    }
    for s in setups {
        if s.kind == Kind::Tether && plan.idle_tabs > 0 {
            let mut idle = idle_tabs(&s, goal, &plan.checkpoints).await?;
            idle.target = plan.idle_tabs;
            idle.capped_by = capped_by.clone();
            out.idle = Some(idle);
        }
        s.stop().await?;
    }
    Ok(out)
}

/// Holds `goal` idle tabs through tether, reading its RSS at the checkpoints.
async fn idle_tabs(setup: &Setup, goal: usize, checkpoints: &[usize]) -> anyhow::Result<Idle> {
    let mut out = Idle::default();
    let pid = setup.front_pid().context("tether's pid")?;
    // Warm up the paths a tab uses, then let allocations settle.
    for h in stream::iter(0..10)
        .then(|_| idle_tab(setup.addr))
        .collect::<Vec<_>>()
        .await
    {
        h?.abort();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    out.baseline_kib = procs::rss_kib(pid);
    eprintln!(
        "tether-bench: {goal} idle tabs through tether (baseline RSS {} KiB)",
        out.baseline_kib
    );
    let mut held: Vec<JoinHandle<()>> = Vec::with_capacity(goal);
    let started = Instant::now();
    let mut marks: Vec<usize> = checkpoints.iter().copied().filter(|&c| c < goal).collect();
    marks.push(goal);
    for mark in marks {
        let need = mark - held.len();
        let addr = setup.addr;
        let opened: Vec<anyhow::Result<JoinHandle<()>>> = stream::iter(0..need)
            .map(|_| idle_tab(addr))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for h in opened {
            held.push(h.with_context(|| format!("opening idle tab {}", held.len() + 1))?);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = procs::rss_kib(pid);
        eprintln!("tether-bench:   {mark} tabs: RSS {rss} KiB");
        out.points.push((mark, rss));
    }
    out.open_secs = started.elapsed().as_secs_f64();
    out.reached = held.len();
    for h in held {
        h.abort();
    }
    Ok(out)
}

/// Opens `n` tabs through `setup`, then for [`Plan::active_phase`] has them send
/// [`Plan::active_rate`] changes a second between them, each tab on its own clock, staggered;
/// records each round trip and the proxy's CPU over the phase into `point`.
async fn active(setup: &Setup, n: usize, plan: &Plan, point: &mut Active) -> anyhow::Result<()> {
    let addr = setup.addr;
    let opened: Vec<anyhow::Result<Tab>> = stream::iter(0..n)
        .map(|_| async move { Browser::new().open(addr, WIDGETS_APP).await })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let tabs = opened.into_iter().collect::<anyhow::Result<Vec<Tab>>>()?;
    // Each tab sends once per period; n tabs together send `active_rate` a second.
    let period = Duration::from_secs_f64(n as f64 / plan.active_rate);
    let clock = procs::clock_ticks();
    let before = setup.front_cpu_ticks();
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + plan.active_phase;
    let runs = tabs.into_iter().enumerate().map(|(i, mut tab)| {
        tokio::spawn(async move {
            let mut times = Vec::new();
            let mut next = start + period.mul_f64(i as f64 / n as f64);
            let mut k = 0u64;
            while next < end {
                tokio::time::sleep_until(next).await;
                let v = i as u64 * 1_000_000 + k;
                let patch = change_patch("p1", "value", json!(v));
                let t0 = Instant::now();
                change_and_patch(&mut tab, &patch, &format!("\"new\":{v}"), 0).await?;
                times.push(ms(t0.elapsed()));
                k += 1;
                // A late answer skips the sends it overran rather than bunching them.
                while next <= Instant::now() {
                    next += period;
                }
            }
            tab.close().await;
            anyhow::Ok(times)
        })
    });
    let results = futures_util::future::join_all(runs).await;
    let wall = ms(start.elapsed().min(plan.active_phase));
    let after = setup.front_cpu_ticks();
    let mut round_trips = 0;
    for r in results {
        for t in r.context("an active tab's task")?? {
            point.round_trip.push(setup.kind, t);
            round_trips += 1;
        }
    }
    if let (Some(before), Some(after)) = (before, after) {
        point.cpu.insert(
            setup.kind,
            Cpu {
                // A change in, its OK and a patch out.
                messages: 3 * round_trips,
                cpu_ms: (after - before) as f64 * 1000.0 / clock as f64,
                wall_ms: wall,
            },
        );
    }
    Ok(())
}
