//! Restore time (tether only). Users record state logs of N steps, tether restarts, and each
//! user's first page load and document pull is timed: tether holds the worker's ACK until the
//! restore is done, so that pull includes the whole restore. Cold page loads (new browsers)
//! of the same restarted gateway are interleaved with them as the reference.
//!
//! A step alternates a slider change with a button click. Clicks are barriers to the log's
//! compaction, so N steps stay N entries (alternating two sliders alone would compact to two).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;
use tokio::time::Instant;

use crate::client::{change_patch, click_patch, find_model, Browser};
use crate::scenarios::{page_load, WIDGETS_APP};
use crate::setups::{Setup, Tools};
use crate::stats::{ms, Steps};

/// How much of the restore measurement to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// State log sizes, in steps.
    pub sizes: Vec<usize>,
    /// Users per size (samples per size).
    pub users: usize,
    /// Longest the measuring loop may run.
    pub budget: Duration,
}

/// Results, in milliseconds.
#[derive(Debug, Default)]
pub struct Restores {
    /// Cold page load plus pull of the restarted gateway.
    pub cold: Vec<f64>,
    /// The cold page loads' steps.
    pub cold_steps: Steps,
    /// Page load plus pull that includes a restore, by steps.
    pub restore: BTreeMap<usize, Vec<f64>>,
    /// The restoring page loads' steps, by log size.
    pub steps: BTreeMap<usize, Steps>,
    /// tether's own account of each restore (`restored session ... ms=`), by steps.
    pub inside: BTreeMap<usize, Vec<f64>>,
    /// The worker applying the same steps live, while they were recorded (first change sent
    /// to last `OK`), by steps: the floor under any replay.
    pub live: BTreeMap<usize, Vec<f64>>,
    /// Steps tether reported applied and skipped, summed over the restores of each size.
    pub applied: BTreeMap<usize, (usize, usize)>,
}

/// Records `steps` changes for browser `b`, pipelined, and waits until all are answered;
/// returns how long the worker took to answer them all.
async fn record(b: &mut Browser, setup: &Setup, steps: usize) -> anyhow::Result<Duration> {
    const WINDOW: usize = 32;
    let mut tab = b.open(setup.addr, WIDGETS_APP).await?;
    let doc = tab.pull().await?;
    tab.ready().await?;
    let slider = find_model(&doc, "bench_slider").context("no bench_slider")?;
    let button = find_model(&doc, "bench_button").context("no bench_button")?;
    let (mut sent, mut answered) = (0, 0);
    let t0 = Instant::now();
    while answered < steps {
        while sent < steps && sent - answered < WINDOW {
            let patch = if sent % 2 == 0 {
                change_patch(&slider, "value", json!(sent / 2 + 1))
            } else {
                click_patch(&button)
            };
            tab.send("PATCH-DOC", &patch).await?;
            sent += 1;
        }
        let m = tab.recv().await?;
        match m.msgtype.as_str() {
            "OK" => answered += 1,
            "ERROR" => bail!("the worker refused a step: {}", m.content.as_str()),
            _ => {}
        }
    }
    let took = t0.elapsed();
    tab.settle(Duration::from_millis(300)).await;
    tab.close().await;
    Ok(took)
}

/// `(applied, skipped, ms)` of each `restored session` line of a tether log, in order.
fn restore_lines(log: &str) -> Vec<(usize, usize, f64)> {
    let field = |line: &str, key: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
    };
    log.lines()
        .filter(|l| l.contains("restored session"))
        .filter_map(|l| {
            Some((
                field(l, "applied=")? as usize,
                field(l, "skipped=")? as usize,
                field(l, "ms=")?,
            ))
        })
        .collect()
}

/// Records, restarts tether, and measures. `setup` must be tether.
pub async fn run(setup: &mut Setup, tools: &Tools, plan: &Plan) -> anyhow::Result<Restores> {
    eprintln!(
        "tether-bench: recording state logs of {:?} steps for {} users each",
        plan.sizes, plan.users
    );
    let mut out = Restores::default();
    let mut users: Vec<(usize, Browser)> = Vec::new();
    for k in 0..plan.users {
        for &n in &plan.sizes {
            let mut b = Browser::new();
            let took = record(&mut b, setup, n)
                .await
                .with_context(|| format!("recording {n} steps for user {k}"))?;
            out.live.entry(n).or_default().push(ms(took));
            users.push((n, b));
        }
    }
    eprintln!("tether-bench: restarting tether");
    setup.restart_tether(tools).await?;
    for _ in 0..3 {
        page_load(setup.addr, WIDGETS_APP).await?;
    }
    eprintln!("tether-bench: restores against cold page loads");
    let mut order = Vec::new();
    let started = Instant::now();
    for k in 0..plan.users {
        if started.elapsed() > plan.budget {
            break;
        }
        let cold = page_load(setup.addr, WIDGETS_APP).await?;
        out.cold.push(ms(cold.total()));
        out.cold_steps.push(&cold);
        // Sizes in rotating order, each user restored once.
        let nsizes = plan.sizes.len();
        for j in 0..nsizes {
            let idx = k * nsizes + (j + k) % nsizes;
            let (n, b) = &mut users[idx];
            let (tab, _, times) = b.load(setup.addr, WIDGETS_APP).await?;
            out.restore.entry(*n).or_default().push(ms(times.total()));
            out.steps.entry(*n).or_default().push(&times);
            order.push(*n);
            tab.close().await;
        }
    }
    let lines = restore_lines(&setup.front_log());
    if lines.len() != order.len() {
        bail!(
            "tether logged {} restores for {} restoring page loads",
            lines.len(),
            order.len()
        );
    }
    for (n, (applied, skipped, inside)) in order.into_iter().zip(lines) {
        out.inside.entry(n).or_default().push(inside);
        let a = out.applied.entry(n).or_default();
        a.0 += applied;
        a.1 += skipped;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_restore_lines() {
        let log = "2025-01-01T00:00:00Z  INFO tether::tap: restoring session user=u app=a steps=3\n\
                   2025-01-01T00:00:00Z  INFO tether::tap: restored session user=u app=a applied=3 skipped=0 ms=87";
        assert_eq!(super::restore_lines(log), vec![(3, 0, 87.0)]);
    }
}
