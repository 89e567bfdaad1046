//! Starting one `panel serve` worker: the bootstrap that guards it, the process, and the
//! wait until it accepts connections.
//!
//! A worker listens on a Unix socket in the gateway's private directory (mode 0700; Tornado
//! makes the socket 0600), not on a TCP port: no other local user's process can reach it,
//! page token or not. A Unix socket has no Nagle and no delayed ACKs either.
//!
//! A worker is started through a small bootstrap that (1) exits when its stdin closes, which
//! happens when the gateway dies for any reason, even SIGKILL; (2) checks that Panel imports and
//! that every app script compiles (and that a notebook can be served), so those mistakes get one clear sentence instead of an error page.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{Target, WorkerError, WorkerSpec};

/// Exit code of the bootstrap when `import panel` fails.
const EXIT_NO_PANEL: i32 = 64;
/// Exit code of the bootstrap when an app does not compile.
const EXIT_APP_ERROR: i32 = 65;
/// Lines of worker output kept to explain a failed start.
const TAIL_LINES: usize = 30;

const BOOTSTRAP: &str = r#"
import os, sys, threading
def _contexts():
    # The server's application contexts, found once: made at start-up, never replaced.
    global _found
    if not _found:
        import gc
        from bokeh.server.contexts import ApplicationContext
        _found = [o for o in gc.get_objects() if isinstance(o, ApplicationContext)]
    return _found
_found = None
async def _discard(ctx, ids):
    for sid in ids:
        s = ctx._sessions.get(sid)
        if s is not None and s.connection_count == 0:
            s.request_expiration()
    # Discards only sessions whose expiration was asked for: no linger is that long.
    await ctx._cleanup_sessions(1 << 62)
    _trim()
def _trim():
    # Hands freed memory back, so the worker's RSS, which the gateway bounds, falls.
    import gc, ctypes
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except Exception:
        pass
def _command(line):
    # "expire ID...": the gateway dropped these idle sessions; free their memory now.
    words = line.decode("ascii", "replace").split()
    if len(words) < 2 or words[0] != "expire":
        return
    for ctx in _contexts():
        if ctx.io_loop is not None and any(i in ctx._sessions for i in words[1:]):
            ctx.io_loop.add_callback(_discard, ctx, words[1:])
def _watch():
    # The gateway holds stdin open for the worker's life and writes commands on it.
    try:
        for line in sys.stdin.buffer:
            try:
                _command(line)
            except Exception as e:
                sys.stderr.write("tether-bootstrap: command failed: %r\n" % (e,))
    finally:
        os._exit(0)
threading.Thread(target=_watch, daemon=True).start()
def _fail(code, text):
    # os._exit: a normal exit would abort on the watcher thread's locked stdin.
    sys.stderr.write("tether-bootstrap: %s\n" % text)
    sys.stderr.flush()
    os._exit(code)
try:
    import panel
    from panel.command import main
except ImportError as e:
    _fail(64, "no-panel: %s" % e)
args = sys.argv[1:]
apps = args[:args.index("--")]
for app in apps:
    if os.path.isdir(app):
        script = os.path.join(app, "main.py")
        app = script if os.path.isfile(script) else os.path.join(app, "main.ipynb")
    if app.endswith(".ipynb"):
        try:
            import nbconvert, nbformat
        except ImportError:
            _fail(65, "app-error: the notebook %s needs nbconvert in the workers' Python (pip install nbconvert)" % app)
        continue
    if not app.endswith(".py"):
        continue
    try:
        with open(app, "rb") as f:
            compile(f.read(), app, "exec")
    except SyntaxError as e:
        _fail(65, "app-error: %s has a syntax error at line %s: %s" % (app, e.lineno, e.msg))
    except OSError as e:
        _fail(65, "app-error: cannot read %s: %s" % (app, e.strerror))
sys.argv = ["panel", "serve"] + apps + args[args.index("--") + 1:]
sys.exit(main())
"#;

/// The `Host` and `Origin` name the gateway uses towards its workers, which accept
/// websockets from it alone.
pub const WORKER_HOST: &str = "tether-worker";

/// The socket a worker process listens on, in the gateway's private `dir`: one per slot and
/// generation, so an old generation keeps its own while it drains.
pub fn socket_path(dir: &Path, target: Target) -> PathBuf {
    dir.join(format!("worker-{}-{}.sock", target.slot, target.generation))
}

/// A started worker process.
pub struct Process {
    /// The Unix socket it listens on.
    pub socket: PathBuf,
    /// The child; killed on drop, and its stdin pipe closing ends it too.
    child: Child,
    /// Recent output lines, for explaining a crash.
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Held open for the worker's life: its closing (even by our death) ends the worker.
    /// Kept out of `child`, because `Child::wait` closes the stdin it holds. Commands to the
    /// worker ([`Process::expire`]) are lines written on it.
    lifeline: Option<tokio::process::ChildStdin>,
}

impl Process {
    /// Waits for the process to end and says how it ended.
    pub async fn wait(&mut self) -> String {
        match self.child.wait().await {
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        }
    }

    /// Stops the worker now.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Tells the worker to discard these sessions now, if no websocket holds them, and to
    /// hand the memory back: the gateway dropped them from its registry.
    pub async fn expire(&mut self, ids: &[String]) {
        use tokio::io::AsyncWriteExt;
        let Some(pipe) = self.lifeline.as_mut() else {
            return;
        };
        // Signed session ids are base64url and dots: no spaces or line ends to escape.
        let mut line = String::from("expire");
        for id in ids {
            line.push(' ');
            line.push_str(id);
        }
        line.push('\n');
        if let Err(e) = pipe.write_all(line.as_bytes()).await {
            tracing::warn!(error = %e, "cannot tell a worker to discard sessions");
        }
    }

    fn tail_text(&self) -> String {
        self.tail
            .lock()
            .expect("tail lock")
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Resident memory of process `pid` in bytes (`VmRSS`), or `None` once it is gone.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A release number, `major.minor.patch`; pre-release and local suffixes are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Reads `1.9.4`, `1.8.0rc1`, `3.4.3.post1` and the like.
    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.split('.').map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        let major = parts.next().flatten()?;
        let minor = parts.next().flatten().unwrap_or(0);
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Version(major, minor, patch))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The Panel and Bokeh the workers run, as far as they could be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Versions {
    /// `panel.__version__`.
    pub panel: Option<Version>,
    /// `bokeh.__version__`.
    pub bokeh: Option<Version>,
}

impl Versions {
    /// Panel holds a browser event (a click) until the widget changes before it have reached
    /// Python: since 1.8.4 (`state._change_callbacks`). Unknown versions are assumed not to.
    pub fn queues_events_behind_changes(&self) -> bool {
        self.panel.is_some_and(|v| v >= Version(1, 8, 4))
    }
}

/// Checks that the interpreter runs and has Panel, before anything else starts, and says
/// which Panel and Bokeh it has.
pub async fn check_python(python: &PathBuf) -> Result<Versions, WorkerError> {
    let out = Command::new(python)
        .args([
            "-c",
            "import panel, bokeh; print(panel.__version__, bokeh.__version__)",
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| WorkerError::NoPython {
            python: python.clone(),
            source,
        })?;
    if out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        Ok(Versions {
            panel: words.next().and_then(Version::parse),
            bokeh: words.next().and_then(Version::parse),
        })
    } else {
        Err(WorkerError::NoPanel {
            python: python.clone(),
        })
    }
}

/// Starts one worker and waits until it accepts connections.
pub async fn start(spec: &WorkerSpec, target: Target) -> Result<Process, WorkerError> {
    let index = target.slot;
    let socket = socket_path(&spec.socket_dir, target);
    // A socket left by an earlier process of this slot; Tornado would replace it too.
    let _ = std::fs::remove_file(&socket);
    let lifetime_ms = spec
        .unused_session_lifetime
        .as_millis()
        .max(1000)
        .to_string();
    let check_ms = (spec.unused_session_lifetime.as_millis() / 4).clamp(1000, 60_000);
    let mut cmd = Command::new(&spec.python);
    cmd.arg("-c").arg(BOOTSTRAP);
    cmd.args(&spec.apps);
    cmd.arg("--");
    cmd.arg("--unix-socket").arg(&socket);
    cmd.args(["--allow-websocket-origin", WORKER_HOST]);
    cmd.args(["--session-ids", "external-signed"]);
    cmd.args(["--unused-session-lifetime", &lifetime_ms]);
    cmd.args(["--check-unused-sessions", &check_ms.to_string()]);
    cmd.args(["--num-procs", "1", "--use-xheaders"]);
    if !spec.prefix.is_empty() {
        cmd.args(["--prefix", &spec.prefix]);
    }
    cmd.args(&spec.panel_args);
    cmd.env("BOKEH_SECRET_KEY", spec.bokeh_key.as_str());
    cmd.env("BOKEH_SIGN_SESSIONS", "true");
    cmd.env("PYTHONUNBUFFERED", "1");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| WorkerError::NoPython {
        python: spec.python.clone(),
        source,
    })?;
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(BufReader::new(out), index, tail.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(BufReader::new(err), index, tail.clone()));
    }
    let lifeline = child.stdin.take();
    let mut process = Process {
        socket,
        child,
        tail,
        lifeline,
    };
    wait_ready(&mut process, spec).await?;
    tracing::info!(worker = index, pid = process.pid(), "worker ready");
    Ok(process)
}

async fn pump<R: tokio::io::AsyncRead + Unpin>(
    reader: BufReader<R>,
    index: usize,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = reader.lines();
    let mut output = Output::default();
    while let Ok(Some(line)) = lines.next_line().await {
        if output.is_trouble(&line) {
            tracing::warn!(target: "tether::worker::output", worker = index, "{line}");
        } else {
            tracing::debug!(target: "tether::worker::output", worker = index, "{line}");
        }
        let mut t = tail.lock().expect("tail lock");
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }
}

/// Sorts a worker's output lines: errors, warnings and whole tracebacks are shown at the
/// default log level, as `panel serve` prints them; the rest only at debug.
#[derive(Default)]
struct Output {
    in_traceback: bool,
}

impl Output {
    fn is_trouble(&mut self, line: &str) -> bool {
        if line.starts_with("Traceback (most recent call last)") {
            self.in_traceback = true;
            return true;
        }
        if self.in_traceback {
            // Frames are indented; the first line that is not ends the traceback.
            if !line.starts_with(char::is_whitespace) {
                self.in_traceback = false;
            }
            return true;
        }
        let lower = line.to_ascii_lowercase();
        ["error", "exception", "warning", "fatal"]
            .iter()
            .any(|w| lower.contains(w))
    }
}

async fn wait_ready(p: &mut Process, spec: &WorkerSpec) -> Result<(), WorkerError> {
    let deadline = tokio::time::Instant::now() + spec.start_timeout;
    loop {
        if let Some(status) = p.child.try_wait().ok().flatten() {
            // Let the output pumps catch up with the last lines.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let tail = p.tail_text();
            return Err(match status.code() {
                Some(EXIT_NO_PANEL) => WorkerError::NoPanel {
                    python: spec.python.clone(),
                },
                Some(EXIT_APP_ERROR) => WorkerError::App(
                    tail.lines()
                        .rev()
                        .find_map(|l| l.split("app-error: ").nth(1))
                        .unwrap_or("an app could not be loaded")
                        .to_owned(),
                ),
                _ => WorkerError::Exited {
                    status: status.to_string(),
                    tail,
                },
            });
        }
        if tokio::net::UnixStream::connect(&p.socket).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            p.kill().await;
            return Err(WorkerError::Timeout(spec.start_timeout));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_whole_tracebacks_are_trouble_and_chatter_is_not() {
        let mut out = Output::default();
        let lines = [
            (
                "2026-12-02 15:35:04,700 Starting Bokeh server version 3.9.2",
                false,
            ),
            (
                "2026-12-02 15:35:04,736 Error running application handler <...>",
                true,
            ),
            ("Traceback (most recent call last):", true),
            ("  File \"app.py\", line 3, in <module>", true),
            ("    1 / 0", true),
            ("ZeroDivisionError: division by zero", true),
            (
                "2026-12-02 15:35:05,001 200 GET /app (127.0.0.1) 12.00ms",
                false,
            ),
            (
                "WARNING:param.Column: Setting non-parameter attribute",
                true,
            ),
        ];
        for (line, trouble) in lines {
            assert_eq!(out.is_trouble(line), trouble, "{line}");
        }
    }
}
