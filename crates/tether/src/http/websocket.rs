//! The websocket handshake of `/{app}/ws`: checks that the browser's websocket belongs to
//! its user, connects the worker with a freshly minted token, and hands both sockets to the
//! session's relay.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

use super::pages::{forward_asset, is_upgrade};
use super::{proxy, Http};
use crate::auth::token;
use crate::gateway::ConnectionPermit;
use crate::session::budget::{Counted, Held};
use crate::session::recorder::{Handles, Recorder};
use crate::session::relay::{self, Ended};
use crate::session::restore::Plan;
use crate::session::wire::WorkerStream;
use crate::store::{Clock, SystemClock};
use crate::workers::Lease;
use crate::workers::WORKER_HOST;

/// Read buffer of a browser socket: browsers send small messages, and an idle tab should
/// cost little memory (the library's default is 128 KiB per socket).
const BROWSER_READ_BUFFER: usize = 4 << 10;
/// Read buffer of a worker socket, which carries the large patches.
const WORKER_READ_BUFFER: usize = 8 << 10;

fn ws_config(max_message: usize, read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .read_buffer_size(read_buffer)
}

fn refuse(status: StatusCode, why: &'static str) -> Response<Body> {
    tracing::info!(%status, why, "websocket refused");
    proxy::plain(status, why)
}

/// The `Origin` header's text, or "" when it has none or it is not text.
fn origin_text(headers: &http::HeaderMap) -> &str {
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The token from `Sec-WebSocket-Protocol: bokeh, <token>`.
fn bokeh_token(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(header::SEC_WEBSOCKET_PROTOCOL)?.to_str().ok()?;
    let mut parts = value.split(',').map(str::trim);
    match (parts.next(), parts.next(), parts.next()) {
        (Some("bokeh"), Some(token), None) if !token.is_empty() => Some(token.to_owned()),
        _ => None,
    }
}

/// `/{app}/ws`: an upgrade for a served app is a session websocket; anything else is an asset.
pub async fn app_ws(
    State(h): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response<Body> {
    match h.app_named_by(req.uri().path()) {
        Some(app) if is_upgrade(&req) => accept(&h, app, req, peer).await,
        _ => forward_asset(&h, req, peer).await,
    }
}

/// Handles `GET /<app>/ws` with an upgrade.
async fn accept(h: &Http, app: String, mut req: Request<Body>, peer: SocketAddr) -> Response<Body> {
    let gw = &h.gw;
    let keys = gw.keys();
    let Some(user) = h.user_of(req.headers()) else {
        let origin = origin_text(req.headers());
        if !origin.is_empty() && !super::is_own_origin(req.headers(), origin) {
            return refuse(
                StatusCode::FORBIDDEN,
                "An embedded app's websocket came without tether's cookie; embed it with server_document(url, with_credentials=True).",
            );
        }
        return refuse(
            StatusCode::FORBIDDEN,
            "This connection has no tether identity; open the app's page first.",
        );
    };
    if !super::origin_allowed(req.headers(), &gw.config().websocket_origins) {
        return refuse(
            StatusCode::FORBIDDEN,
            "Cross-site websocket refused; open the app from its own address.",
        );
    }
    let Some(raw_token) = bokeh_token(req.headers()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "The websocket lacks a Bokeh session token; open the app's page first.",
        );
    };
    let Ok(tok) = token::parse_token(keys, &raw_token) else {
        return refuse(
            StatusCode::FORBIDDEN,
            "The session token is not valid here; reload the app's page.",
        );
    };
    if !token::session_belongs_to(keys, &tok.session_id, user.as_str(), &app) {
        return refuse(
            StatusCode::FORBIDDEN,
            "This session belongs to another user or app; open the app's page to get your own.",
        );
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "The websocket handshake is incomplete; use a browser.",
        );
    };
    // One load serves both the restore decision and the recording.
    let log = gw.states().log(&user, &app).await;
    let has_state = log.as_ref().is_some_and(|l| !l.is_empty());
    let session_id = tok.session_id.clone();
    let registry = gw.registry().clone();
    let release = || registry.disconnect(&session_id, Instant::now());
    // The worker's process is held before its generation can move on; a reload between the
    // registry's answer and the hold makes the registry answer again, for the new process
    // (which then restores the session), so a fresh process never serves it unrestored.
    let mut attached = None;
    for _ in 0..3 {
        let attach =
            gw.registry()
                .connect(&tok.session_id, &user, &app, &gw.context(has_state, false));
        let lease = gw.lease(attach.worker);
        if lease
            .as_ref()
            .is_some_and(|l| l.target().generation != attach.generation)
        {
            release();
            continue;
        }
        attached = Some((attach, lease));
        break;
    }
    let Some((attach, Some(mut lease))) = attached else {
        if attached.is_some() {
            release();
        }
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "The app is restarting; reload the page in a few seconds.",
        );
    };
    if !gw.endpoint(attach.worker).up {
        release();
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "The app is restarting; reload the page in a few seconds.",
        );
    }
    // The page may carry a token minted long ago, which the worker would refuse as expired
    // (bokeh#14416). We checked it; the worker gets a fresh one.
    let config = gw.config();
    let expiry = SystemClock.now_millis() / 1000 + config.token_lifetime.as_secs() as i64;
    let fresh = tok.refreshed(keys, expiry);
    let limits = config.limits;
    let connecting = connect_worker(
        lease.socket(),
        &config.prefix,
        &app,
        &fresh,
        req.headers(),
        peer,
        limits.max_message_bytes,
    );
    let upstream = match tokio::time::timeout(limits.handshake_timeout, connecting)
        .await
        .unwrap_or(Err(WsError::Io(std::io::ErrorKind::TimedOut.into())))
    {
        Ok(ws) => ws,
        Err(e) => {
            release();
            tracing::warn!(error = %e, worker = attach.worker, "worker websocket failed");
            return refuse(
                StatusCode::BAD_GATEWAY,
                "The app's worker did not accept the connection; reload the page.",
            );
        }
    };
    // The connection's slot stays taken while the websocket lives.
    let permit = req.extensions_mut().remove::<ConnectionPermit>();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let restore = (attach.restore && log.is_some()).then_some(Plan {
        bound: config.replay_timeout,
        events_wait_for_changes: !gw.versions().queues_events_behind_changes(),
    });
    let handles = Handles {
        states: gw.states().clone(),
        registry: gw.registry().clone(),
        metrics: gw.metrics().clone(),
    };
    let recorder = Recorder::new(
        user,
        app,
        session_id.clone(),
        log,
        handles,
        limits.message(),
    );
    let worker = WorkerStream::new(upstream, limits.message());
    let metrics = gw.metrics().clone();
    let held = Held::new(gw.budget().clone());
    let failures = gw
        .reloader()
        .filter(|_| gw.config().dev)
        .map(|r| r.failures());
    tokio::spawn(async move {
        let mut closed_by_us = None;
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut browser = WebSocketStream::from_raw_socket(
                    Counted::new(TokioIo::new(upgraded), held.clone()),
                    Role::Server,
                    Some(ws_config(limits.max_message_bytes, BROWSER_READ_BUFFER)),
                )
                .await;
                metrics.tab_opened();
                let ended = relay::run(
                    &mut browser,
                    worker,
                    recorder,
                    restore,
                    limits.idle_timeout,
                    Some(&held),
                    until_moved(&mut lease, failures),
                )
                .await;
                held.release();
                metrics.tab_closed();
                if ended == Ended::ClosedByUs {
                    closed_by_us = Some(browser);
                }
            }
            Err(e) => tracing::debug!(error = %e, "browser upgrade failed"),
        }
        // The session is free for a reload at once; the socket's slot is held while lingering.
        registry.disconnect(&session_id, Instant::now());
        if let Some(mut browser) = closed_by_us {
            // Straight from the socket: what is discarded is not held.
            relay::linger(browser.get_mut().get_mut()).await;
        }
        drop(permit);
        drop(lease);
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, "bokeh")
        .body(Body::empty())
        .expect("static response")
}

/// Resolves with the close code that moves the tab: [`relay::RELOAD_CODE`] when its worker's
/// generation must move, or in `--dev` [`relay::FAILED_CODE`] while the app's newest version
/// failed to start.
async fn until_moved(
    lease: &mut Lease,
    failures: Option<tokio::sync::watch::Receiver<Option<String>>>,
) -> u16 {
    let failed = async {
        let failed = match failures {
            Some(mut f) => f.wait_for(Option::is_some).await.is_ok(),
            None => false,
        };
        if !failed {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = lease.moved() => relay::RELOAD_CODE,
        _ = failed => relay::FAILED_CODE,
    }
}

/// The gateway's websocket to a worker, over its Unix socket.
type Upstream = WebSocketStream<tokio::net::UnixStream>;

/// Opens the worker's websocket for `app` with a token the gateway minted, forwarding the
/// browser's address, agent and (identity-free) cookies as a direct connection has them.
async fn connect_worker(
    socket: &std::path::Path,
    prefix: &str,
    app: &str,
    token: &str,
    browser_headers: &http::HeaderMap,
    peer: SocketAddr,
    max_message: usize,
) -> Result<Upstream, WsError> {
    let mut req = format!("ws://{WORKER_HOST}{prefix}/{app}/ws").into_client_request()?;
    let h = req.headers_mut();
    let proto = HeaderValue::from_str(&format!("bokeh, {token}"))
        .map_err(|e| WsError::HttpFormat(e.into()))?;
    h.insert(header::SEC_WEBSOCKET_PROTOCOL, proto);
    h.insert(
        header::ORIGIN,
        HeaderValue::from_str(&format!("http://{WORKER_HOST}")).expect("ascii"),
    );
    let mut forwarded = browser_headers.clone();
    proxy::upstream_headers(&mut forwarded, peer);
    for name in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-real-ip",
        "user-agent",
        "cookie",
    ] {
        if let Some(v) = forwarded.get(name) {
            h.insert(name, v.clone());
        }
    }
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        req,
        stream,
        Some(ws_config(max_message, WORKER_READ_BUFFER)),
    )
    .await?;
    Ok(ws)
}
