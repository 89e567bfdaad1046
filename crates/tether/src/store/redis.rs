//! The shared store for several gateway hosts: one Redis server.
//!
//! Layout (all under the `tether:` namespace):
//! - `tether:state:{user}:{app}`: the snapshot, a string with `PX` expiry;
//! - `tether:user:{user}`: a set of that user's apps, so `forget_user` needs no
//!   `KEYS`/`SCAN`; its expiry is only ever raised, to the longest TTL of its apps.
//!
//! Expiry is Redis's own, so `purge_expired` has nothing to do. Durability is whatever
//! the server's persistence (`appendonly`, `save`) is configured to give.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Client, RedisError};

use super::{check_user, ttl_millis, StateKey, Store, StoreError};

/// Raises a key's expiry to `ARGV[1]` ms unless it already lives longer.
/// `PTTL` is -1 for a key without expiry and -2 for a missing one; both are raised.
/// (A script, not `PEXPIRE .. GT`, so that Redis before 7.0 works too.)
const RAISE_EXPIRY: &str = "if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then \
     return redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return 0";

/// How long one TCP connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long to wait for one reply (a batch can carry megabytes) before calling Redis down.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`Store`] on a Redis server.
#[derive(Clone)]
pub struct RedisStore {
    /// Multiplexed connection that reconnects by itself after Redis restarts; cloning
    /// it is cheap and shares the one socket.
    conn: ConnectionManager,
    /// `host:port/db` without credentials, for error messages and logs.
    addr: Arc<str>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `redis://[:PASSWORD@]HOST:PORT[/DB]` and checks the server answers.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_ca(url, None).await
    }

    /// [`connect`](Self::connect), or `rediss://` over TLS, checking the server's certificate
    /// against the PEM CA certificates in `ca` when given, else the system's roots.
    pub async fn connect_with_ca(
        url: &str,
        ca: Option<&std::path::Path>,
    ) -> Result<Self, StoreError> {
        let client = match ca {
            None => Client::open(url),
            Some(path) => {
                let root_cert = std::fs::read(path).map_err(|source| StoreError::RedisCa {
                    path: path.to_owned(),
                    source,
                })?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                Client::build_with_tls(url, certs)
            }
        }
        .map_err(|source| StoreError::RedisUrl { source })?;
        let info = client.get_connection_info();
        let tls = url.starts_with("rediss://");
        let addr: Arc<str> = format!("{}/{}", info.addr(), info.redis_settings().db()).into();
        // Commands wait for an ongoing reconnect, so keep it short: while Redis is down
        // a page load fails over to "no saved state" within about a second, and the
        // Writer, not the connection, owns the long-running retries.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connect_error = |source| match tls {
            false => StoreError::RedisConnect {
                addr: addr.to_string(),
                source,
            },
            true => StoreError::RedisTlsConnect {
                addr: addr.to_string(),
                source,
            },
        };
        let mut conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(connect_error)?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(connect_error)?;
        Ok(Self { conn, addr })
    }

    /// `host:port/db` of the server, without credentials.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Wraps a command failure with the server's address.
    fn fail(&self, source: RedisError) -> StoreError {
        StoreError::Redis {
            addr: self.addr.to_string(),
            source,
        }
    }
}

/// The snapshot's key.
fn state_key(user: &str, app: &str) -> String {
    format!("tether:state:{user}:{app}")
}

/// The key of the set listing a user's apps.
fn user_key(user: &str) -> String {
    format!("tether:user:{user}")
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn load(&self, key: &StateKey) -> Result<Option<Vec<u8>>, StoreError> {
        check_user(&key.user)?;
        let mut conn = self.conn.clone();
        conn.get(state_key(&key.user, &key.app))
            .await
            .map_err(|e| self.fail(e))
    }

    async fn save_batch(
        &self,
        items: &[(StateKey, Vec<u8>)],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        for (key, _) in items {
            check_user(&key.user)?;
        }
        if items.is_empty() {
            return Ok(());
        }
        let ttl = ttl_millis(ttl);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (key, snapshot) in items {
            pipe.cmd("SET")
                .arg(state_key(&key.user, &key.app))
                .arg(snapshot)
                .arg("PX")
                .arg(ttl)
                .ignore();
            pipe.cmd("SADD")
                .arg(user_key(&key.user))
                .arg(&key.app)
                .ignore();
        }
        let mut users: Vec<&str> = items.iter().map(|(k, _)| k.user.as_str()).collect();
        users.sort_unstable();
        users.dedup();
        for user in users {
            pipe.cmd("EVAL")
                .arg(RAISE_EXPIRY)
                .arg(1)
                .arg(user_key(user))
                .arg(ttl)
                .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.fail(e))
    }

    async fn forget_user(&self, user: &str) -> Result<(), StoreError> {
        check_user(user)?;
        let mut conn = self.conn.clone();
        let set = user_key(user);
        let apps: Vec<String> = conn.smembers(&set).await.map_err(|e| self.fail(e))?;
        if apps.is_empty() {
            return Ok(());
        }
        // Remove exactly the apps read above: an app saved concurrently stays listed
        // in the set, so it can still be forgotten later.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for app in &apps {
            pipe.del(state_key(user, app)).ignore();
        }
        pipe.srem(&set, &apps).ignore();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.fail(e))
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced() {
        assert_eq!(state_key("ab", "app"), "tether:state:ab:app");
        assert_eq!(user_key("ab"), "tether:user:ab");
    }

    #[tokio::test]
    async fn a_bad_url_does_not_echo_the_password() {
        let err = RedisStore::connect("redis://:s3cret@host:notaport")
            .await
            .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
    }
}
