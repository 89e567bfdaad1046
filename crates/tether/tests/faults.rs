//! Faults: a process dying in the middle of a restore, a restore past its time bound, and a
//! state store that refuses writes. Nothing the user did before the durability window is lost.

mod common;

use std::time::Duration;

use common::{app, bokeh::http_get, tempdir, Browser, Tab, Tether};
use serde_json::json;

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

/// Sets the gateway's file-size limit (soft; the hard limit stays unlimited): past it every
/// write to a regular file fails, as on a full disk. The workers are separate processes and
/// keep theirs.
fn file_size_limit(pid: u32, bytes: Option<u64>) {
    let soft = bytes.map_or("unlimited".to_owned(), |b| b.to_string());
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--fsize={soft}:unlimited"),
        ])
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success());
}

/// The gateway says its store refuses writes: in its log, in its health text (still 200: it
/// serves) and in its metrics.
async fn says_writes_are_refused(t: &Tether) {
    assert!(
        t.wait_log("cannot write state snapshots", Duration::from_secs(10)),
        "the failure is logged"
    );
    let (status, _, body) = http_get(&t.url("/.tether/health"), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("state store is refusing writes"), "{body}");
    let metrics = http_get(&t.url("/.tether/metrics"), &[]).await.2;
    assert!(metrics.contains("tether_store_failing 1"), "{metrics}");
}

/// The gateway says its store takes writes again.
async fn says_writes_resumed(t: &Tether) {
    assert!(
        t.wait_log(
            "the state store accepts writes again",
            Duration::from_secs(10)
        ),
        "writing resumes"
    );
    assert_eq!(http_get(&t.url("/.tether/health"), &[]).await.2, "ok");
    let metrics = http_get(&t.url("/.tether/metrics"), &[]).await.2;
    assert!(metrics.contains("tether_store_failing 0"), "{metrics}");
}

fn div_text(tab: &Tab) -> String {
    let div = tab.doc.of_type("Div")[0]["id"].as_str().unwrap().to_owned();
    tab.doc.attr(&div, "text").as_str().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_size_limit_keeps_serving_says_so_and_loses_nothing() {
    let dir = tempdir();
    let mut t = Tether::start(dir.path(), &[app("tests/apps/plain_bokeh.py")], &[]);
    let mut b = Browser::new();
    let mut tab = b.open(&t.base, "plain_bokeh").await;
    set_slider(&mut tab, 3).await;
    tab.settle().await;
    assert_eq!(http_get(&t.url("/.tether/health"), &[]).await.2, "ok");

    // Past the limit, no write to the state file can succeed.
    file_size_limit(t.pid(), Some(1));
    // The gateway keeps serving: the app still answers the change.
    set_slider(&mut tab, 5).await;
    // ... and says so.
    says_writes_are_refused(&t).await;
    // A reload still reattaches to the live session.
    tab.close().await;
    let tab = b.open(&t.base, "plain_bokeh").await;
    assert_eq!(div_text(&tab), "value=5 color=red");
    tab.close().await;

    // The limit is lifted: the held change is written within the retry delay.
    file_size_limit(t.pid(), None);
    says_writes_resumed(&t).await;
    // Nothing was lost: after a kill -9 and a restart, the change made past the limit is
    // restored.
    t.kill9();
    t.start_again();
    let tab = b.open(&t.base, "plain_bokeh").await;
    assert_eq!(
        tab.doc
            .attr(&tab.doc.id_of("Slider", "title", "value"), "value"),
        json!(5)
    );
    assert_eq!(div_text(&tab), "value=5 color=red");
}

/// Starts a gateway whose state file is a copy of `dir/.tether/state.db` on a small tmpfs,
/// mounted read-only if asked, in a mount namespace of the gateway's own (so nothing outside
/// the test sees the mount). Returns the gateway and the mount point.
fn start_on_tmpfs(
    dir: &std::path::Path,
    app: &std::path::Path,
    read_only: bool,
) -> (Tether, std::path::PathBuf) {
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let setup = dir.join("tmpfs-state.sh");
    std::fs::write(
        &setup,
        format!(
            "set -e\nmount -t tmpfs -o size=8m tether-test '{m}'\ncp '{src}' '{m}/state.db'\n{ro}exec \"$@\"\n",
            m = mnt.display(),
            src = dir.join(".tether/state.db").display(),
            ro = if read_only { format!("mount -o remount,ro '{}'\n", mnt.display()) } else { String::new() },
        ),
    )
    .unwrap();
    let state = format!("sqlite:{}/state.db", mnt.display());
    let t = Tether::start_launched(
        dir,
        &[app.to_owned()],
        &["--state", &state],
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            setup.to_str().unwrap(),
        ],
    );
    (t, mnt)
}

/// Copies the state file out of the gateway's namespace, stops the gateway, and opens the app
/// on a gateway serving the copy.
async fn restore_from_a_copy(
    t: Tether,
    mnt: &std::path::Path,
    b: &mut Browser,
    app: &std::path::Path,
) -> (Tether, Tab) {
    let dir = t.dir.clone();
    let copy = dir.join("copy");
    std::fs::create_dir(&copy).unwrap();
    in_namespace_of(
        t.pid(),
        &format!("cp '{}'/state.db* '{}'/", mnt.display(), copy.display()),
    );
    drop(t);
    let state = format!("sqlite:{}/state.db", copy.display());
    let t = Tether::start(&dir, &[app.to_owned()], &["--state", &state]);
    let tab = b.open(&t.base, "plain_bokeh").await;
    (t, tab)
}

/// Records `value` on plain_bokeh's slider with an ordinary gateway, then stops it.
async fn record_slider(dir: &std::path::Path, app: &std::path::Path, b: &mut Browser, value: i64) {
    let mut t = Tether::start(dir, &[app.to_owned()], &[]);
    let mut tab = b.open(&t.base, "plain_bokeh").await;
    let slider = tab.doc.id_of("Slider", "title", "value");
    tab.set(&slider, "value", json!(value)).await;
    tab.settle().await;
    tab.close().await;
    t.stop();
}

/// Sets plain_bokeh's slider and waits for the app's answer.
async fn set_slider(tab: &mut Tab, value: i64) {
    let slider = tab.doc.id_of("Slider", "title", "value");
    tab.set(&slider, "value", json!(value)).await;
    let answer = format!("value={value} color=red");
    tab.wait_for("the app's answer", |d| d.text().contains(&answer))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_keeps_serving_says_so_and_loses_nothing() {
    let dir = tempdir();
    let plain = app("tests/apps/plain_bokeh.py");
    let mut b = Browser::new();
    record_slider(dir.path(), &plain, &mut b, 3).await;
    let (t, mnt) = start_on_tmpfs(dir.path(), &plain, false);
    let mut tab = b.open(&t.base, "plain_bokeh").await;
    assert_eq!(div_text(&tab), "value=3 color=red");
    // Fill the file system to the last byte (dd stops at ENOSPC).
    in_namespace_of(
        t.pid(),
        &format!(
            "dd if=/dev/zero of='{}/filler' bs=64k 2>/dev/null || true",
            mnt.display()
        ),
    );
    set_slider(&mut tab, 6).await;
    says_writes_are_refused(&t).await;
    tab.close().await;
    // A reload still reattaches.
    let tab = b.open(&t.base, "plain_bokeh").await;
    assert_eq!(div_text(&tab), "value=6 color=red");
    tab.close().await;
    // Space comes back: the change is written, and a copy of the file restores it.
    in_namespace_of(t.pid(), &format!("rm '{}/filler'", mnt.display()));
    says_writes_resumed(&t).await;
    let (_t, tab) = restore_from_a_copy(t, &mnt, &mut b, &plain).await;
    assert_eq!(div_text(&tab), "value=6 color=red");
}

/// Runs a command in the gateway's mount namespace.
fn in_namespace_of(pid: u32, script: &str) {
    let status = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "sh", "-c", script])
        .status()
        .expect("nsenter (util-linux) runs");
    assert!(status.success(), "{script}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_state_directory_is_served_from_said_so_and_written_once_writable() {
    let dir = tempdir();
    let plain = app("tests/apps/plain_bokeh.py");
    let mut b = Browser::new();
    record_slider(dir.path(), &plain, &mut b, 3).await;
    // The same state file, on a file system mounted read-only.
    let (t, mnt) = start_on_tmpfs(dir.path(), &plain, true);
    // It serves, says so, and restores from the read-only file.
    assert!(t.wait_log("the state file cannot be written", Duration::from_secs(5)));
    // Forgetting cannot delete anything now, and says so instead of pretending.
    let forget = b.get(&t.url("/.tether/forget?app=plain_bokeh"), &[]).await;
    assert_eq!(forget.status, 503, "{}", forget.html);
    assert!(
        forget.html.contains("could not be deleted"),
        "{}",
        forget.html
    );
    let mut tab = b.open(&t.base, "plain_bokeh").await;
    assert_eq!(div_text(&tab), "value=3 color=red");
    // A change works in the app, and waits in memory.
    set_slider(&mut tab, 6).await;
    says_writes_are_refused(&t).await;
    tab.close().await;

    // The file system becomes writable: the file is reopened and the change written.
    in_namespace_of(t.pid(), &format!("mount -o remount,rw '{}'", mnt.display()));
    assert!(t.wait_log("the state file is writable now", Duration::from_secs(10)));
    says_writes_resumed(&t).await;
    // Nothing was lost: a copy of the file taken now restores the change.
    let (_t, tab) = restore_from_a_copy(t, &mnt, &mut b, &plain).await;
    assert_eq!(div_text(&tab), "value=6 color=red");
}
