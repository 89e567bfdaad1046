//! What can go wrong with a state store, phrased as who is at fault and what to do.

use std::path::PathBuf;

/// An error from opening or using a state store. Causes are kept as `source`s.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operator gave a store URL tether does not understand.
    #[error(
        "unknown state store {url:?}: use sqlite:PATH (for example sqlite:/var/lib/tether/state.db), redis://HOST:PORT[/DB], rediss://HOST:PORT[/DB] or redis+sentinel://HOST:PORT/MASTER[/DB]"
    )]
    UnknownUrl {
        /// The URL as given, so the operator can spot the typo.
        url: String,
    },

    /// The store could not be read just now (its own error was logged where it happened).
    #[error("the saved state cannot be read right now; try again in a moment")]
    Unavailable,

    /// The directory that should hold the SQLite file could not be created.
    #[error("cannot create the directory {path} for the state file; create it yourself or choose another location")]
    CreateDir {
        /// The directory tether tried to create.
        path: PathBuf,
        /// Why the OS refused.
        #[source]
        source: std::io::Error,
    },

    /// SQLite could not open or create the file (missing directory, permissions, a
    /// directory in the way).
    #[error("cannot open the state file {path}; check that it is a file this process may read and write, in a writable directory")]
    SqliteOpen {
        /// The state file.
        path: PathBuf,
        /// SQLite's reason.
        #[source]
        source: rusqlite::Error,
    },

    /// The file opened, but only for reading.
    #[error("the state file {path} is read-only for this process; make it and its directory writable or choose another location")]
    SqliteReadOnly {
        /// The state file.
        path: PathBuf,
    },

    /// The file is not SQLite, or is damaged (truncated, overwritten).
    #[error("the state file {path} is not a valid SQLite database; move it aside or delete it to start with empty state")]
    SqliteCorrupt {
        /// The state file.
        path: PathBuf,
        /// SQLite's diagnosis (`file is not a database`, `quick_check` output, ...).
        #[source]
        source: rusqlite::Error,
    },

    /// A read or write of an open SQLite file failed (disk full, I/O error, ...).
    #[error("reading or writing the state file {path} failed; check free disk space and the file system")]
    Sqlite {
        /// The state file.
        path: PathBuf,
        /// SQLite's reason.
        #[source]
        source: rusqlite::Error,
    },

    /// The blocking SQLite task died (a panic inside it); a bug in tether.
    #[error("the SQLite task for {path} stopped unexpectedly; this is a bug in tether")]
    SqliteTask {
        /// The state file.
        path: PathBuf,
        /// The join error carrying the panic.
        #[source]
        source: tokio::task::JoinError,
    },

    /// The Redis URL did not parse (credentials are not echoed).
    #[error(
        "the Redis URL is not valid; use redis://[:PASSWORD@]HOST:PORT[/DB] (rediss:// for TLS), or redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER[/DB]"
    )]
    RedisUrl {
        /// The parser's reason.
        #[source]
        source: redis::RedisError,
    },

    /// The Redis server could not be reached or refused the connection at startup.
    #[error(
        "cannot connect to Redis at {addr}; check that it is running and reachable from this host"
    )]
    RedisConnect {
        /// `host:port/db`, without credentials.
        addr: String,
        /// The client's reason.
        #[source]
        source: redis::RedisError,
    },

    /// A `rediss://` server could not be reached, or its certificate not verified.
    #[error(
        "cannot connect to Redis over TLS at {addr}; check that it is running, and pass the CA certificate that signed its certificate with --redis-ca-file"
    )]
    RedisTlsConnect {
        /// `host:port/db`, without credentials.
        addr: String,
        /// The client's reason.
        #[source]
        source: redis::RedisError,
    },

    /// The `--redis-ca-file` could not be read.
    #[error("cannot read the Redis CA certificate {path}; check --redis-ca-file")]
    RedisCa {
        /// The file.
        path: std::path::PathBuf,
        /// The reason.
        #[source]
        source: std::io::Error,
    },

    /// A Redis command failed (server down, timeout, out of memory, ...).
    #[error("a Redis command to {addr} failed; tether retries, check the Redis server")]
    Redis {
        /// `host:port/db`, without credentials.
        addr: String,
        /// The client's reason.
        #[source]
        source: redis::RedisError,
    },

    /// A caller passed a user id that would break key isolation; a bug in tether.
    #[error("invalid user id {user:?}: it must be non-empty and must not contain ':'")]
    InvalidUser {
        /// The offending id.
        user: String,
    },
}

impl StoreError {
    /// The location may just be unwritable (read-only file system, file or directory, or no
    /// permission), rather than damaged or mistyped.
    pub fn may_be_unwritable(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            StoreError::SqliteReadOnly { .. } => true,
            StoreError::CreateDir { source, .. } => matches!(
                source.kind(),
                ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied
            ),
            StoreError::SqliteOpen { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::CannotOpen
                        | rusqlite::ErrorCode::ReadOnly
                        | rusqlite::ErrorCode::PermissionDenied
                )
            ),
            _ => false,
        }
    }
}
