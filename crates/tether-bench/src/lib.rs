//! tether-bench drives simulated browsers over the real Bokeh protocol against three setups
//! in one run, interleaved: direct `panel serve`, tether, and nginx as a plain reverse proxy.
//! It reports medians, p99s and ratios to direct, tether's restore time and CPU per message,
//! and tether's memory per idle websocket, how those costs grow with the tabs, and what a live
//! session costs its worker. `run` is what `main` calls, and so does the smoke test.

pub mod cache;
pub mod client;
pub mod procs;
pub mod report;
pub mod restore;
pub mod scenarios;
pub mod setups;
pub mod standin;
pub mod stats;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::report::Results;
use crate::setups::{Kind, Setup, Tools, Worker};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// A few iterations and small sizes: proves the tool works, measures little.
    pub quick: bool,
    /// Setups to compare; restore and idle tabs need tether.
    pub setups: Vec<Kind>,
    /// Programs, apps and directories (`logs` and `work` are set by `run`).
    pub tools: Tools,
    /// Where results.md, results.json and logs/ are written.
    pub out: PathBuf,
    /// Idle websockets to hold through tether (with the stand-in worker); 0 skips that part.
    pub idle_tabs: usize,
    /// Whether to measure restores.
    pub restore: bool,
}

impl Options {
    fn plans(&self) -> (scenarios::Plan, restore::Plan, standin::Plan, cache::Plan) {
        if self.quick {
            (
                scenarios::Plan {
                    warmup: 1,
                    page_loads: 5,
                    round_trips: 10,
                    patches: 3,
                    patch_points: 20_000,
                    cpu_bursts: 1,
                    burst_changes: 100,
                    budget: Duration::from_secs(10),
                },
                restore::Plan {
                    sizes: vec![10, 100],
                    users: 2,
                    budget: Duration::from_secs(15),
                },
                standin::Plan {
                    round_trips: 20,
                    budget: Duration::from_secs(5),
                    idle_tabs: self.idle_tabs,
                    checkpoints: vec![self.idle_tabs / 2],
                    active_tabs: vec![10, 50],
                    active_rate: 200.0,
                    active_phase: Duration::from_secs(1),
                },
                cache::Plan {
                    sessions: 2,
                    flood: 5,
                    room: 2,
                    budget: Duration::from_secs(20),
                },
            )
        } else {
            (
                scenarios::Plan {
                    warmup: 5,
                    page_loads: 200,
                    round_trips: 500,
                    patches: 40,
                    patch_points: 150_000,
                    cpu_bursts: 5,
                    burst_changes: 1000,
                    budget: Duration::from_secs(180),
                },
                restore::Plan {
                    sizes: vec![10, 100, 1000],
                    users: 10,
                    budget: Duration::from_secs(300),
                },
                standin::Plan {
                    round_trips: 2000,
                    budget: Duration::from_secs(60),
                    idle_tabs: self.idle_tabs,
                    checkpoints: vec![1000, 2500, 5000],
                    active_tabs: vec![10, 100, 1000],
                    active_rate: 500.0,
                    active_phase: Duration::from_secs(12),
                },
                cache::Plan {
                    sessions: 20,
                    flood: 100,
                    room: 25,
                    budget: Duration::from_secs(120),
                },
            )
        }
    }
}

fn machine_facts() -> Vec<(String, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    vec![
        ("date".into(), date),
        (
            "machine".into(),
            format!("{cores} cores, {cpu}, {mem} memory"),
        ),
        (
            "open files limit".into(),
            procs::open_files_limit().map_or("unknown".into(), |l| l.to_string()),
        ),
    ]
}

/// Runs the benchmark and writes `results.md` and `results.json` into `opts.out`.
pub async fn run(mut opts: Options) -> anyhow::Result<Results> {
    let t0 = Instant::now();
    let logs = opts.out.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let work = tempfile::Builder::new().prefix("tether-bench").tempdir()?;
    opts.tools.logs = logs;
    opts.tools.work = work.path().to_owned();
    let tools = &opts.tools;
    let (plan, restore_plan, standin_plan, cache_plan) = opts.plans();
    let mut facts = vec![
        (
            "mode".into(),
            if opts.quick { "quick" } else { "full" }.to_owned(),
        ),
        ("tether binary".into(), tools.tether.display().to_string()),
        (
            "setups".into(),
            opts.setups
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ];
    facts.extend(machine_facts());

    eprintln!("tether-bench: starting {:?}", opts.setups);
    let started = futures_util::future::join_all(
        opts.setups
            .iter()
            .map(|&k| Setup::start(k, tools, Worker::Panel, "", &[])),
    )
    .await;
    let mut setups = Vec::new();
    for s in started {
        setups.push(s?);
    }
    let three_way = scenarios::run(&setups, &plan, procs::clock_ticks()).await?;
    let mut tether = None;
    for s in setups {
        if s.kind == Kind::Tether {
            tether = Some(s);
        } else {
            s.stop().await?;
        }
    }
    let mut restores = None;
    if let Some(mut t) = tether {
        if opts.restore {
            restores = Some(restore::run(&mut t, tools, &restore_plan).await?);
        }
        t.stop().await?;
    }
    let standin = standin::run(tools, &opts.setups, &standin_plan).await?;
    let cache = if opts.setups.contains(&Kind::Tether) {
        cache::run(tools, &cache_plan).await?
    } else {
        None
    };
    let results = Results {
        facts,
        three_way: Some(three_way),
        restores,
        standin: Some(standin),
        cache,
        runtime_secs: t0.elapsed().as_secs_f64(),
    };
    std::fs::write(opts.out.join("results.md"), results.to_markdown())?;
    std::fs::write(
        opts.out.join("results.json"),
        serde_json::to_string_pretty(&results.to_json())?,
    )?;
    Ok(results)
}
