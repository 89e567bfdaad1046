//! The gateway's settings, as the library sees them (the CLI maps onto this).

use std::path::PathBuf;
use std::time::Duration;

/// Everything `server::run` needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// App scripts; each is served at `/<file stem>`.
    pub apps: Vec<PathBuf>,
    /// Interpreter with Panel installed.
    pub python: PathBuf,
    /// Where state lives: `sqlite:PATH` or `redis://HOST:PORT[/DB]`.
    pub state_url: String,
    /// Key file shared by gateways that should recognise the same users.
    pub secret_file: PathBuf,
    /// How long an unconnected live session is kept for reattach.
    pub live_ttl: Duration,
    /// How long a user's saved state is kept after its last change.
    pub state_ttl: Duration,
    /// Number of `panel serve` workers.
    pub workers: usize,
    /// Arguments passed verbatim to `panel serve`.
    pub panel_args: Vec<String>,
    /// Lifetime of the tokens the gateway mints for workers.
    pub token_lifetime: Duration,
    /// How long a worker may take to start.
    pub worker_start_timeout: Duration,
    /// Longest a restore may take before the session is handed over as it is.
    pub replay_timeout: Duration,
    /// How long open connections may finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Bounds that keep one client from holding or exhausting the gateway.
    pub limits: Limits,
    /// Extra recording exclusions, in `record::Policy` text form.
    pub exclude: Option<String>,
}

impl Config {
    /// Settings with the documented defaults for the given apps.
    pub fn new(apps: Vec<PathBuf>) -> Config {
        Config {
            apps,
            python: PathBuf::from("python3"),
            state_url: "sqlite:.tether/state.db".into(),
            secret_file: PathBuf::from(".tether/secret"),
            live_ttl: Duration::from_secs(3600),
            state_ttl: Duration::from_secs(30 * 24 * 3600),
            workers: 1,
            panel_args: Vec::new(),
            token_lifetime: Duration::from_secs(300),
            worker_start_timeout: Duration::from_secs(60),
            replay_timeout: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(5),
            limits: Limits::default(),
            exclude: None,
        }
    }
}

/// Per-connection bounds. Past any of them only the offending connection is closed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most open client connections (pages, assets and websockets together).
    pub max_connections: usize,
    /// Most live sessions (open, or kept for reattach) over all workers.
    pub max_sessions: usize,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Largest websocket message (and frame) from either side, in bytes.
    pub max_message_bytes: usize,
    /// Longest a client may take to send a request head, and a worker to accept a websocket.
    pub handshake_timeout: Duration,
    /// A websocket whose browser has sent nothing, not even a pong, for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 10_000,
            max_sessions: 10_000,
            max_header_bytes: 64 << 10,
            max_message_bytes: 64 << 20,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
        }
    }
}
