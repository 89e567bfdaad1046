//! The `tether-bench` command: parse the CLI, run the benchmark, print where the results are.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use tether_bench::setups::{Kind, Tools};
use tether_bench::Options;

#[derive(Parser)]
#[command(
    name = "tether-bench",
    about = "Direct panel serve vs tether vs nginx, over the real Bokeh protocol, on loopback."
)]
struct Cli {
    /// A few iterations and small sizes, no 10,000 connections (under a minute).
    #[arg(long)]
    quick: bool,
    /// Setups to run, comma-separated.
    #[arg(long, default_value = "direct,tether,nginx")]
    setups: String,
    /// The tether binary to measure [default: target/release/tether].
    #[arg(long)]
    tether: Option<PathBuf>,
    /// Python with Panel [default: $TETHER_PYTHON, then .venv/bin/python].
    #[arg(long)]
    python: Option<PathBuf>,
    /// The nginx binary [default: nginx on PATH, then /usr/sbin/nginx].
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// Directory of the benchmark apps (bench_widgets.py, bench_patch.py, bench_session.py,
    /// causal_periodic.py).
    #[arg(long)]
    apps: Option<PathBuf>,
    /// Where results.md, results.json and logs/ go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Idle websockets to hold through tether [default: 10000, or 200 with --quick]; 0 skips.
    #[arg(long)]
    idle_tabs: Option<usize>,
    /// Skip the restore measurement.
    #[arg(long)]
    no_restore: bool,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn absolute(p: PathBuf) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p);
    }
    Ok(std::env::current_dir()?.join(p))
}

fn find_nginx() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nginx"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("nginx"))
}

fn options(cli: Cli) -> anyhow::Result<Options> {
    let setups = cli
        .setups
        .split(',')
        .map(Kind::parse)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let python = match cli
        .python
        .or_else(|| std::env::var_os("TETHER_PYTHON").map(PathBuf::from))
    {
        Some(p) => p,
        None => repo().join(".venv/bin/python"),
    };
    let tether = absolute(
        cli.tether
            .unwrap_or_else(|| repo().join("target/release/tether")),
    )?;
    let nginx = cli.nginx.unwrap_or_else(find_nginx);
    let apps_dir = absolute(cli.apps.unwrap_or_else(|| repo().join("tests/apps")))?;
    if !tether.is_file() {
        bail!(
            "no tether binary at {}; build it with `cargo build --release --bin tether` or pass --tether",
            tether.display()
        );
    }
    if !python.exists() {
        bail!(
            "no Python at {}; run `make venv` or pass --python",
            python.display()
        );
    }
    if setups.contains(&Kind::Nginx) && !nginx.is_file() {
        bail!(
            "nginx is not installed; `apt-get install nginx` (scripts/bench.sh does) or leave it out with --setups direct,tether"
        );
    }
    let apps = [
        "bench_widgets.py",
        "bench_patch.py",
        "bench_session.py",
        "causal_periodic.py",
    ]
    .map(|a| apps_dir.join(a))
    .to_vec();
    for a in &apps {
        if !a.is_file() {
            bail!(
                "the benchmark app {} is missing; pass --apps DIR",
                a.display()
            );
        }
    }
    Ok(Options {
        quick: cli.quick,
        setups,
        tools: Tools {
            python: absolute(python)?,
            tether,
            nginx,
            apps,
            logs: PathBuf::new(),
            work: PathBuf::new(),
        },
        out: absolute(cli.out)?,
        idle_tabs: cli
            .idle_tabs
            .unwrap_or(if cli.quick { 200 } else { 10_000 }),
        restore: !cli.no_restore,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let opts = match options(cli) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tether-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = opts.out.clone();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether-bench: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            r = tether_bench::run(opts) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    match result.context("the benchmark failed") {
        Ok(results) => {
            eprintln!(
                "tether-bench: done in {:.0} s; results in {}",
                results.runtime_secs,
                out.join("results.md").display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tether-bench: {e:#}");
            eprintln!(
                "tether-bench: server logs are in {}",
                out.join("logs").display()
            );
            ExitCode::FAILURE
        }
    }
}
