//! A private `redis-server` on a free loopback port, for tests of gateways that share one.
//! Started without persistence, so a restart comes back empty, as after a Redis crash.
//! [`RedisServer::start_tls`] starts one that speaks TLS only, with a certificate signed by a
//! CA of its own, made with `openssl` as an operator would. [`SentinelSet`] is a primary, its
//! replica and a sentinel, for `redis+sentinel://`.
// Shared by test crates that each use a part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`, killed on drop.
pub struct RedisServer {
    /// The running server, if any (None while stopped).
    child: Option<Child>,
    /// Its port, kept across `stop` and `start_again`, so gateways reconnect to it.
    pub port: u16,
    /// For a TLS server: its certificates, and the directory that holds them.
    tls: Option<(Certificates, tempfile::TempDir)>,
    /// Further `redis-server` arguments (`--replicaof HOST PORT`).
    args: Vec<String>,
}

/// A test CA and a server certificate it signed, for 127.0.0.1, as PEM files.
pub struct Certificates {
    /// The CA certificate, for `--redis-ca-file`.
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certificates {
    /// Makes them in `dir` with `openssl`: a CA, then a certificate it signs for 127.0.0.1.
    pub fn make(dir: &Path) -> Self {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl is on PATH; run `make test`, which installs it");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let days = ["-days", "2"];
        run(&[
            &["req", "-x509", "-newkey", "rsa:2048", "-nodes"][..],
            &days,
            &[
                "-subj",
                "/CN=tether test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat());
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(&[
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
            ][..],
            &[
                "-CAcreateserial",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
            &days,
        ]
        .concat());
        Certificates {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    pub fn start() -> Self {
        Self::start_on(None)
    }

    /// Starts a server that speaks TLS only (`rediss://`), its certificate signed by
    /// [`ca`](Self::ca); clients need not present one.
    pub fn start_tls() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certs = Certificates::make(dir.path());
        Self::start_on(Some((certs, dir)))
    }

    fn start_on(mut tls: Option<(Certificates, tempfile::TempDir)>) -> Self {
        for _ in 0..5 {
            let mut server = RedisServer {
                child: None,
                port: free_port(),
                tls: tls.take(),
                args: Vec::new(),
            };
            if server.spawn_and_wait() {
                return server;
            }
            tls = server.tls.take();
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `redis://127.0.0.1:PORT/0` (`rediss://` for TLS), for `--state`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The CA certificate of a TLS server, for `--redis-ca-file`.
    pub fn ca(&self) -> &Path {
        &self.tls.as_ref().expect("a TLS server").0.ca
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn start_again(&mut self) {
        self.stop();
        assert!(
            self.spawn_and_wait(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// Spawns the server and waits for `PING`; false if it exited (port taken).
    fn spawn_and_wait(&mut self) -> bool {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => cmd.args(["--port", &port]),
            Some((certs, _)) => cmd
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(&certs.cert)
                .arg("--tls-key-file")
                .arg(&certs.key)
                .arg("--tls-ca-cert-file")
                .arg(&certs.ca),
        };
        let spawned = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("redis-server is not on PATH; run `make test`, which installs redis-server")
            }
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let child = self.child.insert(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                self.child = None;
                return false;
            }
            // A TLS server is ready when it listens; the client's own handshake checks it.
            let ready = match self.tls {
                None => ping(self.port),
                Some(_) => TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
            };
            if ready {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {port} did not answer PING within 10 s");
    }
}

/// A primary, a replica of it and a Redis Sentinel watching them (quorum 1, a primary is
/// down after 1 s), all on loopback, for `redis+sentinel://`.
pub struct SentinelSet {
    /// The first primary.
    pub primary: RedisServer,
    /// Its replica, which the sentinel promotes when the primary fails.
    pub replica: RedisServer,
    /// The sentinel.
    sentinel: Child,
    /// The sentinel's port.
    pub sentinel_port: u16,
    /// Holds the sentinel's config file, which it rewrites.
    _dir: tempfile::TempDir,
}

/// The primary's name the sentinel knows.
const MASTER: &str = "tether";

impl SentinelSet {
    /// Starts the three and waits until the sentinel knows the replica.
    pub fn start() -> SentinelSet {
        let primary = RedisServer::start();
        let mut replica = RedisServer {
            child: None,
            port: free_port(),
            tls: None,
            args: vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.port.to_string(),
            ],
        };
        assert!(replica.spawn_and_wait(), "the replica did not start");
        let dir = tempfile::tempdir().unwrap();
        let sentinel_port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\n\
                 sentinel monitor {MASTER} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 5000\n",
                primary.port
            ),
        )
        .unwrap();
        let sentinel = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs as a sentinel");
        let set = SentinelSet {
            primary,
            replica,
            sentinel,
            sentinel_port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let replicas = command(sentinel_port, &["SENTINEL", "REPLICAS", MASTER]);
            if replicas.contains(&set.replica.port.to_string()) && replica_in_sync(set.replica.port)
            {
                return set;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinel did not see the replica within 30 s: {replicas:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `redis+sentinel://127.0.0.1:PORT/tether`, for `--state`.
    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/{MASTER}", self.sentinel_port)
    }

    /// The port of the server the sentinel names as primary now.
    pub fn primary_port(&self) -> Option<u16> {
        let reply = command(
            self.sentinel_port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER],
        );
        reply
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .next_back()
    }

    /// Kills the primary (SIGKILL) and waits until the sentinel has promoted the replica.
    pub fn fail_primary(&mut self) {
        self.primary.stop();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.primary_port() != Some(self.replica.port) || !is_primary(self.replica.port) {
            assert!(
                Instant::now() < deadline,
                "the sentinel did not promote the replica within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
    }
}

/// One command in Redis's inline form, and what came back within half a second.
fn command(port: u16, args: &[&str]) -> String {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    if conn
        .write_all(format!("{}\r\n", args.join(" ")).as_bytes())
        .is_err()
    {
        return String::new();
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn replica_in_sync(port: u16) -> bool {
    command(port, &["INFO", "replication"]).contains("master_link_status:up")
}

fn is_primary(port: u16) -> bool {
    command(port, &["INFO", "replication"]).contains("role:master")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port (the listener is closed again before it is used).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// True if a Redis server answers `PING` on the port.
fn ping(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    conn.write_all(b"PING\r\n").is_ok()
        && conn.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}
