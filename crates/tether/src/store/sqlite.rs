//! The embedded default store: one SQLite file in WAL mode.
//!
//! Durability: `journal_mode=WAL` with `synchronous=FULL`. A transaction that has
//! returned is in the WAL file, so a `kill -9` of tether never loses it (that holds
//! with `NORMAL` too); `FULL` also fsyncs the WAL on every commit, so a power cut or
//! kernel crash does not lose it either. The price is one fsync per commit, which the
//! [`Writer`](super::Writer) amortises by committing one batch per window (at most
//! ~20 commits a second at the default 50 ms), so we take the stronger guarantee.
//!
//! rusqlite is blocking: each call runs on Tokio's blocking pool holding the one
//! connection's mutex, so SQLite work never stalls the async workers.
//!
//! One file of about 450 lines on purpose: opening (or read-only fallback), the schema and
//! its migration, expiry on two clocks and the trait's statements all share the one
//! connection and the same error classification.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{
    ffi, params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior,
};

use super::{check_user, ttl_millis, Clock, StateKey, Store, StoreError, SystemClock};

/// How long one statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The whole schema. `user_version` numbers it: 1 lacked the boot columns, which
/// [`migrate`] adds.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS state (
        user       TEXT    NOT NULL,
        app        TEXT    NOT NULL,
        snapshot   BLOB    NOT NULL,
        expires_at INTEGER NOT NULL, -- unix milliseconds
        boot_id    TEXT,             -- the boot it was written in, if known
        boot_expires_at INTEGER,     -- the same expiry on that boot's clock (ms)
        PRIMARY KEY (user, app)
    );
    CREATE INDEX IF NOT EXISTS state_expires_at ON state (expires_at);
    -- Earlier versions kept a registry table here that nothing read.
    DROP TABLE IF EXISTS meta;
";

/// The schema version this code writes.
const SCHEMA_VERSION: i64 = 2;

/// A state row is live: judged on the boot clock when written in this boot (so a step of
/// the wall clock expires nothing early), else on the wall clock. Parameters: `?1` wall
/// now, `?2` boot id (NULL if unknown), `?3` boot clock now. A macro, so that the
/// statements using it are built at compile time.
macro_rules! live {
    () => {
        "CASE WHEN boot_id = ?2 THEN boot_expires_at > ?3 ELSE expires_at > ?1 END"
    };
}

/// A [`Store`] in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    /// The file, named in every error so the operator knows which one to look at.
    path: Arc<PathBuf>,
    /// The single connection; the mutex serialises the blocking tasks that use it.
    conn: Arc<Mutex<Connection>>,
    /// Where "now" comes from when stamping and checking expiry; tests inject one.
    clock: Arc<dyn Clock>,
    /// Opened read-only because the location cannot be written (see
    /// [`SqliteStore::open_or_read_only`]); every write first tries to open it for writing.
    read_only: Arc<AtomicBool>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates, with parent directories) the state file at `path`, using the
    /// system clock. Fails with a clear error if the file is not a healthy, writable
    /// SQLite database.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_clock(path, Arc::new(SystemClock)).await
    }

    /// Like [`SqliteStore::open`], with an injected clock for expiry.
    pub async fn open_with_clock(
        path: impl AsRef<Path>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let for_task = path.clone();
        let conn = tokio::task::spawn_blocking(move || open_blocking(&for_task))
            .await
            .map_err(|source| StoreError::SqliteTask {
                path: path.clone(),
                source,
            })??;
        Ok(Self {
            path: Arc::new(path),
            conn: Arc::new(Mutex::new(conn)),
            clock,
            read_only: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Like [`SqliteStore::open_with_clock`], but a location this process cannot write (a
    /// read-only file system, file or directory) is not fatal. The file is then opened
    /// read-only if it exists, so saved state is still restored; writes fail with
    /// [`StoreError::SqliteReadOnly`], and each write first tries to open the file for writing
    /// again, so writing resumes once it is possible. Any other error is returned as it is.
    pub async fn open_or_read_only(
        path: impl AsRef<Path>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let error = match Self::open_with_clock(&path, clock.clone()).await {
            Ok(store) => return Ok(store),
            Err(e) if e.may_be_unwritable() => e,
            Err(e) => return Err(e),
        };
        let for_task = path.clone();
        let Ok(Ok(conn)) = tokio::task::spawn_blocking(move || open_read_only(&for_task)).await
        else {
            return Err(error);
        };
        tracing::warn!(
            path = %path.display(),
            "the state file cannot be written, so tether serves and restores from it but keeps new changes in memory; make it writable (tether retries every second) or pass another --state"
        );
        Ok(Self {
            path: Arc::new(path),
            conn: Arc::new(Mutex::new(conn)),
            clock,
            read_only: Arc::new(AtomicBool::new(true)),
        })
    }

    /// Before a write: if the file was opened read-only, tries to open it for writing.
    async fn ensure_writable(&self) -> Result<(), StoreError> {
        if !self.read_only.load(Ordering::Acquire) {
            return Ok(());
        }
        let path = self.path.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || open_blocking(&path)).await;
        let Ok(Ok(conn)) = opened else {
            return Err(StoreError::SqliteReadOnly {
                path: self.path.to_path_buf(),
            });
        };
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = conn;
        self.read_only.store(false, Ordering::Release);
        tracing::info!(path = %self.path.display(), "the state file is writable now");
        Ok(())
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let result = tokio::task::spawn_blocking(move || {
            // A panic in an earlier task rolled its transaction back on unwind, so the
            // connection itself is still sound.
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|source| StoreError::SqliteTask {
            path: self.path.to_path_buf(),
            source,
        })?;
        result.map_err(|e| runtime_error(&self.path, e))
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn refuses_writes(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }

    async fn load(&self, key: &StateKey) -> Result<Option<Vec<u8>>, StoreError> {
        check_user(&key.user)?;
        let (user, app) = (key.user.clone(), key.app.clone());
        let now = Now::of(&*self.clock);
        self.run(move |conn| {
            conn.prepare_cached(concat!(
                "SELECT snapshot FROM state WHERE user = ?4 AND app = ?5 AND ",
                live!()
            ))?
            .query_row(params![now.wall, now.boot_id, now.boot, user, app], |row| {
                row.get(0)
            })
            .optional()
        })
        .await
    }

    async fn save_batch(
        &self,
        items: &[(StateKey, Vec<u8>)],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.ensure_writable().await?;
        for (key, _) in items {
            check_user(&key.user)?;
        }
        if items.is_empty() {
            return Ok(());
        }
        let items = items.to_vec();
        let now = Now::of(&*self.clock);
        let expires_at = expiry(now.wall, ttl);
        let boot_expires_at = now.boot.map(|b| expiry(b, ttl));
        self.run(move |conn| {
            // IMMEDIATE takes the write lock up front, so a second process sharing the
            // file waits (busy_timeout) instead of failing mid-transaction.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO state (user, app, snapshot, expires_at, boot_id, boot_expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (user, app) DO UPDATE
                     SET snapshot = excluded.snapshot, expires_at = excluded.expires_at,
                         boot_id = excluded.boot_id, boot_expires_at = excluded.boot_expires_at",
                )?;
                for (key, snapshot) in &items {
                    upsert.execute(params![
                        key.user,
                        key.app,
                        snapshot,
                        expires_at,
                        now.boot_id,
                        boot_expires_at
                    ])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn forget_user(&self, user: &str) -> Result<(), StoreError> {
        self.ensure_writable().await?;
        check_user(user)?;
        let user = user.to_owned();
        self.run(move |conn| {
            conn.prepare_cached("DELETE FROM state WHERE user = ?1")?
                .execute(params![user])
                .map(drop)
        })
        .await
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.ensure_writable().await?;
        let now = Now::of(&*self.clock);
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let purged = tx.execute(
                concat!("DELETE FROM state WHERE NOT (", live!(), ")"),
                params![now.wall, now.boot_id, now.boot],
            )?;
            tx.commit()?;
            Ok(purged as u64)
        })
        .await
    }
}

/// Opens an existing state file read-only, or an empty store in memory if there is none.
/// Blocking.
fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    if !path.exists() {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        return Ok(conn);
    }
    // A WAL-mode file on a read-only file system opens only as immutable. Changes still in
    // its WAL (a gateway killed before its last checkpoint) are not seen that way.
    let escaped = path
        .to_string_lossy()
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23");
    let conn = Connection::open_with_flags(
        format!("file:{escaped}?mode=ro&immutable=1"),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )?;
    quick_check(&conn)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version != SCHEMA_VERSION {
        // An older file is upgraded in place, which needs it writable.
        return Err(rusqlite::Error::SqliteFailure(
            ffi::Error::new(ffi::SQLITE_READONLY),
            Some(format!("schema version {version} needs an upgrade")),
        ));
    }
    Ok(conn)
}

/// "Now" on both clocks, as SQL parameters.
struct Now {
    /// Wall clock, unix milliseconds.
    wall: i64,
    /// This boot's id, if known.
    boot_id: Option<String>,
    /// Boot clock, milliseconds since boot, if known.
    boot: Option<i64>,
}

impl Now {
    fn of(clock: &dyn Clock) -> Now {
        let boot = clock.boot();
        Now {
            wall: clock.now_millis(),
            boot_id: boot.as_ref().map(|b| b.id.to_string()),
            boot: boot.map(|b| b.millis),
        }
    }
}

/// `now + ttl` in unix milliseconds, saturating.
fn expiry(now_millis: i64, ttl: Duration) -> i64 {
    now_millis.saturating_add(i64::try_from(ttl_millis(ttl)).unwrap_or(i64::MAX))
}

/// Creates directories (mode 0700), opens, checks and prepares the file (mode 0600).
/// Blocking.
fn open_blocking(path: &Path) -> Result<Connection, StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        private_dir(parent).map_err(|source| StoreError::CreateDir {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    private_files(path);
    let fail = |e| open_error(path, e);
    let conn = Connection::open(path).map_err(fail)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    // The first statement that reads the header: garbage fails here with NOTADB.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(fail)?;
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(fail)? {
        return Err(StoreError::SqliteReadOnly {
            path: path.to_path_buf(),
        });
    }
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), %mode, "the state file could not switch to WAL mode; writes will block reads");
    }
    quick_check(&conn).map_err(fail)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(fail)?;
    migrate(&conn).map_err(fail)?;
    Ok(conn)
}

/// Creates `dir` and its missing parents with mode 0700; directories that exist are left
/// as they are (the state may live in a shared working directory).
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The state file and its `-wal` and `-shm` companions are readable by this user alone:
/// they hold every user's recorded text. A missing state file is created with mode 0600
/// (SQLite gives the companions the main file's mode); existing ones are narrowed to 0600.
fn private_files(path: &Path) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path);
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let file = PathBuf::from(file);
        if let Ok(meta) = std::fs::metadata(&file) {
            if meta.permissions().mode() & 0o077 != 0 {
                match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                    Ok(()) => {
                        tracing::info!(path = %file.display(), "state file made private (mode 0600)")
                    }
                    Err(e) => {
                        tracing::warn!(path = %file.display(), error = %e, "the state file is readable by other users and cannot be made private; restrict it with chmod 600")
                    }
                }
            }
        }
    }
}

/// Creates the schema, or brings a file written by an earlier tether up to date.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(SCHEMA)?;
    if version == 1 {
        tx.execute_batch(
            "ALTER TABLE state ADD COLUMN boot_id TEXT;
             ALTER TABLE state ADD COLUMN boot_expires_at INTEGER;",
        )?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()
}

/// Runs `PRAGMA quick_check` (linear in the file size, once at startup) and turns a
/// damaged-file report into a `SQLITE_CORRUPT` error carrying SQLite's own words.
fn quick_check(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("PRAGMA quick_check")?;
    let report = stmt
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if report.len() == 1 && report[0] == "ok" {
        return Ok(());
    }
    Err(rusqlite::Error::SqliteFailure(
        ffi::Error::new(ffi::SQLITE_CORRUPT),
        Some(format!("quick_check: {}", report.join("; "))),
    ))
}

/// Classifies an error met while opening.
fn open_error(path: &Path, source: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            StoreError::SqliteCorrupt { path, source }
        }
        Some(ErrorCode::ReadOnly) => StoreError::SqliteReadOnly { path },
        _ => StoreError::SqliteOpen { path, source },
    }
}

/// Classifies an error met while using an open file.
fn runtime_error(path: &Path, source: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            StoreError::SqliteCorrupt { path, source }
        }
        Some(ErrorCode::ReadOnly) => StoreError::SqliteReadOnly { path },
        _ => StoreError::Sqlite { path, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_in_wal_mode_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("a/b/state.db"))
            .await
            .unwrap();
        let (mode, sync) = store
            .run(|conn| {
                let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
                let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
                Ok((mode, sync))
            })
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous=FULL");
    }

    #[tokio::test]
    async fn the_state_is_readable_by_this_user_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("made/state.db");
        let store = SqliteStore::open(&path).await.unwrap();
        store
            .save_batch(
                &[(StateKey::new("u1", "app"), b"x".to_vec())],
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("made")), 0o700);
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        drop(store);
        // A file an older tether left world-readable is narrowed when opened.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn expiry_saturates() {
        assert_eq!(expiry(1000, Duration::from_millis(5)), 1005);
        assert_eq!(expiry(i64::MAX - 1, Duration::from_secs(10)), i64::MAX);
    }
}
