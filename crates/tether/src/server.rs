//! The gateway: starts the workers, then routes pages, assets, websockets and `/.tether/*`.
//!
//! `run(listener, config, shutdown)` is called the same way by `main` and by the tests.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::Router;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Config;
use crate::identity::{self, UserId};
use crate::proxy::{self, UpstreamClient};
use crate::registry::{Context, Page, Registry};
use crate::secret::{Keys, Secret, SecretError};
use crate::worker::{self, Endpoint, WorkerError, WorkerSpec};
use crate::{bridge, metrics::Metrics, state::States, token};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    App(String),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("the gateway's listener failed; check the address and port")]
    Io(#[source] std::io::Error),
}

/// Shared by every request.
pub struct Gateway {
    /// Keys for cookies, session ids and tokens.
    pub keys: Keys,
    /// Live sessions.
    pub registry: Registry,
    /// Current endpoint of each worker slot.
    pub slots: Vec<watch::Receiver<Endpoint>>,
    /// App names (script stems), in command-line order.
    pub apps: Vec<String>,
    /// Pooled HTTP client to the workers.
    pub client: UpstreamClient,
    /// Settings.
    pub config: Config,
    /// Users' state logs and their durable store.
    pub states: States,
    /// Counters for `/.tether/metrics`.
    pub metrics: Metrics,
    /// Logs of refusals at the session limit, at most one per [`REFUSAL_LOG_EVERY`].
    session_refusals: LogThrottle,
}

/// Least time between two log lines about refusals at a limit.
const REFUSAL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Says when a repeated event may be logged again: at most once per `REFUSAL_LOG_EVERY`.
#[derive(Default)]
struct LogThrottle(std::sync::Mutex<Option<Instant>>);

impl LogThrottle {
    /// True (and the clock restarts) when the last log was long enough ago, or never.
    fn due(&self) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() > REFUSAL_LOG_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

impl Gateway {
    pub fn endpoint(&self, worker: usize) -> Endpoint {
        *self.slots[worker].borrow()
    }

    pub fn generation(&self, worker: usize) -> u64 {
        self.endpoint(worker).generation
    }

    /// The healthy worker with the fewest live sessions.
    pub fn least_loaded(&self) -> usize {
        let load = self.registry.load(self.slots.len());
        (0..self.slots.len())
            .filter(|&w| self.endpoint(w).port != 0)
            .min_by_key(|&w| load[w])
            .unwrap_or(0)
    }
}

fn validate_apps(apps: &[PathBuf]) -> Result<Vec<String>, ServeError> {
    if apps.is_empty() {
        return Err(ServeError::App(
            "no app was given; run `tether serve app.py`".into(),
        ));
    }
    let mut names: Vec<String> = Vec::new();
    for app in apps {
        if app.extension().and_then(|e| e.to_str()) != Some("py") {
            return Err(ServeError::App(format!(
                "{} is not a Python script; pass the path of a Panel or Bokeh app ending in .py",
                app.display()
            )));
        }
        if !app.is_file() {
            return Err(ServeError::App(format!(
                "the app {} does not exist; check the path",
                app.display()
            )));
        }
        let stem = app.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if names.iter().any(|n| n == stem) {
            return Err(ServeError::App(format!(
                "two apps are named {stem}; each app is served at /<file name>, so rename one"
            )));
        }
        names.push(stem.to_owned());
    }
    Ok(names)
}

/// Runs the gateway on `listener` until `shutdown` completes, then stops the workers.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    run_announced(listener, config, async {}, shutdown).await
}

/// Like `run`, and awaits `ready` once the workers are up and requests are being served.
pub async fn run_announced(
    listener: tokio::net::TcpListener,
    config: Config,
    ready: impl Future<Output = ()>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let apps = validate_apps(&config.apps)?;
    worker::check_panel_args(&config.panel_args)?;
    worker::check_python(&config.python).await?;
    let keys = Secret::load_or_create(&config.secret_file)?.keys();
    let states = States::open(&config).await?;
    let spec = Arc::new(WorkerSpec {
        python: config.python.clone(),
        apps: config.apps.clone(),
        panel_args: config.panel_args.clone(),
        bokeh_key: keys.bokeh.clone(),
        // Longer than the gateway's own TTL, so a session we consider alive always is.
        unused_session_lifetime: config.live_ttl + std::time::Duration::from_secs(60),
        start_timeout: config.worker_start_timeout,
    });
    let (stop_workers, stop_rx) = watch::channel(false);
    let mut slots = Vec::new();
    let mut tasks = Vec::new();
    for index in 0..config.workers.max(1) {
        match worker::supervise(spec.clone(), index, stop_rx.clone()).await {
            Ok((slot, task)) => {
                slots.push(slot.endpoint);
                tasks.push(task);
            }
            Err(e) => {
                let _ = stop_workers.send(true);
                for t in tasks {
                    let _ = t.await;
                }
                return Err(e.into());
            }
        }
    }
    let gateway = Arc::new(Gateway {
        keys,
        registry: Registry::new(config.live_ttl, config.limits.max_sessions),
        slots,
        apps,
        client: proxy::client(),
        config,
        states,
        metrics: Metrics::default(),
        session_refusals: LogThrottle::default(),
    });
    let app = Router::new().fallback(handle).with_state(gateway.clone());
    ready.await;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let served = accept_loop(listener, app, &gateway, stop_rx).await;
    let _ = stop_workers.send(true);
    for t in tasks {
        let _ = t.await;
    }
    gateway.states.flush().await;
    served.map_err(ServeError::Io)
}

/// A connection slot. Held by the HTTP connection, and by its websocket once upgraded.
#[derive(Clone)]
pub struct ConnectionPermit(#[allow(dead_code)] Arc<tokio::sync::OwnedSemaphorePermit>);

/// Accepts connections until `stop`, within the configured limits; then drains: in-flight
/// requests and open websockets (each holds a slot) get the grace period to finish.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    gw: &Arc<Gateway>,
    stop: watch::Receiver<bool>,
) -> Result<(), std::io::Error> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let limits = gw.config.limits;
    let grace = gw.config.shutdown_grace;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let refusals = LogThrottle::default();
    let mut stopping = stop.clone();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = async { let _ = stopping.wait_for(|s| *s).await; } => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            gw.metrics
                .connections_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if refusals.due() {
                tracing::warn!(
                    max = limits.max_connections,
                    "connection limit reached; refusing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let permit = ConnectionPermit(Arc::new(permit));
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(permit.clone());
            let app = app.clone();
            async move {
                use tower::ServiceExt;
                app.oneshot(req.map(Body::new)).await
            }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut conn_stop = stop.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = async { let _ = conn_stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(grace, conn.as_mut()).await.unwrap_or(Ok(()))
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    let deadline = Instant::now() + grace;
    while slots.available_permits() < limits.max_connections && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn handle(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if let Some(op) = path.strip_prefix("/.tether/") {
        return ops(&gw, op, req).await;
    }
    if path == "/" {
        return index(&gw);
    }
    let trimmed = &path[1..];
    let (first, rest) = trimmed
        .split_once('/')
        .map_or((trimmed, ""), |(a, b)| (a, b));
    if let Some(app) = gw.apps.iter().find(|a| *a == first).cloned() {
        let upgrade = req
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        if rest == "ws" && upgrade {
            return bridge::accept(gw, app, req, peer).await;
        }
        if rest.is_empty() && req.method() == Method::GET && !upgrade {
            return page(&gw, &app, req, peer).await;
        }
    }
    asset(&gw, req, peer).await
}

/// Everything that is not a page or a websocket: static files, autoload scripts, and so on.
async fn asset(gw: &Gateway, req: Request<Body>, peer: SocketAddr) -> Response<Body> {
    let worker = gw.least_loaded();
    let port = gw.endpoint(worker).port;
    if port == 0 {
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
    let query = proxy::clean_query(query, None);
    let pq = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    proxy::forward(&gw.client, req, port, &pq, peer).await
}

/// A new visitor past `--max-sessions`: refused, counted, and logged at most once per 10 s.
fn at_session_limit(gw: &Gateway) -> Response<Body> {
    use std::sync::atomic::Ordering::Relaxed;
    let refused = gw.metrics.sessions_refused.fetch_add(1, Relaxed);
    if gw.session_refusals.due() {
        tracing::warn!(
            max = gw.config.limits.max_sessions,
            refused = refused + 1,
            "session limit reached; refusing new visitors until sessions expire"
        );
    }
    proxy::plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "This app is serving as many sessions as it may; try again in a few minutes.",
    )
}

fn restarting() -> Response<Body> {
    proxy::plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "The app is restarting; reload the page in a few seconds.",
    )
}

/// How long a page waits for the user's connected session to be released by a reloading tab.
/// A real second tab pays this once; a reload saves a whole new session.
const RELOAD_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// An app page: choose the user's live session or a new one, and pin the worker to it.
async fn page(gw: &Gateway, app: &str, req: Request<Body>, peer: SocketAddr) -> Response<Body> {
    let known = identity::from_headers(req.headers(), &gw.keys.cookie);
    let user = known.unwrap_or_else(UserId::random);
    // Another gateway sharing the store may have recorded newer changes: then no live session
    // here is current any more, and a fresh one is restored from the newer history.
    let synced = gw.states.sync(&user, app).await;
    let has_state = synced.as_ref().is_some_and(|s| s.has_state);
    if synced.as_ref().is_some_and(|s| s.changed_elsewhere) {
        gw.registry.history_changed(&user, app);
    }
    // A reload reaches us before the old tab's websocket has closed; give it a moment, so the
    // reload reattaches instead of starting (and restoring) yet another session.
    let waited_until = Instant::now() + RELOAD_WAIT;
    let choice = loop {
        let cx = Context {
            now: Instant::now(),
            generation: &|w| gw.generation(w),
            worker: gw.least_loaded(),
            has_state,
            may_wait: Instant::now() < waited_until,
        };
        match gw.registry.page(&user, app, &cx, || {
            token::mint_session_id(&gw.keys, user.as_str(), app)
        }) {
            Page::Busy => tokio::time::sleep(std::time::Duration::from_millis(25)).await,
            other => break other,
        }
    };
    let (session_id, worker, reattach) = match choice {
        Page::Reattach { session_id, worker } => (session_id, worker, true),
        Page::Fresh { session_id, worker } => (session_id, worker, false),
        Page::Full => return at_session_limit(gw),
        Page::Busy => unreachable!("the loop above waits out Busy"),
    };
    let port = gw.endpoint(worker).port;
    if port == 0 {
        return restarting();
    }
    tracing::info!(user = %user, app, reattach, restore = has_state && !reattach, "page");
    gw.metrics.page(reattach);
    let query = proxy::clean_query(req.uri().query(), Some(("bokeh-session-id", &session_id)));
    let pq = format!("{}?{query}", req.uri().path());
    let https = proxy::is_https(req.headers());
    let mut resp = proxy::forward(&gw.client, req, port, &pq, peer).await;
    // Set on every page, not only the first: an active user's year never runs out.
    resp.headers_mut().append(
        header::SET_COOKIE,
        identity::set_cookie_header(&user, &gw.keys.cookie, https),
    );
    resp
}

/// True when the browser says the request came from another site. `SameSite=Lax` cookies
/// still travel on cross-site top-level navigations, so a state-changing GET must check.
fn cross_site(headers: &http::HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
}

fn index(gw: &Gateway) -> Response<Body> {
    if gw.apps.len() == 1 {
        return redirect(&format!("/{}", gw.apps[0]));
    }
    let items: String = gw
        .apps
        .iter()
        .map(|a| format!("<li><a href=\"/{a}\">{a}</a></li>"))
        .collect();
    Response::builder()
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Body::from(format!(
            "<!doctype html><title>tether</title><h1>Apps</h1><ul>{items}</ul>"
        )))
        .expect("static response")
}

fn redirect(to: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(
            header::LOCATION,
            HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/")),
        )
        .body(Body::empty())
        .expect("static response")
}

async fn ops(gw: &Gateway, op: &str, req: Request<Body>) -> Response<Body> {
    match op {
        "health" => {
            let healthy = (0..gw.slots.len())
                .filter(|&w| gw.endpoint(w).port != 0)
                .count();
            if healthy > 0 && gw.states.refusing_writes() {
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
        "metrics" => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Body::from(gw.metrics.render(gw)))
            .expect("static response"),
        "forget" if cross_site(req.headers()) => proxy::plain(
            StatusCode::FORBIDDEN,
            "Another site asked to forget your state, so nothing was changed; open /.tether/forget from this site.",
        ),
        "forget" => {
            let app = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|p| p.strip_prefix("app="))
                .filter(|a| gw.apps.iter().any(|n| n == a))
                .map(str::to_owned);
            if let Some(user) = identity::from_headers(req.headers(), &gw.keys.cookie) {
                let dropped = gw.registry.forget(&user);
                if gw.states.forget(&user).await.is_err() {
                    return proxy::plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Your saved state could not be deleted because the state store refuses changes right now; try again in a minute.",
                    );
                }
                tracing::info!(user = %user, sessions = dropped.len(), "forgot user");
            }
            redirect(&app.map_or("/".to_owned(), |a| format!("/{a}")))
        }
        _ => proxy::plain(
            StatusCode::NOT_FOUND,
            "No such tether endpoint; see /.tether/health or /.tether/metrics.",
        ),
    }
}
