//! Scale-out through real gateways: several workers behind one gateway, several gateways on
//! one `redis-server`, crashes of workers, gateways and Redis, draining on SIGTERM, and the
//! `/.tether/health` and `/.tether/metrics` endpoints that report on all of it.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{app, tempdir, Browser, Tab, Tether};
use futures_util::StreamExt;
use serde_json::json;

const APP: &str = "plain_bokeh";

fn plain() -> Vec<std::path::PathBuf> {
    vec![app("tests/apps/plain_bokeh.py")]
}

fn slider_id(tab: &Tab) -> String {
    tab.doc.id_of("Slider", "title", "value")
}

/// The slider's value as the tab's document shows it.
fn slider(tab: &Tab) -> serde_json::Value {
    tab.doc.attr(&slider_id(tab), "value")
}

/// Sets the slider and waits until the app's callback has redrawn the div.
async fn set_slider(tab: &mut Tab, value: u64) {
    let id = slider_id(tab);
    tab.set(&id, "value", json!(value)).await;
    let shown = format!("value={value} ");
    tab.wait_for("the div to show the value", |d| d.text().contains(&shown))
        .await;
}

/// Loads the page again and connects its websocket; returns the page's session id too.
async fn reopen(b: &mut Browser, base: &str) -> (String, Tab) {
    let page = b.get(&format!("{base}/{APP}"), &[]).await;
    assert_eq!(page.status, 200, "page status; body: {}", page.html);
    let token = page.token.clone().expect("page has a token");
    let tab = b
        .connect(base, APP, &token)
        .await
        .expect("websocket opens")
        .ready()
        .await;
    (page.session_id(), tab)
}

/// `/.tether/metrics`, checked to be Prometheus text: every sample belongs to a family
/// announced by `# HELP` and `# TYPE`, and every value is a number. Keyed by
/// `name` or `name{labels}`.
async fn metrics(t: &Tether) -> HashMap<String, f64> {
    let (status, headers, body) = common::bokeh::http_get(&t.url("/.tether/metrics"), &[]).await;
    assert_eq!(status, 200, "{body}");
    let ct = headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("text/plain"), "content type {ct}");
    let (mut helped, mut typed) = (Vec::new(), Vec::new());
    let mut samples = HashMap::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has text");
            assert!(!help.trim().is_empty(), "empty help: {line}");
            helped.push(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                kind != "counter" || name.ends_with("_total"),
                "counter without _total: {line}"
            );
            typed.push(name.to_owned());
        } else {
            assert!(!line.starts_with('#'), "unknown comment: {line}");
            let (key, value) = line.rsplit_once(' ').expect("sample has a value");
            let name = key.split('{').next().unwrap();
            assert!(name.starts_with("tether_"), "{line}");
            assert!(
                typed.last().map(String::as_str) == Some(name)
                    && helped.contains(&typed[typed.len() - 1]),
                "sample outside its family's HELP/TYPE: {line}"
            );
            if key.contains('{') {
                assert!(key.ends_with("\"}"), "labels: {line}");
            }
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {line}"));
            assert!(
                samples.insert(key.to_owned(), value).is_none(),
                "twice: {line}"
            );
        }
    }
    samples
}

fn metric(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no {key} in /.tether/metrics: {m:?}"))
}

/// Waits (bounded) until a metric satisfies `pred`; returns the last metrics read.
async fn wait_metric(
    t: &Tether,
    key: &str,
    within: Duration,
    pred: impl Fn(f64) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + within;
    loop {
        let m = metrics(t).await;
        if pred(metric(&m, key)) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{key} = {} after {within:?}",
            metric(&m, key)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The process id of worker slot `index`, from its latest "worker ready" log line. The log
/// is read on its own thread, which may not have the line yet when tether says it serves.
fn worker_pid(t: &Tether, index: usize) -> u32 {
    let slot = format!("worker={index} ");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pid = t
            .stderr()
            .lines()
            .rev()
            .filter(|l| l.contains("worker ready") && l.contains(&slot))
            .filter_map(|l| l.split("pid=").nth(1))
            .find_map(|p| p.split_whitespace().next()?.parse().ok());
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `worker ready` line for worker {index}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many log lines contain `needle`.
fn log_count(t: &Tether, needle: &str) -> usize {
    t.stderr().lines().filter(|l| l.contains(needle)).count()
}

/// 20 users on two workers: each reopen is the same live session with its value, users are
/// spread over both workers, and health and metrics say so.
#[tokio::test(flavor = "multi_thread")]
async fn many_users_stay_on_their_sessions_across_two_workers() {
    const USERS: u64 = 20;
    let dir = tempdir();
    let tether = Tether::start(dir.path(), &plain(), &["--workers", "2"]);
    let base = tether.base.clone();
    let user = |i: u64| {
        let base = base.clone();
        async move {
            let mut b = Browser::new();
            let mut tab = b.open(&base, APP).await;
            let first = tab.session_id.clone();
            let value = 3 + i % 8;
            set_slider(&mut tab, value).await;
            tab.close().await;
            let (session, tab) = reopen(&mut b, &base).await;
            assert_eq!(session, first, "user {i}: a reopen reattaches");
            assert_eq!(slider(&tab), json!(value), "user {i}: value on reopen");
            tab.close().await;
        }
    };
    // At most five users at a time: the machine is small, and the point is stickiness.
    futures_util::stream::iter(0..USERS)
        .map(user)
        .buffer_unordered(5)
        .collect::<Vec<()>>()
        .await;

    let (status, _, body) = common::bokeh::http_get(&tether.url("/.tether/health"), &[]).await;
    assert_eq!(status, 200, "{body}");
    let m = wait_metric(
        &tether,
        "tether_connected_tabs",
        Duration::from_secs(5),
        |v| v == 0.0,
    )
    .await;
    let users = USERS as f64;
    assert_eq!(metric(&m, "tether_live_sessions"), users);
    assert_eq!(metric(&m, "tether_pages_fresh_total"), users);
    assert_eq!(metric(&m, "tether_pages_reattached_total"), users);
    assert_eq!(metric(&m, "tether_restores_total"), 0.0);
    assert!(metric(&m, "tether_changes_recorded_total") >= users);
    let on = [0, 1].map(|w| metric(&m, &format!("tether_worker_sessions{{worker=\"{w}\"}}")));
    assert_eq!(on[0] + on[1], users, "per-worker sessions {on:?}");
    assert!(
        (on[0] - on[1]).abs() <= 4.0,
        "least-loaded placement spreads users: {on:?}"
    );
    for w in [0, 1] {
        assert_eq!(
            metric(&m, &format!("tether_worker_up{{worker=\"{w}\"}}")),
            1.0
        );
        assert_eq!(
            metric(
                &m,
                &format!("tether_worker_restarts_total{{worker=\"{w}\"}}")
            ),
            0.0
        );
    }
    for key in [
        "tether_restore_steps_applied_total",
        "tether_restore_steps_skipped_total",
        "tether_store_write_errors_total",
        "tether_store_snapshots_dropped_total",
        "tether_store_pending_snapshots",
    ] {
        assert_eq!(metric(&m, key), 0.0, "{key}");
    }
    assert!(metric(&m, "tether_store_snapshots_written_total") >= users);
    assert!(metric(&m, "tether_store_batches_written_total") >= 1.0);
    let latency = metric(&m, "tether_store_write_latency_seconds");
    assert!(
        (0.0..5.0).contains(&latency),
        "write latency {latency} s (a 50 ms window plus one commit)"
    );
}

fn color(tab: &Tab) -> serde_json::Value {
    tab.doc
        .attr(&tab.doc.id_of("Select", "title", "color"), "value")
}

async fn set_color(tab: &mut Tab, value: &str) {
    let id = tab.doc.id_of("Select", "title", "color");
    tab.set(&id, "value", json!(value)).await;
    let shown = format!("color={value}");
    tab.wait_for("the div to show the color", |d| d.text().contains(&shown))
        .await;
}

/// Two gateways with one Redis and one secret are one service. A user of gateway A, which is
/// then killed, gets their state restored through gateway B. Another user bounces A -> B -> A
/// (a load balancer without stickiness): each gateway shows what they did on the other, and
/// neither overwrites the other's changes.
#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_on_one_redis_are_one_service() {
    let redis = RedisServer::start();
    let shared = tempdir();
    let secret = shared.path().join("secret").display().to_string();
    let url = redis.url();
    let args = ["--state", url.as_str(), "--secret-file", secret.as_str()];
    let (dir_a, dir_b) = (tempdir(), tempdir());
    let mut a = Tether::start(dir_a.path(), &plain(), &args);
    let mut b = Tether::start(dir_b.path(), &plain(), &args);

    // The bouncing user: slider on A, colour on B, slider again on A.
    let mut bouncer = Browser::new();
    let mut tab = bouncer.open(&a.base, APP).await;
    set_slider(&mut tab, 7).await;
    tab.close().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, mut tab) = reopen(&mut bouncer, &b.base).await;
    assert_eq!(slider(&tab), json!(7), "A's change, restored on B");
    set_color(&mut tab, "blue").await;
    tab.close().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, mut tab) = reopen(&mut bouncer, &a.base).await;
    let back_on_a = color(&tab);
    set_slider(&mut tab, 9).await;
    tab.close().await;

    // The moving user: changes on A, whose process then dies.
    let mut mover = Browser::new();
    let mut tab = mover.open(&a.base, APP).await;
    let on_a = tab.session_id.clone();
    set_slider(&mut tab, 4).await;
    set_color(&mut tab, "green").await;
    // Writes are batched within 50 ms; leave them well over that before the crash.
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.kill9();
    drop(tab);
    let identity = mover.cookie.clone();
    let (session, tab) = reopen(&mut mover, &b.base).await;
    assert_eq!(
        mover.cookie, identity,
        "gateway B knows gateway A's cookie, so the identity stays (only renewed)"
    );
    assert_ne!(session, on_a, "a new session on gateway B");
    assert_eq!((slider(&tab), color(&tab)), (json!(4), json!("green")));
    let div = tab.doc.of_type("Div")[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(tab.doc.attr(&div, "text"), json!("value=4 color=green"));
    let m = metrics(&b).await;
    assert_eq!(metric(&m, "tether_restores_total"), 2.0, "one per user");
    assert!(metric(&m, "tether_restore_steps_applied_total") >= 3.0);
    tab.close().await;

    // What the store holds for the bouncing user, as a gateway with nothing cached sees it.
    b.kill9();
    b.start_again();
    let (_, tab) = reopen(&mut bouncer, &b.base).await;
    let stored = (slider(&tab), color(&tab));
    tab.close().await;
    assert_eq!(
        stored,
        (json!(9), json!("blue")),
        "saved (slider, color) after A: slider 7, B: color blue, A: slider 9"
    );
    assert_eq!(
        back_on_a,
        json!("blue"),
        "back on gateway A, the user sees the colour chosen on gateway B"
    );
}

/// A browser whose requests an auth proxy marks with the logged-in user's name.
fn logged_in_as(name: &str) -> Browser {
    let mut b = Browser::new();
    b.headers = vec![("x-forwarded-user".into(), name.into())];
    b
}

/// What `request_echo` shows of the request's headers.
async fn headers_the_app_sees(b: &mut Browser, base: &str) -> String {
    let tab = b.open(base, "request_echo").await;
    let text = tab.doc.text();
    tab.close().await;
    text
}

/// A gateway serving the slider app and `request_echo`, believing `X-Forwarded-User` from
/// `trusted`.
fn behind_a_proxy(dir: &std::path::Path, trusted: &str) -> Tether {
    let apps = [plain(), vec![app("tests/apps/request_echo.py")]].concat();
    let args = [
        "--identity-header",
        "X-Forwarded-User",
        "--trusted-proxy",
        trusted,
    ];
    Tether::start(dir, &apps, &args)
}

/// The text of the app's Div, which its callback redraws.
fn div_text(tab: &Tab) -> String {
    let div = tab.doc.of_type("Div")[0]["id"].as_str().unwrap().to_owned();
    tab.doc.attr(&div, "text").as_str().unwrap().to_owned()
}

/// `--identity-header` from a `--trusted-proxy`: a logged-in user's state follows them to
/// another browser, which has no cookie of theirs; another user's stays their own; and a
/// logged-in user's token is refused to anyone else.
#[tokio::test(flavor = "multi_thread")]
async fn a_logged_in_user_s_state_follows_them_to_another_browser() {
    let dir = tempdir();
    let t = behind_a_proxy(dir.path(), "127.0.0.1");

    let mut laptop = logged_in_as("ada");
    let mut tab = laptop.open(&t.base, APP).await;
    set_slider(&mut tab, 8).await;
    assert_eq!(
        laptop.cookie, None,
        "a logged-in user gets no identity cookie"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The desk machine: another browser, the same login, while the laptop is still open.
    let mut desk = logged_in_as("ada");
    let (session, desk_tab) = reopen(&mut desk, &t.base).await;
    assert_ne!(session, tab.session_id, "a session of its own");
    assert_eq!(slider(&desk_tab), json!(8), "restored from Ada's history");
    assert!(div_text(&desk_tab).contains("value=8 "));

    // Bob's state is his own, and Ada's token is not his to use.
    let mut bob = logged_in_as("bob");
    let (_, bob_tab) = reopen(&mut bob, &t.base).await;
    assert_ne!(slider(&bob_tab), json!(8));
    let refused = bob.connect(&t.base, APP, &tab.token).await;
    assert_eq!(refused.err().as_deref(), Some("403"));
    // The app sees the proxy's header, as it would without tether.
    assert!(headers_the_app_sees(&mut bob, &t.base)
        .await
        .contains("x-forwarded-user"));
    for tab in [tab, desk_tab, bob_tab] {
        tab.close().await;
    }
}

/// The same header from a peer outside `--trusted-proxy` is anyone's claim: it is ignored (two
/// browsers naming the same user stay apart) and dropped before it reaches the app.
#[tokio::test(flavor = "multi_thread")]
async fn an_identity_header_from_an_untrusted_peer_is_ignored_and_dropped() {
    let dir = tempdir();
    let t = behind_a_proxy(dir.path(), "10.0.0.0/8");
    let mut first = logged_in_as("ada");
    let mut tab = first.open(&t.base, APP).await;
    set_slider(&mut tab, 8).await;
    assert!(
        first.cookie.is_some(),
        "an anonymous browser, with a cookie of its own"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut second = logged_in_as("ada");
    let (_, other) = reopen(&mut second, &t.base).await;
    assert_ne!(slider(&other), json!(8), "not Ada's state");
    let seen = headers_the_app_sees(&mut second, &t.base).await;
    assert!(
        seen.contains("headers:") && !seen.contains("x-forwarded-user"),
        "{seen}"
    );
    tab.close().await;
    other.close().await;
}

/// `POST /.tether/share` from the sharer, as their page would send it.
async fn share(t: &Tether, b: &Browser, app: &str) -> (u16, String) {
    let cookie = b.cookie.clone().unwrap_or_default();
    let headers = [
        ("cookie", cookie.as_str()),
        ("sec-fetch-site", "same-origin"),
    ];
    let url = t.url(&format!("/.tether/share?app={app}"));
    let (status, _, body) = common::bokeh::http_request(http::Method::POST, &url, &headers).await;
    (status, body)
}

/// A share link: the visitor gets the sharer's view with its output drawn, in a session of
/// their own; what the visitor does next changes neither the sharer's state nor the link's;
/// an id that is made up, or another app's, gets a clear page and nobody's state.
#[tokio::test(flavor = "multi_thread")]
async fn a_share_link_gives_the_sharers_view_and_nothing_more() {
    let dir = tempdir();
    let apps = [plain(), vec![app("tests/apps/request_echo.py")]].concat();
    let t = Tether::start(dir.path(), &apps, &[]);
    let mut ada = Browser::new();
    let mut tab = ada.open(&t.base, APP).await;
    assert_eq!(share(&t, &ada, APP).await.0, 409, "nothing to share yet");
    set_slider(&mut tab, 7).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = share(&t, &ada, APP).await;
    assert_eq!(status, 200, "{body}");
    let link = serde_json::from_str::<serde_json::Value>(&body).unwrap()["link"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        link.starts_with(&format!("/{APP}?tether-snapshot=")),
        "{link}"
    );

    // Bob opens it: a redirect to the app's own address, then Ada's view, drawn.
    let mut bob = Browser::new();
    let opened = bob.get(&t.url(&link), &[]).await;
    assert_eq!(opened.status, 303);
    assert_eq!(opened.headers["location"], format!("/{APP}").as_str());
    let (_, mut bob_tab) = reopen(&mut bob, &t.base).await;
    assert_eq!(slider(&bob_tab), json!(7));
    assert!(div_text(&bob_tab).contains("value=7 "));
    set_slider(&mut bob_tab, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob_tab.close().await;
    tab.close().await;

    // Ada's state and the snapshot are as they were; Bob keeps his own change.
    let (_, ada_tab) = reopen(&mut ada, &t.base).await;
    assert_eq!(
        slider(&ada_tab),
        json!(7),
        "the sharer's state is untouched"
    );
    let (_, bob_tab) = reopen(&mut bob, &t.base).await;
    assert_eq!(
        slider(&bob_tab),
        json!(3),
        "the visitor's change is recorded as theirs"
    );
    let mut carol = Browser::new();
    assert_eq!(carol.get(&t.url(&link), &[]).await.status, 303);
    let (_, carol_tab) = reopen(&mut carol, &t.base).await;
    assert_eq!(
        slider(&carol_tab),
        json!(7),
        "the link still shows what was shared"
    );

    // The same id on another app, a made-up one, and a share asked by another site.
    let id = link.rsplit('=').next().unwrap();
    for url in [
        format!("/request_echo?tether-snapshot={id}"),
        format!("/{APP}?tether-snapshot=0123456789abcdef0123456789abcdef"),
        format!("/{APP}?tether-snapshot=../../x"),
    ] {
        let page = Browser::new().get(&t.url(&url), &[]).await;
        assert_eq!(page.status, 404, "{url}");
        assert!(page.html.contains("ask whoever shared it"), "{}", page.html);
    }
    let cookie = ada.cookie.clone().unwrap();
    let (status, _, _) = common::bokeh::http_request(
        http::Method::POST,
        &t.url(&format!("/.tether/share?app={APP}")),
        &[
            ("cookie", cookie.as_str()),
            ("sec-fetch-site", "cross-site"),
        ],
    )
    .await;
    assert_eq!(status, 403);

    // Only its owner deletes it; then the link opens nothing.
    let delete = |b: &Browser| {
        let cookie = b.cookie.clone().unwrap();
        let url = t.url(&format!("/.tether/share?app={APP}&id={id}"));
        async move {
            let headers = [
                ("cookie", cookie.as_str()),
                ("sec-fetch-site", "same-origin"),
            ];
            common::bokeh::http_request(http::Method::DELETE, &url, &headers)
                .await
                .0
        }
    };
    assert_eq!(delete(&bob).await, 404, "not Bob's to delete");
    assert_eq!(
        carol.get(&t.url(&link), &[]).await.status,
        303,
        "still there"
    );
    assert_eq!(delete(&ada).await, 200);
    assert_eq!(Browser::new().get(&t.url(&link), &[]).await.status, 404);
    for tab in [ada_tab, bob_tab, carol_tab] {
        tab.close().await;
    }
}

/// `--state rediss://` with `--redis-ca-file`, as a managed Redis needs: a change made through
/// one gateway process is restored by the next, from a server that speaks TLS only.
#[tokio::test(flavor = "multi_thread")]
async fn state_in_redis_over_tls_is_restored_after_a_restart() {
    let redis = RedisServer::start_tls();
    let dir = tempdir();
    let (url, ca) = (redis.url(), redis.ca().display().to_string());
    let args = ["--state", url.as_str(), "--redis-ca-file", ca.as_str()];
    let mut t = Tether::start(dir.path(), &plain(), &args);
    let mut user = Browser::new();
    let mut tab = user.open(&t.base, APP).await;
    set_slider(&mut tab, 6).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    tab.close().await;
    t.kill9();
    t.start_again();
    let (_, tab) = reopen(&mut user, &t.base).await;
    assert_eq!(slider(&tab), json!(6), "restored from Redis over TLS");
    assert!(
        div_text(&tab).contains("value=6 "),
        "the callback's output is redrawn"
    );
    tab.close().await;
}

/// One user of a soak: reopen, check the last value is back, set the next; until `stop`, at
/// most 60 rounds. Returns the browser and the last value set.
async fn soak_user(
    base: String,
    n: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Browser, u64) {
    let mut b = Browser::new();
    let mut last = None;
    for round in 1..=60 {
        if *stop.borrow() {
            break;
        }
        let (_, mut tab) = reopen(&mut b, &base).await;
        if let Some(v) = last {
            assert_eq!(slider(&tab), json!(v), "user {n}, round {round}");
        }
        let v = (n * 100 + round) % 1000;
        set_slider(&mut tab, v).await;
        last = Some(v);
        tab.close().await;
    }
    (b, last.expect("at least one round"))
}

/// `--state redis+sentinel://`: users keep changing things while the primary is killed and the
/// sentinel promotes its replica. tether follows the new primary, and a fresh gateway restores
/// every user's last change from it.
#[tokio::test(flavor = "multi_thread")]
async fn state_behind_redis_sentinel_survives_a_primary_failover() {
    const USERS: u64 = 8;
    let mut set = common::redis::SentinelSet::start();
    let dir = tempdir();
    let url = set.url();
    let mut tether = Tether::start(dir.path(), &plain(), &["--state", url.as_str()]);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let users: Vec<_> = (1..=USERS)
        .map(|n| tokio::spawn(soak_user(tether.base.clone(), n, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| set.fail_primary());
    assert!(
        tether.wait_log("following the Redis primary", Duration::from_secs(30)),
        "{}",
        tether.stderr()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_tx.send_replace(true);
    let mut ended = Vec::new();
    for u in users {
        ended.push(u.await.expect("every user's requests succeeded"));
    }
    // Whatever waited in memory during the failover is written to the new primary.
    wait_metric(
        &tether,
        "tether_store_pending_snapshots",
        Duration::from_secs(20),
        |v| v == 0.0,
    )
    .await;
    tether.kill9();
    tether.start_again();
    for (mut b, v) in ended {
        let (_, tab) = reopen(&mut b, &tether.base).await;
        assert_eq!(slider(&tab), json!(v), "restored from the promoted replica");
        tab.close().await;
    }
}

/// `kill -9` of one of two workers: its users are restored on their next visit, on a
/// healthy worker even while it restarts; the other worker's users keep their sessions.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_s_users_are_restored_and_the_others_reattach() {
    const USERS: u64 = 6;
    let dir = tempdir();
    let tether = Tether::start(dir.path(), &plain(), &["--workers", "2"]);
    let mut users = Vec::new();
    for i in 0..USERS {
        let mut b = Browser::new();
        let mut tab = b.open(&tether.base, APP).await;
        set_slider(&mut tab, 3 + i).await;
        let session = tab.session_id.clone();
        tab.close().await;
        users.push((b, session));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = metrics(&tether).await;
    let on_killed = metric(&before, "tether_worker_sessions{worker=\"0\"}");
    assert!(
        on_killed >= 1.0 && on_killed < USERS as f64,
        "users on both workers: {on_killed} of {USERS} on worker 0"
    );

    let pid = worker_pid(&tether, 0);
    common::signal(pid, "KILL");
    assert!(tether.wait_log("worker exited; restarting", Duration::from_secs(10)));
    let down = metrics(&tether).await;
    assert_eq!(metric(&down, "tether_worker_up{worker=\"0\"}"), 0.0);
    // The issue: a crashed worker's users are restored "on any healthy worker", so these
    // visits need not wait for the replacement (which takes seconds to import Panel).
    // Refusals are collected and asserted last, after checking what happens once it is back.
    let mut refused = Vec::new();
    let mut restored = 0;
    for (i, (b, old)) in users.iter_mut().enumerate() {
        let page = b.get(&tether.url(&format!("/{APP}")), &[]).await;
        if page.status != 200 {
            refused.push((i, page.status));
            continue;
        }
        let token = page.token.clone().expect("page has a token");
        let tab = Tab::connect(&tether.base, APP, &token, b.cookie.as_deref())
            .await
            .expect("websocket opens")
            .ready()
            .await;
        assert_eq!(slider(&tab), json!(3 + i), "user {i}'s value");
        if page.session_id() != *old {
            restored += 1;
        }
        tab.close().await;
    }
    let m = wait_metric(
        &tether,
        "tether_worker_up{worker=\"0\"}",
        Duration::from_secs(60),
        |v| v == 1.0,
    )
    .await;
    assert_eq!(
        metric(&m, "tether_worker_restarts_total{worker=\"0\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "tether_worker_restarts_total{worker=\"1\"}"),
        0.0
    );
    assert!(!common::alive(pid), "the killed worker is gone");
    for &(i, _) in &refused {
        let (b, old) = &mut users[i];
        let (session, tab) = reopen(b, &tether.base).await;
        assert_eq!(slider(&tab), json!(3 + i as u64), "user {i}'s value, later");
        if session != *old {
            restored += 1;
        }
        tab.close().await;
    }
    assert_eq!(
        restored as f64, on_killed,
        "exactly the killed worker's users get new (restored) sessions"
    );
    let m = metrics(&tether).await;
    assert_eq!(metric(&m, "tether_restores_total"), on_killed);
    assert!(
        refused.is_empty(),
        "while worker 0 restarted, its users (index, status) {refused:?} were refused \
         instead of being restored on the healthy worker 1"
    );
}

/// Redis stops and comes back (empty) while users keep working: live sessions never notice,
/// the failure is logged a bounded number of times and counted, and everything changed
/// during or after the outage is restorable once Redis is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_outage_keeps_sessions_live_and_loses_no_later_change() {
    const USERS: usize = 3;
    const FAILING: &str = "cannot write state snapshots";
    let mut redis = RedisServer::start();
    let dir = tempdir();
    let url = redis.url();
    let mut tether = Tether::start(dir.path(), &plain(), &["--state", url.as_str()]);
    let (mut browsers, mut tabs) = (Vec::new(), Vec::new());
    for _ in 0..USERS {
        let mut b = Browser::new();
        let mut tab = b.open(&tether.base, APP).await;
        set_slider(&mut tab, 3).await;
        browsers.push(b);
        tabs.push(tab);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    redis.stop();
    // Every live tab keeps working: each change gets its OK and the app redraws.
    for (i, tab) in tabs.iter_mut().enumerate() {
        set_slider(tab, 5 + i as u64).await;
    }
    // A reload during the outage reattaches to the live session, which has the value.
    let tab = tabs.remove(0);
    let old = tab.session_id.clone();
    tab.close().await;
    let (session, tab) = reopen(&mut browsers[0], &tether.base).await;
    assert_eq!(session, old, "the page still loads, on the live session");
    assert_eq!(slider(&tab), json!(5));
    tabs.insert(0, tab);
    let m = wait_metric(
        &tether,
        "tether_store_write_errors_total",
        Duration::from_secs(10),
        |v| v >= 1.0,
    )
    .await;
    assert!(
        metric(&m, "tether_store_pending_snapshots") >= 1.0,
        "unwritten state is counted"
    );
    assert!(tether.wait_log(FAILING, Duration::from_secs(5)));
    // Keep the outage going past a few retries (which back off to once a second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, tab) in tabs.iter_mut().enumerate() {
        set_slider(tab, 6 + i as u64).await;
    }

    redis.start_again();
    wait_metric(
        &tether,
        "tether_store_pending_snapshots",
        Duration::from_secs(15),
        |v| v == 0.0,
    )
    .await;
    assert!(tether.wait_log("accepts writes again", Duration::from_secs(5)));
    let failures = log_count(&tether, FAILING);
    assert!(
        (1..=2).contains(&failures),
        "the failure is logged at most once per 10 s, not per retry: {failures} lines"
    );
    // A change after Redis returned is written as usual.
    set_slider(&mut tabs[USERS - 1], 10).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let errors = metric(&metrics(&tether).await, "tether_store_write_errors_total");
    assert!(errors >= 2.0, "each retry counts: {errors}");

    // A fresh gateway on the same Redis (and directory, so the same secret) restores all of it.
    tether.kill9();
    drop(tabs);
    tether.start_again();
    for (i, b) in browsers.iter_mut().enumerate() {
        let (_, tab) = reopen(b, &tether.base).await;
        let expected = if i == USERS - 1 { 10 } else { 6 + i as u64 };
        assert_eq!(slider(&tab), json!(expected), "user {i} after the outage");
        tab.close().await;
    }
}

/// SIGTERM with a tab open: the gateway drains within its grace period, leaves no worker
/// behind, and what was recorded just before is restored after the next start.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_keeps_the_last_change() {
    let dir = tempdir();
    let mut tether = Tether::start(dir.path(), &plain(), &["--workers", "2"]);
    let workers = tether.workers();
    assert_eq!(workers.len(), 2, "two worker processes");
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, APP).await;
    set_slider(&mut tab, 8).await;

    let sent = Instant::now();
    common::signal(tether.pid(), "TERM");
    let status = loop {
        if let Some(status) = tether.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(15),
            "tether still running 15 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = sent.elapsed();
    assert!(status.success(), "a drain is a clean exit: {status}");
    assert!(
        tab.recv_within(Duration::from_secs(5)).await.is_none(),
        "the open tab was closed"
    );
    for pid in workers {
        assert!(!common::alive(pid), "worker {pid} outlived the drain");
    }
    assert!(
        tether.wait_log("shutting down", Duration::from_secs(1)),
        "the drain is logged"
    );

    tether.start_again();
    let (_, tab) = reopen(&mut b, &tether.base).await;
    assert_eq!(
        slider(&tab),
        json!(8),
        "restored after the drain ({took:?})"
    );
    tab.close().await;
}

/// Resident bytes of process `pid`, or 0 once it is gone.
fn rss(pid: u32) -> u64 {
    tether::workers::resident_bytes(pid).unwrap_or(0)
}

/// Opens a tab of `memory_hog` as a new visitor would, and closes it.
async fn visit(base: &str) -> Browser {
    let mut b = Browser::new();
    b.open(base, "memory_hog").await.close().await;
    b
}

/// `--worker-memory`: live sessions are a cache. A flood of new visitors, each session
/// holding 16 MiB, is served with no 503 while the worker stays under its bound: the least
/// recently used idle sessions are dropped and the worker frees them, and a dropped user's
/// next visit restores their state.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_new_visitors_is_served_within_the_worker_memory_bound() {
    let hog = vec![app("tests/apps/memory_hog.py")];
    // What a session of this app costs this worker, measured without a bound.
    let dir = tempdir();
    let mut t = Tether::start(dir.path(), &hog, &[]);
    let pid = worker_pid(&t, 0);
    visit(&t.base).await;
    let one = rss(pid);
    for _ in 0..3 {
        visit(&t.base).await;
    }
    let per_session = (rss(pid) - one) / 3;
    t.stop();
    assert!(per_session >= 16 << 20, "{per_session} bytes a session");
    // Room for the first session and about five more.
    let bound = one + 5 * per_session + per_session / 2;
    let dir = tempdir();
    let t = Tether::start(dir.path(), &hog, &["--worker-memory", &bound.to_string()]);
    let pid = worker_pid(&t, 0);
    let mut first = Browser::new();
    let mut tab = first.open(&t.base, "memory_hog").await;
    let id = slider_id(&tab);
    tab.set(&id, "value", json!(7)).await;
    tab.wait_for("the div to show 7", |d| d.text().contains("value=7 "))
        .await;
    tab.close().await;
    // The worker's memory, read every 10 ms through the flood.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss(pid)));
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // 25 visitors, each of whom would hold 16 MiB for the hour of --live-ttl: 400 MiB.
    for _ in 0..25 {
        visit(&t.base).await;
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.await.unwrap();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "peak {} MiB of a bound of {} MiB, {} MiB a session",
        peak >> 20,
        bound >> 20,
        per_session >> 20
    );
    assert!(
        peak <= bound,
        "worker peaked at {} MiB over its bound of {} MiB",
        peak >> 20,
        bound >> 20
    );
    let m = metrics(&t).await;
    assert_eq!(metric(&m, "tether_sessions_refused_total"), 0.0);
    let evicted = metric(&m, "tether_sessions_evicted_total{reason=\"memory\"}");
    assert!(evicted >= 15.0, "{evicted} sessions dropped for memory");
    assert!(metric(&m, "tether_worker_memory_bytes{worker=\"0\"}") > 0.0);
    // The first visitor's session was the least recently used: it was dropped, and their
    // state comes back into a new one.
    let tab = first.open(&t.base, "memory_hog").await;
    assert_eq!(slider(&tab), json!(7));
    assert!(tab.doc.text().contains("value=7 "), "{}", tab.doc.text());
}
