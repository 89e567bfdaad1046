//! A bounded soak: many simulated users on two workers open, change, close and reopen the app;
//! at the end, after a restart, every user's last value must be restored.
//!
//! CI runs a short version. For the long one (the figures in RELIABILITY.md):
//! `TETHER_SOAK_USERS=200 TETHER_SOAK_SECS=300 cargo test --release --test soak -- --nocapture`

mod common;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{app, tempdir, Browser, Tab, Tether};
use serde_json::json;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn slider_value(tab: &Tab) -> serde_json::Value {
    tab.doc
        .attr(&tab.doc.id_of("Slider", "title", "value"), "value")
}

#[tokio::test(flavor = "multi_thread")]
async fn many_users_open_change_close_and_reopen() {
    let users = env_or("TETHER_SOAK_USERS", 20);
    let secs = env_or("TETHER_SOAK_SECS", 15);
    let dir = tempdir();
    let mut t = Tether::start(
        dir.path(),
        &[app("tests/apps/plain_bokeh.py")],
        &["--workers", "2"],
    );
    let base = t.base.clone();
    let cycles = Arc::new(AtomicU64::new(0));
    let reattached = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for u in 0..users {
        let base = base.clone();
        let cycles = cycles.clone();
        let reattached = reattached.clone();
        tasks.push(tokio::spawn(async move {
            let mut b = Browser::new();
            let mut expected = json!(2);
            let mut last_session = String::new();
            let mut n = 0u64;
            // Bounded in time, and in count as a second guard.
            while Instant::now() < deadline && n < 10_000 {
                let mut tab = b.open(&base, "plain_bokeh").await;
                assert_eq!(
                    slider_value(&tab),
                    expected,
                    "user {u} sees their last value"
                );
                if tab.session_id == last_session {
                    reattached.fetch_add(1, Relaxed);
                }
                last_session = tab.session_id.clone();
                let value = ((u + n) % 10) as i64;
                let slider = tab.doc.id_of("Slider", "title", "value");
                tab.set(&slider, "value", json!(value)).await;
                let want = format!("value={value} ");
                tab.wait_for("div", |d| d.text().contains(&want)).await;
                expected = json!(value);
                if n % 3 == 2 {
                    tab.drop_hard();
                } else {
                    tab.close().await;
                }
                n += 1;
                cycles.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_millis(200 + (u * 37 % 800))).await;
            }
            (b, expected)
        }));
    }
    let mut browsers = Vec::new();
    let mut errors = 0;
    for task in tasks {
        match task.await {
            Ok(r) => browsers.push(r),
            Err(e) => {
                errors += 1;
                eprintln!("a simulated user failed: {e}");
            }
        }
    }
    let total = cycles.load(Relaxed);
    eprintln!(
        "soak: {users} users, {secs} s, {total} open-change-close cycles, {} reattached, {errors} errors",
        reattached.load(Relaxed)
    );
    assert_eq!(errors, 0);
    assert!(total >= users, "every user completed at least one cycle");
    // Every user's last state is restorable after a restart.
    tokio::time::sleep(Duration::from_millis(200)).await;
    t.restart();
    let checks: Vec<_> = browsers
        .into_iter()
        .map(|(mut b, expected)| {
            let base = t.base.clone();
            tokio::spawn(async move {
                let tab = b.open(&base, "plain_bokeh").await;
                assert_eq!(slider_value(&tab), expected, "restored after the restart");
                tab.close().await;
            })
        })
        .collect();
    for c in checks {
        c.await.expect("every user's last value restores");
    }
}
