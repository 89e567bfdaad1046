//! Restore time (tether only). Users record state logs of N steps, tether restarts, and each
//! user's first page load and document pull is timed: tether holds the worker's ACK until the
//! restore is done, so that pull includes the whole restore. Cold page loads (new browsers)
//! of the same restarted gateway are interleaved with them as the reference.
//!
//! A step alternates a slider change with a button click. Clicks are barriers to the log's
//! compaction, so N steps stay N entries (alternating two sliders alone would compact to two).
//!
//! Two recorded sessions of other apps are restored the same way, each against cold loads of
//! its own app: a realistic one (30 value changes over 10 widgets with Panel's default
//! debounce, and 3 clicks, with a person's pauses), and 5 changes in an app that a 50 ms
//! periodic callback never lets fall quiet.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;
use tokio::time::Instant;

use crate::client::{change_patch, click_patch, find_model, Browser};
use crate::scenarios::{page_load, PERIODIC_APP, SESSION_APP, WIDGETS_APP};
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
    /// The recorded sessions of other apps.
    pub sessions: Vec<SessionRestores>,
}

/// Restores of one recorded session, against cold loads of its app.
#[derive(Debug, Default)]
pub struct SessionRestores {
    /// What was recorded.
    pub label: &'static str,
    /// Cold page load plus pull of the app.
    pub cold: Vec<f64>,
    /// Page load plus pull that includes the restore.
    pub restore: Vec<f64>,
    /// tether's own account of each restore.
    pub inside: Vec<f64>,
    /// Steps tether reported applied and skipped, summed.
    pub applied: (usize, usize),
}

/// The recorded sessions: label, app, and how a person makes it.
#[derive(Debug, Clone, Copy)]
enum Session {
    /// 30 value changes over 10 widgets and 3 clicks.
    Realistic,
    /// 5 changes beside a 50 ms periodic callback.
    Periodic,
}

impl Session {
    const ALL: [Session; 2] = [Session::Realistic, Session::Periodic];

    fn label(self) -> &'static str {
        match self {
            Session::Realistic => "realistic session (30 changes over 10 widgets, 3 clicks)",
            Session::Periodic => "5 changes, 50 ms periodic callback",
        }
    }

    fn app(self) -> &'static str {
        match self {
            Session::Realistic => SESSION_APP,
            Session::Periodic => PERIODIC_APP,
        }
    }

    /// Makes the session as a person would: each step answered, then a short pause.
    async fn record(self, b: &mut Browser, setup: &Setup) -> anyhow::Result<()> {
        let mut tab = b.open(setup.addr, self.app()).await?;
        let doc = tab.pull().await?;
        tab.ready().await?;
        let find = |label: &str| find_model(&doc, label).with_context(|| format!("no {label}"));
        let pause = Duration::from_millis(120);
        match self {
            Session::Realistic => {
                let refresh = find("bench_refresh")?;
                for round in 0..3 {
                    for i in 0..5 {
                        let v = json!(10 * (round + 1) + i);
                        step(
                            &mut tab,
                            change_patch(&find(&format!("s{i}"))?, "value", v),
                            pause,
                        )
                        .await?;
                    }
                    for i in 0..3 {
                        let v = json!(format!("o{}", round + i));
                        step(
                            &mut tab,
                            change_patch(&find(&format!("c{i}"))?, "value", v),
                            pause,
                        )
                        .await?;
                    }
                    for i in 0..2 {
                        let v = json!(format!("text {round} {i}"));
                        step(
                            &mut tab,
                            change_patch(&find(&format!("t{i}"))?, "value", v),
                            pause,
                        )
                        .await?;
                    }
                    step(&mut tab, click_patch(&refresh), pause).await?;
                }
            }
            Session::Periodic => {
                for i in 0..4 {
                    let v = json!(i + 2);
                    step(
                        &mut tab,
                        change_patch(&find(&format!("w{i}"))?, "value", v),
                        pause,
                    )
                    .await?;
                }
                step(
                    &mut tab,
                    change_patch(&find("word")?, "value", json!("hello")),
                    pause,
                )
                .await?;
            }
        }
        tab.close().await;
        Ok(())
    }
}

/// Sends one step, waits for its answer, then pauses as a person does (until `pause` passes
/// with nothing from the worker, or a periodic app's bounded wait).
async fn step(tab: &mut crate::client::Tab, patch: String, pause: Duration) -> anyhow::Result<()> {
    let id = tab.send("PATCH-DOC", &patch).await?;
    loop {
        let m = tab.recv().await?;
        if m.reqid.as_deref() == Some(id.as_str()) {
            if m.msgtype != "OK" {
                bail!("the worker refused a step: {}", m.content.as_str());
            }
            break;
        }
    }
    tab.settle(pause).await;
    Ok(())
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
    let mut sessions: Vec<(Session, Vec<Browser>)> = Vec::new();
    for kind in Session::ALL {
        let mut browsers = Vec::new();
        for k in 0..plan.users {
            let mut b = Browser::new();
            kind.record(&mut b, setup)
                .await
                .with_context(|| format!("recording {} for user {k}", kind.label()))?;
            browsers.push(b);
        }
        sessions.push((kind, browsers));
    }
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
    let alternating = order.len();
    for (kind, browsers) in &mut sessions {
        let mut series = SessionRestores {
            label: kind.label(),
            ..Default::default()
        };
        page_load(setup.addr, kind.app()).await?;
        for b in browsers.iter_mut() {
            if started.elapsed() > plan.budget * 2 {
                break;
            }
            let cold = page_load(setup.addr, kind.app()).await?;
            series.cold.push(ms(cold.total()));
            let (tab, _, times) = b.load(setup.addr, kind.app()).await?;
            series.restore.push(ms(times.total()));
            tab.close().await;
        }
        out.sessions.push(series);
    }
    let mut lines = restore_lines(&setup.front_log());
    let session_lines = lines.split_off(alternating.min(lines.len()));
    let mut session_lines = session_lines.into_iter();
    for series in &mut out.sessions {
        for _ in 0..series.restore.len() {
            let (applied, skipped, inside) = session_lines
                .next()
                .context("tether logged fewer restores than the sessions had")?;
            series.inside.push(inside);
            series.applied.0 += applied;
            series.applied.1 += skipped;
        }
    }
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
