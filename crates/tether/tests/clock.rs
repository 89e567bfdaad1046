//! Time: a step of the wall clock expires nothing early, and saved state still expires after
//! `--state-ttl` of real time.
//!
//! The jump is real for the gateway process: libfaketime (a Debian package that `make test`
//! installs) shifts its wall clock, as NTP or an operator stepping the clock would, while the
//! monotonic and boot clocks run on.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{app, python, tempdir, Browser, Tab, Tether};
use serde_json::json;

/// The preload library that shifts a process's wall clock.
fn libfaketime() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.exists());
    found
        .expect("libfaketime is missing: run `make system-deps` (it installs the faketime package)")
}

/// A Python for the workers that does not inherit the gateway's shifted clock: the jump under
/// test is the gateway's.
fn python_without_faketime(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("python-real-clock");
    let script = format!(
        "#!/bin/sh\nunset LD_PRELOAD\nexec '{}' \"$@\"\n",
        python().display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `date -u` shifted by `days`, as the log's timestamps print it.
fn utc_date(days: i64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("{days} days"), "+%Y-%m-%d"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn slider_id(tab: &Tab) -> String {
    tab.doc.id_of("Slider", "title", "value")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wall_clock_jump_expires_no_session_and_no_saved_state() {
    let dir = tempdir();
    let offset = dir.path().join("clock-offset");
    std::fs::write(&offset, "+0\n").unwrap();
    let lib = libfaketime();
    let worker_python = python_without_faketime(dir.path());
    let env = [
        ("LD_PRELOAD", lib.to_str().unwrap()),
        ("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap()),
        ("FAKETIME_NO_CACHE", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let args = [
        "--state-ttl",
        "1h",
        "--live-ttl",
        "1h",
        "--python",
        worker_python.to_str().unwrap(),
    ];
    let plain = app("tests/apps/plain_bokeh.py");
    let mut t = Tether::start_with_env(dir.path(), std::slice::from_ref(&plain), &args, &env);
    let mut b = Browser::new();
    let mut tab = b.open(&t.base, "plain_bokeh").await;
    let slider = slider_id(&tab);
    tab.set(&slider, "value", json!(8)).await;
    tab.settle().await;
    let session = tab.session_id.clone();
    tab.close().await;

    // The wall clock steps three days ahead: far past both TTLs, yet no time has passed.
    std::fs::write(&offset, "+3d\n").unwrap();
    let tab = b.open(&t.base, "plain_bokeh").await;
    let jumped = utc_date(3);
    assert!(
        t.stderr().lines().any(|l| l.starts_with(&jumped)),
        "the gateway's clock jumped to {jumped}"
    );
    assert_eq!(tab.session_id, session, "the live session is reattached");
    assert_eq!(tab.doc.attr(&slider_id(&tab), "value"), json!(8));
    tab.close().await;

    // Restarted with the clock still three days ahead: the saved state is not expired.
    t.stop();
    t.start_again();
    let tab = b.open(&t.base, "plain_bokeh").await;
    assert_ne!(tab.session_id, session, "a new session after the restart");
    assert_eq!(tab.doc.attr(&slider_id(&tab), "value"), json!(8));
    assert!(t.wait_log("restored session", Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread")]
async fn saved_state_expires_after_the_state_ttl_of_real_time() {
    let dir = tempdir();
    let plain = app("tests/apps/plain_bokeh.py");
    let ttl = Duration::from_secs(8);
    let mut t = Tether::start(
        dir.path(),
        std::slice::from_ref(&plain),
        &["--state-ttl", "8s"],
    );
    let mut b = Browser::new();
    let mut tab = b.open(&t.base, "plain_bokeh").await;
    let slider = slider_id(&tab);
    tab.set(&slider, "value", json!(8)).await;
    tab.settle().await;
    let saved = tokio::time::Instant::now();
    tab.close().await;
    t.stop();
    // Within the TTL, a restart restores it.
    t.start_again();
    let tab = b.open(&t.base, "plain_bokeh").await;
    assert_eq!(tab.doc.attr(&slider_id(&tab), "value"), json!(8));
    tab.close().await;
    t.stop();
    // Past it, it is gone: the page starts fresh.
    tokio::time::sleep_until(saved + ttl + Duration::from_secs(1)).await;
    t.start_again();
    let tab = b.open(&t.base, "plain_bokeh").await;
    assert_ne!(tab.doc.attr(&slider_id(&tab), "value"), json!(8));
}
