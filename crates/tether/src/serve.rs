//! Running the gateway: start-up (apps, Python, secret, store, workers), the accept loop
//! within the connection limit, and the drain at shutdown.
//!
//! `run(listener, config, ready, shutdown)` is what `main` calls; the tests run the binary.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use http::Request;
use tokio::sync::{watch, Semaphore};

use crate::auth::{Secret, SecretError};
use crate::config::Config;
use crate::gateway::{ConnectionPermit, Gateway, LogThrottle};
use crate::state::{StateError, States};
use crate::workers::{self, Reloader, WorkerError, WorkerSpec, Workers};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    App(String),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("the gateway's listener failed; check the address and port")]
    Io(#[source] std::io::Error),
    #[error("cannot make the control socket {path}; pass --control-socket with a writable path")]
    Control {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `SIGHUP`: a rolling reload of the app, as `tether reload` asks for.
async fn reload_on_hangup(reloader: Arc<Reloader>, drain: std::time::Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP; use tether reload");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        // A failure is logged by the reloader; the old workers keep serving.
        let _ = reloader.reload(drain).await;
    }
}

/// The local socket (mode 0600, in a directory of mode 0700) on which `tether reload` asks a
/// running gateway for a rolling reload; removed when the gateway ends.
struct ControlSocket {
    path: PathBuf,
    /// Until [`ControlSocket::serve`] takes it.
    listener: Option<tokio::net::UnixListener>,
}

/// Longest a control client may take to send its command.
const CONTROL_READ: std::time::Duration = std::time::Duration::from_secs(5);

impl ControlSocket {
    fn bind(path: &Path) -> Result<ControlSocket, ServeError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let fail = |source| ServeError::Control {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(fail)?;
            }
            // In a directory another user owns, they could put their own socket in its place.
            use std::os::unix::fs::MetadataExt;
            let ours = std::fs::metadata("/proc/self").map(|m| m.uid());
            let owner = std::fs::metadata(dir).map(|m| m.uid());
            if let (Ok(ours), Ok(owner)) = (ours, owner) {
                if ours != owner {
                    return Err(fail(std::io::Error::other(format!(
                        "{} belongs to another user",
                        dir.display()
                    ))));
                }
            }
        }
        // Left by a gateway that was killed: the port is ours now, so the socket is too.
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).map_err(fail)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
        Ok(ControlSocket {
            path: path.to_owned(),
            listener: Some(listener),
        })
    }

    /// Answers `reload` with `ok`, or `error: ` and the sentence that says why.
    fn serve(
        &mut self,
        reloader: Arc<Reloader>,
        drain: std::time::Duration,
    ) -> impl Future<Output = ()> + Send + 'static {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let listener = self.listener.take();
        async move {
            let Some(listener) = listener else { return };
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let reloader = reloader.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut line = String::new();
                    let mut reader = tokio::io::BufReader::new(read.take(256));
                    let read = tokio::time::timeout(CONTROL_READ, reader.read_line(&mut line));
                    let answer = match read.await {
                        Ok(Ok(_)) if line.trim() == "reload" => {
                            match reloader.reload(drain).await {
                                Ok(()) => "ok\n".to_owned(),
                                Err(sentence) => format!("error: {sentence}\n"),
                            }
                        }
                        _ => "error: unknown command; the one command is reload\n".to_owned(),
                    };
                    let _ = write.write_all(answer.as_bytes()).await;
                });
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The gateway's private directory (mode 0700, under the system's temporary directory) of
/// worker sockets; removed when the gateway ends.
struct SocketDir(PathBuf);

impl SocketDir {
    fn create() -> Result<SocketDir, WorkerError> {
        use std::os::unix::fs::DirBuilderExt;
        let name = format!(
            "tether-{}-{}",
            std::process::id(),
            crate::auth::token::nonce(8)
        );
        let dir = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| WorkerError::SocketDir {
                dir: dir.clone(),
                source,
            })?;
        Ok(SocketDir(dir))
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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
        let stem = app_name(app)?;
        if names.contains(&stem) {
            return Err(ServeError::App(format!(
                "two apps are named {stem}; each app is served at /<file or directory name>, so rename one"
            )));
        }
        names.push(stem);
    }
    Ok(names)
}

/// The app arguments with shell-style patterns expanded, as `panel serve --glob` does
/// (`apps/*.py`, quoted so that the shell leaves it): `*` and `?` in the last component,
/// matches sorted by name. A pattern that matches nothing is an error.
pub fn expand_apps(apps: &[PathBuf]) -> Result<Vec<PathBuf>, ServeError> {
    let mut out = Vec::new();
    for app in apps {
        let Some(pattern) = app
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.contains(['*', '?']))
        else {
            out.push(app.clone());
            continue;
        };
        let parent = app.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = parent.unwrap_or(Path::new("."));
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.') && wildcard(pattern.as_bytes(), name.as_bytes()))
            .map(|name| parent.map_or_else(|| PathBuf::from(&name), |p| p.join(&name)))
            .collect();
        if found.is_empty() {
            return Err(ServeError::App(format!(
                "the pattern {} matches no file; check it",
                app.display()
            )));
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// Whether `name` matches `pattern`, where `*` is any run of bytes and `?` any one byte.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| wildcard(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && wildcard(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && wildcard(rest, &name[1..]),
    }
}

/// The kinds of file `panel serve` runs as an app.
const APP_FILES: [&str; 3] = ["py", "ipynb", "md"];

/// The name an app is served under (`/<name>`), as `panel serve` names it: a script, notebook
/// or Markdown file by its stem, a directory app (one with `main.py` or `main.ipynb`, beside
/// its `templates/`, `theme.yaml` and `static/`) by the directory's name.
pub fn app_name(app: &Path) -> Result<String, ServeError> {
    let name = |p: &Path, what: &str| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                ServeError::App(format!(
                    "the {what} {} has no name to serve it under; give its path by name",
                    app.display()
                ))
            })
    };
    if app.is_dir() {
        if ["main.py", "main.ipynb"]
            .iter()
            .any(|m| app.join(m).is_file())
        {
            // `app/.` and `app/` name the directory itself.
            let dir = app.canonicalize().unwrap_or_else(|_| app.to_path_buf());
            return name(&dir, "directory");
        }
        return Err(ServeError::App(format!(
            "the directory {} has no main.py or main.ipynb; a directory app needs one",
            app.display()
        )));
    }
    let kind = app.extension().and_then(|e| e.to_str()).unwrap_or_default();
    if !APP_FILES.contains(&kind) {
        return Err(ServeError::App(format!(
            "{} is not a Panel app; pass a .py, .ipynb or .md file, or a directory with main.py",
            app.display()
        )));
    }
    if !app.is_file() {
        return Err(ServeError::App(format!(
            "the app {} does not exist; check the path",
            app.display()
        )));
    }
    name(app, "app")
}

/// Runs the gateway on `listener` until `shutdown` completes, then drains and stops the
/// workers. Awaits `ready` once the workers are up and requests are being served.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    ready: impl Future<Output = ()>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let apps = validate_apps(&config.apps)?;
    workers::check_panel_args(&config.panel_args)?;
    let tls = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
    let versions = workers::check_python(&config.python).await?;
    tracing::info!(
        panel = %versions.panel.map_or("unknown".into(), |v| v.to_string()),
        bokeh = %versions.bokeh.map_or("unknown".into(), |v| v.to_string()),
        "workers run"
    );
    let keys = Secret::load_or_create(&config.secret_file)?.keys();
    let states = States::open(&config).await?;
    let sockets = SocketDir::create()?;
    let spec = Arc::new(WorkerSpec {
        python: config.python.clone(),
        apps: config.apps.clone(),
        panel_args: config.panel_args.clone(),
        prefix: config.prefix.clone(),
        bokeh_key: keys.bokeh.clone(),
        // Longer than the gateway's own TTL, so a session we consider alive always is.
        unused_session_lifetime: config.live_ttl + std::time::Duration::from_secs(60),
        start_timeout: config.worker_start_timeout,
        socket_dir: sockets.0.clone(),
    });
    let (stop_workers, stop_rx) = watch::channel(false);
    let mut slots = Vec::new();
    let mut commands = Vec::new();
    let mut tasks = Vec::new();
    for index in 0..config.workers.max(1) {
        match workers::supervise(spec.clone(), index, stop_rx.clone()).await {
            Ok((slot, task)) => {
                commands.push(slot.commands.clone());
                slots.push(slot);
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
    let reloader = Arc::new(Reloader::new(commands, config.worker_start_timeout));
    let mut control = match &config.control_socket {
        Some(path) => Some(ControlSocket::bind(path)?),
        None => None,
    };
    let gateway = Arc::new(Gateway::new(
        keys,
        config,
        apps,
        Workers::new(slots, sockets.0.clone()),
        states,
        versions,
    ));
    gateway.set_reloader(reloader.clone());
    let app = crate::http::router(gateway.clone());
    ready.await;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let config = gateway.config();
    let drain = if config.dev {
        std::time::Duration::ZERO
    } else {
        config.drain_timeout
    };
    tokio::spawn(gateway.clone().keep_memory());
    tokio::spawn(gateway.clone().discard_evicted());
    tokio::spawn(reload_on_hangup(reloader.clone(), drain));
    if let Some(control) = &mut control {
        tokio::spawn(control.serve(reloader.clone(), drain));
    }
    if config.dev {
        tokio::spawn(workers::watch_files(
            config.apps.clone(),
            reloader.clone(),
            stop_rx.clone(),
        ));
    }
    let served = accept_loop(listener, tls, app, &gateway, stop_rx).await;
    drop(control);
    let _ = stop_workers.send(true);
    for t in tasks {
        let _ = t.await;
    }
    gateway.states().flush().await;
    served.map_err(ServeError::Io)
}

/// A client connection: plain TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Accepts connections until `stop`, within the configured limits; then drains: in-flight
/// requests and open websockets (each holds a slot) get the grace period to finish.
///
/// With `tls`, each connection's handshake runs in its own task, bounded by the handshake
/// timeout, and its requests say `X-Forwarded-Proto: https` whatever the client sent.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    gw: &Arc<Gateway>,
    stop: watch::Receiver<bool>,
) -> Result<(), std::io::Error> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let limits = gw.config().limits;
    let grace = gw.config().shutdown_grace;
    // Permits are counted in u32 by `acquire_many`, which the drain uses.
    let max = limits.max_connections.clamp(1, u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(max));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout)
        // Room for the whole head; its exact bound is checked on each request below.
        .max_buf_size((limits.max_header_bytes + (8 << 10)).max(8192));
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
            gw.metrics().connection_refused();
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
        let permit = ConnectionPermit::new(permit);
        let app = app.clone();
        let max_head = limits.max_header_bytes;
        let https = tls.is_some();
        let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            if https {
                req.headers_mut()
                    .insert("x-forwarded-proto", http::HeaderValue::from_static("https"));
            }
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(permit.clone());
            let app = app.clone();
            async move {
                use tower::ServiceExt;
                if head_bytes(&req) > max_head {
                    return Ok(crate::http::proxy::plain(
                        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "The request's headers are too large; clear this site's cookies or raise --max-header-size.",
                    ));
                }
                app.oneshot(req.map(Body::new)).await
            }
        });
        let builder = builder.clone();
        let tls = tls.clone();
        let handshake_timeout = limits.handshake_timeout;
        let mut conn_stop = stop.clone();
        tokio::spawn(async move {
            let io: Box<dyn Io> = match tls {
                None => Box::new(stream),
                Some(tls) => {
                    match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => Box::new(stream),
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let conn = builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
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
    // Every connection and websocket gives its permit back when it ends: holding them all
    // again means the drain is complete.
    let _ = tokio::time::timeout(grace, slots.acquire_many(max as u32)).await;
    Ok(())
}

/// Bytes of a request head as it came: request line, headers, blank line.
fn head_bytes<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len() + 1 + req.uri().to_string().len() + 11;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    line + headers + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_are_named_as_panel_serve_names_them_and_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("crossfilter/templates")).unwrap();
        std::fs::write(root.join("crossfilter/main.py"), "").unwrap();
        std::fs::create_dir_all(root.join("nb_dir")).unwrap();
        std::fs::write(root.join("nb_dir/main.ipynb"), "{}").unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        for file in ["app.py", "notes.ipynb", "readme.md", "data.csv"] {
            std::fs::write(root.join(file), "").unwrap();
        }
        let named = |p: &str| app_name(&root.join(p)).map_err(|e| e.to_string());
        assert_eq!(named("crossfilter").unwrap(), "crossfilter");
        assert_eq!(named("crossfilter/").unwrap(), "crossfilter");
        assert_eq!(named("crossfilter/.").unwrap(), "crossfilter");
        assert_eq!(named("nb_dir").unwrap(), "nb_dir");
        assert_eq!(named("app.py").unwrap(), "app");
        assert_eq!(named("notes.ipynb").unwrap(), "notes");
        assert_eq!(named("readme.md").unwrap(), "readme");
        let refused = [
            ("empty", "has no main.py or main.ipynb"),
            ("data.csv", "is not a Panel app"),
            ("missing.py", "does not exist"),
        ];
        for (path, says) in refused {
            let err = named(path).unwrap_err();
            assert!(err.contains(says), "{path}: {err}");
        }
        let mut found = expand_apps(&[root.join("*.py"), root.join("n?tes.ipynb")]).unwrap();
        found.sort();
        assert_eq!(found, vec![root.join("app.py"), root.join("notes.ipynb")]);
        let none = expand_apps(&[root.join("*.txt")]).unwrap_err().to_string();
        assert!(none.contains("matches no file"), "{none}");
        assert!(wildcard(b"a*b?c", b"aXXbYc") && !wildcard(b"a*b?c", b"abc"));
        let two = [root.join("app.py"), root.join("crossfilter/main.py")];
        assert!(validate_apps(&two).is_ok(), "app and main differ");
        let clash = [root.join("crossfilter"), root.join("crossfilter/")];
        assert!(validate_apps(&clash)
            .unwrap_err()
            .to_string()
            .contains("two apps are named crossfilter"));
    }
}
