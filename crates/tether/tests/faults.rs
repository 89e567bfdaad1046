//! Faults in the middle of a restore: nothing the user did before the durability window is
//! lost, whichever process dies.

mod common;

use std::time::Duration;

use common::{app, tempdir, Browser, Tab, Tether};

/// Records a state with many replay steps: ten clicks, each drawing a new plot.
async fn record_clicks(t: &Tether, b: &mut Browser, clicks: usize) {
    let mut tab = b.open(&t.base, "button_output").await;
    let button = tab.doc.id_of("Button", "label", "Add plot");
    for _ in 0..clicks {
        tab.click(&button).await;
    }
    let last = format!("plot {clicks}");
    tab.wait_for("plots", |d| d.titles().contains(&last)).await;
    tab.close().await;
    // Past the durability window.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn plot_count(tab: &Tab) -> usize {
    tab.doc
        .titles()
        .iter()
        .filter(|t| t.starts_with("plot "))
        .count()
}

/// Starts a page's websocket so that a restore begins, without waiting for it.
async fn begin_restore(t: &Tether, b: &mut Browser) -> Tab {
    let page = b.get(&t.url("/button_output"), &[]).await;
    let tab = Tab::connect(
        &t.base,
        "button_output",
        page.token.as_deref().unwrap(),
        b.cookie.as_deref(),
    )
    .await
    .expect("websocket");
    assert!(
        t.wait_log("restoring session", Duration::from_secs(30)),
        "restore began"
    );
    tab
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_killed_during_restore_loses_nothing() {
    let dir = tempdir();
    let mut t = Tether::start(dir.path(), &[app("tests/apps/button_output.py")], &[]);
    let mut b = Browser::new();
    record_clicks(&t, &mut b, 10).await;
    t.restart();
    let tab = begin_restore(&t, &mut b).await;
    t.kill9();
    drop(tab);
    t.start_again();
    let tab = b.open(&t.base, "button_output").await;
    assert_eq!(plot_count(&tab), 10, "{:?}", tab.doc.titles());
    assert!(tab.doc.text().contains("clicked 10 times"));
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_killed_during_restore_loses_nothing() {
    let dir = tempdir();
    let mut t = Tether::start(dir.path(), &[app("tests/apps/button_output.py")], &[]);
    let mut b = Browser::new();
    record_clicks(&t, &mut b, 10).await;
    t.restart();
    let mut tab = begin_restore(&t, &mut b).await;
    let workers = t.workers();
    common::signal(workers[0], "KILL");
    // The tab's connection ends with the worker; the gateway restarts the worker.
    while tab.recv_within(Duration::from_secs(20)).await.is_some() {}
    drop(tab);
    assert!(t.wait_log("worker exited; restarting", Duration::from_secs(10)));
    t.wait_healthy(Duration::from_secs(60)).await;
    let tab = b.open(&t.base, "button_output").await;
    assert_eq!(plot_count(&tab), 10, "{:?}", tab.doc.titles());
    // The replay re-ran the clicks exactly once in this session.
    assert!(tab.doc.text().contains("clicked 10 times"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_past_its_time_bound_shows_a_working_page_and_keeps_the_history() {
    let dir = tempdir();
    let button_app = app("tests/apps/button_output.py");
    let mut t = Tether::start(dir.path(), std::slice::from_ref(&button_app), &[]);
    let mut b = Browser::new();
    record_clicks(&t, &mut b, 10).await;
    t.stop();
    // A bound far shorter than the restore: the page comes anyway, as far as the restore got.
    let mut short = Tether::start(
        dir.path(),
        std::slice::from_ref(&button_app),
        &["--replay-timeout", "150ms"],
    );
    let mut tab = b.open(&short.base, "button_output").await;
    assert!(short.wait_log("restore hit its time bound", Duration::from_secs(5)));
    // Steps already sent still take effect in the worker (often all ten: sending is quick, the
    // waiting is what was cut), so how many plots this page shows is not fixed. The relay must
    // be in step with the worker: a click still works.
    tab.settle().await;
    let before = plot_count(&tab);
    let button = tab.doc.id_of("Button", "label", "Add plot");
    tab.click(&button).await;
    let next = format!("clicked {} times", before + 1);
    tab.wait_for("the click's output", |d| d.text().contains(&next))
        .await;
    tab.settle().await;
    assert_eq!(plot_count(&tab), before + 1, "{:?}", tab.doc.titles());
    tab.close().await;
    short.stop();
    drop(short);
    // The history has the ten clicks and the new one: with time enough, all come back.
    t.start_again();
    let tab = b.open(&t.base, "button_output").await;
    assert_eq!(plot_count(&tab), 11, "{:?}", tab.doc.titles());
}
