//! The `tether` command: parse the CLI, set up logging, and call the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tether::config::defaults;

mod config_file;

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "Panel and Bokeh sessions that outlive closed tabs and restarts."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Panel or Bokeh apps through the gateway, like `panel serve`.
    Serve(Box<Serve>),
    /// Roll a running gateway onto the app files as they are now (as SIGHUP does): new pages
    /// get new workers, open tabs keep the old ones until they close or --drain-timeout.
    Reload(Reload),
}

#[derive(Args)]
struct Reload {
    /// The port the gateway serves on.
    #[arg(long, default_value_t = defaults::PORT)]
    port: u16,
    /// The gateway's control socket [default: the one `tether serve` makes for that port].
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,
}

#[derive(Args)]
struct Serve {
    /// Apps: scripts (.py), notebooks (.ipynb), Markdown (.md) or directories with a main.py;
    /// each is served at /<file or directory name>.
    apps: Vec<PathBuf>,
    /// A TOML file of flags (`port = 5006`, `apps = ["app.py"]`, `panel_args = [...]`); the
    /// command line and the environment win over it [default: ./tether.toml when present].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = defaults::PORT)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = defaults::ADDRESS)]
    address: String,
    /// Python interpreter with Panel installed [default: $TETHER_PYTHON, then the active
    /// virtual environment's, then the one tether is installed beside, then python3].
    #[arg(long, env = "TETHER_PYTHON")]
    python: Option<PathBuf>,
    /// Where state lives: sqlite:PATH, redis://HOST:PORT[/DB], rediss:// for Redis over TLS,
    /// or redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER[/DB] for the primary Sentinel names.
    #[arg(long, default_value = defaults::STATE)]
    state: String,
    /// PEM CA certificate(s) to check a rediss:// server against [default: the system's].
    #[arg(long, value_name = "PATH")]
    redis_ca_file: Option<PathBuf>,
    /// Key file that signs cookies and session ids; share it between gateways.
    #[arg(long, default_value = defaults::SECRET_FILE)]
    secret_file: PathBuf,
    /// How long an unconnected live session is kept for reattach (e.g. 1h, 30m).
    #[arg(long, default_value = defaults::LIVE_TTL, value_parser = duration)]
    live_ttl: Duration,
    /// How long a user's saved state is kept after their last change.
    #[arg(long, default_value = defaults::STATE_TTL, value_parser = duration)]
    state_ttl: Duration,
    /// Add a small corner button to every app page: "Copy share link" and "Reset this page".
    #[arg(long)]
    controls: bool,
    /// How long a shared link's snapshot (/.tether/share) is kept.
    #[arg(long, default_value = defaults::SNAPSHOT_TTL, value_parser = duration)]
    snapshot_ttl: Duration,
    /// Number of panel serve workers.
    #[arg(long, default_value_t = defaults::WORKERS, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// Lifetime of the Bokeh tokens tether mints for workers.
    #[arg(long, default_value = defaults::TOKEN_LIFETIME, value_parser = duration, hide = true)]
    token_lifetime: Duration,
    /// Longest a restore may take before the page is shown as it is.
    #[arg(long, default_value = defaults::REPLAY_TIMEOUT, value_parser = duration)]
    replay_timeout: Duration,
    /// Longest a worker may take to start (importing the app's libraries included).
    #[arg(long, default_value = defaults::STARTUP_TIMEOUT, value_parser = duration)]
    startup_timeout: Duration,
    /// Most open client connections, websockets included.
    #[arg(long, default_value_t = defaults::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Most live sessions (open, or kept for reattach), over all workers. Past it the least
    /// recently used idle one is dropped for a new visitor, who is refused only when every
    /// session is connected.
    #[arg(long, default_value_t = defaults::MAX_SESSIONS)]
    max_sessions: usize,
    /// Resident memory each worker may use (e.g. 2GiB). Past it, the least recently used idle
    /// live sessions are dropped (their users are restored at their next visit), and new
    /// visitors are refused only when every session is connected [default: no bound].
    #[arg(long, value_name = "SIZE", value_parser = tether::config::parse_size)]
    worker_memory: Option<u64>,
    /// Largest websocket message from a browser or worker, in bytes.
    #[arg(long, default_value_t = defaults::MAX_MESSAGE_SIZE)]
    max_message_size: usize,
    /// Most bytes of unfinished browser messages the gateway holds, over all connections.
    #[arg(long, default_value_t = defaults::MAX_BUFFERED)]
    max_buffered_bytes: usize,
    /// Largest HTTP request head, in bytes.
    #[arg(long, default_value_t = defaults::MAX_HEADER_SIZE)]
    max_header_size: usize,
    /// Longest a client may take to send its request head (and a worker to accept a websocket).
    #[arg(long, default_value = defaults::HANDSHAKE_TIMEOUT, value_parser = duration)]
    handshake_timeout: Duration,
    /// A websocket whose browser answers nothing (not even pings) for this long is closed.
    #[arg(long, default_value = defaults::IDLE_TIMEOUT, value_parser = duration)]
    idle_timeout: Duration,
    /// How long open connections may finish after SIGTERM.
    #[arg(long, default_value = defaults::SHUTDOWN_GRACE, value_parser = duration)]
    shutdown_grace: Duration,
    /// Reload on every save of an app file: each open page reloads itself onto the new code
    /// with its state restored, and a failed start is shown in the page.
    #[arg(long)]
    dev: bool,
    /// After a reload (SIGHUP, `tether reload`), how long open tabs keep the old workers
    /// before their page is reloaded onto the new ones.
    #[arg(long, default_value = defaults::DRAIN_TIMEOUT, value_parser = duration)]
    drain_timeout: Duration,
    /// The local control socket `tether reload` talks to (mode 0600) [default: control-PORT.sock
    /// in $XDG_RUNTIME_DIR/tether, else in a private directory under the temporary directory].
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,
    /// More things never to record, e.g. "field:TextInput.value,model:MyWidget,event:tap".
    #[arg(long)]
    exclude: Option<String>,
    /// A host name browsers may use to reach tether (repeatable; `*.example.com` for a
    /// domain, `*` for any) [default: localhost, 127.0.0.1, ::1 and --address].
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_host: Vec<String>,
    /// Serve everything under this URL path (e.g. /dash), as behind a proxy on a sub-path;
    /// the workers get it too.
    #[arg(long, default_value = "", value_parser = tether::config::normalize_prefix)]
    prefix: String,
    /// Serve HTTPS with this PEM certificate chain (with --ssl-keyfile); the identity cookie
    /// is then `Secure`.
    #[arg(long, value_name = "PATH", requires = "ssl_keyfile")]
    ssl_certfile: Option<PathBuf>,
    /// The PEM private key of --ssl-certfile.
    #[arg(long, value_name = "PATH", requires = "ssl_certfile")]
    ssl_keyfile: Option<PathBuf>,
    /// Another page's origin, `host[:port]` (`*` for any), whose scripts may open the apps'
    /// websockets, as a page embedding an app with `bokeh.embed.server_document` must
    /// (repeatable).
    #[arg(long = "allow-websocket-origin", value_name = "HOST[:PORT]")]
    allow_websocket_origin: Vec<String>,
    /// A request header in which an auth proxy in front names the logged-in user (such as
    /// X-Forwarded-User): their state then follows them to any browser. Believed only from
    /// --trusted-proxy peers, and dropped from anyone else's requests.
    #[arg(long, value_name = "NAME", requires = "trusted_proxy", value_parser = header_name)]
    identity_header: Option<String>,
    /// The address (or block, such as 10.0.0.0/8) of the proxy that sets --identity-header
    /// (repeatable).
    #[arg(long, value_name = "CIDR", value_parser = tether::config::Cidr::parse)]
    trusted_proxy: Vec<tether::config::Cidr>,
    /// Arguments after `--` go to `panel serve` verbatim.
    #[arg(last = true)]
    panel_args: Vec<String>,
}

/// A header name, in lower case.
fn header_name(text: &str) -> Result<String, String> {
    http::HeaderName::from_bytes(text.trim().as_bytes())
        .map(|h| h.as_str().to_owned())
        .map_err(|_| format!("{text:?} is not a header name; write one such as X-Forwarded-User"))
}

/// A duration flag's value, such as `90s`, `30m`, `1h 30m` or `30days`.
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|_| {
        format!("{text:?} is not a duration; write a number with a unit, such as 90s, 30m, 2h or 30days")
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
                .unwrap_or_else(|_| "tether=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = parse_cli(
        std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = async {
        match cli.command {
            Command::Serve(s) => serve(*s).await,
            Command::Reload(r) => reload(r).await,
        }
    };
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One sentence first; causes after it for whoever needs them.
            eprintln!("tether: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The command line, with the config file's keys where it and the environment are silent.
fn parse_cli(argv: Vec<String>) -> Cli {
    let command = Cli::command();
    let matches = command.clone().get_matches_from(&argv);
    let merged = match (matches.subcommand(), command.find_subcommand("serve")) {
        (Some(("serve", sub)), Some(serve)) => config_file::merge(&argv, serve, sub),
        _ => Ok(None),
    };
    match merged {
        Ok(None) => Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()),
        Ok(Some((path, argv))) => Cli::try_parse_from(&argv).unwrap_or_else(|e| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!(
                "tether: {}: {}",
                path.display(),
                first.trim_start_matches("error: ")
            );
            std::process::exit(2)
        }),
        Err(sentence) => {
            eprintln!("tether: {sentence}");
            std::process::exit(2)
        }
    }
}

async fn serve(s: Serve) -> anyhow::Result<()> {
    let addr: SocketAddr = format!("{}:{}", s.address, s.port)
        .parse()
        .or_else(|_| format!("[{}]:{}", s.address, s.port).parse())
        .with_context(|| {
            format!(
                "{} is not an IP address; pass --address 127.0.0.1 or 0.0.0.0",
                s.address
            )
        })?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr}; pick another --port or stop what uses it")
    })?;
    let bound = listener.local_addr()?;
    survive_file_size_limit();
    let mut config = tether::config::Config::new(tether::serve::expand_apps(&s.apps)?);
    config.python = match s.python {
        Some(python) => python,
        None => {
            let exe = std::env::current_exe().ok();
            let venv = std::env::var_os("VIRTUAL_ENV");
            let (python, why) = tether::workers::default_python(venv.as_deref(), exe.as_deref());
            tracing::info!(python = %python.display(), "workers use {why} (--python to choose)");
            python
        }
    };
    config.state_url = s.state;
    config.redis_ca_file = s.redis_ca_file;
    config.secret_file = s.secret_file;
    config.live_ttl = s.live_ttl;
    config.worker_start_timeout = s.startup_timeout;
    config.state_ttl = s.state_ttl;
    config.snapshot_ttl = s.snapshot_ttl;
    config.controls = s.controls;
    config.workers = s.workers.into();
    config.panel_login =
        tether::workers::panel_login(&s.panel_args, |name| std::env::var(name).ok());
    config.panel_args = s.panel_args;
    config.token_lifetime = s.token_lifetime;
    config.replay_timeout = s.replay_timeout;
    config.exclude = s.exclude;
    config.shutdown_grace = s.shutdown_grace;
    config.dev = s.dev;
    config.drain_timeout = s.drain_timeout;
    config.worker_memory = s.worker_memory;
    config.control_socket = Some(
        s.control_socket
            .unwrap_or_else(|| default_control_socket(bound.port())),
    );
    config.prefix = s.prefix;
    let prefix = config.prefix.clone();
    config.tls = match (s.ssl_certfile, s.ssl_keyfile) {
        (Some(cert), Some(key)) => Some(tether::tls::TlsFiles { cert, key }),
        _ => None,
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    config.websocket_origins = s.allow_websocket_origin;
    config.identity_header = s.identity_header;
    config.trusted_proxies = s.trusted_proxy;
    config.allowed_hosts = if s.allow_host.is_empty() {
        tether::config::default_hosts(&addr.ip())
    } else {
        s.allow_host
    };
    config.limits = tether::config::Limits {
        max_connections: s.max_connections.max(1),
        max_sessions: s.max_sessions.max(1),
        max_header_bytes: s.max_header_size,
        max_message_bytes: s.max_message_size,
        max_buffered_bytes: s.max_buffered_bytes,
        handshake_timeout: s.handshake_timeout,
        idle_timeout: s.idle_timeout,
    };
    let names: Vec<String> = config
        .apps
        .iter()
        .filter_map(|a| tether::serve::app_name(a).ok())
        .collect();
    let announce = async move {
        // Printed once the workers are up, so scripts can wait for it.
        for name in &names {
            println!("tether: serving {scheme}://{bound}{prefix}/{name}");
        }
    };
    tether::serve::run(listener, config, announce, shutdown_signal()).await?;
    Ok(())
}

/// Where `tether serve` on `port` listens for `tether reload`, when not told.
fn default_control_socket(port: u16) -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(run) => PathBuf::from(run).join("tether"),
        None => {
            // Our own uid: the owner of our /proc entry.
            use std::os::unix::fs::MetadataExt;
            let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
            std::env::temp_dir().join(format!("tether-{uid}"))
        }
    };
    dir.join(format!("control-{port}.sock"))
}

/// `tether reload`: asks the gateway on the control socket for a rolling reload and says how
/// it went.
async fn reload(r: Reload) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = r
        .control_socket
        .unwrap_or_else(|| default_control_socket(r.port));
    let mut stream = tokio::net::UnixStream::connect(&path).await.with_context(|| {
        format!(
            "no tether serve answers on {} (port {}); start one, or pass the --port or --control-socket it uses",
            path.display(),
            r.port
        )
    })?;
    stream.write_all(b"reload\n").await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    match answer.trim().strip_prefix("error: ") {
        None if answer.trim() == "ok" => {
            println!("tether: reloaded; new pages get the new version");
            Ok(())
        }
        Some(sentence) => anyhow::bail!("{sentence}"),
        None => anyhow::bail!("the gateway gave no answer; see its log"),
    }
}

/// A file-size limit (`ulimit -f`) must make a state write fail, not kill the gateway: the
/// writer then keeps the state in memory and retries, as it does when the disk is full.
fn survive_file_size_limit() {
    use tokio::signal::unix::{signal, SignalKind};
    // Handling SIGXFSZ replaces its default action, which ends the process.
    match signal(SignalKind::from_raw(libc::SIGXFSZ)) {
        Ok(mut xfsz) => {
            tokio::spawn(async move { while xfsz.recv().await.is_some() {} });
        }
        Err(e) => tracing::debug!(error = %e, "cannot handle SIGXFSZ"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
