//! New versions of the app without stopping the gateway: `SIGHUP` and `tether reload` start new
//! workers from the edited files; new pages get them, open tabs keep the old ones until they
//! close or the drain times out (then they are told to reload), and a version that does not
//! start leaves the old one serving. Real gateways, real Panel workers.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{signal, tempdir, Browser, Tab, Tether};
use serde_json::json;

const APP: &str = "versioned";

/// Version `n` of the app: a heading that names it, `extra` widgets, then the slider `n` and an
/// output bound to it.
fn version(n: u32, extra: &str) -> String {
    format!(
        "import panel as pn\n\
         slider = pn.widgets.IntSlider(name='n', end=1000)\n\
         pn.Column(pn.pane.Markdown('version {n}'), {extra}slider,\n\
         pn.pane.Markdown(pn.bind(lambda v: f'shown {{v}}', slider))).servable()\n"
    )
}

fn write(script: &Path, text: &str) {
    std::fs::write(script, text).unwrap();
}

fn script_in(dir: &Path) -> PathBuf {
    dir.join(format!("{APP}.py"))
}

/// A gateway serving version 1 of the app from `script`, in `dir`.
fn start_at_version_1(dir: &Path, script: &Path, args: &[&str]) -> Tether {
    write(script, &version(1, ""));
    Tether::start(dir, &[script.to_owned()], args)
}

/// Which version the tab's document is.
fn version_of(tab: &Tab) -> Option<u32> {
    tab.doc
        .of_type("Markdown")
        .iter()
        .chain(tab.doc.of_type("HTML").iter())
        .filter_map(|m| m["attributes"]["text"].as_str())
        .find_map(|t| t.split("version ").nth(1))
        .and_then(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
}

fn slider(tab: &Tab) -> serde_json::Value {
    tab.doc
        .attr(&tab.doc.id_of("Slider", "title", "n"), "value")
}

/// Sets the slider and waits until the bound output shows it.
async fn set(tab: &mut Tab, value: u64) {
    let id = tab.doc.id_of("Slider", "title", "n");
    tab.set(&id, "value", json!(value)).await;
    let shown = format!("shown {value}");
    tab.wait_for("the output to show the value", |d| {
        d.text().contains(&shown)
    })
    .await;
}

/// How many log lines contain `needle`.
fn count(t: &Tether, needle: &str) -> usize {
    t.stderr().lines().filter(|l| l.contains(needle)).count()
}

/// Waits until `count(needle)` reaches `n`.
fn wait_count(t: &Tether, needle: &str, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while count(t, needle) < n {
        assert!(
            Instant::now() < deadline,
            "{n} × {needle:?} within {within:?}:\n{}",
            t.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `tether reload --port PORT`: (success, what it printed).
fn tether_reload(t: &Tether) -> (bool, String) {
    let port = t.base.rsplit(':').next().unwrap().to_owned();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["reload", "--port", &port])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A metric's value, by its exact name and labels.
async fn metric(t: &Tether, name: &str) -> f64 {
    let (_, _, body) = common::bokeh::http_get(&t.url("/.tether/metrics"), &[]).await;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sighup_serves_new_pages_the_new_code_and_moves_open_tabs_after_the_drain() {
    let dir = tempdir();
    let script = script_in(dir.path());
    let tether = start_at_version_1(dir.path(), &script, &["--drain-timeout", "5s"]);
    let mut a = Browser::new();
    let mut open = a.open(&tether.base, APP).await;
    assert_eq!(version_of(&open), Some(1));
    set(&mut open, 5).await;

    // Version 2 inserts a widget above the slider.
    write(&script, &version(2, "pn.widgets.TextInput(name='note'), "));
    signal(tether.pid(), "HUP");
    wait_count(&tether, "reload done", 1, Duration::from_secs(60));
    assert_eq!(
        metric(&tether, "tether_worker_generation{worker=\"0\"}").await,
        2.0
    );
    assert_eq!(
        metric(&tether, "tether_worker_draining{worker=\"0\"}").await,
        1.0
    );

    // The open tab still works on the old worker, and records.
    set(&mut open, 6).await;
    let mut b = Browser::new();
    let fresh = b.open(&tether.base, APP).await;
    assert_eq!(version_of(&fresh), Some(2), "a new page gets the new code");
    fresh.close().await;

    // Past the drain the open tab is told to reload, and comes back on the new code.
    assert_eq!(
        open.close_code_within(Duration::from_secs(20)).await,
        Some(4001),
        "{}",
        tether.stderr()
    );
    let reopened = a.open(&tether.base, APP).await;
    assert_eq!(version_of(&reopened), Some(2));
    assert_eq!(
        slider(&reopened),
        json!(6),
        "the change made on the old worker"
    );
    assert!(
        reopened.doc.text().contains("shown 6"),
        "the output re-drawn"
    );
    assert!(tether.wait_log("old worker stopped", Duration::from_secs(15)));
    assert_eq!(
        metric(&tether, "tether_worker_draining{worker=\"0\"}").await,
        0.0
    );
    assert_eq!(
        metric(&tether, "tether_reloads_total{result=\"ok\"}").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_that_does_not_start_leaves_the_old_one_serving() {
    let dir = tempdir();
    let script = script_in(dir.path());
    let tether = start_at_version_1(dir.path(), &script, &[]);
    let mut a = Browser::new();
    let mut tab = a.open(&tether.base, APP).await;
    set(&mut tab, 7).await;

    write(
        &script,
        "import panel as pn\npn.Column(pn.widgets.IntSlider(name='n'\n",
    );
    let (ok, said) = tether_reload(&tether);
    assert!(!ok, "{said}");
    assert!(said.contains("did not start"), "{said}");
    assert!(said.contains("syntax error"), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "one sentence: {said}");
    // Nothing moved: the open tab works, and a new page gets the old version.
    set(&mut tab, 8).await;
    let mut b = Browser::new();
    let other = b.open(&tether.base, APP).await;
    assert_eq!(version_of(&other), Some(1));
    other.close().await;
    assert_eq!(
        metric(&tether, "tether_reloads_total{result=\"failed\"}").await,
        1.0
    );
    assert_eq!(
        metric(&tether, "tether_worker_generation{worker=\"0\"}").await,
        1.0
    );

    write(&script, &version(2, ""));
    let (ok, said) = tether_reload(&tether);
    assert!(ok, "{said}");
    tab.close().await;
    let tab = a.open(&tether.base, APP).await;
    assert_eq!(version_of(&tab), Some(2));
    assert_eq!(slider(&tab), json!(8));
}

/// One simulated user: open, check the last value is back, set the next one, close; until
/// `stop`, at most `MAX_ROUNDS` times. Returns the browser and the last value set.
async fn user(base: String, n: u64, stop: tokio::sync::watch::Receiver<bool>) -> (Browser, u64) {
    const MAX_ROUNDS: u64 = 60;
    let mut b = Browser::new();
    let mut last = None;
    for round in 1..=MAX_ROUNDS {
        if *stop.borrow() {
            break;
        }
        let mut tab = b.open(&base, APP).await;
        if let Some(v) = last {
            assert_eq!(slider(&tab), json!(v), "user {n}, round {round}");
        }
        let v = n * 100 + round;
        set(&mut tab, v).await;
        last = Some(v);
        tab.close().await;
    }
    (b, last.expect("at least one round"))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_rolling_deploys_under_load_lose_no_change_and_fail_no_request() {
    const USERS: u64 = 20;
    let dir = tempdir();
    let script = script_in(dir.path());
    let tether = start_at_version_1(dir.path(), &script, &["--workers", "2"]);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let users: Vec<_> = (1..=USERS)
        .map(|n| tokio::spawn(user(tether.base.clone(), n, stop.clone())))
        .collect();
    for v in [2, 3] {
        tokio::time::sleep(Duration::from_secs(4)).await;
        write(&script, &version(v, "pn.widgets.Checkbox(name='new'), "));
        signal(tether.pid(), "HUP");
        let t = &tether;
        tokio::task::block_in_place(|| {
            wait_count(t, "reload done", v as usize - 1, Duration::from_secs(90))
        });
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop_tx.send_replace(true);
    let mut ended = Vec::new();
    for u in users {
        ended.push(u.await.expect("a user's requests all succeeded"));
    }
    // Every user ends on the newest code with the last value they set.
    for (mut b, v) in ended {
        let tab = b.open(&tether.base, APP).await;
        assert_eq!(version_of(&tab), Some(3));
        assert_eq!(slider(&tab), json!(v));
        tab.close().await;
    }
    assert_eq!(
        count(&tether, "worker request failed"),
        0,
        "{}",
        tether.stderr()
    );
    assert_eq!(
        count(&tether, "worker websocket failed"),
        0,
        "{}",
        tether.stderr()
    );
}
