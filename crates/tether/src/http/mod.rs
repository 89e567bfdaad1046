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

use axum::routing::any;
use axum::Router;

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
/// - `/` lists the apps (or redirects to the only one);
/// - `/.tether/health`, `/.tether/metrics` and `/.tether/forget` are tether's own;
/// - `/{app}` (and `/{app}/`) is an app page, `/{app}/ws` its websocket;
/// - anything else (static files, autoload scripts, other methods on an app's path) is
///   forwarded to a worker as it is.
pub fn router(gw: Arc<Gateway>) -> Router {
    let state = Http {
        gw,
        client: proxy::client(),
    };
    Router::new()
        .route("/", any(pages::index))
        .route("/.tether/health", any(ops::health))
        .route("/.tether/metrics", any(ops::metrics))
        .route("/.tether/forget", any(ops::forget))
        .route("/.tether/{*rest}", any(ops::unknown))
        .route("/.tether/", any(ops::unknown))
        .route("/{app}", any(pages::app))
        .route("/{app}/", any(pages::app))
        .route("/{app}/ws", any(websocket::app_ws))
        .fallback(pages::asset)
        .with_state(state)
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
