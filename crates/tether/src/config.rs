//! The gateway's settings, as the library sees them (the CLI maps onto this), and the one
//! place their defaults are written down.

use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::MessageLimits;

/// The documented defaults. The command line shows and uses these same values, so the two
/// cannot drift apart.
pub mod defaults {
    /// Where tether listens.
    pub const PORT: u16 = 5006;
    /// Which address tether listens on.
    pub const ADDRESS: &str = "127.0.0.1";
    /// The interpreter with Panel, when neither `--python` nor `TETHER_PYTHON` says.
    pub const PYTHON: &str = "python3";
    /// Where state lives.
    pub const STATE: &str = "sqlite:.tether/state.db";
    /// The key file.
    pub const SECRET_FILE: &str = ".tether/secret";
    /// How long a closed tab's live session is kept.
    pub const LIVE_TTL: &str = "1h";
    /// How long saved state is kept after its last change.
    pub const STATE_TTL: &str = "30days";
    /// How long a shared snapshot is kept.
    pub const SNAPSHOT_TTL: &str = "30days";
    /// Worker processes.
    pub const WORKERS: u16 = 1;
    /// Lifetime of the tokens tether mints for workers.
    pub const TOKEN_LIFETIME: &str = "5m";
    /// Longest a restore may take.
    pub const REPLAY_TIMEOUT: &str = "20s";
    /// Longest a worker may take to start.
    pub const STARTUP_TIMEOUT: &str = "60s";
    /// Most open client connections.
    pub const MAX_CONNECTIONS: usize = 10_000;
    /// Most live sessions over all workers.
    pub const MAX_SESSIONS: usize = 10_000;
    /// Largest websocket message, in bytes.
    pub const MAX_MESSAGE_SIZE: usize = 64 << 20;
    /// Most bytes of unfinished browser messages held over all connections.
    pub const MAX_BUFFERED: usize = 256 << 20;
    /// Largest request head, in bytes: the workers (Tornado) take 64 KiB, and tether keeps
    /// room for the forwarding headers it adds.
    pub const MAX_HEADER_SIZE: usize = 60 << 10;
    /// Longest a client may take to send its request head.
    pub const HANDSHAKE_TIMEOUT: &str = "10s";
    /// A websocket silent this long is closed.
    pub const IDLE_TIMEOUT: &str = "2m";
    /// How long open connections may finish after SIGTERM.
    pub const SHUTDOWN_GRACE: &str = "5s";
    /// How long, after a reload, tabs connected to the old workers keep them.
    pub const DRAIN_TIMEOUT: &str = "10m";
}

/// A default duration; every one of them parses (a unit test checks).
fn duration(text: &str) -> Duration {
    humantime::parse_duration(text).unwrap_or(Duration::ZERO)
}

/// Everything `serve::run` needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// App scripts; each is served at `/<file stem>`.
    pub apps: Vec<PathBuf>,
    /// Interpreter with Panel installed.
    pub python: PathBuf,
    /// Where state lives: `sqlite:PATH`, `redis://HOST:PORT[/DB]` or `rediss://` (TLS).
    pub state_url: String,
    /// `--redis-ca-file`: PEM CA certificates a `rediss://` server's certificate is checked
    /// against, instead of the system's roots.
    pub redis_ca_file: Option<PathBuf>,
    /// Key file shared by gateways that should recognise the same users.
    pub secret_file: PathBuf,
    /// How long an unconnected live session is kept for reattach.
    pub live_ttl: Duration,
    /// How long a user's saved state is kept after its last change.
    pub state_ttl: Duration,
    /// How long a shared snapshot (`/.tether/share`) is kept.
    pub snapshot_ttl: Duration,
    /// `--controls`: a corner button on every app page to copy a share link or reset the page.
    pub controls: bool,
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
    /// After a reload (`SIGHUP`, `tether reload`), how long tabs connected to the old workers
    /// keep them before they are moved (their page reloads onto the new version).
    pub drain_timeout: Duration,
    /// `--worker-memory`: resident bytes each worker may use before its least recently used
    /// idle live sessions are dropped (their users are restored at their next visit).
    pub worker_memory: Option<u64>,
    /// `--dev`: reload on every change of the app files, moving every tab at once, and show
    /// a failed start in the pages.
    pub dev: bool,
    /// The local control socket (mode 0600) `tether reload` talks to; `None`: none.
    pub control_socket: Option<PathBuf>,
    /// Bounds that keep one client from holding or exhausting the gateway.
    pub limits: Limits,
    /// Extra recording exclusions, in `record::Policy` text form.
    pub exclude: Option<String>,
    /// Host names a browser may use to reach the gateway (`Host`, and `X-Forwarded-Host`
    /// when a proxy sends it); `*.domain` matches a domain's hosts and `*` any. A page or
    /// websocket for another name is refused, which defeats DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// The URL path everything is served under (`/dash`), or empty for the root; the
    /// workers are given it too, so their pages link below it.
    pub prefix: String,
    /// `--ssl-certfile` and `--ssl-keyfile`: the gateway terminates TLS itself.
    pub tls: Option<crate::tls::TlsFiles>,
    /// `--identity-header`: the request header (lower case) in which an auth proxy names the
    /// logged-in user, whose state then follows them; honoured from `trusted_proxies` only.
    pub identity_header: Option<String>,
    /// `--trusted-proxy`: the peers whose `identity_header` is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Panel's own login: the workers' cookie secret, and how long a login lasts, with which
    /// the `user` cookie they sign is verified; the logged-in user's state then follows them.
    pub panel_login: Option<(String, Duration)>,
    /// `--allow-websocket-origin`: other pages' origins (`host[:port]`, `*` for any) whose
    /// scripts may open the apps' websockets, as an embedding page's must.
    pub websocket_origins: Vec<String>,
}

impl Config {
    /// Settings with the documented [`defaults`] for the given apps.
    pub fn new(apps: Vec<PathBuf>) -> Config {
        Config {
            apps,
            python: PathBuf::from(defaults::PYTHON),
            state_url: defaults::STATE.into(),
            redis_ca_file: None,
            secret_file: PathBuf::from(defaults::SECRET_FILE),
            live_ttl: duration(defaults::LIVE_TTL),
            state_ttl: duration(defaults::STATE_TTL),
            snapshot_ttl: duration(defaults::SNAPSHOT_TTL),
            controls: false,
            workers: defaults::WORKERS.into(),
            panel_args: Vec::new(),
            token_lifetime: duration(defaults::TOKEN_LIFETIME),
            worker_start_timeout: duration(defaults::STARTUP_TIMEOUT),
            replay_timeout: duration(defaults::REPLAY_TIMEOUT),
            shutdown_grace: duration(defaults::SHUTDOWN_GRACE),
            drain_timeout: duration(defaults::DRAIN_TIMEOUT),
            worker_memory: None,
            dev: false,
            control_socket: None,
            limits: Limits::default(),
            exclude: None,
            allowed_hosts: default_hosts(&std::net::Ipv4Addr::LOCALHOST.into()),
            prefix: String::new(),
            tls: None,
            identity_header: None,
            trusted_proxies: Vec::new(),
            panel_login: None,
            websocket_origins: Vec::new(),
        }
    }

    /// Whether `host` (a `Host` header: a name or address, perhaps with a port) is allowed.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        self.allowed_hosts.iter().any(|allowed| {
            let allowed = allowed.trim().trim_start_matches('[').trim_end_matches(']');
            allowed == "*"
                || allowed.eq_ignore_ascii_case(name)
                || allowed.strip_prefix("*.").is_some_and(|domain| {
                    name.len() > domain.len()
                        && name[name.len() - domain.len()..].eq_ignore_ascii_case(domain)
                        && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
                })
        })
    }
}

/// A size such as `2GiB`, `512MiB`, `1.5G` or `800000000` (bytes), as `--worker-memory`
/// takes it. `K`, `M`, `G` and `T` are powers of 1024, with or without `iB` or `B`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => u32::MAX,
    };
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    let bytes = value * (1u64 << shift.min(40)) as f64;
    if shift == u32::MAX || !bytes.is_finite() || bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(format!(
            "{text:?} is not a size; write it like 2GiB, 512MiB or a number of bytes"
        ));
    }
    Ok(bytes as u64)
}

/// A `--prefix` as tether uses it: empty for none, else one leading `/` and no trailing
/// one (`dash/`, `/dash` and `/dash/` are all `/dash`).
pub fn normalize_prefix(text: &str) -> Result<String, String> {
    let inner = text.trim().trim_matches('/');
    if inner.is_empty() {
        return Ok(String::new());
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || "-._~/".contains(c);
    if !inner.chars().all(ok) || inner.contains("//") || inner.split('/').any(|s| s == "..") {
        return Err(format!(
            "{text:?} is not a URL prefix; use letters, digits, '-', '_', '.' and '/', such as /dash"
        ));
    }
    Ok(format!("/{inner}"))
}

/// An address block, such as `10.0.0.0/8`, `127.0.0.1` (one address) or `::1/128`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: std::net::IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `ADDRESS[/BITS]`; a sentence with an example when it is not one.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let bad = || {
            format!("{text:?} is not an address block; write one such as 10.0.0.0/8, 127.0.0.1 or ::1/128")
        };
        let (addr, bits) = match text.trim().split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text.trim(), None),
        };
        let net: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(bad)?,
        };
        Ok(Cidr { net, bits })
    }

    /// True when `ip` is in the block (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let prefix = |a: u128, b: u128, width: u32| {
            let bits = u32::from(self.bits);
            bits == 0 || (a ^ b) >> (width - bits) == 0
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => prefix(u32::from(n).into(), u32::from(i).into(), 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => prefix(u128::from(n), u128::from(i), 128),
            _ => false,
        }
    }
}

/// The host names allowed when none are given: the loopback names, and the listening
/// address itself unless it is a wildcard (0.0.0.0, ::), as `panel serve` does.
pub fn default_hosts(address: &std::net::IpAddr) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .map(str::to_owned)
        .to_vec();
    if !address.is_unspecified() && !address.is_loopback() {
        hosts.push(address.to_string());
    }
    hosts
}

/// The name part of a `Host` value: `[::1]:5006` is `::1`, `example.org:80` is `example.org`.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        // One colon: a port. More: a bare IPv6 address.
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
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
    /// Most bytes of browser messages begun and not finished, over all connections; past it
    /// the connection that would exceed it is closed with 1009.
    pub max_buffered_bytes: usize,
    /// Longest a client may take to send a request head, and a worker to accept a websocket.
    pub handshake_timeout: Duration,
    /// A websocket whose browser has sent nothing, not even a pong, for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: defaults::MAX_CONNECTIONS,
            max_sessions: defaults::MAX_SESSIONS,
            max_header_bytes: defaults::MAX_HEADER_SIZE,
            max_message_bytes: defaults::MAX_MESSAGE_SIZE,
            max_buffered_bytes: defaults::MAX_BUFFERED,
            handshake_timeout: duration(defaults::HANDSHAKE_TIMEOUT),
            idle_timeout: duration(defaults::IDLE_TIMEOUT),
        }
    }
}

impl Limits {
    /// The bounds on one reassembled Bokeh message: the configured size, and the protocol
    /// layer's buffer count.
    pub fn message(&self) -> MessageLimits {
        MessageLimits {
            max_message_bytes: self.max_message_bytes,
            ..MessageLimits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_as_people_write_them() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5gb"), Ok(3 << 29));
        assert_eq!(parse_size("800000000"), Ok(800_000_000));
        assert_eq!(parse_size(" 64 KiB "), Ok(64 << 10));
        for bad in ["", "two gigs", "2 PB", "0", "-1G", "1e400"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("like 2GiB"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn address_blocks_contain_what_they_should() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let ten = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(ten.contains(ip("10.200.3.4")));
        assert!(!ten.contains(ip("11.0.0.1")));
        assert!(ten.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(Cidr::parse("::1/128").unwrap().contains(ip("::1")));
        for bad in ["10.0.0.0/33", "proxy", "10.0.0/8", "::1/129", "1.2.3.4/x"] {
            let msg = Cidr::parse(bad).unwrap_err();
            assert!(msg.contains("10.0.0.0/8"), "{msg}");
        }
    }

    #[test]
    fn every_default_duration_parses() {
        for text in [
            defaults::LIVE_TTL,
            defaults::STATE_TTL,
            defaults::SNAPSHOT_TTL,
            defaults::TOKEN_LIFETIME,
            defaults::REPLAY_TIMEOUT,
            defaults::STARTUP_TIMEOUT,
            defaults::HANDSHAKE_TIMEOUT,
            defaults::IDLE_TIMEOUT,
            defaults::SHUTDOWN_GRACE,
            defaults::DRAIN_TIMEOUT,
        ] {
            assert!(humantime::parse_duration(text).is_ok(), "{text}");
        }
        let c = Config::new(Vec::new());
        assert_eq!(c.live_ttl, Duration::from_secs(3600));
        assert_eq!(c.state_ttl, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(120));
    }

    #[test]
    fn prefixes_are_normalized_and_odd_ones_refused() {
        for (given, want) in [
            ("", ""),
            ("/", ""),
            ("dash", "/dash"),
            ("/dash/", "/dash"),
            ("/a/b", "/a/b"),
        ] {
            assert_eq!(normalize_prefix(given).unwrap(), want, "{given}");
        }
        for bad in ["/a b", "/a?x", "/a//b", "/../x", "/a%2f"] {
            assert!(
                normalize_prefix(bad)
                    .unwrap_err()
                    .contains("not a URL prefix"),
                "{bad}"
            );
        }
    }

    #[test]
    fn hosts_are_matched_by_name_whatever_the_port() {
        let mut c = Config::new(Vec::new());
        for ok in ["localhost:5006", "127.0.0.1", "[::1]:5006", "LOCALHOST"] {
            assert!(c.host_allowed(ok), "{ok}");
        }
        for no in [
            "evil.example",
            "127.0.0.1.evil.example:5006",
            "",
            "localhost.evil",
        ] {
            assert!(!c.host_allowed(no), "{no}");
        }
        c.allowed_hosts = vec!["*.example.org".into(), "10.0.0.5".into()];
        assert!(c.host_allowed("dash.example.org:443"));
        assert!(!c.host_allowed("example.org"));
        assert!(!c.host_allowed("badexample.org"));
        assert!(c.host_allowed("10.0.0.5:5006"));
        assert!(!c.host_allowed("localhost"));
        c.allowed_hosts = vec!["*".into()];
        assert!(c.host_allowed("anything:1"));
        let lan = default_hosts(&"192.168.1.7".parse().unwrap());
        assert!(lan.contains(&"192.168.1.7".to_owned()));
        assert_eq!(default_hosts(&"0.0.0.0".parse().unwrap()).len(), 3);
    }
}
