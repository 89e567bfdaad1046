//! Restore after restarts, crashes and expiry: changes are recorded through a real gateway,
//! the gateway or worker goes away, and a fresh session must show the same state when the
//! browser pulls its document.

mod common;

use std::time::Duration;

use common::{app, tempdir, Browser, Tab, Tether};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn catalog_selection_and_plot_survive_a_restart() {
    let dir = tempdir();
    let mut tether = Tether::start(dir.path(), &[app("examples/catalog.py")], &[]);
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, "catalog").await;
    let sel = tab.doc.of_type("Selection")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tab.set(&sel, "indices", json!([1, 3])).await;
    tab.pause().await;
    let plot = tab.doc.id_of("Button", "label", "Plot");
    tab.click(&plot).await;
    tab.wait_for("plot", |d| d.titles().iter().any(|t| t == "beta, delta"))
        .await;
    let old_session = tab.session_id.clone();
    tab.close().await;

    tether.restart();
    let tab = b.open(&tether.base, "catalog").await;
    assert_ne!(
        tab.session_id, old_session,
        "a new session after the restart"
    );
    // The very first pull already shows the restored selection and the re-drawn plot.
    assert_eq!(tab.doc.selection(), json!([1, 3]));
    assert!(
        tab.doc.titles().contains(&"beta, delta".to_owned()),
        "{:?}",
        tab.doc.titles()
    );
    assert_eq!(tab.doc.legend_labels(), vec!["beta", "delta"]);
    assert!(tether.wait_log("restored session", Duration::from_secs(5)));
}

/// Sets every widget of tests/apps/widgets.py, as a user would.
async fn change_widgets(tab: &mut Tab) {
    let d = &tab.doc;
    let ids = [
        d.id_of("Slider", "title", "int_slider"),
        d.id_of("Slider", "title", "float_slider"),
        d.id_of("CustomSelect", "title", "select"),
        d.id_of("MultiChoice", "title", "multi_choice"),
        d.id_of("Checkbox", "label", "checkbox"),
        d.id_of("TextInput", "title", "text_input"),
        d.of_type("RadioButtonGroup")[0]["id"]
            .as_str()
            .unwrap()
            .to_owned(),
        d.id_of("DatePicker", "title", "date_picker"),
        d.id_of("PasswordInput", "title", "password"),
        d.of_type("Tabs")[0]["id"].as_str().unwrap().to_owned(),
    ];
    tab.set(&ids[0], "value", json!(7)).await;
    tab.set(&ids[1], "value", json!(0.85)).await;
    tab.set(&ids[2], "value", json!("b")).await;
    tab.set(&ids[3], "value", json!(["y", "z"])).await;
    tab.set(&ids[4], "active", json!(true)).await;
    tab.set(&ids[5], "value", json!("world")).await;
    tab.set(&ids[6], "active", json!(2)).await;
    tab.set(&ids[7], "value", json!("2025-03-04")).await;
    tab.set(&ids[8], "value", json!("hunter2-secret")).await;
    tab.set(&ids[9], "active", json!(2)).await;
}

const SUMMARY: &str =
    "summary: slider=7 float=0.85 select=b multi=y,z check=True text=world radio=three date=2025-03-04";

fn summary_text(tab: &Tab) -> String {
    tab.doc
        .of_type("HTML")
        .iter()
        .filter_map(|m| m["attributes"]["text"].as_str())
        .find(|t| t.contains("summary:"))
        .unwrap_or_default()
        .to_owned()
}

fn assert_widgets_restored(tab: &Tab) {
    let d = &tab.doc;
    let v = |t: &str, k: &str, n: &str, a: &str| d.attr(&d.id_of(t, k, n), a);
    assert_eq!(v("Slider", "title", "int_slider", "value"), json!(7));
    assert_eq!(v("Slider", "title", "float_slider", "value"), json!(0.85));
    assert_eq!(v("CustomSelect", "title", "select", "value"), json!("b"));
    assert_eq!(
        v("MultiChoice", "title", "multi_choice", "value"),
        json!(["y", "z"])
    );
    assert_eq!(v("Checkbox", "label", "checkbox", "active"), json!(true));
    assert_eq!(
        v("TextInput", "title", "text_input", "value"),
        json!("world")
    );
    assert_eq!(
        v("DatePicker", "title", "date_picker", "value"),
        json!("2025-03-04")
    );
    let radio = d.of_type("RadioButtonGroup")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(d.attr(&radio, "active"), json!(2));
    let tabs = d.of_type("Tabs")[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(d.attr(&tabs, "active"), json!(2));
    // The derived output was recomputed by the app, not copied.
    let summary = summary_text(tab);
    assert!(summary.contains(SUMMARY), "summary: {summary}");
}

/// Every file under `dir`, as bytes, for "never written" checks.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.extend(b);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_common_widget_survives_a_restart_but_no_password() {
    let dir = tempdir();
    let mut tether = Tether::start(dir.path(), &[app("tests/apps/widgets.py")], &[]);
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, "widgets").await;
    change_widgets(&mut tab).await;
    tab.wait_for("summary", |_| true).await;
    tab.settle().await;
    assert!(
        summary_text(&tab).contains(SUMMARY),
        "{}",
        summary_text(&tab)
    );
    tab.close().await;

    tether.restart();
    let tab = b.open(&tether.base, "widgets").await;
    assert_widgets_restored(&tab);
    let pw = tab.doc.id_of("PasswordInput", "title", "password");
    assert_ne!(tab.doc.attr(&pw, "value"), json!("hunter2-secret"));
    assert!(
        !tab.doc.text().contains("hunter2"),
        "the password is not in the page"
    );
    tether.stop();
    let stored = all_bytes(dir.path());
    assert!(!stored.is_empty());
    let needle = b"hunter2";
    assert!(
        !stored.windows(needle.len()).any(|w| w == needle),
        "the password is not in the state files"
    );
}

/// `--prefix /dash`, as behind a proxy that forwards a sub-path: pages, assets, websockets and
/// tether's own endpoints all live under it, and both layers work there.
#[tokio::test(flavor = "multi_thread")]
async fn an_app_under_a_prefix_reattaches_and_restores() {
    let dir = tempdir();
    let mut tether = Tether::start(
        dir.path(),
        &[app("tests/apps/plain_bokeh.py")],
        &["--prefix", "/dash/"],
    );
    let base = format!("{}/dash", tether.base);
    let (status, headers, _) = common::bokeh::http_get(&format!("{base}/"), &[]).await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/dash/plain_bokeh");
    let (status, _, _) = common::bokeh::http_get(&tether.url("/dash/.tether/health"), &[]).await;
    assert_eq!(status, 200, "health under the prefix");
    let mut b = Browser::new();
    let page = b.get(&format!("{base}/plain_bokeh"), &[]).await;
    // Panel links its assets relative to the page (`static/js/bokeh.min.js`), so they
    // resolve below the prefix.
    let script = page
        .html
        .split("src=\"")
        .skip(1)
        .filter_map(|r| r.split('"').next())
        .find(|u| u.starts_with("static/js/bokeh"))
        .expect("the page loads BokehJS")
        .to_owned();
    let asset = format!("/dash/{script}");
    let (status, _, _) = common::bokeh::http_get(&tether.url(&asset), &[]).await;
    assert_eq!(status, 200, "{asset} through tether");
    let mut tab = b.open(&base, "plain_bokeh").await;
    let slider = tab.doc.id_of("Slider", "title", "value");
    tab.set(&slider, "value", json!(9)).await;
    tab.wait_for("div", |d| d.text().contains("value=9")).await;
    let session = tab.session_id.clone();
    tab.close().await;
    let tab = b.open(&base, "plain_bokeh").await;
    assert_eq!(tab.session_id, session, "reattached under the prefix");
    tab.close().await;

    tether.restart();
    let tab = b
        .open(&format!("{}/dash", tether.base), "plain_bokeh")
        .await;
    assert_ne!(tab.session_id, session);
    assert!(
        tab.doc.text().contains("value=9 color=red"),
        "{}",
        tab.doc.text()
    );
}

/// The app forms `panel serve` takes besides a script: a directory app (its template, theme
/// and `static/` working as under `panel serve`) and a notebook, served side by side, each
/// restored after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn directory_and_notebook_apps_are_served_and_restored() {
    let dir = tempdir();
    let mut tether = Tether::start(
        dir.path(),
        &[
            app("tests/apps/dir_app/"),
            app("tests/apps/notebook_app.ipynb"),
        ],
        &[],
    );
    let mut b = Browser::new();
    let page = b.get(&format!("{}/dir_app", tether.base), &[]).await;
    assert_eq!(page.status, 200);
    assert!(
        page.html.contains("dir-app-template"),
        "the directory's own template"
    );
    let (status, _, body) =
        common::bokeh::http_get(&tether.url("/dir_app/static/note.txt"), &[]).await;
    assert_eq!(
        (status, body.trim()),
        (200, "a static file of the directory app")
    );
    let mut tab = b.open(&tether.base, "dir_app").await;
    let slider = tab.doc.id_of("Slider", "title", "value");
    assert_eq!(
        tab.doc.attr(&slider, "bar_color"),
        json!("#123456"),
        "theme.yaml"
    );
    tab.set(&slider, "value", json!(7)).await;
    tab.wait_for("div", |d| d.text().contains("dir value=7"))
        .await;
    tab.close().await;
    let mut nb = b.open(&tether.base, "notebook_app").await;
    let nb_slider = nb.doc.id_of("Slider", "title", "nb value");
    nb.set(&nb_slider, "value", json!(5)).await;
    nb.wait_for("text", |d| d.text().contains("notebook value=5"))
        .await;
    nb.close().await;

    tether.restart();
    let tab = b.open(&tether.base, "dir_app").await;
    assert!(tab.doc.text().contains("dir value=7"), "{}", tab.doc.text());
    let nb = b.open(&tether.base, "notebook_app").await;
    assert!(
        nb.doc.text().contains("notebook value=5"),
        "{}",
        nb.doc.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn models_created_by_clicks_are_recreated() {
    let dir = tempdir();
    let mut tether = Tether::start(dir.path(), &[app("tests/apps/button_output.py")], &[]);
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, "button_output").await;
    let button = tab.doc.id_of("Button", "label", "Add plot");
    tab.click(&button).await;
    tab.click(&button).await;
    tab.wait_for("two plots", |d| d.titles().contains(&"plot 2".to_owned()))
        .await;
    tab.close().await;

    tether.restart();
    let tab = b.open(&tether.base, "button_output").await;
    let mut titles = tab.doc.titles();
    titles.sort();
    assert_eq!(titles, vec!["plot 1", "plot 2"]);
    assert!(tab.doc.text().contains("clicked 2 times"));
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_bokeh_app_restores() {
    let dir = tempdir();
    let mut tether = Tether::start(dir.path(), &[app("tests/apps/plain_bokeh.py")], &[]);
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, "plain_bokeh").await;
    let slider = tab.doc.id_of("Slider", "title", "value");
    let select = tab.doc.id_of("Select", "title", "color");
    tab.set(&slider, "value", json!(7)).await;
    tab.set(&select, "value", json!("blue")).await;
    tab.wait_for("div", |d| d.text().contains("value=7 color=blue"))
        .await;
    tab.close().await;

    tether.restart();
    let tab = b.open(&tether.base, "plain_bokeh").await;
    let div = tab.doc.of_type("Div")[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(tab.doc.attr(&div, "text"), json!("value=7 color=blue"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_one_second_before_kill_9_survives() {
    let dir = tempdir();
    let mut tether = Tether::start(dir.path(), &[app("tests/apps/plain_bokeh.py")], &[]);
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, "plain_bokeh").await;
    let slider = tab.doc.id_of("Slider", "title", "value");
    tab.set(&slider, "value", json!(9)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    tether.kill9();
    drop(tab);
    tether.start_again();
    let tab = b.open(&tether.base, "plain_bokeh").await;
    assert_eq!(tab.doc.attr(&slider_id(&tab), "value"), json!(9));
}

fn slider_id(tab: &Tab) -> String {
    tab.doc.id_of("Slider", "title", "value")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_worker_loses_nothing() {
    let dir = tempdir();
    let tether = Tether::start(dir.path(), &[app("tests/apps/plain_bokeh.py")], &[]);
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, "plain_bokeh").await;
    let slider = slider_id(&tab);
    tab.set(&slider, "value", json!(4)).await;
    tab.settle().await;
    let old_token = tab.token.clone();
    let workers = tether.workers();
    assert_eq!(workers.len(), 1);
    common::signal(workers[0], "KILL");
    assert!(tether.wait_log("worker exited; restarting", Duration::from_secs(10)));
    // The open tab loses its connection.
    assert!(tab.recv_within(Duration::from_secs(10)).await.is_none());
    // Health turns good again once the replacement worker is ready.
    tether.wait_healthy(Duration::from_secs(60)).await;
    assert_ne!(tether.workers(), workers, "a new worker process");
    // The tab reconnects with its old token; the session is gone from the worker,
    // so the gateway restores it instead of serving an empty document.
    let tab = Tab::connect(&tether.base, "plain_bokeh", &old_token, b.cookie.as_deref())
        .await
        .expect("reconnect")
        .ready()
        .await;
    assert_eq!(tab.doc.attr(&slider_id(&tab), "value"), json!(4));
    tab.close().await;
    // A reload is restored too.
    let tab = b.open(&tether.base, "plain_bokeh").await;
    assert_eq!(tab.doc.attr(&slider_id(&tab), "value"), json!(4));
}

#[tokio::test(flavor = "multi_thread")]
async fn live_ttl_expiry_restores_into_a_new_session() {
    let dir = tempdir();
    let tether = Tether::start(
        dir.path(),
        &[app("tests/apps/plain_bokeh.py")],
        &["--live-ttl", "2s"],
    );
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, "plain_bokeh").await;
    let slider = slider_id(&tab);
    tab.set(&slider, "value", json!(6)).await;
    let old = tab.session_id.clone();
    tab.close().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tab = b.open(&tether.base, "plain_bokeh").await;
    assert_ne!(tab.session_id, old, "the live session expired");
    assert_eq!(tab.doc.attr(&slider_id(&tab), "value"), json!(6));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edited_app_restores_what_still_fits() {
    let dir = tempdir();
    let script = dir.path().join("edited.py");
    let v1 = "import panel as pn\npn.Column(pn.widgets.IntSlider(name='a', end=10), pn.widgets.TextInput(name='t'), pn.widgets.Select(name='s', options=['x','y'])).servable()\n";
    // Version 2 drops the Select and adds a Checkbox in its place, of another type.
    let v2 = "import panel as pn\npn.Column(pn.widgets.IntSlider(name='a', end=10), pn.widgets.TextInput(name='t'), pn.widgets.Checkbox(name='c'), pn.widgets.FloatSlider(name='new')).servable()\n";
    std::fs::write(&script, v1).unwrap();
    let mut tether = Tether::start(dir.path(), std::slice::from_ref(&script), &[]);
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, "edited").await;
    let a = tab.doc.id_of("Slider", "title", "a");
    let t = tab.doc.id_of("TextInput", "title", "t");
    let s = tab.doc.id_of("CustomSelect", "title", "s");
    tab.set(&a, "value", json!(8)).await;
    tab.set(&t, "value", json!("kept")).await;
    tab.set(&s, "value", json!("y")).await;
    tab.close().await;
    tether.stop();
    std::fs::write(&script, v2).unwrap();
    tether.start_again();
    let tab = b.open(&tether.base, "edited").await;
    let d = &tab.doc;
    assert_eq!(d.attr(&d.id_of("Slider", "title", "a"), "value"), json!(8));
    assert_eq!(
        d.attr(&d.id_of("TextInput", "title", "t"), "value"),
        json!("kept")
    );
    assert!(
        tether.wait_log("skipped=1", Duration::from_secs(5)),
        "{}",
        tether.stderr()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn widgets_are_found_by_name_after_an_edit_inserts_removes_and_renames() {
    let dir = tempdir();
    let script = dir.path().join("edited.py");
    let widgets = |first: &str, select: &str, ratio: &str| {
        format!(
            "import panel as pn\npn.Column({first}pn.Card(pn.widgets.Checkbox(name='c'), \
             title='Options'), pn.widgets.IntSlider(name='a', end=10), pn.widgets.TextInput(name='t'), \
             {select}pn.widgets.FloatSlider(name='{ratio}')).servable()\n"
        )
    };
    let select = "pn.widgets.Select(name='s', options=['x','y']), ";
    std::fs::write(&script, widgets("", select, "ratio")).unwrap();
    let mut tether = Tether::start(dir.path(), std::slice::from_ref(&script), &[]);
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, "edited").await;
    let d = &tab.doc;
    let ids = [
        d.id_of("Slider", "title", "a"),
        d.id_of("TextInput", "title", "t"),
        d.id_of("CustomSelect", "title", "s"),
        d.id_of("Slider", "title", "ratio"),
        d.id_of("Checkbox", "label", "c"),
    ];
    tab.set(&ids[0], "value", json!(8)).await;
    tab.set(&ids[1], "value", json!("kept")).await;
    tab.set(&ids[2], "value", json!("y")).await;
    tab.set(&ids[3], "value", json!(0.5)).await;
    tab.set(&ids[4], "active", json!(true)).await;
    tab.close().await;
    tether.stop();
    // A widget inserted above all the others, the Select removed, the FloatSlider renamed.
    let inserted = "pn.widgets.IntSlider(name='inserted', value=3, end=10), ";
    std::fs::write(&script, widgets(inserted, "", "share")).unwrap();
    tether.start_again();
    let tab = b.open(&tether.base, "edited").await;
    let d = &tab.doc;
    let v = |t: &str, k: &str, n: &str, a: &str| d.attr(&d.id_of(t, k, n), a);
    assert_eq!(
        v("Slider", "title", "a", "value"),
        json!(8),
        "moved down by one"
    );
    assert_eq!(v("TextInput", "title", "t", "value"), json!("kept"));
    // Inside a Card that moved too: found by its own name within the Card's.
    assert_eq!(v("Checkbox", "label", "c", "active"), json!(true));
    assert_eq!(
        v("Slider", "title", "inserted", "value"),
        json!(3),
        "untouched"
    );
    assert_eq!(
        v("Slider", "title", "share", "value"),
        json!(0.0),
        "a renamed widget is not guessed at"
    );
    assert!(d.of_type("CustomSelect").is_empty());
    assert!(
        tether.wait_log("renamed:1", Duration::from_secs(5)),
        "{}",
        tether.stderr()
    );
    let line = tether
        .stderr()
        .lines()
        .rfind(|l| l.contains("restored session"))
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains("skipped=2"), "{line}");
}

#[test]
fn a_corrupt_state_file_is_a_clear_error() {
    let dir = tempdir();
    std::fs::create_dir_all(dir.path().join(".tether")).unwrap();
    std::fs::write(dir.path().join(".tether/state.db"), vec![0x42u8; 8192]).unwrap();
    let plain = app("tests/apps/plain_bokeh.py").display().to_string();
    let (code, err) = Tether::fail(dir.path(), &[&plain]);
    assert_ne!(code, 0);
    assert!(err.contains(".tether/state.db"), "names the file: {err}");
    assert!(err.contains("delete it"), "says what to do: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn forget_starts_fresh() {
    let dir = tempdir();
    let mut tether = Tether::start(dir.path(), &[app("tests/apps/plain_bokeh.py")], &[]);
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, "plain_bokeh").await;
    let slider = slider_id(&tab);
    tab.set(&slider, "value", json!(8)).await;
    tab.close().await;
    // Another site cannot make the browser forget (SameSite=Lax cookies go along on links).
    let p = b
        .get(
            &tether.url("/.tether/forget?app=plain_bokeh"),
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(p.status, 403);
    let p = b
        .get(&tether.url("/.tether/forget?app=plain_bokeh"), &[])
        .await;
    assert_eq!(p.status, 303);
    assert_eq!(p.headers["location"], "/plain_bokeh");
    let tab = b.open(&tether.base, "plain_bokeh").await;
    assert_eq!(
        tab.doc.attr(&slider_id(&tab), "value"),
        json!(2),
        "the app's initial value"
    );
    tab.close().await;
    tether.restart();
    let tab = b.open(&tether.base, "plain_bokeh").await;
    assert_eq!(
        tab.doc.attr(&slider_id(&tab), "value"),
        json!(2),
        "still the initial value"
    );
}

/// Every way a password leaves the browser (its `value`, `value_input` on each key, and the
/// `value_submit` event on Enter): none is written anywhere or replayed.
#[tokio::test(flavor = "multi_thread")]
async fn a_submitted_password_is_never_stored_or_replayed() {
    let dir = tempdir();
    let mut tether = Tether::start(dir.path(), &[app("tests/apps/password_submit.py")], &[]);
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, "password_submit").await;
    let pw = tab.doc.id_of("PasswordInput", "title", "password");
    let name = tab.doc.id_of("TextInput", "title", "name");
    tab.set(&name, "value", json!("ada")).await;
    tab.set(&pw, "value_input", json!("hunter2-secret")).await;
    tab.set(&pw, "value", json!("hunter2-secret")).await;
    tab.event(
        "value_submit",
        json!({"type": "map", "entries": [["model", {"id": pw}], ["value", "hunter2-secret"]]}),
    )
    .await;
    tab.wait_for("the submit callback", |d| d.text().contains("submitted 1"))
        .await;
    tab.close().await;

    tether.restart();
    let tab = b.open(&tether.base, "password_submit").await;
    let name = tab.doc.id_of("TextInput", "title", "name");
    assert_eq!(
        tab.doc.attr(&name, "value"),
        json!("ada"),
        "the rest restores"
    );
    assert!(
        tab.doc.text().contains("submitted 0"),
        "the submit is not replayed"
    );
    assert!(!tab.doc.text().contains("hunter2"), "nor the password");
    tether.stop();
    let stored = all_bytes(dir.path());
    let needle = b"hunter2";
    assert!(
        !stored.windows(needle.len()).any(|w| w == needle),
        "the password is in no state file"
    );
}
