//! The three-way measurements, interleaved: every iteration visits each setup once, in an
//! order that rotates, so drift on a shared machine falls on all setups alike.
//!
//! - page load plus document pull (a first visit: new browser, new connection);
//! - widget round trip (a change in; its `OK` and the patch it causes back);
//! - a large server patch (several MB of JSON) reaching the browser;
//! - the proxy's CPU time per 1,000 Bokeh messages relayed (tether and nginx).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;
use tokio::time::Instant;

use crate::client::{change_patch, find_model, Browser, LoadTimes, Tab};
use crate::setups::{Kind, Setup};
use crate::stats::{ms, Row, Steps};

pub const WIDGETS_APP: &str = "bench_widgets";
pub const PATCH_APP: &str = "bench_patch";
pub const SESSION_APP: &str = "bench_session";
pub const PERIODIC_APP: &str = "causal_periodic";

/// How much of each measurement to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Page loads discarded per setup before measuring.
    pub warmup: usize,
    pub page_loads: usize,
    pub round_trips: usize,
    pub patches: usize,
    /// Points in the large patch (about 27 bytes of JSON each).
    pub patch_points: usize,
    pub cpu_bursts: usize,
    /// Widget changes per CPU burst.
    pub burst_changes: usize,
    /// Longest any one measurement loop may run; it stops early with fewer samples.
    pub budget: Duration,
}

/// Results of the three-way part.
#[derive(Debug, Default)]
pub struct ThreeWay {
    pub page: Row,
    /// The page loads' steps, by setup.
    pub page_steps: BTreeMap<Kind, Steps>,
    pub round_trip: Row,
    pub patch: Row,
    /// Size of one large patch's content, in bytes.
    pub patch_bytes: usize,
    pub cpu: BTreeMap<Kind, Cpu>,
    /// CPU the proxy used for the large patches (`messages` counts patches).
    pub patch_cpu: BTreeMap<Kind, Cpu>,
}

/// CPU the proxy used for the bursts.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cpu {
    /// Bokeh messages relayed (both directions).
    pub messages: usize,
    /// CPU time (user + system), in milliseconds.
    pub cpu_ms: f64,
    /// Wall time of the bursts, in milliseconds.
    pub wall_ms: f64,
}

impl Cpu {
    pub fn per_thousand_ms(&self) -> f64 {
        self.cpu_ms / self.messages as f64 * 1000.0
    }
}

/// `setups` rotated by `i`.
pub fn rotated<T: Copy>(setups: &[T], i: usize) -> Vec<T> {
    let k = i % setups.len().max(1);
    setups[k..].iter().chain(&setups[..k]).copied().collect()
}

/// A first visit: page, websocket, ACK, document pull.
pub async fn page_load(addr: SocketAddr, app: &str) -> anyhow::Result<LoadTimes> {
    let (tab, _, times) = Browser::new().load(addr, app).await?;
    tab.close().await;
    Ok(times)
}

/// An open, ready tab of `app` and the id of the model labelled `label`.
pub async fn ready_tab(addr: SocketAddr, app: &str, label: &str) -> anyhow::Result<(Tab, String)> {
    let mut tab = Browser::new().open(addr, app).await?;
    let doc = tab.pull().await?;
    tab.ready().await?;
    let id =
        find_model(&doc, label).with_context(|| format!("/{app} has no model labelled {label}"))?;
    Ok((tab, id))
}

/// Sends a change and waits for its OK and a patch of at least `min_bytes` containing `expect`;
/// returns that patch's size.
pub async fn change_and_patch(
    tab: &mut Tab,
    patch: &str,
    expect: &str,
    min_bytes: usize,
) -> anyhow::Result<usize> {
    let id = tab.send("PATCH-DOC", patch).await?;
    let (mut ok, mut patched) = (false, 0);
    while !ok || patched == 0 {
        let m = tab.recv().await?;
        match m.msgtype.as_str() {
            "OK" if m.reqid.as_deref() == Some(id.as_str()) => ok = true,
            "ERROR" => bail!("the worker refused a change: {}", m.content.as_str()),
            "PATCH-DOC" if m.content.len() >= min_bytes && m.content.as_str().contains(expect) => {
                patched = m.content.len()
            }
            _ => {}
        }
    }
    Ok(patched)
}

/// Sends `changes` slider changes, at most `window` unanswered; returns messages relayed.
async fn burst(tab: &mut Tab, slider: &str, first: u64, changes: usize) -> anyhow::Result<usize> {
    const WINDOW: usize = 16;
    let (mut sent, mut answered, mut messages) = (0, 0, 0);
    while answered < changes {
        while sent < changes && sent - answered < WINDOW {
            let v = first + sent as u64;
            tab.send("PATCH-DOC", &change_patch(slider, "value", json!(v)))
                .await?;
            sent += 1;
            messages += 1;
        }
        let m = tab.recv().await?;
        messages += 1;
        match m.msgtype.as_str() {
            "OK" => answered += 1,
            "ERROR" => bail!("the worker refused a change: {}", m.content.as_str()),
            _ => {}
        }
    }
    Ok(messages + tab.settle(Duration::from_millis(300)).await)
}

/// Runs the three-way measurements against `setups`.
pub async fn run(setups: &[Setup], plan: &Plan, clock_ticks: u64) -> anyhow::Result<ThreeWay> {
    let mut out = ThreeWay::default();
    let idx: Vec<usize> = (0..setups.len()).collect();
    for i in 0..plan.warmup {
        for &s in &rotated(&idx, i) {
            page_load(setups[s].addr, WIDGETS_APP).await?;
            page_load(setups[s].addr, PATCH_APP).await?;
        }
    }
    eprintln!(
        "tether-bench: page load plus pull ({} per setup)",
        plan.page_loads
    );
    let started = Instant::now();
    for i in 0..plan.page_loads {
        if started.elapsed() > plan.budget {
            break;
        }
        for &s in &rotated(&idx, i) {
            let t = page_load(setups[s].addr, WIDGETS_APP).await?;
            out.page.push(setups[s].kind, ms(t.total()));
            out.page_steps.entry(setups[s].kind).or_default().push(&t);
        }
    }

    let mut tabs = Vec::new();
    for s in setups {
        tabs.push(ready_tab(s.addr, WIDGETS_APP, "bench_slider").await?);
    }
    eprintln!(
        "tether-bench: widget round trip ({} per setup)",
        plan.round_trips
    );
    let started = Instant::now();
    for i in 0..plan.round_trips {
        if started.elapsed() > plan.budget {
            break;
        }
        let v = 1 + i as u64;
        for &s in &rotated(&idx, i) {
            let (tab, slider) = &mut tabs[s];
            let t0 = Instant::now();
            let patch = change_patch(slider, "value", json!(v));
            change_and_patch(tab, &patch, &format!("value={v}"), 0).await?;
            out.round_trip.push(setups[s].kind, ms(t0.elapsed()));
        }
    }

    eprintln!(
        "tether-bench: proxy CPU ({} bursts of {} changes)",
        plan.cpu_bursts, plan.burst_changes
    );
    let started = Instant::now();
    let mut next_value = 1_000_000 / 2;
    for i in 0..plan.cpu_bursts {
        if started.elapsed() > plan.budget {
            break;
        }
        for &s in &rotated(&idx, i) {
            let Some(before) = setups[s].front_cpu_ticks() else {
                continue;
            };
            let (tab, slider) = &mut tabs[s];
            let t0 = Instant::now();
            let messages = burst(tab, slider, next_value, plan.burst_changes).await?;
            let wall = t0.elapsed();
            let after = setups[s].front_cpu_ticks().unwrap_or(before);
            let cpu = out.cpu.entry(setups[s].kind).or_default();
            cpu.messages += messages;
            cpu.cpu_ms += (after - before) as f64 * 1000.0 / clock_ticks as f64;
            cpu.wall_ms += ms(wall);
        }
        next_value += plan.burst_changes as u64;
    }
    for (tab, _) in tabs {
        tab.close().await;
    }

    let mut tabs = Vec::new();
    for s in setups {
        tabs.push(ready_tab(s.addr, PATCH_APP, "bench_points").await?);
    }
    eprintln!(
        "tether-bench: large patch of {} points ({} per setup)",
        plan.patch_points, plan.patches
    );
    let started = Instant::now();
    for i in 0..plan.patches {
        if started.elapsed() > plan.budget {
            break;
        }
        // Alternate between two sizes so that every change is a real change.
        let n = plan.patch_points + i % 2;
        for &s in &rotated(&idx, i) {
            let (tab, input) = &mut tabs[s];
            let before = setups[s].front_cpu_ticks();
            let t0 = Instant::now();
            let patch = change_patch(input, "value", json!(n));
            let bytes = change_and_patch(tab, &patch, "\"data\"", n).await?;
            let took = t0.elapsed();
            out.patch.push(setups[s].kind, ms(took));
            if let (Some(before), Some(after)) = (before, setups[s].front_cpu_ticks()) {
                let cpu = out.patch_cpu.entry(setups[s].kind).or_default();
                cpu.messages += 1;
                cpu.cpu_ms += (after - before) as f64 * 1000.0 / clock_ticks as f64;
                cpu.wall_ms += ms(took);
            }
            out.patch_bytes = out.patch_bytes.max(bytes);
        }
    }
    for (tab, _) in tabs {
        tab.close().await;
    }
    Ok(out)
}
