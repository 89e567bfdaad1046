//! Panel workers: spawning `python -m panel serve` on loopback ([`spawn`]), restarting
//! crashed ones with back-off, and publishing where each slot's current process listens.
//! None outlives the gateway: each holds a lifeline to it (see [`spawn`]).

pub mod memory;
mod reload;
mod spawn;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::auth::BokehKey;

pub use reload::{watch_files, Reloader};
pub use spawn::{
    check_python, resident_bytes, socket_path, start, Process, Version, Versions, WORKER_HOST,
};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot run the Python interpreter {python}; install Python 3 with Panel or pass --python PATH")]
    NoPython {
        python: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Python at {python} has no Panel; install it with `{python} -m pip install panel` or pass --python PATH")]
    NoPanel { python: PathBuf },
    #[error("{0}; fix the app and start tether again")]
    App(String),
    #[error("the panel worker exited during start-up ({status}); its last output was:\n{tail}")]
    Exited { status: String, tail: String },
    #[error("the panel worker did not become ready within {0:?}; check the app, or give it longer with --startup-timeout")]
    Timeout(Duration),
    #[error("cannot make the private directory {dir} for the workers' sockets; check that the temporary directory is writable")]
    SocketDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`panel serve {flag}` after `--` conflicts with tether; {instead}")]
    OwnFlag {
        flag: &'static str,
        instead: &'static str,
    },
}

/// `panel serve` options that tether sets on its workers itself, and what to do instead.
const OWN_FLAGS: &[(&str, &str)] = &[
    ("--port", "use tether's own --port"),
    ("--address", "use tether's own --address"),
    (
        "--allow-websocket-origin",
        "browsers connect to tether, so give tether's own --allow-websocket-origin before `--`",
    ),
    ("--session-ids", "tether signs every session id itself"),
    ("--unused-session-lifetime", "use tether's --live-ttl"),
    ("--check-unused-sessions", "use tether's --live-ttl"),
    ("--num-procs", "use tether's --workers"),
    (
        "--unix-socket",
        "tether reaches its workers on sockets of its own",
    ),
    (
        "--ssl-certfile",
        "tether terminates TLS, so give tether's own --ssl-certfile before `--`",
    ),
    (
        "--ssl-keyfile",
        "tether terminates TLS, so give tether's own --ssl-keyfile before `--`",
    ),
    (
        "--prefix",
        "use tether's own --prefix, which the workers get too",
    ),
    ("--show", "open the address tether prints"),
    (
        "--dev",
        "use tether's own --dev, which keeps every page's state across reloads",
    ),
    (
        "--autoreload",
        "use tether's own --dev, which keeps every page's state across reloads",
    ),
];

/// The value of a `panel serve` option among the arguments after `--` (`--index app` or
/// `--index=app`), or `Some("")` for one given without a value; `None` when absent.
pub fn panel_option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let mut it = args.iter().take_while(|a| *a != "--args");
    while let Some(arg) = it.next() {
        if let Some(value) = arg.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            return Some(value);
        }
        if arg == name {
            return Some(it.next().map_or("", |v| v.as_str()));
        }
    }
    None
}

/// What verifies the workers' login cookie, as Panel reads it: the cookie secret
/// (`--cookie-secret`, else `PANEL_COOKIE_SECRET`, else `BOKEH_COOKIE_SECRET`) and the login's
/// lifetime (`--oauth-expiry-days`, else `PANEL_OAUTH_EXPIRY`, else 1 day). `None` without a
/// secret: then no worker signs a login tether could check.
pub fn panel_login(
    args: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Option<(String, Duration)> {
    let secret = panel_option(args, "--cookie-secret")
        .map(str::to_owned)
        .or_else(|| env("PANEL_COOKIE_SECRET"))
        .or_else(|| env("BOKEH_COOKIE_SECRET"))
        .filter(|s| !s.is_empty())?;
    let days = panel_option(args, "--oauth-expiry-days")
        .map(str::to_owned)
        .or_else(|| env("PANEL_OAUTH_EXPIRY"))
        .and_then(|d| d.parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d >= 0.0)
        .unwrap_or(1.0);
    Some((secret, Duration::from_secs_f64(days * 86_400.0)))
}

/// Refuses `panel serve` arguments that would undo what tether sets on its workers (its
/// ports, signed session ids, session lifetime), which would break reattach or ownership.
pub fn check_panel_args(args: &[String]) -> Result<(), WorkerError> {
    // `--args` hands everything after it to the app's own sys.argv.
    for arg in args.iter().take_while(|a| *a != "--args") {
        let name = arg.split_once('=').map_or(arg.as_str(), |(n, _)| n);
        if let Some(&(flag, instead)) = OWN_FLAGS.iter().find(|(f, _)| *f == name) {
            return Err(WorkerError::OwnFlag { flag, instead });
        }
    }
    Ok(())
}

/// The interpreter to run workers with when neither `--python` nor `TETHER_PYTHON` names
/// one, and why it was chosen: the active virtual environment's (`VIRTUAL_ENV`), else the
/// one beside the tether binary (a venv that `pip install` put tether into), else `python3`
/// from the PATH.
pub fn default_python(
    virtual_env: Option<&std::ffi::OsStr>,
    exe: Option<&std::path::Path>,
) -> (PathBuf, &'static str) {
    let beside = |dir: &std::path::Path| {
        ["python", "python3"]
            .iter()
            .map(|name| dir.join(name))
            .find(|p| p.is_file())
    };
    if let Some(python) = virtual_env
        .filter(|v| !v.is_empty())
        .and_then(|v| beside(&std::path::Path::new(v).join("bin")))
    {
        return (python, "the active virtual environment's Python");
    }
    if let Some(python) = exe.and_then(std::path::Path::parent).and_then(beside) {
        return (python, "the Python tether is installed beside");
    }
    (
        PathBuf::from(crate::config::defaults::PYTHON),
        "python3 from the PATH",
    )
}

/// Everything needed to start a worker, fixed for the gateway's lifetime.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Interpreter with Panel installed.
    pub python: PathBuf,
    /// App scripts, served at `/<stem>`.
    pub apps: Vec<PathBuf>,
    /// Extra `panel serve` arguments from after `--`.
    pub panel_args: Vec<String>,
    /// The URL prefix everything is served under, or empty.
    pub prefix: String,
    /// Signs session ids; given to the worker through its environment only.
    pub bokeh_key: BokehKey,
    /// How long the worker keeps a session with no connection; at least `--live-ttl`.
    pub unused_session_lifetime: Duration,
    /// How long start-up may take before we give up.
    pub start_timeout: Duration,
    /// The gateway's private directory (mode 0700) of worker sockets.
    pub socket_dir: PathBuf,
}

/// What the rest of the gateway sees of one worker slot: where it is and which incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// The slot's process accepts connections (on its socket); false while restarting.
    pub up: bool,
    /// Bumped on every restart and every reload: sessions of an older generation are gone, or
    /// (after a reload) live on in a process that is draining.
    pub generation: u64,
    /// Tabs connected to a generation below this one must move now: their websockets are
    /// closed so that the page reloads onto the current generation. 0: none.
    pub moving: u64,
}

/// One worker process: its slot and generation, which name its socket and its pooled
/// HTTP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    /// The worker slot.
    pub slot: usize,
    /// The slot's generation the process belongs to.
    pub generation: u64,
}

impl Target {
    /// The URI authority naming this process for the gateway's HTTP client (`worker-0-3`).
    pub fn authority(&self) -> String {
        format!("worker-{}-{}", self.slot, self.generation)
    }

    /// The process an authority names.
    pub fn from_authority(host: &str) -> Option<Target> {
        let (slot, generation) = host.strip_prefix("worker-")?.split_once('-')?;
        Some(Target {
            slot: slot.parse().ok()?,
            generation: generation.parse().ok()?,
        })
    }
}

/// What a slot's supervisor shares with the gateway about its processes: the websockets open
/// to each generation, how many old generations still drain, and how often it restarted.
#[derive(Debug, Default)]
pub struct Processes {
    /// Open websockets per generation; generations with none are absent.
    open: std::sync::Mutex<std::collections::BTreeMap<u64, usize>>,
    /// Old processes still running until their tabs close or move.
    draining: std::sync::atomic::AtomicUsize,
    /// Times the slot's process was restarted after it exited.
    restarts: std::sync::atomic::AtomicU64,
    /// The generation and pid of the current process, for reading its memory.
    current: std::sync::Mutex<Option<(u64, u32)>>,
}

impl Processes {
    /// Open websockets to the process of `generation`.
    pub fn count(&self, generation: u64) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&generation).copied().unwrap_or(0)
    }

    /// Old processes still draining.
    pub fn draining(&self) -> usize {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Times the slot's process was restarted after it exited.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The resident memory in bytes of the current process, read now, if it is of
    /// `generation` (a new one may have just replaced it).
    pub fn memory_now(&self, generation: u64) -> Option<u64> {
        let current = *self.current.lock().unwrap_or_else(|p| p.into_inner());
        match current {
            Some((g, pid)) if g == generation => resident_bytes(pid),
            _ => None,
        }
    }

    /// `process`, of `generation`, is the slot's current one from now on.
    fn serving(&self, generation: u64, process: &Process) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        *current = process.pid().map(|pid| (generation, pid));
    }

    fn add(&self, generation: u64) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        *open.entry(generation).or_default() += 1;
    }

    fn remove(&self, generation: u64) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&generation) {
            *n -= 1;
            if *n == 0 {
                open.remove(&generation);
            }
        }
    }
}

/// A websocket's hold on the worker process it connects to: while any is held, a draining
/// process keeps running.
pub struct Lease {
    /// The process.
    target: Target,
    /// Its socket.
    socket: PathBuf,
    /// Where the hold is counted.
    connections: Arc<Processes>,
    /// The slot's endpoint, to learn when this generation must move.
    endpoint: watch::Receiver<Endpoint>,
}

impl Lease {
    /// The process held.
    pub fn target(&self) -> Target {
        self.target
    }

    /// Its socket.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Resolves when this process's generation must move (its drain timed out, or `--dev`
    /// reloaded the app); never, if the slot's supervisor is gone.
    pub async fn moved(&mut self) {
        let generation = self.target.generation;
        if self
            .endpoint
            .wait_for(|e| e.moving > generation)
            .await
            .is_err()
        {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.connections.remove(self.target.generation);
    }
}

/// Where each worker slot's current process listens, as the rest of the gateway reads it.
#[derive(Clone, Default)]
pub struct Workers {
    /// Each slot's endpoint, in slot order.
    slots: Vec<watch::Receiver<Endpoint>>,
    /// Each slot's open websockets per generation, in slot order.
    connections: Vec<Arc<Processes>>,
    /// Each slot's supervisor, in slot order.
    commands: Vec<tokio::sync::mpsc::Sender<Command>>,
    /// The private directory of their sockets.
    dir: PathBuf,
}

impl Workers {
    /// The slots, in slot order, and the directory of their sockets.
    pub fn new(slots: Vec<Slot>, dir: PathBuf) -> Workers {
        let mut workers = Workers {
            dir,
            ..Workers::default()
        };
        for s in slots {
            workers.slots.push(s.endpoint);
            workers.connections.push(s.connections);
            workers.commands.push(s.commands);
        }
        workers
    }

    /// Tells slot `worker`'s process of `generation` to discard these idle sessions now.
    pub async fn expire(&self, worker: usize, generation: u64, ids: Vec<String>) {
        if let Some(commands) = self.commands.get(worker) {
            let _ = commands.send(Command::Expire { generation, ids }).await;
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The private directory of the sockets.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The process slot `worker` runs now.
    pub fn target(&self, worker: usize) -> Target {
        Target {
            slot: worker,
            generation: self.endpoint(worker).generation,
        }
    }

    /// A hold on the process slot `worker` runs now, for a websocket to it.
    pub fn lease(&self, worker: usize) -> Option<Lease> {
        let endpoint = self.slots.get(worker)?.clone();
        let connections = self.connections.get(worker)?.clone();
        let target = self.target(worker);
        connections.add(target.generation);
        Some(Lease {
            target,
            socket: socket_path(&self.dir, target),
            connections,
            endpoint,
        })
    }

    /// Slot `worker`'s current endpoint; a slot that does not exist reads as restarting.
    pub fn endpoint(&self, worker: usize) -> Endpoint {
        self.slots
            .get(worker)
            .map_or(Endpoint::default(), |slot| *slot.borrow())
    }

    /// What slot `worker`'s supervisor shares about its processes.
    pub fn processes(&self, worker: usize) -> Option<&Processes> {
        self.connections.get(worker).map(|c| &**c)
    }

    /// Slots whose process accepts connections now.
    pub fn up(&self) -> usize {
        (0..self.len()).filter(|&w| self.endpoint(w).up).count()
    }
}

/// A request to a slot's supervisor.
pub enum Command {
    /// Start a new generation from the app files as they are now; on success, new sessions go
    /// to it and the old process drains for at most `drain`. Answers the new generation, or
    /// why it did not start.
    Reload {
        /// Longest the old process's connected tabs keep it before they are moved.
        drain: Duration,
        /// The answer.
        done: tokio::sync::oneshot::Sender<Result<u64, String>>,
    },
    /// Discard these idle sessions of `generation` now (the gateway dropped them to free
    /// memory); ignored if that generation no longer serves.
    Expire {
        /// The generation they live in.
        generation: u64,
        /// Their signed ids.
        ids: Vec<String>,
    },
}

/// How often the gateway reads each worker's resident memory to keep it under
/// `--worker-memory` (it is also read at every new page).
pub const MEMORY_SAMPLE: Duration = Duration::from_millis(500);

/// One supervised worker slot, as the gateway holds it.
pub struct Slot {
    /// Current endpoint, watched by the proxy and the registry.
    pub endpoint: watch::Receiver<Endpoint>,
    /// Open websockets per generation.
    pub connections: Arc<Processes>,
    /// Where reloads are asked for.
    pub commands: tokio::sync::mpsc::Sender<Command>,
}

/// After a reload, how long an old process is kept at least, so requests already sent to it
/// finish, and how long its tabs get to close once told to move.
const RETIRE_GRACE: Duration = Duration::from_secs(3);
/// How often a draining process is checked.
const RETIRE_POLL: Duration = Duration::from_millis(250);

/// Starts a supervised worker; the first start's error is returned, later crashes are
/// restarted, and [`Command::Reload`] starts new generations.
pub async fn supervise(
    spec: Arc<WorkerSpec>,
    index: usize,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(Slot, tokio::task::JoinHandle<()>), WorkerError> {
    let first = start(
        &spec,
        Target {
            slot: index,
            generation: 1,
        },
    )
    .await?;
    let (tx, rx) = watch::channel(Endpoint {
        up: true,
        generation: 1,
        moving: 0,
    });
    let tx = Arc::new(tx);
    let connections = Arc::new(Processes::default());
    let (commands, mut requests) = tokio::sync::mpsc::channel(64);
    let slot = Slot {
        endpoint: rx,
        connections: connections.clone(),
        commands,
    };
    let task = tokio::spawn(async move {
        let mut process = first;
        connections.serving(1, &process);
        let mut generation = 1;
        let mut backoff = Duration::from_millis(200);
        loop {
            tokio::select! {
                status = process.wait() => {
                    if *shutdown.borrow() { return; }
                    tracing::warn!(worker = index, %status, "worker exited; restarting");
                    let _ = std::fs::remove_file(&process.socket);
                    // Its sessions are gone now, not when the replacement is ready: their users
                    // are placed on a healthy worker and restored there meanwhile.
                    generation += 1;
                    connections.restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tx.send_modify(|e| { e.up = false; e.generation = generation; });
                }
                Some(command) = requests.recv() => {
                    let (drain, done) = match command {
                        Command::Reload { drain, done } => (drain, done),
                        Command::Expire { generation: g, ids } => {
                            if g == generation {
                                process.expire(&ids).await;
                            }
                            continue;
                        }
                    };
                    let next = Target { slot: index, generation: generation + 1 };
                    match start(&spec, next).await {
                        Ok(p) => {
                            let old = std::mem::replace(&mut process, p);
                            connections.serving(next.generation, &process);
                            let old_generation = generation;
                            generation = next.generation;
                            tx.send_modify(|e| { e.up = true; e.generation = generation; });
                            tracing::info!(worker = index, generation, "new generation serving");
                            tokio::spawn(retire(
                                old,
                                Target { slot: index, generation: old_generation },
                                drain,
                                tx.clone(),
                                connections.clone(),
                                shutdown.clone(),
                            ));
                            let _ = done.send(Ok(generation));
                        }
                        Err(WorkerError::App(text)) => { let _ = done.send(Err(text)); }
                        Err(e) => { let _ = done.send(Err(e.to_string())); }
                    }
                    continue;
                }
                _ = shutdown.changed() => {
                    process.kill().await;
                    return;
                }
            }
            loop {
                tokio::time::sleep(backoff).await;
                if *shutdown.borrow() {
                    return;
                }
                match start(
                    &spec,
                    Target {
                        slot: index,
                        generation,
                    },
                )
                .await
                {
                    Ok(p) => {
                        process = p;
                        connections.serving(generation, &process);
                        backoff = Duration::from_millis(200);
                        tx.send_modify(|e| e.up = true);
                        break;
                    }
                    Err(e) => {
                        tracing::error!(worker = index, error = %e, "worker restart failed");
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
    });
    Ok((slot, task))
}

/// Keeps an old generation's process until its websockets have closed (and at least
/// [`RETIRE_GRACE`]); past `drain`, tells its tabs to move and gives them the grace to go.
async fn retire(
    mut process: Process,
    target: Target,
    drain: Duration,
    endpoint: Arc<watch::Sender<Endpoint>>,
    connections: Arc<Processes>,
    mut shutdown: watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering;
    connections.draining.fetch_add(1, Ordering::Relaxed);
    let began = tokio::time::Instant::now();
    let mut until = began + drain;
    let mut moved = false;
    loop {
        let now = tokio::time::Instant::now();
        let open = connections.count(target.generation);
        if open == 0 && now >= began + RETIRE_GRACE {
            break;
        }
        if now >= until {
            if moved {
                tracing::warn!(
                    worker = target.slot,
                    generation = target.generation,
                    open,
                    "tabs did not move in time; stopping the old worker"
                );
                break;
            }
            // Every generation below the current one moves, this one included.
            endpoint.send_modify(|e| e.moving = e.moving.max(target.generation + 1));
            tracing::info!(
                worker = target.slot,
                generation = target.generation,
                open,
                "moving the old worker's tabs to the new one"
            );
            moved = true;
            until = now + RETIRE_GRACE;
        }
        tokio::select! {
            _ = tokio::time::sleep(RETIRE_POLL) => {}
            _ = process.wait() => break,
            _ = shutdown.changed() => break,
        }
    }
    process.kill().await;
    let _ = std::fs::remove_file(&process.socket);
    connections.draining.fetch_sub(1, Ordering::Relaxed);
    tracing::info!(
        worker = target.slot,
        generation = target.generation,
        "old worker stopped"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel_login_reads_the_secret_and_lifetime_as_panel_does() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let none = |_: &str| None;
        assert_eq!(panel_login(&args(&["--basic-auth", "pw"]), none), None);
        let (secret, life) = panel_login(&args(&["--cookie-secret", "abc"]), none).unwrap();
        assert_eq!(
            (secret.as_str(), life),
            ("abc", Duration::from_secs(86_400))
        );
        let env = |name: &str| match name {
            "BOKEH_COOKIE_SECRET" => Some("from-env".to_owned()),
            "PANEL_OAUTH_EXPIRY" => Some("0.5".to_owned()),
            _ => None,
        };
        let (secret, life) = panel_login(&[], env).unwrap();
        assert_eq!(
            (secret.as_str(), life),
            ("from-env", Duration::from_secs(43_200))
        );
        let (secret, life) = panel_login(
            &args(&["--cookie-secret=x", "--oauth-expiry-days", "2"]),
            env,
        )
        .unwrap();
        assert_eq!((secret.as_str(), life), ("x", Duration::from_secs(172_800)));
    }

    #[test]
    fn panel_options_are_found_in_either_form_but_not_in_the_apps_own_args() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            panel_option(&args(&["--index", "app"]), "--index"),
            Some("app")
        );
        assert_eq!(
            panel_option(&args(&["--index=app"]), "--index"),
            Some("app")
        );
        assert_eq!(
            panel_option(&args(&["--disable-index"]), "--disable-index"),
            Some("")
        );
        assert_eq!(
            panel_option(&args(&["--index-titles", "x"]), "--index"),
            None
        );
        assert_eq!(
            panel_option(&args(&["--args", "--index", "a"]), "--index"),
            None
        );
    }

    #[test]
    fn the_default_python_is_the_active_venvs_then_the_one_beside_tether() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("active");
        let installed = dir.path().join("installed/bin");
        std::fs::create_dir_all(active.join("bin")).unwrap();
        std::fs::create_dir_all(&installed).unwrap();
        std::fs::write(active.join("bin/python"), "").unwrap();
        std::fs::write(installed.join("python3"), "").unwrap();
        let exe = installed.join("tether");
        let venv = active.as_os_str();
        assert_eq!(
            default_python(Some(venv), Some(&exe)).0,
            active.join("bin/python")
        );
        assert_eq!(
            default_python(None, Some(&exe)).0,
            installed.join("python3")
        );
        // An active venv without an interpreter, or an empty VIRTUAL_ENV, does not count.
        let empty = dir.path().join("empty");
        assert_eq!(
            default_python(Some(empty.as_os_str()), Some(&exe)).0,
            installed.join("python3")
        );
        assert_eq!(
            default_python(Some("".as_ref()), Some(&exe)).0,
            installed.join("python3")
        );
        // A binary built in a source tree has no interpreter beside it.
        let built = dir.path().join("target/debug/tether");
        assert_eq!(
            default_python(None, Some(&built)).0,
            PathBuf::from("python3")
        );
    }

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn versions_are_read_as_pip_writes_them() {
        assert_eq!(Version::parse("1.9.4"), Some(Version(1, 9, 4)));
        assert_eq!(Version::parse("1.8.0rc1"), Some(Version(1, 8, 0)));
        assert_eq!(Version::parse("3.4.3.post1"), Some(Version(3, 4, 3)));
        assert_eq!(Version::parse("2"), Some(Version(2, 0, 0)));
        assert_eq!(Version::parse("dev"), None);
        let v = |s| Versions {
            panel: Version::parse(s),
            bokeh: None,
        };
        assert!(v("1.9.4").queues_events_behind_changes());
        assert!(v("1.8.4").queues_events_behind_changes());
        assert!(!v("1.8.3").queues_events_behind_changes());
        assert!(!v("1.4.5").queues_events_behind_changes());
        assert!(!Versions::default().queues_events_behind_changes());
    }

    #[test]
    fn panel_args_that_undo_tethers_own_are_refused_with_what_to_do() {
        assert!(check_panel_args(&args(&["--warm", "--static-dirs", "a=./a"])).is_ok());
        let err = check_panel_args(&args(&["--dev"])).unwrap_err();
        assert!(err.to_string().contains("tether's own --dev"), "{err}");
        let err = check_panel_args(&args(&["--warm", "--num-procs", "4"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`panel serve --num-procs` after `--` conflicts with tether; use tether's --workers"
        );
        let err = check_panel_args(&args(&["--session-ids=unsigned"])).unwrap_err();
        assert!(err.to_string().contains("--session-ids"), "{err}");
        // The app's own arguments are its business.
        assert!(check_panel_args(&args(&["--args", "--port", "1"])).is_ok());
    }
}
