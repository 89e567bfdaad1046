//! The HTTP face of the gateway: [`router`] maps every request to its handler, and the
//! handlers live beside it: app pages and everything else a worker serves ([`pages`]),
//! the websocket handshake ([`websocket`]), tether's own endpoints ([`ops`]), and the
//! reverse proxy to the workers ([`proxy`]).
//!
//! The router is a plain function of the gateway, so it is tested without sockets.

pub mod ops;
pub mod pages;
pub mod proxy;
pub mod websocket;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::middleware::Next;
use axum::routing::any;
use axum::Router;
use http::{header, Request, Response, StatusCode};

use crate::gateway::Gateway;

/// What every handler gets: the gateway, and the pooled HTTP client to its workers.
#[derive(Clone)]
pub struct Http {
    /// Keys, registry, workers, histories, metrics.
    pub gw: Arc<Gateway>,
    /// Pooled HTTP/1 client to the workers.
    pub client: proxy::UpstreamClient,
}

/// Every route of the gateway.
///
/// All of them under `--prefix` when one is given:
/// - `/` lists the apps (or redirects to the only one);
/// - `/.tether/health`, `/.tether/metrics`, `/.tether/forget` and `/.tether/share` are
///   tether's own;
/// - `/{app}` (and `/{app}/`) is an app page, `/{app}/ws` its websocket, and
///   `/{app}/autoload.js` the script of an embedded app, which makes a session as a page does;
/// - anything else (static files, other methods on an app's path) is
///   forwarded to a worker as it is.
pub fn router(gw: Arc<Gateway>) -> Router {
    let state = Http {
        client: proxy::client(gw.socket_dir()),
        gw,
    };
    let prefix = state.gw.config().prefix.clone();
    let at = |path: &str| format!("{prefix}{path}");
    let mut routes = Router::new();
    if !prefix.is_empty() {
        routes = routes.route(&prefix, any(pages::index));
    }
    routes
        .route(&at("/"), any(pages::index))
        .route(&at("/.tether/health"), any(ops::health))
        .route(&at("/.tether/metrics"), any(ops::metrics))
        .route(&at("/.tether/forget"), any(ops::forget))
        .route(&at("/.tether/share"), any(ops::share))
        .route(&at("/.tether/dev"), any(ops::dev))
        .route(&at("/.tether/{*rest}"), any(ops::unknown))
        .route(&at("/.tether/"), any(ops::unknown))
        .route(&at("/{app}"), any(pages::app))
        .route(&at("/{app}/"), any(pages::app))
        .route(&at("/{app}/ws"), any(websocket::app_ws))
        .route(&at("/{app}/autoload.js"), any(pages::app))
        .fallback(pages::asset)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            allowed_host,
        ))
        .with_state(state)
}

impl Http {
    /// `--prefix`: empty, or a path such as `/dash` that every route is under.
    pub(crate) fn prefix(&self) -> &str {
        &self.gw.config().prefix
    }

    /// The app a path under the prefix names (`/dash/app/ws` names `app`), if it is served.
    pub(crate) fn app_named_by(&self, path: &str) -> Option<String> {
        let below = path.strip_prefix(self.prefix())?;
        self.gw.app(pages::first_segment(below)).map(str::to_owned)
    }
}

impl Http {
    /// `--identity-header` from a peer outside `--trusted-proxy` is a claim anyone can make:
    /// it is removed, so neither tether nor the app ever reads it.
    fn drop_untrusted_identity(&self, req: &mut Request<Body>) {
        let config = self.gw.config();
        let Some(name) = config.identity_header.as_deref() else {
            return;
        };
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let trusted = peer.is_some_and(|ip| config.trusted_proxies.iter().any(|c| c.contains(ip)));
        if !trusted && req.headers_mut().remove(name).is_some() {
            tracing::debug!(
                ?peer,
                header = name,
                "identity header from an untrusted peer dropped"
            );
        }
    }

    /// The logged-in user, as the id their state is kept under: the one a trusted proxy names
    /// in `--identity-header` (an untrusted peer's header is gone by now), else the one Panel's
    /// own login signed into its `user` cookie.
    pub(crate) fn login_user(&self, headers: &http::HeaderMap) -> Option<crate::auth::UserId> {
        let config = self.gw.config();
        let from_proxy = config.identity_header.as_deref().and_then(|name| {
            let login = headers.get(name)?.to_str().ok()?.trim();
            (!login.is_empty()).then(|| login.to_owned())
        });
        let login = from_proxy.or_else(|| {
            let (secret, lifetime) = config.panel_login.as_ref()?;
            let now = std::time::SystemTime::now();
            crate::auth::panel_login::user(headers, secret, *lifetime, now)
        })?;
        Some(crate::auth::UserId::from_login(
            &login,
            &self.gw.keys().login,
        ))
    }

    /// Whose request this is: the logged-in user (a trusted proxy's, or Panel's own login),
    /// else the identity cookie's; `None` for a browser with none of them.
    pub(crate) fn user_of(&self, headers: &http::HeaderMap) -> Option<crate::auth::UserId> {
        self.login_user(headers)
            .or_else(|| crate::auth::identity::from_headers(headers, &self.gw.keys().cookie))
    }
}

/// The origin a browser shows for this gateway: `http(s)://host[:port]`, the host as the
/// browser sent it (through a proxy, as the proxy says).
fn own_origin(headers: &http::HeaderMap) -> Option<String> {
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())?
        .split(',')
        .next()?
        .trim();
    let scheme = if proxy::is_https(headers) {
        "https"
    } else {
        "http"
    };
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

/// True when `origin` (an `Origin` header, or a URL's origin) is this gateway's own,
/// scheme included.
pub(crate) fn is_own_origin(headers: &http::HeaderMap, origin: &str) -> bool {
    own_origin(headers).is_some_and(|own| own.eq_ignore_ascii_case(origin.trim_end_matches('/')))
}

/// The `scheme://host` of a URL such as a `Referer`.
fn origin_of(url: &str) -> &str {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = scheme.len() + 3 + rest.find(['/', '?', '#']).unwrap_or(rest.len());
            &url[..end]
        }
        None => url,
    }
}

/// True when the browser's `Origin` is the gateway's own, scheme and host (as the browser
/// or the proxy in front sent it), or one `--allow-websocket-origin` names. Browsers always
/// send `Origin` on websockets; a missing one is a non-browser client, which cross-site
/// attacks cannot use.
pub(crate) fn origin_allowed(headers: &http::HeaderMap, allowed: &[String]) -> bool {
    match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => true,
        Some(Ok(origin)) => is_own_origin(headers, origin) || listed_origin(origin, allowed),
        Some(Err(_)) => false,
    }
}

/// True when `origin` (`scheme://host[:port]`) is among `allowed` (`host[:port]` or `*`), as
/// `panel serve --allow-websocket-origin` matches: a host without a port is the host on its
/// scheme's default port.
fn listed_origin(origin: &str, allowed: &[String]) -> bool {
    let Some((scheme, rest)) = origin.trim_end_matches('/').split_once("://") else {
        return false;
    };
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        "443"
    } else {
        "80"
    };
    let with_port = |hp: &str| {
        // An IPv6 literal's colons are inside its brackets.
        let after_host = hp.rfind(']').map_or(0, |i| i + 1);
        if hp[after_host..].contains(':') {
            hp.to_ascii_lowercase()
        } else {
            format!("{}:{default_port}", hp.to_ascii_lowercase())
        }
    };
    let origin = with_port(rest);
    allowed
        .iter()
        .any(|a| a == "*" || with_port(a.trim()) == origin)
}

/// True unless the browser says the request came from another site or origin: by
/// `Sec-Fetch-Site` when it sends one, else by `Origin`, else by `Referer`. (`SameSite=Lax`
/// cookies travel on cross-site top-level navigations, so a state-changing GET must check.)
pub(crate) fn from_own_site(headers: &http::HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none");
    }
    if let Some(origin) = text("origin") {
        return is_own_origin(headers, origin);
    }
    if let Some(referer) = text("referer") {
        return is_own_origin(headers, origin_of(referer));
    }
    true
}

/// Refuses a request for a host name the gateway does not serve (`--allow-host`): a page of
/// another site that resolves its name to this machine (DNS rebinding) must not reach an app.
/// Health and metrics answer any name, so that a load balancer may use an address.
async fn allowed_host(State(h): State<Http>, mut req: Request<Body>, next: Next) -> Response<Body> {
    h.drop_untrusted_identity(&mut req);
    let path = req.uri().path().strip_prefix(h.prefix()).unwrap_or("");
    if path == "/.tether/health" || path == "/.tether/metrics" {
        return next.run(req).await;
    }
    match refused_host(&h, req.headers()) {
        Some(refusal) => refusal,
        None => next.run(req).await,
    }
}

/// The refusal for a request naming a host the gateway does not serve, if it does.
fn refused_host(h: &Http, headers: &http::HeaderMap) -> Option<Response<Body>> {
    let names: Vec<&str> = headers
        .get_all(header::HOST)
        .iter()
        .chain(headers.get_all("x-forwarded-host").iter())
        .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
        .map(str::trim)
        .collect();
    if names.is_empty() {
        return Some(proxy::plain(
            StatusCode::BAD_REQUEST,
            "The request names no host; send a Host header, as browsers do.",
        ));
    }
    let refused = names.into_iter().find(|n| !h.gw.config().host_allowed(n))?;
    tracing::info!(
        host = refused,
        "request for a host tether does not serve refused"
    );
    let name: String = refused
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(100)
        .collect();
    Some(
        Response::builder()
            .status(StatusCode::FORBIDDEN)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from(format!(
                "This app is not served under the name {name}; start tether with --allow-host {name} to allow it."
            )))
            .expect("static response"),
    )
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
