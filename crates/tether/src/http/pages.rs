//! App pages, the index, and everything else a worker serves.
//!
//! A page chooses the user's live session or a new one and pins the worker to it; the
//! session id goes to the worker in the query, never chosen by the client.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use tokio::time::Instant;

use super::{proxy, Http};
use crate::auth::{identity, token, UserId};
use crate::gateway::Gateway;
use crate::session::registry::Page;

/// How long a page waits for the user's connected session to be released by a reloading tab.
/// A real second tab pays this once; a reload saves a whole new session.
const RELOAD_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// The first path segment, and whether anything follows it.
pub(super) fn first_segment(path: &str) -> &str {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    trimmed.split_once('/').map_or(trimmed, |(a, _)| a)
}

/// True for a websocket upgrade request.
pub(super) fn is_upgrade(req: &Request<Body>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// `/{app}`, `/{app}/` and `/{app}/autoload.js`: a page for a GET of a served app, anything
/// else an asset. The autoload script, which `bokeh.embed.server_document` puts in another
/// page, makes a session as a page does, so an embedded app reattaches and restores as one.
pub async fn app(
    State(h): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response<Body> {
    match h.app_named_by(req.uri().path()) {
        Some(app) if req.method() == Method::GET && !is_upgrade(&req) => {
            page(&h, &app, req, peer).await
        }
        _ => forward_asset(&h, req, peer).await,
    }
}

/// `/`: the only app, or a list of them.
pub async fn index(
    State(h): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response<Body> {
    let apps = h.gw.apps();
    let prefix = h.prefix();
    // `panel serve --index APP` (after `--`) makes that app the landing page; another
    // `--index` (a template) or `--disable-index` is the worker's to answer.
    let args = &h.gw.config().panel_args;
    if let Some(index) = crate::workers::panel_option(args, "--index") {
        let stem = std::path::Path::new(index)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(index);
        if let Some(app) = h.gw.app(stem) {
            return redirect(&format!("{prefix}/{app}"));
        }
        return forward_asset(&h, req, peer).await;
    }
    if crate::workers::panel_option(args, "--disable-index").is_some() {
        return forward_asset(&h, req, peer).await;
    }
    if apps.len() == 1 {
        return redirect(&format!("{prefix}/{}", apps[0]));
    }
    let items: String = apps
        .iter()
        .map(|a| format!("<li><a href=\"{prefix}/{a}\">{a}</a></li>"))
        .collect();
    Response::builder()
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Body::from(format!(
            "<!doctype html><title>tether</title><h1>Apps</h1><ul>{items}</ul>"
        )))
        .expect("static response")
}

/// Everything that is not a page or a websocket: static files, autoload scripts, and so on.
pub async fn asset(
    State(h): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response<Body> {
    forward_asset(&h, req, peer).await
}

/// Forwards a request to the least-loaded worker, without any session id a client supplied.
pub(super) async fn forward_asset(
    h: &Http,
    req: Request<Body>,
    peer: SocketAddr,
) -> Response<Body> {
    let worker = h.gw.least_loaded();
    if !h.gw.endpoint(worker).up {
        return restarting();
    }
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    // Static assets never need a session id; drop any a client supplied.
    let (path, query) = pq
        .split_once('?')
        .map_or((pq.as_str(), None), |(p, q)| (p, Some(q)));
    let query = proxy::clean_query(query);
    // Under `--prefix`, Panel's pages link `<prefix>/favicon.ico`, but Panel serves it at
    // the root only, where a proxy on the sub-path never sends it.
    let path = match path.strip_prefix(h.prefix()) {
        Some("/favicon.ico") if !h.prefix().is_empty() => "/favicon.ico",
        _ => path,
    };
    let pq = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    proxy::forward(&h.client, req, h.gw.target(worker), &pq, peer, None).await
}

/// A new visitor past `--max-sessions`: refused, counted, and logged at most once per 10 s.
fn at_session_limit(gw: &Gateway) -> Response<Body> {
    gw.session_refused();
    proxy::plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "This app is serving as many sessions as it may; try again in a few minutes.",
    )
}

pub(super) fn restarting() -> Response<Body> {
    proxy::plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "The app is restarting; reload the page in a few seconds.",
    )
}

/// An app page: choose the user's live session or a new one, and pin the worker to it.
async fn page(h: &Http, app: &str, req: Request<Body>, peer: SocketAddr) -> Response<Body> {
    let gw = &h.gw;
    let login = h.login_user(req.headers());
    let user = h.user_of(req.headers()).unwrap_or_else(UserId::random);
    if let Some(id) = snapshot_in(req.uri().query()) {
        let https = proxy::is_https(req.headers());
        let link = Link {
            id: id.to_owned(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().unwrap_or("").to_owned(),
        };
        let cookie = login.is_none().then_some(https);
        return open_snapshot(h, app, &user, cookie, link).await;
    }
    // Another gateway sharing the store may have recorded newer changes: then no live session
    // here is current any more, and a fresh one is restored from the newer history.
    let synced = gw.states().sync(&user, app).await;
    let has_state = synced.as_ref().is_some_and(|s| s.has_state);
    if synced.as_ref().is_some_and(|s| s.changed_elsewhere) {
        gw.registry().history_changed(&user, app);
    }
    // A reload reaches us before the old tab's websocket has closed; give it a moment, so the
    // reload reattaches instead of starting (and restoring) yet another session.
    let waited_until = Instant::now() + RELOAD_WAIT;
    let choice = loop {
        // Taken before asking, so a release in between is seen.
        let mut releases = gw.registry().releases();
        let cx = gw.context(has_state, Instant::now() < waited_until);
        match gw.registry().page(&user, app, &cx, || {
            token::mint_session_id(gw.keys(), user.as_str(), app)
        }) {
            Page::Busy => {
                let _ = tokio::time::timeout_at(waited_until, releases.changed()).await;
            }
            other => break other,
        }
    };
    // A new session is memory to come on its worker until the worker has built it.
    let _building = gw.admit(&choice).await;
    let (session_id, worker, reattach) = match choice {
        Page::Reattach { session_id, worker } => (session_id, worker, true),
        Page::Fresh {
            session_id, worker, ..
        } => (session_id, worker, false),
        Page::Full => return at_session_limit(gw),
        Page::Busy => unreachable!("the loop above waits out Busy"),
    };
    if !gw.endpoint(worker).up {
        return restarting();
    }
    tracing::info!(user = %user, app, reattach, restore = has_state && !reattach, "page");
    gw.metrics().page(reattach);
    let query = proxy::clean_query(req.uri().query());
    let path = req.uri().path();
    let pq = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    let https = proxy::is_https(req.headers());
    let is_page = !path.ends_with("/autoload.js");
    // A listed page's `server_document(..., with_credentials=True)` fetches the script with
    // cookies, which a wildcard `Access-Control-Allow-Origin` (Bokeh's answer to a request
    // without cookies, as a first visit is) would make the browser refuse.
    let embedder = (!is_page)
        .then(|| req.headers().get(header::ORIGIN).cloned())
        .flatten()
        .filter(|_| super::origin_allowed(req.headers(), &gw.config().websocket_origins));
    let mut resp = proxy::forward(
        &h.client,
        req,
        h.gw.target(worker),
        &pq,
        peer,
        Some(&session_id),
    )
    .await;
    if let Some(origin) = embedder {
        let headers = resp.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if !reattach && resp.status() != StatusCode::OK {
        // A login redirect or an error: the worker made no session.
        gw.registry().discard(&session_id);
    }
    if is_page {
        resp = with_scripts(resp, h.prefix(), app, gw.config().controls).await;
    }
    // Set on every page, not only the first: an active user's year never runs out. Never to
    // a logged-in user's id: after logging out, the browser must not still be them.
    if login.is_none() {
        resp.headers_mut().append(
            header::SET_COOKIE,
            identity::set_cookie_header(&user, &gw.keys().cookie, https),
        );
    }
    resp
}

/// The script of `--controls`, run in the page.
const CONTROLS_JS: &str = include_str!("assets/controls.js");

/// The script that reloads the page when tether moves it to a new version of the app.
const RELOAD_JS: &str = include_str!("assets/reload.js");

/// Largest page tether adds its scripts to; a larger one (no app page is near it) is answered
/// with a 502 that says so.
const MAX_SCRIPTED_PAGE: usize = 8 << 20;

/// Adds tether's scripts to an app page: the reload script first in `<head>`, before Bokeh
/// opens its websocket, and with `--controls` the corner button's before `</body>`. Only to a
/// whole, uncompressed HTML page; anything else is passed on as the worker sent it.
async fn with_scripts(
    resp: Response<Body>,
    prefix: &str,
    app: &str,
    controls: bool,
) -> Response<Body> {
    let html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html"));
    if resp.status() != StatusCode::OK
        || !html
        || resp.headers().contains_key(header::CONTENT_ENCODING)
    {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_SCRIPTED_PAGE).await else {
        return proxy::plain(
            StatusCode::BAD_GATEWAY,
            "The app's page is too large for tether to pass on; make it smaller than 8 MiB.",
        );
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut page = String::with_capacity(text.len() + RELOAD_JS.len() + 256);
    // After `<head ...>`, else at the very start.
    let head = text
        .find("<head")
        .and_then(|at| text[at..].find('>').map(|end| at + end + 1))
        .unwrap_or(0);
    page.push_str(&text[..head]);
    page.push_str(&format!(
        "<script data-tether-prefix=\"{}\">{RELOAD_JS}</script>",
        attribute(prefix)
    ));
    let rest = &text[head..];
    if controls {
        let config = serde_json::json!({ "app": app, "prefix": prefix }).to_string();
        let script = format!(
            "<script data-tether=\"{}\">{CONTROLS_JS}</script>",
            attribute(&config)
        );
        let at = rest.rfind("</body>").unwrap_or(rest.len());
        page.push_str(&rest[..at]);
        page.push_str(&script);
        page.push_str(&rest[at..]);
    } else {
        page.push_str(rest);
    }
    // The worker's validators and length describe the page without the scripts.
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::ETAG);
    Response::from_parts(parts, Body::from(page))
}

/// `text` escaped for a double-quoted HTML attribute.
fn attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}

/// The `tether-snapshot=ID` of a shared link, if the query has one.
fn snapshot_in(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|p| p.strip_prefix("tether-snapshot="))
}

/// A shared link as requested: the snapshot's id, and the path and query it came with.
struct Link {
    id: String,
    path: String,
    query: String,
}

/// A shared link: the snapshot becomes the visitor's history of the app (a fresh session is
/// restored from it), then the app's own address, without the snapshot, so that a reload
/// keeps what the visitor did since. `cookie` is whether to set the identity cookie (and
/// whether it is `Secure`), as a page would.
async fn open_snapshot(
    h: &Http,
    app: &str,
    user: &UserId,
    cookie: Option<bool>,
    link: Link,
) -> Response<Body> {
    let gw = &h.gw;
    match gw.states().open_snapshot(&link.id, user, app).await {
        Ok(true) => {}
        Ok(false) => {
            return proxy::plain(
                StatusCode::NOT_FOUND,
                "This shared link has expired or is not for this app; ask whoever shared it for a new one.",
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot open a snapshot");
            return proxy::plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "The shared state cannot be read right now; try the link again in a minute.",
            );
        }
    }
    gw.registry().history_changed(user, app);
    tracing::info!(user = %user, app, "opened a shared snapshot");
    let rest: Vec<&str> = link
        .query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("tether-snapshot="))
        .collect();
    let mut resp = redirect(&if rest.is_empty() {
        link.path
    } else {
        format!("{}?{}", link.path, rest.join("&"))
    });
    if let Some(https) = cookie {
        resp.headers_mut().append(
            header::SET_COOKIE,
            identity::set_cookie_header(user, &gw.keys().cookie, https),
        );
    }
    resp
}

pub(super) fn redirect(to: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(
            header::LOCATION,
            HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/")),
        )
        .body(Body::empty())
        .expect("static response")
}
