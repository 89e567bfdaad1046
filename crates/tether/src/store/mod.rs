//! Durable storage of state logs: the `Store` trait, its backends and `open`.
//!
//! The state log itself (ordering, compaction, size bounds) is pure code elsewhere.
//! A store only persists one opaque, already-compacted snapshot per `(user, app)`,
//! with an expiry.
//!
//! Every backend passes the same behavioural suite in `tests/store_conformance.rs`.
//! [`Writer`] sits in front of a store and turns a stream of snapshots into
//! coalesced batches, which is where the durability window lives.

mod clock;
mod error;
mod redis;
mod sqlite;
mod writer;

use std::sync::Arc;
use std::time::Duration;

pub use self::clock::{Clock, ManualClock, SystemClock};
pub use self::error::StoreError;
pub use self::redis::RedisStore;
pub use self::sqlite::SqliteStore;
pub use self::writer::{Source, Writer, WriterConfig, WriterHandle, WriterStats};

/// Which state log a snapshot belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateKey {
    /// The identity from the cookie: 32 lowercase hex characters. It never contains
    /// `:`, which the Redis key layout relies on (checked by every backend).
    pub user: String,
    /// The app's name as routed by the gateway (for example `sliders`); one user has
    /// independent state per app.
    pub app: String,
}

impl StateKey {
    /// Builds a key from its two parts.
    pub fn new(user: impl Into<String>, app: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            app: app.into(),
        }
    }
}

/// Persistence of state-log snapshots. One implementation per backend.
///
/// All methods are safe to call concurrently. Expired entries are never returned.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The latest unexpired snapshot for `key`, or `None`.
    async fn load(&self, key: &StateKey) -> Result<Option<Vec<u8>>, StoreError>;

    /// Writes several snapshots in one batch (one transaction or pipeline): each key
    /// ends up with its new value or, if an error is returned, possibly its old one,
    /// never a torn value. Each entry expires `ttl` after this call (minimum 1 ms).
    /// If a key appears twice, the later item wins.
    async fn save_batch(
        &self,
        items: &[(StateKey, Vec<u8>)],
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Forgets every app's snapshot of `user` and nobody else's (`/.tether/forget`).
    async fn forget_user(&self, user: &str) -> Result<(), StoreError>;

    /// True while the store is open read-only and refuses every write (SQLite on a location
    /// this process cannot write); writes keep being tried.
    fn refuses_writes(&self) -> bool {
        false
    }

    /// Reclaims space held by expired entries and returns how many were removed.
    /// Call it periodically. Backends that expire entries themselves (Redis) return 0.
    async fn purge_expired(&self) -> Result<u64, StoreError>;
}

/// Opens the store named by `url`:
/// - `sqlite:PATH`: a SQLite file, created with its parent directories if missing, or
///   opened read-only where it cannot be written;
/// - `redis://HOST:PORT[/DB]`: a Redis server shared by several gateways;
/// - `rediss://HOST:PORT[/DB]`: the same over TLS, the server's certificate checked against
///   the system's roots;
/// - `redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER[/DB]`: the primary those Redis sentinels
///   name, followed through failovers.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with_ca(url, None).await
}

/// [`open`], with `rediss://` servers' certificates checked against the PEM CA certificates
/// in `redis_ca` (`--redis-ca-file`) instead of the system's roots.
pub async fn open_with_ca(
    url: &str,
    redis_ca: Option<&std::path::Path>,
) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        if path.is_empty() {
            return Err(StoreError::UnknownUrl {
                url: url.to_owned(),
            });
        }
        // A read-only location is served from, not refused: see `open_or_read_only`.
        Ok(Arc::new(
            SqliteStore::open_or_read_only(path, Arc::new(SystemClock)).await?,
        ))
    } else if url.starts_with(self::redis::SENTINEL_SCHEME) {
        Ok(Arc::new(RedisStore::connect_sentinel(url).await?))
    } else if url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(Arc::new(RedisStore::connect_with_ca(url, redis_ca).await?))
    } else {
        Err(StoreError::UnknownUrl {
            url: url.to_owned(),
        })
    }
}

/// Checks the one rule the backends need from a user id: non-empty, no `:`.
fn check_user(user: &str) -> Result<(), StoreError> {
    if user.is_empty() || user.contains(':') {
        return Err(StoreError::InvalidUser {
            user: user.to_owned(),
        });
    }
    Ok(())
}

/// A TTL in whole milliseconds, at least 1 (Redis rejects `PX 0`).
fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_scheme_names_the_accepted_forms() {
        let err = match open("postgres://x").await {
            Err(e) => e,
            Ok(_) => panic!("postgres:// must be rejected"),
        };
        let msg = err.to_string();
        assert!(
            msg.contains("sqlite:PATH") && msg.contains("redis://"),
            "{msg}"
        );
        assert!(open("sqlite:").await.is_err());
    }

    #[test]
    fn user_ids_with_colons_are_rejected() {
        assert!(check_user("0123456789abcdef0123456789abcdef").is_ok());
        assert!(check_user("a:b").is_err());
        assert!(check_user("").is_err());
    }

    #[test]
    fn ttl_is_at_least_one_millisecond() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_secs(2)), 2000);
    }
}
