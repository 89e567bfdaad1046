//! Test harness: a real `tether` process with real Panel workers, and a small browser-like
//! client that speaks HTTP with a cookie jar and the Bokeh websocket protocol.
#![allow(dead_code)]

pub mod bokeh;
pub mod doc;
pub mod redis;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use bokeh::{Browser, Tab};
#[allow(unused_imports)]
pub use doc::Doc;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The Python with Panel: `$TETHER_PYTHON`, else the repository's `.venv`.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("TETHER_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with Panel: run `make test`, which creates .venv from requirements.txt"
    );
    venv
}

pub fn app(rel: &str) -> PathBuf {
    repo().join(rel)
}

/// A running gateway. Killed (with its workers, through their lifeline) when dropped.
pub struct Tether {
    /// The gateway process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Working directory holding the secret and the state file.
    pub dir: PathBuf,
    /// Arguments it was started with, to restart it identically.
    args: Vec<String>,
    /// Extra environment it was started with.
    env: Vec<(String, String)>,
    /// A command that runs the gateway (`unshare ...`), or empty.
    launcher: Vec<String>,
    /// Standard error lines, collected by a thread.
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The apps, then the other arguments, as `tether serve` takes them.
fn command_line(apps: &[PathBuf], args: &[&str]) -> Vec<String> {
    let apps = apps.iter().map(|a| a.display().to_string());
    apps.chain(args.iter().map(|s| s.to_string())).collect()
}

impl Tether {
    /// Starts `tether serve APPS --port 0 ARGS` in `dir` and waits until it serves.
    pub fn start(dir: &Path, apps: &[PathBuf], args: &[&str]) -> Tether {
        Self::start_full(dir, command_line(apps, args), Vec::new(), Vec::new())
    }

    /// Like [`Tether::start`], run by `launcher`: `LAUNCHER... TETHER serve ...`. The launcher
    /// must end by exec'ing the gateway, so that the child is the gateway itself.
    pub fn start_launched(
        dir: &Path,
        apps: &[PathBuf],
        args: &[&str],
        launcher: &[&str],
    ) -> Tether {
        let launcher = launcher.iter().map(|s| s.to_string()).collect();
        Self::start_full(dir, command_line(apps, args), Vec::new(), launcher)
    }

    /// Like [`Tether::start`], with extra environment variables for the gateway.
    pub fn start_with_env(
        dir: &Path,
        apps: &[PathBuf],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Tether {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::start_full(dir, command_line(apps, args), env, Vec::new())
    }

    fn start_full(
        dir: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
        launcher: Vec<String>,
    ) -> Tether {
        let (child, lines, stderr) = spawn(dir, &args, &env, &launcher);
        let mut child = child;
        let deadline = Instant::now() + Duration::from_secs(120);
        let base = loop {
            match lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("tether: serving ") {
                        let url = rest.trim();
                        let end = url[7..].find('/').map(|i| i + 7).unwrap_or(url.len());
                        break url[..end].to_owned();
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!(
                            "tether exited ({status}) before serving:\n{}",
                            stderr.lock().unwrap().join("\n")
                        );
                    }
                    assert!(
                        Instant::now() < deadline,
                        "tether did not start within 120 s"
                    );
                }
            }
        };
        Tether {
            child,
            base,
            dir: dir.to_owned(),
            args,
            env,
            launcher,
            stderr,
        }
    }

    /// Runs tether expecting it to fail; returns (exit code, stderr).
    pub fn fail(dir: &Path, args: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["serve", "--port", "0"])
            .args(args)
            .current_dir(dir)
            .env("TETHER_PYTHON", python())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it with SIGTERM and waits.
    pub fn stop(&mut self) {
        signal(self.pid(), "TERM");
        wait_exit(&mut self.child, Duration::from_secs(30));
    }

    /// Kills it with SIGKILL and waits.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it (SIGTERM) and starts it again with the same arguments and directory.
    pub fn restart(&mut self) {
        self.stop();
        *self = Self::start_full(
            &self.dir.clone(),
            self.args.clone(),
            self.env.clone(),
            self.launcher.clone(),
        );
    }

    /// After a kill -9: start again with the same arguments.
    pub fn start_again(&mut self) {
        *self = Self::start_full(
            &self.dir.clone(),
            self.args.clone(),
            self.env.clone(),
            self.launcher.clone(),
        );
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Pids of this gateway's worker processes.
    pub fn workers(&self) -> Vec<u32> {
        children_of(self.pid())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until `/.tether/health` answers 200, as it does once a worker is ready.
    pub async fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while bokeh::http_get(&self.url("/.tether/health"), &[]).await.0 != 200 {
            assert!(Instant::now() < deadline, "healthy within {within:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the log has a line containing `needle`.
    pub fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.stderr().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Tether {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The gateway's own account of a failed test, minus the workers' chatter.
            let log: Vec<String> = self
                .stderr()
                .lines()
                .filter(|l| {
                    !l.contains("worker::output") || l.contains("ERROR") || l.contains("Error")
                })
                .map(str::to_owned)
                .collect();
            eprintln!("--- tether log ---\n{}", log.join("\n"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Spawned = (
    Child,
    mpsc::Receiver<String>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
);

fn spawn(dir: &Path, args: &[String], env: &[(String, String)], launcher: &[String]) -> Spawned {
    let tether = env!("CARGO_BIN_EXE_tether");
    let mut command = match launcher.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(tether);
            c
        }
        None => Command::new(tether),
    };
    let mut child = command
        .args(["serve", "--port", "0"])
        .args(args)
        .current_dir(dir)
        .env("TETHER_PYTHON", python())
        .env("TETHER_LOG", "tether=debug")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tether binary runs");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let collected = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = collected.clone();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (child, rx, collected)
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status();
}

fn wait_exit(child: &mut Child, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("process did not exit within {within:?} after SIGTERM");
}

/// Direct children of `pid`, from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // Fields after the command name, which is in parentheses and may hold spaces.
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(1).and_then(|f| f.parse::<u32>().ok()) == Some(pid) && fields[0] != "Z" {
            out.push(p);
        }
    }
    out
}

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, a)| a.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// A fresh temporary directory for one gateway.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tether-test")
        .tempdir()
        .unwrap()
}
