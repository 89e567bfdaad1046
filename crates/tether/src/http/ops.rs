//! tether's own endpoints under `/.tether/`: health for load balancers, Prometheus metrics,
//! and forget, which clears the caller's saved state.

use axum::body::Body;
use axum::extract::State;
use http::{header, Method, Request, Response, StatusCode};

use super::pages::redirect;
use super::{from_own_site, proxy, Http};

/// `/.tether/health`: 200 while a worker is ready (saying so when the store refuses writes).
pub async fn health(State(h): State<Http>) -> Response<Body> {
    let healthy = h.gw.workers_up();
    if healthy > 0 && h.gw.states().refusing_writes() {
        // Still serving: live sessions work, and changes wait in memory for the store.
        proxy::plain(
            StatusCode::OK,
            "Serving, but the state store is refusing writes, so recent changes are only in memory; free disk space or fix the state store.",
        )
    } else if healthy > 0 {
        proxy::plain(StatusCode::OK, "ok")
    } else {
        proxy::plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "No worker is ready yet; retry in a few seconds.",
        )
    }
}

/// `/.tether/dev`: in `--dev`, why the app's newest version did not start
/// (`{"error":"..."}`), or `{"error":null}` while it serves; the page script shows it. Without
/// `--dev` the error stays in the log, away from users.
pub async fn dev(State(h): State<Http>) -> Response<Body> {
    if !h.gw.config().dev {
        return proxy::plain(
            StatusCode::NOT_FOUND,
            "This is only served with tether serve --dev; see the gateway's log instead.",
        );
    }
    let error = h.gw.reloader().and_then(|r| r.failure());
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(
            serde_json::json!({ "error": error }).to_string(),
        ))
        .expect("static response")
}

/// `/.tether/metrics`, in the Prometheus text format.
pub async fn metrics(State(h): State<Http>) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(Body::from(h.gw.metrics().render(&h.gw.gauges())))
        .expect("static response")
}

/// `/.tether/forget?app=NAME`: drops the caller's live sessions and saved state, then sends
/// them back to the app (or the index) to start afresh.
pub async fn forget(State(h): State<Http>, req: Request<Body>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return proxy::plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "Forget is a GET or POST of /.tether/forget?app=NAME; open it from the app's address.",
        );
    }
    if !from_own_site(req.headers()) {
        return proxy::plain(
            StatusCode::FORBIDDEN,
            "Another site asked to forget your state, so nothing was changed; open /.tether/forget from this site.",
        );
    }
    let gw = &h.gw;
    let app = app_in_query(&h, req.uri().query());
    if let Some(user) = h.user_of(req.headers()) {
        let dropped = gw.registry().forget(&user);
        if gw.states().forget(&user).await.is_err() {
            return proxy::plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "Your saved state could not be deleted because the state store refuses changes right now; try again in a minute.",
            );
        }
        tracing::info!(user = %user, sessions = dropped.len(), "forgot user");
    }
    let prefix = h.prefix();
    redirect(&app.map_or(format!("{prefix}/"), |a| format!("{prefix}/{a}")))
}

/// The value of `name=` in a query, if it has one.
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
}

/// The served app a query's `app=NAME` names.
fn app_in_query(h: &Http, query: Option<&str>) -> Option<String> {
    query_param(query, "app")
        .and_then(|a| h.gw.app(a))
        .map(str::to_owned)
}

/// `POST /.tether/share?app=NAME`: freezes the caller's history of the app into a snapshot
/// and answers `{"link": "/<app>?tether-snapshot=ID"}`. Whoever opens the link gets a new
/// session restored from the snapshot; what they do next is theirs, never the snapshot's.
///
/// `DELETE /.tether/share?app=NAME&id=ID` deletes a snapshot its caller made.
pub async fn share(State(h): State<Http>, req: Request<Body>) -> Response<Body> {
    if req.method() != Method::POST && req.method() != Method::DELETE {
        return proxy::plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "Share is a POST of /.tether/share?app=NAME (DELETE with &id=ID), from the app's own page.",
        );
    }
    if !from_own_site(req.headers()) {
        return proxy::plain(
            StatusCode::FORBIDDEN,
            "Another site asked to share your state, so nothing was shared; share from this site.",
        );
    }
    let Some(app) = app_in_query(&h, req.uri().query()) else {
        return proxy::plain(
            StatusCode::NOT_FOUND,
            "No such app here; name a served app, as in /.tether/share?app=NAME.",
        );
    };
    let Some(user) = h.user_of(req.headers()) else {
        return proxy::plain(
            StatusCode::CONFLICT,
            "There is nothing to share yet; open the app and change something first.",
        );
    };
    if req.method() == Method::DELETE {
        let id = query_param(req.uri().query(), "id")
            .unwrap_or("")
            .to_owned();
        return match h.gw.states().delete_snapshot(&id, &user, &app).await {
            Ok(true) => proxy::plain(StatusCode::OK, "The shared link is deleted."),
            Ok(false) => proxy::plain(
                StatusCode::NOT_FOUND,
                "You have no shared link of this app with that id; check the link's tether-snapshot value.",
            ),
            Err(_) => proxy::plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "The shared link could not be deleted because the state store refuses changes right now; try again in a minute.",
            ),
        };
    }
    let ttl = h.gw.config().snapshot_ttl;
    match h.gw.states().share(&user, &app, ttl).await {
        Ok(Some(id)) => {
            tracing::info!(user = %user, app, "shared a snapshot");
            let link = format!("{}/{app}?tether-snapshot={id}", h.prefix());
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CACHE_CONTROL, "no-store")
                .body(Body::from(serde_json::json!({ "link": link }).to_string()))
                .expect("static response")
        }
        Ok(None) => proxy::plain(
            StatusCode::CONFLICT,
            "There is nothing to share yet; change something in the app first.",
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot save a snapshot");
            proxy::plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "The snapshot could not be saved because the state store refuses changes right now; try again in a minute.",
            )
        }
    }
}

/// Any other path under `/.tether/`.
pub async fn unknown() -> Response<Body> {
    proxy::plain(
        StatusCode::NOT_FOUND,
        "No such tether endpoint; see /.tether/health or /.tether/metrics.",
    )
}
