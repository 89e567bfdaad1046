//! Causal replay on real Panel workers: steps that depend on an earlier step's effects are
//! restored the way the user made them. Each test interacts as a person would (with the pause
//! a person makes between steps), restarts the gateway, and asserts on the document the
//! browser first pulls.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{app, tempdir, Browser, Tab, Tether};
use serde_json::json;

/// Waits as a person does between two steps: until the app's callbacks have answered.
async fn pause(tab: &mut Tab) {
    tab.settle().await;
}

/// The Python of the Panel 1.7 venv that `make test` builds.
fn panel17() -> PathBuf {
    let path = std::env::var("TETHER_PYTHON_PANEL17")
        .map(PathBuf::from)
        .unwrap_or_else(|_| common::repo().join(".venv-panel17/bin/python"));
    assert!(
        path.exists(),
        "no Panel 1.7 venv at {}: run `make test`, which builds it from tests/requirements-panel17.txt",
        path.display()
    );
    path
}

/// Applied and skipped counts and the time of the last restore in the gateway's log.
fn last_restore(tether: &Tether) -> (u64, u64, u64) {
    assert!(
        tether.wait_log("restored session", Duration::from_secs(10)),
        "{}",
        tether.stderr()
    );
    let log = tether.stderr();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("restored session"))
        .unwrap();
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in {line}"))
    };
    (field("applied"), field("skipped"), field("ms"))
}

fn text_of(tab: &Tab, suffix: &str, needle: &str) -> String {
    tab.doc
        .shown(suffix)
        .iter()
        .filter_map(|m| m["attributes"]["text"].as_str())
        .find(|t| t.contains(needle))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_choice_its_callback_would_overwrite_is_restored() {
    let dir = tempdir();
    let mut tether = Tether::start(dir.path(), &[app("tests/apps/causal_reset.py")], &[]);
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, "causal_reset").await;
    let kind = tab.doc.id_of("CustomSelect", "title", "kind");
    let item = tab.doc.id_of("CustomSelect", "title", "item");
    tab.set(&kind, "value", json!("veg")).await;
    tab.wait_for("the item options follow the kind", |d| {
        d.attr(&item, "options").to_string().contains("okra")
    })
    .await;
    pause(&mut tab).await;
    tab.set(&item, "value", json!("okra")).await;
    tab.wait_for("the chosen line", |d| d.text().contains("chosen: veg/okra"))
        .await;
    tab.close().await;

    tether.restart();
    let tab = b.open(&tether.base, "causal_reset").await;
    let d = &tab.doc;
    let item = d.id_of("CustomSelect", "title", "item");
    assert_eq!(
        d.attr(&item, "value"),
        json!("okra"),
        "the user's second choice"
    );
    assert!(
        d.attr(&item, "options").to_string().contains("leek"),
        "{}",
        d.attr(&item, "options")
    );
    assert!(text_of(&tab, "HTML", "chosen:").contains("chosen: veg/okra"));
    assert_eq!(last_restore(&tether).1, 0, "nothing skipped");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zoom_lands_on_the_figure_that_is_shown() {
    let dir = tempdir();
    let mut tether = Tether::start(dir.path(), &[app("tests/apps/causal_zoom.py")], &[]);
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, "causal_zoom").await;
    let points = tab.doc.id_of("Slider", "title", "points");
    tab.set(&points, "value", json!(10)).await;
    tab.wait_for("the rebuilt figure", |d| {
        d.shown("Title")
            .iter()
            .any(|t| t["attributes"]["text"] == "10 points")
    })
    .await;
    pause(&mut tab).await;
    let range = tab.doc.shown("Range1d")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tab.patch(json!([
        {"kind": "ModelChanged", "model": {"id": range}, "attr": "start", "new": 2.5},
        {"kind": "ModelChanged", "model": {"id": range}, "attr": "end", "new": 4.5},
    ]))
    .await;
    pause(&mut tab).await;
    tab.close().await;

    tether.restart();
    let tab = b.open(&tether.base, "causal_zoom").await;
    let titles: Vec<_> = tab
        .doc
        .shown("Title")
        .iter()
        .filter_map(|t| t["attributes"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(titles, vec!["10 points"], "the figure the user saw");
    let ranges = tab.doc.shown("Range1d");
    let x = ranges
        .iter()
        .find(|r| r["attributes"]["start"] == json!(2.5))
        .unwrap_or_else(|| panic!("the zoom is on the shown figure: {ranges:?}"));
    assert_eq!(x["attributes"]["end"], json!(4.5));
    assert_eq!(last_restore(&tether).1, 0, "nothing skipped");
}

/// Selects, pauses, clicks Summarize; after a restart the summary reads the selection.
async fn a_click_reads_the_change_before_it(python: Option<PathBuf>) {
    let dir = tempdir();
    let apps = [app("tests/apps/causal_click.py")];
    let py = python.map(|p| p.display().to_string());
    let env: Vec<(&str, &str)> = py.iter().map(|p| ("TETHER_PYTHON", p.as_str())).collect();
    let mut tether = Tether::start_with_env(dir.path(), &apps, &[], &env);
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, "causal_click").await;
    let picks = tab.doc.id_of("CustomMultiSelect", "title", "picks");
    let button = tab.doc.id_of("Button", "label", "Summarize");
    tab.set(&picks, "value", json!(["b", "d"])).await;
    pause(&mut tab).await;
    tab.click(&button).await;
    tab.wait_for("the summary", |d| d.text().contains("summary: b,d"))
        .await;
    tab.close().await;

    tether.restart();
    let tab = b.open(&tether.base, "causal_click").await;
    assert!(
        tab.doc.text().contains("summary: b,d"),
        "the click read the restored selection: {}",
        text_of(&tab, "Markdown", "summary")
    );
    let picks = tab.doc.id_of("CustomMultiSelect", "title", "picks");
    assert_eq!(tab.doc.attr(&picks, "value"), json!(["b", "d"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_click_reads_the_change_before_it_on_the_tested_panel() {
    a_click_reads_the_change_before_it(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_click_reads_the_change_before_it_on_panel_17() {
    a_click_reads_the_change_before_it(Some(panel17())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streaming_app_restores_promptly() {
    let dir = tempdir();
    let mut tether = Tether::start(dir.path(), &[app("tests/apps/causal_periodic.py")], &[]);
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, "causal_periodic").await;
    for (i, v) in [3, 5, 7, 9].into_iter().enumerate() {
        let id = tab.doc.id_of("Slider", "title", &format!("w{i}"));
        tab.set(&id, "value", json!(v)).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let word = tab.doc.id_of("TextInput", "title", "word");
    tab.set(&word, "value", json!("hello")).await;
    tab.wait_for("the values line", |d| {
        d.text().contains("values: 3 5 7 9 word=hello")
    })
    .await;
    tab.close().await;

    tether.restart();
    let tab = b.open(&tether.base, "causal_periodic").await;
    assert!(
        tab.doc.text().contains("values: 3 5 7 9 word=hello"),
        "{}",
        text_of(&tab, "HTML", "values:")
    );
    let (applied, skipped, ms) = last_restore(&tether);
    eprintln!("streaming app restore: applied={applied} skipped={skipped} ms={ms}");
    assert_eq!((applied, skipped), (5, 0));
    // The settle cap of a restore that waits for quiet is seconds; this one waits for
    // nothing but its own steps (BENCHMARKS.md has the measured figure).
    assert!(ms < 1500, "the restore took {ms} ms");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_the_worker_refuses_is_not_recorded() {
    let dir = tempdir();
    let mut tether = Tether::start(dir.path(), &[app("tests/apps/plain_bokeh.py")], &[]);
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, "plain_bokeh").await;
    let slider = tab.doc.id_of("Slider", "title", "value");
    // Bokeh answers ERROR: the Slider has no such property.
    let refused = json!([{"kind": "ModelChanged", "model": {"id": slider},
                          "attr": "start", "new": "no_such_value_here"}]);
    assert_eq!(tab.send_patch(refused).await, "ERROR");
    tab.set(&slider, "value", json!(5)).await;
    tab.close().await;

    tether.restart();
    let tab = b.open(&tether.base, "plain_bokeh").await;
    let slider = tab.doc.id_of("Slider", "title", "value");
    assert_eq!(tab.doc.attr(&slider, "value"), json!(5));
    assert_eq!(last_restore(&tether), (1, 0, last_restore(&tether).2));
    tether.stop();
    let stored: Vec<u8> = std::fs::read_dir(dir.path().join(".tether"))
        .unwrap()
        .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(
        !stored
            .windows(b"no_such_value_here".len())
            .any(|w| w == b"no_such_value_here"),
        "the refused change is in no state file"
    );
}
