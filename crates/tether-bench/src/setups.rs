//! The three setups under test, each with its own Panel worker: direct `panel serve`, tether,
//! and nginx as a plain websocket-capable reverse proxy.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::procs::{self, Server};

/// Which setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Direct,
    Tether,
    Nginx,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Tether => "tether",
            Kind::Nginx => "nginx",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Kind> {
        match s.trim() {
            "direct" => Ok(Kind::Direct),
            "tether" => Ok(Kind::Tether),
            "nginx" => Ok(Kind::Nginx),
            other => Err(anyhow!(
                "unknown setup {other:?}; choose from direct, tether, nginx"
            )),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Programs and places every setup needs.
#[derive(Debug, Clone)]
pub struct Tools {
    /// Python with Panel.
    pub python: PathBuf,
    /// The tether binary under test.
    pub tether: PathBuf,
    /// The nginx binary.
    pub nginx: PathBuf,
    /// App scripts served by every setup.
    pub apps: Vec<PathBuf>,
    /// Where server output goes.
    pub logs: PathBuf,
    /// Scratch space (state files, nginx prefix).
    pub work: PathBuf,
}

/// Worker sessions live as long as in tether's own workers (its `--live-ttl` 1 h plus 60 s),
/// so that every setup's worker holds the same sessions.
const SESSION_LIFETIME_MS: &str = "3660000";
const CHECK_SESSIONS_MS: &str = "60000";

/// A running setup.
pub struct Setup {
    pub kind: Kind,
    /// Where the simulated browsers connect.
    pub addr: SocketAddr,
    /// The proxy (tether or nginx), if any; stopped before the worker.
    front: Option<Server>,
    /// The separately started Panel worker (none for tether, which starts its own).
    worker: Option<Server>,
    /// tether's arguments, to restart it identically.
    tether_args: Vec<String>,
    /// tether's name (its working directory under `work`), and how often it was restarted.
    tether_name: String,
    restarts: usize,
}

/// What serves the apps behind each setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    /// A real `panel serve`.
    Panel,
    /// `tools.python` is the stand-in's fake interpreter (see `standin.rs`).
    StandIn,
}

/// Starts the worker on `port`, accepting websockets from `origin_port`.
fn start_worker(
    tools: &Tools,
    worker: Worker,
    name: &str,
    port: u16,
    origin_port: u16,
) -> anyhow::Result<Server> {
    match worker {
        Worker::Panel => panel_worker(tools, name, port, origin_port),
        Worker::StandIn => Server::start(
            name,
            &tools.python,
            &["--port".to_owned(), port.to_string()],
            &[],
            &tools.work,
            &tools.logs,
        ),
    }
}

/// Starts `panel serve` for the apps on `port`, accepting websockets from `origin_port`.
fn panel_worker(tools: &Tools, name: &str, port: u16, origin_port: u16) -> anyhow::Result<Server> {
    let mut args: Vec<String> = vec!["-m".into(), "panel".into(), "serve".into()];
    args.extend(tools.apps.iter().map(|a| a.display().to_string()));
    for a in [
        "--address",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--allow-websocket-origin",
        &format!("127.0.0.1:{origin_port}"),
        "--num-procs",
        "1",
        "--unused-session-lifetime",
        SESSION_LIFETIME_MS,
        "--check-unused-sessions",
        CHECK_SESSIONS_MS,
    ] {
        args.push(a.to_owned());
    }
    Server::start(
        name,
        &tools.python,
        &args,
        &[("PYTHONUNBUFFERED", "1".into())],
        &tools.work,
        &tools.logs,
    )
}

impl Setup {
    /// Starts a setup and waits until it accepts connections.
    ///
    /// `worker` chooses a real Panel worker or the stand-in; names of logs and scratch
    /// directories are prefixed with `prefix`. `tether_extra` are more tether arguments.
    pub async fn start(
        kind: Kind,
        tools: &Tools,
        worker: Worker,
        prefix: &str,
        tether_extra: &[String],
    ) -> anyhow::Result<Setup> {
        let setup = |addr: SocketAddr, front, worker| Setup {
            kind,
            addr,
            front,
            worker,
            tether_args: Vec::new(),
            tether_name: String::new(),
            restarts: 0,
        };
        match kind {
            Kind::Direct => {
                let port = procs::free_port()?;
                let name = format!("{prefix}direct-worker");
                let mut w = start_worker(tools, worker, &name, port, port)?;
                procs::wait_port(&mut w, port, Duration::from_secs(120)).await?;
                Ok(setup(([127, 0, 0, 1], port).into(), None, Some(w)))
            }
            Kind::Nginx => {
                let (wport, nport) = (procs::free_port()?, procs::free_port()?);
                let name = format!("{prefix}nginx-worker");
                let mut w = start_worker(tools, worker, &name, wport, nport)?;
                let dir = tools.work.join(format!("{prefix}nginx"));
                std::fs::create_dir_all(&dir)?;
                let conf = dir.join("nginx.conf");
                std::fs::write(&conf, nginx_conf(&dir, wport, nport, procs::is_root()))?;
                procs::wait_port(&mut w, wport, Duration::from_secs(120)).await?;
                let args: Vec<String> = vec![
                    "-p".into(),
                    dir.display().to_string(),
                    "-c".into(),
                    conf.display().to_string(),
                    "-e".into(),
                    dir.join("error.log").display().to_string(),
                ];
                let name = format!("{prefix}nginx");
                let mut front = Server::start(&name, &tools.nginx, &args, &[], &dir, &tools.logs)?;
                procs::wait_port(&mut front, nport, Duration::from_secs(30)).await?;
                Ok(setup(([127, 0, 0, 1], nport).into(), Some(front), Some(w)))
            }
            Kind::Tether => {
                Self::start_tether(tools, &format!("{prefix}tether"), tether_extra).await
            }
        }
    }

    /// Starts tether with `extra` arguments (and, after `--`, none for panel).
    pub async fn start_tether(
        tools: &Tools,
        name: &str,
        extra: &[String],
    ) -> anyhow::Result<Setup> {
        let dir = tools.work.join(name);
        std::fs::create_dir_all(&dir)?;
        let mut args: Vec<String> = vec!["serve".into()];
        args.extend(tools.apps.iter().map(|a| a.display().to_string()));
        args.extend(
            [
                "--port",
                "0",
                "--python",
                &tools.python.display().to_string(),
                "--state",
                &format!("sqlite:{}", dir.join("state.db").display()),
                "--secret-file",
                &dir.join("secret").display().to_string(),
            ]
            .map(str::to_owned),
        );
        args.extend(extra.iter().cloned());
        let (front, addr) = launch_tether(tools, name, name, &args).await?;
        Ok(Setup {
            kind: Kind::Tether,
            addr,
            front: Some(front),
            worker: None,
            tether_args: args,
            tether_name: name.to_owned(),
            restarts: 0,
        })
    }

    /// Stops tether (SIGTERM: it writes its state) and starts it again identically.
    /// Its log goes to a new file, `<name>-restart<k>.err`.
    pub async fn restart_tether(&mut self, tools: &Tools) -> anyhow::Result<()> {
        if let Some(f) = self.front.take() {
            f.stop().await?;
        }
        self.restarts += 1;
        let log = format!("{}-restart{}", self.tether_name, self.restarts);
        let (front, addr) =
            launch_tether(tools, &self.tether_name, &log, &self.tether_args).await?;
        self.front = Some(front);
        self.addr = addr;
        Ok(())
    }

    /// Pid of the process in front of the worker (tether, or nginx's master).
    pub fn front_pid(&self) -> Option<u32> {
        self.front.as_ref()?.pid()
    }

    /// CPU ticks used so far by the proxy: tether, or nginx's master and workers.
    pub fn front_cpu_ticks(&self) -> Option<u64> {
        let pid = self.front_pid()?;
        let mut ticks = procs::cpu_ticks(pid);
        if self.kind == Kind::Nginx {
            ticks += procs::children(pid)
                .into_iter()
                .map(procs::cpu_ticks)
                .sum::<u64>();
        }
        Some(ticks)
    }

    /// The proxy's standard error so far (tether's log lines).
    pub fn front_log(&self) -> String {
        self.front
            .as_ref()
            .and_then(|f| std::fs::read_to_string(&f.stderr).ok())
            .unwrap_or_default()
    }

    /// Stops the proxy, then the worker.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(f) = self.front.take() {
            f.stop().await?;
        }
        if let Some(w) = self.worker.take() {
            w.stop().await?;
        }
        Ok(())
    }
}

async fn launch_tether(
    tools: &Tools,
    dir_name: &str,
    log_name: &str,
    args: &[String],
) -> anyhow::Result<(Server, SocketAddr)> {
    let dir = tools.work.join(dir_name);
    let mut front = Server::start(log_name, &tools.tether, args, &[], &dir, &tools.logs)?;
    let line = front
        .wait_line("tether: serving http://", Duration::from_secs(120))
        .await?;
    let rest = &line["tether: serving http://".len()..];
    let addr: SocketAddr = rest
        .split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("tether announced an address we cannot read: {line}"))?;
    Ok((front, addr))
}

/// nginx as the Panel documentation configures it, with nginx's documented websocket map.
///
/// No upstream keep-alive: a websocket opened on a reused upstream connection, which Linux
/// has taken out of quick-ACK mode, waits ~40 ms for the worker's Nagle-delayed ACK frame.
fn nginx_conf(prefix: &Path, worker: u16, port: u16, root: bool) -> String {
    let p = prefix.display();
    // As root, workers would otherwise run as `nobody` and could not use our private prefix.
    let user = if root { "user root;" } else { "" };
    format!(
        r#"{user}
daemon off;
worker_processes auto;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream panel {{ server 127.0.0.1:{worker}; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://panel;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host:$server_port;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"#
    )
}
