//! Live reattach through a real gateway and real Panel workers: the first visit's cookie,
//! reopening a tab onto the same live document, and the ways others must not get in.

mod common;

use std::time::Duration;

use common::{app, tempdir, Browser, Tab, Tether};
use serde_json::json;

/// Selects rows of the catalog and clicks Plot, waiting until the plot is drawn.
async fn select_and_plot(tab: &mut Tab, rows: &[u64], expect_title: &str) {
    let selection = tab.doc.of_type("Selection")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tab.set(&selection, "indices", json!(rows)).await;
    tab.pause().await;
    let button = tab.doc.id_of("Button", "label", "Plot");
    tab.click(&button).await;
    tab.wait_for("the plot", |d| d.titles().iter().any(|t| t == expect_title))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reattach_and_isolation() {
    let dir = tempdir();
    let tether = Tether::start(dir.path(), &[app("examples/catalog.py")], &[]);

    // 1. First visit sets a signed, HttpOnly, SameSite=Lax identity cookie.
    let mut alice = Browser::new();
    let mut tab = alice.open(&tether.base, "catalog").await;
    let set = alice
        .last_set_cookie
        .clone()
        .expect("first visit sets a cookie");
    assert!(set.starts_with("tether_id="), "{set}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=31536000"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(
        !set.contains("Secure"),
        "plain http gets no Secure flag: {set}"
    );
    let first_session = tab.session_id.clone();

    // 2. Select rows and plot.
    select_and_plot(&mut tab, &[0, 2], "alpha, gamma").await;

    // 3. Close and reopen: the same live session, with selection and plot intact.
    tab.close().await;
    let page = alice.get(&tether.url("/catalog"), &[]).await;
    assert!(
        alice.last_set_cookie.as_deref() == Some(set.as_str()),
        "no new cookie on return"
    );
    assert_eq!(page.session_id(), first_session, "reopen reattaches");
    let mut tab = Tab::connect(
        &tether.base,
        "catalog",
        page.token.as_deref().unwrap(),
        alice.cookie.as_deref(),
    )
    .await
    .unwrap()
    .ready()
    .await;
    assert_eq!(tab.doc.selection(), json!([0, 2]));
    assert!(
        tab.doc.titles().contains(&"alpha, gamma".to_owned()),
        "plot intact: {:?}",
        tab.doc.titles()
    );

    // A second concurrent tab of the same user gets its own session.
    let mut second = alice.open(&tether.base, "catalog").await;
    assert_ne!(second.session_id, first_session);

    // 5. Another browser gets its own identity and default state; its changes stay its own.
    let mut bob = Browser::new();
    let mut bob_tab = bob.open(&tether.base, "catalog").await;
    assert_ne!(bob.cookie, alice.cookie);
    assert_ne!(bob_tab.session_id, first_session);
    let fresh = bob_tab.doc.selection();
    assert!(
        fresh.is_null() || fresh == json!([]),
        "default selection, got {fresh}"
    );
    assert!(bob_tab.doc.titles().iter().all(|t| t != "alpha, gamma"));
    select_and_plot(&mut bob_tab, &[1], "beta").await;
    second.settle().await;
    tab.settle().await;
    assert_eq!(
        tab.doc.selection(),
        json!([0, 2]),
        "bob's change does not reach alice"
    );

    // A client-chosen session id is ignored, in the query and in the header.
    let stolen = first_session.clone();
    let mut mallory = Browser::new();
    let p = mallory
        .get(
            &tether.url(&format!("/catalog?bokeh-session-id={stolen}")),
            &[],
        )
        .await;
    assert_eq!(p.status, 200);
    assert_ne!(p.session_id(), stolen);
    let p = mallory
        .get(
            &tether.url("/catalog"),
            &[("Bokeh-Session-Id", stolen.as_str())],
        )
        .await;
    assert_ne!(p.session_id(), stolen);

    // A stolen token is refused with another user's cookie, and with none.
    let refused = Tab::connect(
        &tether.base,
        "catalog",
        &tab.token,
        mallory.cookie.as_deref(),
    )
    .await;
    assert_eq!(refused.err().as_deref(), Some("403"));
    let refused = Tab::connect(&tether.base, "catalog", &tab.token, None).await;
    assert_eq!(refused.err().as_deref(), Some("403"));
    // A cross-site page cannot open a user's websocket, even with their cookie.
    let refused = Tab::connect_with(
        &tether.base,
        "catalog",
        &tab.token,
        alice.cookie.as_deref(),
        Some("http://evil.example"),
    )
    .await;
    assert_eq!(refused.err().as_deref(), Some("403"));

    // A forged or tampered cookie is a new identity, never someone else's.
    let mut forger = Browser::new();
    let tampered = alice
        .cookie
        .clone()
        .unwrap()
        .replacen("tether_id=", "tether_id=AAAA", 1);
    forger.cookie = Some(tampered.clone());
    let p = forger.get(&tether.url("/catalog"), &[]).await;
    assert_ne!(
        forger.cookie.as_deref(),
        Some(tampered.as_str()),
        "a new cookie replaces it"
    );
    assert_ne!(p.session_id(), first_session);
    bob_tab.close().await;
    second.close().await;
    tab.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_cookie_never_reaches_the_app() {
    let dir = tempdir();
    let tether = Tether::start(dir.path(), &[app("tests/apps/request_echo.py")], &[]);
    let mut b = Browser::new();
    b.cookie = Some("theme=dark".into());
    let first = b.get(&tether.url("/request_echo"), &[]).await;
    assert_eq!(first.status, 200);
    // Now with the identity and another cookie, as a returning browser sends them.
    b.cookie = Some(format!("{}; theme=dark", b.cookie.clone().unwrap()));
    let mut tab = b.open(&tether.base, "request_echo").await;
    let text = tab.doc.text();
    assert!(
        text.contains("cookies: theme"),
        "the app sees other cookies: {text}"
    );
    assert!(
        !text.contains("tether_id"),
        "the identity cookie reached the app"
    );
    let value = b
        .cookie
        .as_deref()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    assert!(!first.html.contains(&value) && !text.contains(&value));
    tab.settle().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reattach_after_the_original_token_expired() {
    let dir = tempdir();
    // The worker's own tokens expire after 2 s; the page of a reattach carries the original.
    let tether = Tether::start(
        dir.path(),
        &[app("tests/apps/widgets.py")],
        &["--", "--session-token-expiration", "2"],
    );
    let mut b = Browser::new();
    let mut tab = b.open(&tether.base, "widgets").await;
    let slider = tab.doc.id_of("Slider", "title", "int_slider");
    tab.set(&slider, "value", json!(7)).await;
    tab.settle().await;
    let session = tab.session_id.clone();
    tab.close().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut tab = b.open(&tether.base, "widgets").await;
    assert_eq!(tab.session_id, session, "reattached");
    assert_eq!(
        tab.doc.attr(&slider, "value"),
        json!(7),
        "the stale page token still works"
    );
    tab.settle().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_worker_outlives_a_killed_gateway() {
    let dir = tempdir();
    let mut tether = Tether::start(
        dir.path(),
        &[app("tests/apps/widgets.py")],
        &["--workers", "2"],
    );
    let workers = tether.workers();
    assert_eq!(workers.len(), 2, "two worker processes");
    tether.kill9();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while workers.iter().any(|&p| common::alive(p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "workers {workers:?} outlived tether"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn clear_errors_for_user_mistakes() {
    let dir = tempdir();
    // A Python without Panel.
    let venv = dir.path().join("bare");
    let ok = std::process::Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(ok.success());
    let catalog = app("examples/catalog.py").display().to_string();
    let bare = venv.join("bin/python").display().to_string();
    let (code, err) = Tether::fail(dir.path(), &[&catalog, "--python", &bare]);
    assert_ne!(code, 0);
    assert!(
        err.contains("has no Panel") && err.contains("pip install"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");

    // A missing app.
    let (code, err) = Tether::fail(dir.path(), &["nope.py"]);
    assert_ne!(code, 0);
    assert!(err.contains("nope.py does not exist"), "{err}");

    // A panel serve option that would undo what tether sets on its workers.
    let (code, err) = Tether::fail(dir.path(), &[&catalog, "--", "--num-procs", "2"]);
    assert_ne!(code, 0);
    assert!(err.contains("use tether's --workers"), "{err}");
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");

    // An app with a syntax error.
    let bad = dir.path().join("broken.py");
    std::fs::write(&bad, "import panel as pn\ndef f(:\n").unwrap();
    let (code, err) = Tether::fail(dir.path(), &[bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("syntax error at line 2"), "{err}");
    assert!(!err.contains("Fatal Python error"), "a clean exit: {err}");

    // TLS files that are not a certificate and key, and the flags of panel serve given to it.
    let not_pem = dir.path().join("cert.txt");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let not_pem = not_pem.display().to_string();
    let (code, err) = Tether::fail(
        dir.path(),
        &[
            &catalog,
            "--ssl-certfile",
            &not_pem,
            "--ssl-keyfile",
            &not_pem,
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("holds no PEM certificate"), "{err}");
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");
    let (code, err) = Tether::fail(dir.path(), &[&catalog, "--", "--ssl-certfile", &not_pem]);
    assert_ne!(code, 0);
    assert!(err.contains("tether's own --ssl-certfile"), "{err}");

    // A duration that is not one.
    let (code, err) = Tether::fail(dir.path(), &[&catalog, "--live-ttl", "forever"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("\"forever\" is not a duration") && err.contains("30m"),
        "{err}"
    );
}

/// An exception in the app shows in the terminal at the default log level, with what
/// Panel prints of its traceback, as under `panel serve`.
#[tokio::test(flavor = "multi_thread")]
async fn an_app_error_shows_its_traceback_at_the_default_level() {
    let dir = tempdir();
    let broken = dir.path().join("broken.py");
    std::fs::write(
        &broken,
        "import panel as pn\n\ndef load():\n    raise RuntimeError('boom-at-import')\n\nload()\n",
    )
    .unwrap();
    let tether =
        Tether::start_with_env(dir.path(), &[broken], &[], &[("TETHER_LOG", "tether=info")]);
    let _ = common::bokeh::http_get(&tether.url("/broken"), &[]).await;
    assert!(
        tether.wait_log("RuntimeError: boom-at-import", Duration::from_secs(10)),
        "{}",
        tether.stderr()
    );
    let log = tether.stderr();
    assert!(log.contains("Traceback (most recent call last)"), "{log}");
    assert!(
        log.contains("raise RuntimeError('boom-at-import')"),
        "the failing line, as panel serve prints it: {log}"
    );
}

/// `tether.toml` in the working directory sets what the command line and the environment
/// leave unset: here the apps and a prefix, while its port loses to `--port 0` and its
/// python to `TETHER_PYTHON`.
#[tokio::test(flavor = "multi_thread")]
async fn a_config_file_fills_in_what_the_command_line_leaves_unset() {
    let dir = tempdir();
    let plain = app("tests/apps/plain_bokeh.py");
    std::fs::write(
        dir.path().join("tether.toml"),
        format!(
            "apps = [{:?}]\nprefix = \"/dash\"\nport = 9\npython = \"/nonexistent/python\"\n",
            plain.display().to_string()
        ),
    )
    .unwrap();
    let tether = Tether::start(dir.path(), &[], &[]);
    assert!(
        !tether.base.ends_with(":9"),
        "the command line's --port 0 wins"
    );
    let mut b = Browser::new();
    let tab = b
        .open(&format!("{}/dash", tether.base), "plain_bokeh")
        .await;
    assert!(!tab.doc.of_type("Slider").is_empty());
    // A key that is no flag stops tether with one sentence naming it.
    std::fs::write(dir.path().join("bad.toml"), "prot = 5006\n").unwrap();
    let (code, err) = Tether::fail(dir.path(), &["--config", "bad.toml"]);
    assert_ne!(code, 0);
    assert!(err.contains("bad.toml: unknown key `prot`"), "{err}");
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");
}

/// App patterns as `panel serve --glob` takes them, and `--index APP` after `--` as the
/// landing page.
#[tokio::test(flavor = "multi_thread")]
async fn app_patterns_and_the_index_option_work_as_under_panel_serve() {
    let dir = tempdir();
    let tether = Tether::start(
        dir.path(),
        &[app("tests/apps/plain_*.py"), app("tests/apps/widgets.py")],
        &["--", "--index", "widgets"],
    );
    let (status, headers, _) = common::bokeh::http_get(&tether.url("/"), &[]).await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/widgets");
    let mut b = Browser::new();
    let tab = b.open(&tether.base, "plain_bokeh").await;
    assert!(
        !tab.doc.of_type("Slider").is_empty(),
        "the pattern's match is served"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_bound_to_their_app_not_to_a_user_agent() {
    let dir = tempdir();
    let tether = Tether::start(
        dir.path(),
        &[
            app("tests/apps/plain_bokeh.py"),
            app("tests/apps/widgets.py"),
        ],
        &[],
    );
    // `/` lists both apps.
    let (status, _, index) = common::bokeh::http_get(&tether.url("/"), &[]).await;
    assert_eq!(status, 200);
    assert!(index.contains("/plain_bokeh") && index.contains("/widgets"));

    let mut alice = Browser::new();
    let tab = alice
        .get(&tether.url("/plain_bokeh"), &[("user-agent", "Firefox/1")])
        .await;
    let token = tab.token.clone().unwrap();
    // The owner's own token is refused on another app's websocket.
    let other = Tab::connect(&tether.base, "widgets", &token, alice.cookie.as_deref()).await;
    assert_eq!(other.err().as_deref(), Some("403"));
    // Documented behaviour: the cookie is the credential, not the browser's User-Agent. The
    // same cookie from another User-Agent is the same user (SECURITY.md explains why).
    let cookie_before = alice.cookie.clone();
    let page = alice
        .get(&tether.url("/plain_bokeh"), &[("user-agent", "Chrome/2")])
        .await;
    assert_eq!(page.status, 200);
    assert_eq!(
        alice.cookie, cookie_before,
        "no new identity, only the same one renewed"
    );
    let tab = Tab::connect(
        &tether.base,
        "plain_bokeh",
        page.token.as_deref().unwrap(),
        alice.cookie.as_deref(),
    )
    .await
    .expect("the cookie's owner connects")
    .ready()
    .await;
    assert!(!tab.doc.of_type("Slider").is_empty());
    tab.close().await;
}

/// Workers listen on Unix sockets in a directory only the gateway's user may enter: another
/// local user's process cannot reach one, page token or not, and no worker has a TCP port.
/// (Run as root, as `make test` is, to have another user to try it as.)
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_is_reachable_by_the_gateway_alone() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempdir();
    let tether = Tether::start(dir.path(), &[app("tests/apps/plain_bokeh.py")], &[]);
    let mut b = Browser::new();
    let tab = b.open(&tether.base, "plain_bokeh").await;
    assert!(
        !tab.doc.of_type("Slider").is_empty(),
        "the gateway reaches it"
    );
    let worker = tether.workers()[0];
    let cmdline = std::fs::read(format!("/proc/{worker}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert!(!args.iter().any(|a| a == "--port"), "{args:?}");
    let socket = args
        .iter()
        .skip_while(|a| *a != "--unix-socket")
        .nth(1)
        .expect("a worker socket")
        .clone();
    let socket = std::path::Path::new(&socket);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(socket.parent().unwrap()), 0o700);
    assert_eq!(mode(socket), 0o600);
    let me = std::fs::metadata(socket).unwrap().uid();
    assert_eq!(me, current_uid(), "owned by the gateway's user");
    // Another user (nobody) tries to connect, as a local attacker with a stolen token would.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(common::python())
        .args([
            "-c",
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect(sys.argv[1]); print('connected')\nexcept OSError as e:\n print(type(e).__name__)",
        ])
        .arg(socket)
        .output()
        .expect("setpriv runs (the test needs root)");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.trim(),
        "PermissionError",
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// This process's user id, from /proc (no libc call needed in a test).
fn current_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
