//! The router without sockets: requests go straight into `router(gateway)`, over a gateway
//! whose one worker slot is restarting, so every answer is the gateway's own.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::watch;
use tower::ServiceExt;

use super::router;
use crate::auth::Secret;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::state::States;
use crate::workers::{Endpoint, Slot, Workers};

/// A gateway serving one app, `app`, whose only worker is restarting.
async fn gateway(dir: &tempfile::TempDir) -> Arc<Gateway> {
    let mut config = Config::new(Vec::new());
    config.state_url = format!("sqlite:{}", dir.path().join("state.db").display());
    let states = States::open(&config).await.unwrap();
    let (_tx, rx) = watch::channel(Endpoint {
        up: false,
        generation: 1,
        moving: 0,
    });
    let slot = Slot {
        endpoint: rx,
        connections: Default::default(),
        commands: tokio::sync::mpsc::channel(1).0,
    };
    let keys = Secret::from_bytes(&[3u8; 32]).keys();
    Arc::new(Gateway::new(
        keys,
        config,
        vec!["app".into()],
        Workers::new(vec![slot], dir.path().to_owned()),
        states,
        Default::default(),
    ))
}

fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        b = b.header("host", "localhost:5006");
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(Body::empty()).unwrap();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    req
}

async fn send(gw: &Arc<Gateway>, req: Request<Body>) -> (StatusCode, String, Response<()>) {
    let resp = router(gw.clone()).oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let text = String::from_utf8_lossy(&body.collect().await.unwrap().to_bytes()).into_owned();
    (parts.status, text, Response::from_parts(parts, ()))
}

async fn get(gw: &Arc<Gateway>, uri: &str) -> (StatusCode, String, Response<()>) {
    send(gw, request(Method::GET, uri, &[])).await
}

#[tokio::test]
async fn tethers_own_endpoints_answer_for_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&dir).await;
    let (status, text, _) = get(&gw, "/.tether/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("No worker is ready"), "{text}");
    let (status, text, _) = get(&gw, "/.tether/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("tether_live_sessions 0"), "{text}");
    assert!(text.contains("tether_worker_up{worker=\"0\"} 0"), "{text}");
    let (status, text, _) = get(&gw, "/.tether/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(text.contains("No such tether endpoint"), "{text}");
}

#[tokio::test]
async fn the_index_sends_to_the_only_app_and_forget_to_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&dir).await;
    let (status, _, resp) = get(&gw, "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[header::LOCATION], "/app");
    let (status, _, resp) = get(&gw, "/.tether/forget?app=app").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[header::LOCATION], "/app");
    let (status, _, resp) = get(&gw, "/.tether/forget?app=other").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[header::LOCATION], "/");
    let cross = request(
        Method::GET,
        "/.tether/forget?app=app",
        &[("sec-fetch-site", "cross-site")],
    );
    assert_eq!(send(&gw, cross).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn only_a_get_of_an_app_makes_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&dir).await;
    // Anything else goes to a worker as it is: here, the restarting one.
    for (method, uri) in [
        (Method::POST, "/app"),
        (Method::GET, "/static/js/bokeh.min.js"),
        (Method::GET, "/other"),
        (Method::GET, "/app/ws"),
    ] {
        let (status, text, _) = send(&gw, request(method, uri, &[])).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(text.contains("restarting"), "{uri}: {text}");
        assert_eq!(gw.registry().counts().0, 0, "{uri} made no session");
    }
    for uri in ["/app", "/app/"] {
        let (status, text, _) = get(&gw, uri).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(text.contains("restarting"), "{uri}: {text}");
    }
    assert_eq!(gw.registry().counts().0, 2, "each page made its session");
}

#[tokio::test]
async fn a_websocket_needs_an_identity_and_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&dir).await;
    let upgrade = [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];
    let (status, text, _) = send(&gw, request(Method::GET, "/app/ws", &upgrade)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(text.contains("no tether identity"), "{text}");
}

#[tokio::test]
async fn a_host_the_gateway_does_not_serve_is_refused_but_health_answers() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&dir).await;
    for (uri, headers) in [
        ("/app", vec![("host", "rebound.example:5006")]),
        ("/app/ws", vec![("host", "rebound.example")]),
        ("/static/x.js", vec![("host", "rebound.example")]),
        (
            "/app",
            vec![
                ("host", "localhost"),
                ("x-forwarded-host", "rebound.example"),
            ],
        ),
    ] {
        let (status, text, _) = send(&gw, request(Method::GET, uri, &headers)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri} {headers:?}");
        assert!(text.contains("--allow-host rebound.example"), "{text}");
    }
    assert_eq!(gw.registry().counts().0, 0, "no session was made");
    let health = request(Method::GET, "/.tether/health", &[("host", "10.1.2.3")]);
    assert_eq!(
        send(&gw, health).await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "answered"
    );
}

#[tokio::test]
async fn forget_refuses_other_methods_and_other_origins_with_or_without_fetch_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&dir).await;
    let forget = "/.tether/forget?app=app";
    for method in [Method::DELETE, Method::PUT, Method::HEAD] {
        let (status, _, _) = send(&gw, request(method.clone(), forget, &[])).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    for headers in [
        vec![("origin", "http://evil.example")],
        vec![("referer", "http://evil.example/page")],
        vec![("origin", "https://localhost:5006")],
        vec![("sec-fetch-site", "same-site")],
    ] {
        let (status, _, _) = send(&gw, request(Method::POST, forget, &headers)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}");
    }
    for headers in [
        vec![("origin", "http://localhost:5006")],
        vec![("referer", "http://localhost:5006/app?x=1")],
        vec![("sec-fetch-site", "same-origin")],
        vec![],
    ] {
        let (status, _, _) = send(&gw, request(Method::POST, forget, &headers)).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{headers:?}");
    }
}

#[tokio::test]
async fn a_websocket_from_another_scheme_or_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&dir).await;
    let user = crate::auth::UserId::random();
    let cookie = crate::auth::identity::set_cookie_header(&user, &gw.keys().cookie, false);
    let cookie = cookie
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    for origin in [
        "https://localhost:5006",
        "http://evil.example",
        "http://localhost:5007",
    ] {
        let headers = [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("cookie", cookie.as_str()),
            ("origin", origin),
        ];
        let (status, text, _) = send(&gw, request(Method::GET, "/app/ws", &headers)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin}");
        assert!(text.contains("Cross-site"), "{origin}: {text}");
    }
}

#[test]
fn listed_origins_match_as_panel_serve_matches_them() {
    use super::listed_origin;
    let allowed = vec!["localhost:8000".to_owned(), "Docs.Example.com".to_owned()];
    assert!(listed_origin("http://localhost:8000", &allowed));
    assert!(listed_origin("http://LOCALHOST:8000/", &allowed));
    assert!(!listed_origin("http://localhost:8001", &allowed));
    assert!(!listed_origin("http://localhost", &allowed));
    // No port: the scheme's default one.
    assert!(listed_origin("https://docs.example.com", &allowed));
    assert!(listed_origin("http://docs.example.com:80", &allowed));
    assert!(!listed_origin("https://docs.example.com:8443", &allowed));
    assert!(!listed_origin("https://evil.example.com", &allowed));
    assert!(!listed_origin("null", &allowed));
    let v6 = vec!["[::1]:8000".to_owned()];
    assert!(listed_origin("http://[::1]:8000", &v6));
    assert!(!listed_origin("http://[::1]", &v6));
    assert!(listed_origin("http://anything:1", &["*".to_owned()]));
    assert!(!listed_origin("http://localhost:8000", &[]));
}
