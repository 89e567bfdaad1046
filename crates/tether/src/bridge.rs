//! The websocket bridge: checks that a browser's websocket belongs to its user, connects the
//! worker with a freshly minted token, restores the session if needed, then relays frames.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::identity;
use crate::proxy;
use crate::registry::Context;
use crate::restore::QuickAck;
use crate::server::{ConnectionPermit, Gateway};
use crate::tap::{Out, Tap};
use crate::token;

/// How often a quiet browser is pinged, so a dead one is noticed within the idle timeout.
const PING_EVERY: Duration = Duration::from_secs(30);

/// After closing a browser for bad input: how long, and how many bytes, to read and discard
/// what it still sends, so that closing the socket with unread data (which sends a reset)
/// does not destroy our close frame before the browser reads it.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 8 << 20;

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

/// True when the browser's `Origin` names the host it connected to. Browsers always send
/// `Origin` on websockets; a missing one is a non-browser client, which cross-site attacks
/// cannot use.
fn same_origin(headers: &http::HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
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

/// Handles `GET /<app>/ws` with an upgrade.
pub async fn accept(
    gw: Arc<Gateway>,
    app: String,
    mut req: Request<Body>,
    peer: SocketAddr,
) -> Response<Body> {
    let Some(user) = identity::from_headers(req.headers(), &gw.keys.cookie) else {
        return refuse(
            StatusCode::FORBIDDEN,
            "This connection has no tether identity; open the app's page first.",
        );
    };
    if !same_origin(req.headers()) {
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
    let Ok(tok) = token::parse_token(&gw.keys, &raw_token) else {
        return refuse(
            StatusCode::FORBIDDEN,
            "The session token is not valid here; reload the app's page.",
        );
    };
    if !token::session_belongs_to(&gw.keys, &tok.session_id, user.as_str(), &app) {
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
    let log = gw.states.log(&user, &app).await;
    let has_state = log
        .as_ref()
        .is_some_and(|l| !l.lock().expect("log lock").log.is_empty());
    let cx = Context {
        now: Instant::now(),
        generation: &|w| gw.generation(w),
        worker: gw.least_loaded(),
        has_state,
        may_wait: false,
    };
    let attach = gw.registry.connect(&tok.session_id, &user, &app, &cx);
    let session_id = tok.session_id.clone();
    let release = |gw: &Gateway| gw.registry.disconnect(&session_id, Instant::now());
    let port = gw.endpoint(attach.worker).port;
    if port == 0 {
        release(&gw);
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "The app is restarting; reload the page in a few seconds.",
        );
    }
    // Trap 1: the page may carry a token minted long ago. We checked it; the worker gets a fresh one.
    let expiry = now_epoch() + gw.config.token_lifetime.as_secs() as i64;
    let fresh = tok.refreshed(&gw.keys, expiry);
    let limits = gw.config.limits;
    let connecting = connect_worker(
        port,
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
            release(&gw);
            tracing::warn!(error = %e, port, "worker websocket failed");
            return refuse(
                StatusCode::BAD_GATEWAY,
                "The app's worker did not accept the connection; reload the page.",
            );
        }
    };
    // The connection's slot stays taken while the websocket lives.
    let permit = req.extensions_mut().remove::<ConnectionPermit>();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let tap = Tap::new(
        gw.clone(),
        user.clone(),
        app.clone(),
        tok.session_id.clone(),
        log,
        attach.restore,
    );
    let gw2 = gw.clone();
    tokio::spawn(async move {
        let mut closed_by_us = None;
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut browser = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(ws_config(limits.max_message_bytes, BROWSER_READ_BUFFER)),
                )
                .await;
                gw2.metrics.tab_opened();
                let ended = run(&mut browser, upstream, tap, limits.idle_timeout).await;
                gw2.metrics.tab_closed();
                if ended == Ended::ClosedByUs {
                    closed_by_us = Some(browser);
                }
            }
            Err(e) => tracing::debug!(error = %e, "browser upgrade failed"),
        }
        // The session is free for a reload at once; the socket's slot is held while lingering.
        gw2.registry.disconnect(&session_id, Instant::now());
        if let Some(mut browser) = closed_by_us {
            linger(browser.get_mut()).await;
        }
        drop(permit);
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

fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

type Upstream = WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl QuickAck for Upstream {
    fn quickack(&self) {
        #[cfg(target_os = "linux")]
        if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = self.get_ref() {
            let _ = socket2::SockRef::from(tcp).set_tcp_quickack(true);
        }
    }
}

async fn connect_worker(
    port: u16,
    app: &str,
    token: &str,
    browser_headers: &http::HeaderMap,
    peer: SocketAddr,
    max_message: usize,
) -> Result<Upstream, WsError> {
    let mut req = format!("ws://127.0.0.1:{port}/{app}/ws").into_client_request()?;
    let h = req.headers_mut();
    let proto = HeaderValue::from_str(&format!("bokeh, {token}"))
        .map_err(|e| WsError::HttpFormat(e.into()))?;
    h.insert(header::SEC_WEBSOCKET_PROTOCOL, proto);
    h.insert(
        header::ORIGIN,
        HeaderValue::from_str(&format!("http://127.0.0.1:{port}")).expect("ascii"),
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
    let (ws, _) = tokio_tungstenite::connect_async_with_config(
        req,
        Some(ws_config(max_message, WORKER_READ_BUFFER)),
        true,
    )
    .await?;
    Ok(ws)
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Either side went away, or closed normally.
    Closed,
    /// We closed the browser for bad input or silence, with a close frame it has yet to read.
    ClosedByUs,
}

/// Reads and discards what the browser still sends, for a bounded time and size (see
/// [`LINGER_TIME`]), so that our close frame reaches it before the socket is closed.
async fn linger(io: &mut (impl tokio::io::AsyncRead + Unpin)) {
    use tokio::io::AsyncReadExt;
    let deadline = Instant::now() + LINGER_TIME;
    let mut scratch = vec![0u8; 16 << 10];
    let mut total = 0;
    while total < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, io.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => break,
        }
    }
}

/// Restores if needed, then relays until either side closes.
///
/// Generic over the two sockets so that it can be driven by channels in tests.
pub async fn run<B, U>(
    browser: &mut B,
    mut upstream: U,
    mut tap: Tap,
    idle_timeout: Duration,
) -> Ended
where
    B: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
    U: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + QuickAck + Unpin,
{
    if tap.needs_restore() {
        if let Err(e) = tap.restore(&mut upstream, browser).await {
            tracing::debug!(error = %e, "browser went away during restore");
        }
    }
    let mut last_heard = Instant::now();
    let every = PING_EVERY
        .min(idle_timeout / 3)
        .max(Duration::from_millis(100));
    let mut ended = Ended::Closed;
    let mut ping = tokio::time::interval(every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = browser.next() => match msg {
                Some(Ok(m)) => {
                    last_heard = Instant::now();
                    if let Err(why) = tap.from_browser(&m) {
                        tracing::info!(%why, "closing a connection that sent a bad message");
                        close(browser, CloseCode::Protocol, "malformed Bokeh message").await;
                        ended = Ended::ClosedByUs;
                        break;
                    }
                    if is_control(&m) { continue; }
                    if upstream.send(m).await.is_err() { break; }
                }
                Some(Err(WsError::Capacity(e))) => {
                    tracing::info!(error = %e, "closing a connection whose message is over the size limit");
                    close(browser, CloseCode::Size, "message too big").await;
                    ended = Ended::ClosedByUs;
                    break;
                }
                _ => break,
            },
            msg = upstream.next() => match msg {
                Some(Ok(m)) => {
                    if is_control(&m) { continue; }
                    let out = tap.from_worker(m);
                    if matches!(out, Out::Hold) { upstream.quickack(); }
                    if let Out::Send(frames) = out {
                        let mut failed = false;
                        for f in frames {
                            if browser.feed(f).await.is_err() { failed = true; break; }
                        }
                        if failed || browser.flush().await.is_err() { break; }
                    }
                }
                _ => break,
            },
            _ = ping.tick() => {
                if last_heard.elapsed() >= idle_timeout {
                    tracing::info!(?idle_timeout, "closing a websocket whose browser stopped answering");
                    close(browser, CloseCode::Away, "idle").await;
                    ended = Ended::ClosedByUs;
                    break;
                }
                if browser.send(Message::Ping(Default::default())).await.is_err() { break; }
            }
        }
    }
    let _ = browser.close().await;
    let _ = upstream.close().await;
    ended
}

async fn close<B>(browser: &mut B, code: CloseCode, reason: &'static str)
where
    B: Sink<Message, Error = WsError> + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = browser.send(Message::Close(Some(frame))).await;
}

/// Pings and pongs are answered by each side's own socket; closes end the loop after relaying.
fn is_control(m: &Message) -> bool {
    matches!(m, Message::Ping(_) | Message::Pong(_) | Message::Frame(_))
}
