//! One behavioural suite for every `Store` backend: SQLite on a temporary file, Redis on
//! a `redis-server` this test starts on a free loopback port (never skipped), and Redis over
//! TLS (`rediss://`) on one that speaks TLS only, with a CA of its own.
//!
//! Each case in `cases` is an async fn over a [`Backend`]; `conformance!` turns every
//! case into one `#[tokio::test]` per backend. Backend-specific tests follow.

#[path = "common/redis.rs"]
mod redis_server;
use redis_server::{free_port, RedisServer, SentinelSet};

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether::store::{self, ManualClock, SqliteStore, StateKey, Store, StoreError, Writer};

/// A store under test, a way to move its notion of time, and what keeps it alive.
struct Backend {
    /// The store, through the trait only.
    store: Arc<dyn Store>,
    /// SQLite's injected clock; `None` means real time (Redis expires keys itself).
    clock: Option<ManualClock>,
    /// The temporary directory or the `redis-server` process, cleaned up on drop.
    _guard: Box<dyn Send + Sync>,
}

impl Backend {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let store =
            SqliteStore::open_with_clock(dir.path().join("state.db"), Arc::new(clock.clone()))
                .await
                .unwrap();
        Backend {
            store: Arc::new(store),
            clock: Some(clock),
            _guard: Box::new(dir),
        }
    }

    async fn redis() -> Self {
        let server = RedisServer::start();
        let store = store::open(&server.url()).await.unwrap();
        Backend {
            store,
            clock: None,
            _guard: Box::new(server),
        }
    }

    async fn redis_tls() -> Self {
        let server = RedisServer::start_tls();
        let store = store::open_with_ca(&server.url(), Some(server.ca()))
            .await
            .unwrap();
        Backend {
            store,
            clock: None,
            _guard: Box::new(server),
        }
    }

    async fn redis_sentinel() -> Self {
        let set = SentinelSet::start();
        let store = store::open(&set.url()).await.unwrap();
        Backend {
            store,
            clock: None,
            _guard: Box::new(set),
        }
    }

    /// Lets `by` pass for expiry purposes: instantly for SQLite, really for Redis.
    async fn advance(&self, by: Duration) {
        match &self.clock {
            Some(clock) => clock.advance(by),
            None => tokio::time::sleep(by).await,
        }
    }

    fn store(&self) -> &dyn Store {
        &*self.store
    }
}

/// A 32-hex-character user id, as the identity module makes them.
fn user(n: usize) -> String {
    format!("{n:032x}")
}

fn key(u: usize, app: &str) -> StateKey {
    StateKey::new(user(u), app)
}

const HOUR: Duration = Duration::from_secs(3600);

/// The behaviours every backend must share.
mod cases {
    use super::*;

    pub async fn round_trip(b: &Backend) {
        let s = b.store();
        s.save_batch(&[(key(1, "app"), b"state".to_vec())], HOUR)
            .await
            .unwrap();
        assert_eq!(
            s.load(&key(1, "app")).await.unwrap(),
            Some(b"state".to_vec())
        );
        s.save_batch(&[(key(1, "empty"), Vec::new())], HOUR)
            .await
            .unwrap();
        assert_eq!(s.load(&key(1, "empty")).await.unwrap(), Some(Vec::new()));
    }

    pub async fn overwrite(b: &Backend) {
        let s = b.store();
        for v in ["one", "two", "three"] {
            s.save_batch(&[(key(1, "app"), v.into())], HOUR)
                .await
                .unwrap();
        }
        assert_eq!(
            s.load(&key(1, "app")).await.unwrap(),
            Some(b"three".to_vec())
        );
    }

    pub async fn missing_key_is_none(b: &Backend) {
        assert_eq!(b.store().load(&key(9, "nothing")).await.unwrap(), None);
    }

    pub async fn batch_of_several_keys(b: &Backend) {
        let s = b.store();
        s.save_batch(&[], HOUR).await.unwrap();
        let items: Vec<_> = (0..10)
            .map(|i| (key(i, "app"), format!("v{i}").into_bytes()))
            .collect();
        let mut with_repeat = items.clone();
        with_repeat.push((key(3, "app"), b"later".to_vec()));
        s.save_batch(&with_repeat, HOUR).await.unwrap();
        for i in 0..10 {
            let want = if i == 3 {
                b"later".to_vec()
            } else {
                format!("v{i}").into_bytes()
            };
            assert_eq!(s.load(&key(i, "app")).await.unwrap(), Some(want), "key {i}");
        }
    }

    pub async fn users_and_apps_are_isolated(b: &Backend) {
        let s = b.store();
        let keys = [
            key(1, "a"),
            key(1, "b"),
            key(2, "a"),
            key(1, "a:b"),
            key(1, "a/b"),
        ];
        let items: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), vec![i as u8]))
            .collect();
        s.save_batch(&items, HOUR).await.unwrap();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(s.load(k).await.unwrap(), Some(vec![i as u8]), "{k:?}");
        }
        assert_eq!(s.load(&key(2, "b")).await.unwrap(), None);
    }

    pub async fn concurrent_writers_last_write_wins(b: &Backend) {
        const USERS: usize = 50;
        const WRITES: usize = 20;
        let mut tasks = tokio::task::JoinSet::new();
        for u in 0..USERS {
            let store = Arc::clone(&b.store);
            tasks.spawn(async move {
                for w in 0..WRITES {
                    let item = (key(u, "app"), format!("{u}/{w}").into_bytes());
                    store.save_batch(&[item], HOUR).await.unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        for u in 0..USERS {
            let want = format!("{u}/{}", WRITES - 1).into_bytes();
            assert_eq!(b.store().load(&key(u, "app")).await.unwrap(), Some(want));
        }
    }

    pub async fn entries_expire(b: &Backend) {
        let s = b.store();
        let ttl = Duration::from_secs(1);
        s.save_batch(
            &[
                (key(1, "short"), b"s".to_vec()),
                (key(1, "refreshed"), b"r".to_vec()),
            ],
            ttl,
        )
        .await
        .unwrap();
        s.save_batch(
            &[
                (key(1, "long"), b"l".to_vec()),
                (key(1, "refreshed"), b"r2".to_vec()),
            ],
            HOUR,
        )
        .await
        .unwrap();
        assert_eq!(s.load(&key(1, "short")).await.unwrap(), Some(b"s".to_vec()));

        b.advance(Duration::from_millis(1300)).await;
        assert_eq!(s.load(&key(1, "short")).await.unwrap(), None);
        assert_eq!(
            s.load(&key(1, "refreshed")).await.unwrap(),
            Some(b"r2".to_vec())
        );
        s.purge_expired().await.unwrap();
        assert_eq!(s.load(&key(1, "long")).await.unwrap(), Some(b"l".to_vec()));
        assert_eq!(s.load(&key(1, "short")).await.unwrap(), None);
    }

    pub async fn forget_user_removes_only_that_user(b: &Backend) {
        let s = b.store();
        let mut items: Vec<_> = ["x", "y", "z"]
            .iter()
            .map(|app| (key(1, app), b"1".to_vec()))
            .collect();
        items.push((key(2, "x"), b"2".to_vec()));
        s.save_batch(&items, HOUR).await.unwrap();
        s.forget_user(&user(1)).await.unwrap();
        for app in ["x", "y", "z"] {
            assert_eq!(s.load(&key(1, app)).await.unwrap(), None, "{app}");
        }
        assert_eq!(s.load(&key(2, "x")).await.unwrap(), Some(b"2".to_vec()));
        s.forget_user(&user(3)).await.unwrap();

        // Forgetting is not a tombstone: new state is kept, and can be forgotten again.
        s.save_batch(&[(key(1, "w"), b"new".to_vec())], HOUR)
            .await
            .unwrap();
        assert_eq!(s.load(&key(1, "w")).await.unwrap(), Some(b"new".to_vec()));
        s.forget_user(&user(1)).await.unwrap();
        assert_eq!(s.load(&key(1, "w")).await.unwrap(), None);
    }

    pub async fn large_values(b: &Backend) {
        let big: Vec<u8> = (0..1024 * 1024)
            .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        b.store()
            .save_batch(&[(key(1, "big"), big.clone())], HOUR)
            .await
            .unwrap();
        assert_eq!(b.store().load(&key(1, "big")).await.unwrap(), Some(big));
    }

    pub async fn user_ids_that_break_isolation_are_rejected(b: &Backend) {
        let bad = StateKey::new("a:b", "app");
        let err = b
            .store()
            .save_batch(&[(bad.clone(), vec![])], HOUR)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidUser { .. }), "{err:?}");
        assert!(b.store().load(&bad).await.is_err());
        assert!(b.store().forget_user("").await.is_err());
    }

    pub async fn writer_makes_snapshots_durable(b: &Backend) {
        let writer = Writer::spawn(Arc::clone(&b.store), Duration::from_millis(50), HOUR);
        for v in 0..5u8 {
            writer.submit(key(1, "app"), vec![v]);
        }
        writer.submit(key(2, "app"), b"other".to_vec());
        let start = Instant::now();
        while b.store().load(&key(2, "app")).await.unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the writer never wrote"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(b.store().load(&key(1, "app")).await.unwrap(), Some(vec![4]));
        let stats = writer.stats();
        assert_eq!((stats.snapshots_written, stats.write_errors), (2, 0));
        writer.submit(key(1, "app"), vec![9]);
        writer.flush().await.unwrap();
        drop(writer);
        assert_eq!(b.store().load(&key(1, "app")).await.unwrap(), Some(vec![9]));
    }
}

/// Expands the case list into `sqlite::case`, `redis::case`, `rediss::case` and
/// `sentinel::case` tests.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $case() {
                super::cases::$case(&super::Backend::sqlite().await).await;
            })*
        }
        mod redis {
            $(#[tokio::test]
            async fn $case() {
                super::cases::$case(&super::Backend::redis().await).await;
            })*
        }
        mod rediss {
            $(#[tokio::test]
            async fn $case() {
                super::cases::$case(&super::Backend::redis_tls().await).await;
            })*
        }
        mod sentinel {
            $(#[tokio::test]
            async fn $case() {
                super::cases::$case(&super::Backend::redis_sentinel().await).await;
            })*
        }
    };
}

conformance!(
    round_trip,
    overwrite,
    missing_key_is_none,
    batch_of_several_keys,
    users_and_apps_are_isolated,
    concurrent_writers_last_write_wins,
    entries_expire,
    forget_user_removes_only_that_user,
    large_values,
    user_ids_that_break_isolation_are_rejected,
    writer_makes_snapshots_durable,
);

// ---- SQLite only -------------------------------------------------------------------

fn open_error(result: Result<Arc<dyn Store>, StoreError>) -> StoreError {
    match result {
        Ok(_) => panic!("expected the store to refuse to open"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn sqlite_state_survives_reopen_and_url_creates_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dirs/state.db");
    let url = format!("sqlite:{}", path.display());
    let s = store::open(&url).await.unwrap();
    s.save_batch(&[(key(1, "app"), b"kept".to_vec())], HOUR)
        .await
        .unwrap();
    drop(s);
    let s = store::open(&url).await.unwrap();
    assert_eq!(
        s.load(&key(1, "app")).await.unwrap(),
        Some(b"kept".to_vec())
    );
}

#[tokio::test]
async fn sqlite_garbage_file_is_reported_as_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, "this is a note, not a database\n".repeat(200)).unwrap();
    let err = open_error(store::open(&format!("sqlite:{}", path.display())).await);
    assert!(matches!(err, StoreError::SqliteCorrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("move it aside"),
        "{msg}"
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is kept"
    );
}

#[tokio::test]
async fn sqlite_truncated_file_is_reported_as_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let s = SqliteStore::open(&path).await.unwrap();
        let items: Vec<_> = (0..50)
            .map(|i| (key(i, "app"), vec![i as u8; 20_000]))
            .collect();
        s.save_batch(&items, HOUR).await.unwrap();
    } // closing checkpoints the WAL into the main file
    let len = std::fs::metadata(&path).unwrap().len();
    for keep in [len / 2, 50] {
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(keep).unwrap();
        drop(file);
        let err = SqliteStore::open(&path).await.unwrap_err();
        assert!(
            matches!(err, StoreError::SqliteCorrupt { .. }),
            "kept {keep} bytes: {err:?}"
        );
    }
}

#[tokio::test]
async fn sqlite_unusable_locations_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();

    // A regular file where a parent directory should be.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let err = open_error(store::open(&format!("sqlite:{}/state.db", file.display())).await);
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");

    // A directory where the state file should be.
    let err = open_error(store::open(&format!("sqlite:{}", dir.path().display())).await);
    assert!(matches!(err, StoreError::SqliteOpen { .. }), "{err:?}");

    // Permissions: root ignores them, so only assert an error where they apply.
    use std::os::unix::fs::PermissionsExt;
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::write(locked.join("existing.db"), b"").unwrap();
    std::fs::set_permissions(
        locked.join("existing.db"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let enforced = std::fs::write(locked.join("probe"), b"").is_err();
    for name in ["new.db", "existing.db"] {
        let result = SqliteStore::open(locked.join(name)).await;
        if enforced {
            let err = result.unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::SqliteOpen { .. } | StoreError::SqliteReadOnly { .. }
                ),
                "{name}: {err:?}"
            );
        }
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn sqlite_purge_removes_only_expired_rows() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let s = SqliteStore::open_with_clock(dir.path().join("s.db"), Arc::new(clock.clone()))
        .await
        .unwrap();
    s.save_batch(&[(key(1, "short"), vec![1])], Duration::from_secs(1))
        .await
        .unwrap();
    s.save_batch(&[(key(1, "long"), vec![2])], HOUR)
        .await
        .unwrap();
    s.save_batch(&[(key(2, "short"), vec![3])], Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(s.purge_expired().await.unwrap(), 0);
    clock.advance(Duration::from_secs(2));
    assert_eq!(s.purge_expired().await.unwrap(), 2);
    assert_eq!(s.load(&key(1, "long")).await.unwrap(), Some(vec![2]));
}

/// Set by `sqlite_kill_9_loses_no_committed_write` for its child process.
const KILL9_DB: &str = "TETHER_TEST_KILL9_DB";

#[tokio::test]
async fn sqlite_kill_9_loses_no_committed_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sqlite_kill_9_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL9_DB, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut acknowledged = None;
    for line in std::io::BufRead::lines(stdout) {
        if let Some(n) = line.unwrap().strip_prefix("committed ") {
            acknowledged = Some(n.parse::<u64>().unwrap());
            if acknowledged >= Some(100) {
                break;
            }
        }
    }
    let acknowledged = acknowledged.expect("the child wrote nothing");
    child.0.kill().unwrap(); // SIGKILL, mid-stream
    child.0.wait().unwrap();

    let s = SqliteStore::open(&path).await.unwrap(); // includes quick_check
    let bytes = s.load(&key(1, "app")).await.unwrap().unwrap();
    let stored = u64::from_le_bytes(bytes.try_into().unwrap());
    assert!(
        stored >= acknowledged,
        "acknowledged {acknowledged}, found {stored}"
    );
}

/// The child half of `sqlite_kill_9_loses_no_committed_write`: commits forever, saying
/// so after each commit. Without its environment variable it does nothing.
#[tokio::test]
async fn sqlite_kill_9_child() {
    let Some(path) = std::env::var_os(KILL9_DB) else {
        return;
    };
    let s = SqliteStore::open(path).await.unwrap();
    for n in 0u64.. {
        let item = (key(1, "app"), n.to_le_bytes().to_vec());
        s.save_batch(&[item], HOUR).await.unwrap();
        println!("committed {n}");
    }
}

/// Kills a child process if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---- Redis only --------------------------------------------------------------------

#[tokio::test]
async fn redis_unreachable_server_is_a_clear_error() {
    let port = free_port();
    let err = open_error(store::open(&format!("redis://127.0.0.1:{port}")).await);
    assert!(matches!(err, StoreError::RedisConnect { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn rediss_checks_the_servers_certificate() {
    let server = RedisServer::start_tls();
    // The system's roots do not know this CA: refused, with the flag to pass.
    let err = open_error(store::open(&server.url()).await);
    assert!(matches!(err, StoreError::RedisTlsConnect { .. }), "{err:?}");
    assert!(err.to_string().contains("--redis-ca-file"), "{err}");
    // Another CA's certificate is no better than none.
    let other = tempfile::tempdir().unwrap();
    let other_ca = redis_server::Certificates::make(other.path()).ca;
    let err = open_error(store::open_with_ca(&server.url(), Some(&other_ca)).await);
    assert!(matches!(err, StoreError::RedisTlsConnect { .. }), "{err:?}");
    // Plain Redis to a TLS-only server is refused, not left hanging.
    let plain = server.url().replacen("rediss://", "redis://", 1);
    let asked = Instant::now();
    assert!(store::open(&plain).await.is_err());
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );
    // A CA file that is not there is named.
    let err =
        open_error(store::open_with_ca(&server.url(), Some(&other.path().join("nope.pem"))).await);
    assert!(err.to_string().contains("nope.pem"), "{err}");
}

#[tokio::test]
async fn redis_writer_resumes_after_the_server_restarts() {
    let mut server = RedisServer::start();
    let s = store::open(&server.url()).await.unwrap();
    let writer = Writer::spawn(Arc::clone(&s), Duration::from_millis(50), HOUR);
    writer.submit(key(1, "app"), b"before".to_vec());
    writer.flush().await.unwrap();

    server.stop();
    writer.submit(key(1, "app"), b"during".to_vec());
    assert!(writer.flush().await.is_err(), "Redis is down");
    let asked = Instant::now();
    assert!(s.load(&key(1, "app")).await.is_err());
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "a read hung for {:?}",
        asked.elapsed()
    );
    assert_eq!(writer.stats().pending, 1);

    server.start_again();
    let start = Instant::now();
    while writer.stats().pending > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            writer.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The fresh server kept nothing (no persistence), so only the retried write is there.
    assert_eq!(
        s.load(&key(1, "app")).await.unwrap(),
        Some(b"during".to_vec())
    );
    assert!(writer.stats().write_errors >= 1);
}

/// Opens a SQLite store on a manual clock.
async fn sqlite_on(clock: &ManualClock) -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open_with_clock(dir.path().join("s.db"), Arc::new(clock.clone()))
        .await
        .unwrap();
    (dir, s)
}

#[tokio::test]
async fn sqlite_a_wall_clock_jump_expires_nothing_early() {
    let clock = ManualClock::new();
    let (_dir, s) = sqlite_on(&clock).await;
    s.save_batch(&[(key(1, "a"), vec![1])], HOUR).await.unwrap();
    // NTP or an operator steps the clock ten days ahead: no time has passed.
    clock.jump_forward(Duration::from_secs(10 * 24 * 3600));
    assert_eq!(s.load(&key(1, "a")).await.unwrap(), Some(vec![1]));
    assert_eq!(s.purge_expired().await.unwrap(), 0);
    assert_eq!(s.load(&key(1, "a")).await.unwrap(), Some(vec![1]));
    // A step back does not make it live longer either: the TTL is real time.
    clock.jump_back(Duration::from_secs(20 * 24 * 3600));
    clock.advance(HOUR - Duration::from_millis(1));
    assert_eq!(s.load(&key(1, "a")).await.unwrap(), Some(vec![1]));
    clock.advance(Duration::from_millis(2));
    assert_eq!(s.load(&key(1, "a")).await.unwrap(), None);
    assert_eq!(s.purge_expired().await.unwrap(), 1);
}

#[tokio::test]
async fn sqlite_after_a_reboot_expiry_falls_back_to_the_wall_clock() {
    let clock = ManualClock::new();
    let (_dir, s) = sqlite_on(&clock).await;
    s.save_batch(&[(key(1, "a"), vec![1])], HOUR).await.unwrap();
    s.save_batch(&[(key(2, "a"), vec![2])], HOUR).await.unwrap();
    clock.reboot();
    clock.advance(HOUR / 2);
    assert_eq!(s.load(&key(1, "a")).await.unwrap(), Some(vec![1]));
    // Written again after the reboot: judged on the new boot's clock.
    s.save_batch(&[(key(2, "a"), vec![3])], HOUR).await.unwrap();
    clock.advance(HOUR / 2 + Duration::from_millis(1));
    assert_eq!(s.load(&key(1, "a")).await.unwrap(), None);
    assert_eq!(s.load(&key(2, "a")).await.unwrap(), Some(vec![3]));
    assert_eq!(s.purge_expired().await.unwrap(), 1);
}

#[tokio::test]
async fn sqlite_without_a_boot_clock_uses_the_wall_clock() {
    let clock = ManualClock::wall_only(std::time::SystemTime::now());
    let (_dir, s) = sqlite_on(&clock).await;
    s.save_batch(&[(key(1, "a"), vec![1])], HOUR).await.unwrap();
    clock.advance(HOUR - Duration::from_millis(1));
    assert_eq!(s.load(&key(1, "a")).await.unwrap(), Some(vec![1]));
    clock.advance(Duration::from_millis(1));
    assert_eq!(s.load(&key(1, "a")).await.unwrap(), None);
}

#[tokio::test]
async fn sqlite_a_file_from_the_first_schema_is_upgraded_and_keeps_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let far = std::time::SystemTime::now() + HOUR;
    let expires = far
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    {
        // The schema tether wrote before stamps carried the boot clock.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE state (user TEXT NOT NULL, app TEXT NOT NULL, snapshot BLOB NOT NULL,
                                 expires_at INTEGER NOT NULL, PRIMARY KEY (user, app));
             CREATE TABLE meta (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL,
                                expires_at INTEGER NOT NULL);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO state VALUES (?1, 'a', x'07', ?2)",
            rusqlite::params![user(1), expires],
        )
        .unwrap();
    }
    let clock = ManualClock::new();
    let s = SqliteStore::open_with_clock(&path, Arc::new(clock.clone()))
        .await
        .unwrap();
    assert_eq!(s.load(&key(1, "a")).await.unwrap(), Some(vec![7]));
    s.save_batch(&[(key(1, "a"), vec![8])], HOUR).await.unwrap();
    clock.jump_forward(10 * HOUR);
    assert_eq!(s.load(&key(1, "a")).await.unwrap(), Some(vec![8]));
    drop(s);
    // Opening again is a no-op.
    let s = SqliteStore::open_with_clock(&path, Arc::new(clock))
        .await
        .unwrap();
    assert_eq!(s.load(&key(1, "a")).await.unwrap(), Some(vec![8]));
}
