//! The shared store for several gateway hosts: one Redis server.
//!
//! Layout (all under the `tether:` namespace):
//! - `tether:state:{user}:{app}`: the snapshot, a string with `PX` expiry;
//! - `tether:user:{user}`: a set of that user's apps, so `forget_user` needs no
//!   `KEYS`/`SCAN`; its expiry is only ever raised, to the longest TTL of its apps.
//!
//! Expiry is Redis's own, so `purge_expired` has nothing to do. Durability is whatever
//! the server's persistence (`appendonly`, `save`) is configured to give.
//!
//! With Redis Sentinel (`redis+sentinel://S1:26379,S2:26379/MASTER[/DB]`) the primary is asked
//! of the sentinels at start, and again whenever a command fails as a failover makes it fail
//! (the old primary is gone, or now a read-only replica): the next command, which the writer's
//! retry sends, goes to the new primary.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncCommands, Client, RedisError};
use tokio::time::Instant;

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

/// Least time between two questions to the sentinels, so a primary that is down for a while
/// does not make every retry ask again at once.
const ASK_SENTINELS_EVERY: Duration = Duration::from_millis(500);

/// The URL scheme of a Redis behind Sentinel.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// A [`Store`] on a Redis server.
#[derive(Clone)]
pub struct RedisStore {
    /// Multiplexed connection that reconnects by itself after Redis restarts; cloning
    /// it is cheap and shares the one socket. Replaced when Sentinel names a new primary.
    conn: Arc<RwLock<ConnectionManager>>,
    /// `host:port/db` without credentials, for error messages and logs.
    addr: Arc<str>,
    /// The sentinels, when the primary is found through them.
    sentinel: Option<Arc<Sentinel>>,
}

/// The sentinels a [`RedisStore`] asks for the primary.
struct Sentinel {
    /// Asks them; one question at a time.
    client: tokio::sync::Mutex<SentinelClient>,
    /// The primary's name, for logs.
    master: String,
    /// When they were last asked.
    asked: std::sync::Mutex<Option<Instant>>,
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
        let config = manager_config();
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
        let conn = connect_and_ping(client, config)
            .await
            .map_err(connect_error)?;
        Ok(Self {
            conn: Arc::new(RwLock::new(conn)),
            addr,
            sentinel: None,
        })
    }

    /// Connects to the primary that the sentinels of a `redis+sentinel://` URL name, and
    /// follows it through failovers.
    pub async fn connect_sentinel(url: &str) -> Result<Self, StoreError> {
        let (sentinels, master, db, password) = parse_sentinel_url(url)?;
        let mut info = redis::RedisConnectionInfo::default().set_db(db);
        if let Some(p) = password {
            info = info.set_password(p);
        }
        let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
        let mut client = SentinelClient::build(
            sentinels.clone(),
            master.clone(),
            Some(node),
            SentinelServerType::Master,
        )
        .map_err(|source| StoreError::RedisUrl { source })?;
        let addr: Arc<str> = format!("{master} via {}/{db}", sentinels.join(",")).into();
        let connect_error = |source| StoreError::RedisConnect {
            addr: addr.to_string(),
            source,
        };
        let primary = client.async_get_client().await.map_err(connect_error)?;
        let conn = connect_and_ping(primary, manager_config())
            .await
            .map_err(connect_error)?;
        Ok(Self {
            conn: Arc::new(RwLock::new(conn)),
            addr,
            sentinel: Some(Arc::new(Sentinel {
                client: tokio::sync::Mutex::new(client),
                master,
                asked: std::sync::Mutex::new(None),
            })),
        })
    }

    /// `host:port/db` of the server, without credentials.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The connection to use now.
    fn conn(&self) -> ConnectionManager {
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Wraps a command failure with the server's address; behind Sentinel, a failure a
    /// failover causes first makes the store ask the sentinels for the primary again.
    async fn fail(&self, source: RedisError) -> StoreError {
        if let Some(sentinel) = &self.sentinel {
            let failover = source.is_io_error()
                || source.is_connection_refusal()
                || source.is_connection_dropped()
                || source.is_timeout()
                || matches!(
                    source.kind(),
                    redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                );
            if failover {
                self.follow_primary(sentinel).await;
            }
        }
        StoreError::Redis {
            addr: self.addr.to_string(),
            source,
        }
    }

    /// Asks the sentinels which server is the primary now and connects to it (at most every
    /// [`ASK_SENTINELS_EVERY`]).
    async fn follow_primary(&self, sentinel: &Sentinel) {
        {
            let mut asked = sentinel.asked.lock().unwrap_or_else(|p| p.into_inner());
            if asked.is_some_and(|t| t.elapsed() < ASK_SENTINELS_EVERY) {
                return;
            }
            *asked = Some(Instant::now());
        }
        let mut client = sentinel.client.lock().await;
        let asked = tokio::time::timeout(CONNECT_TIMEOUT, client.async_get_client()).await;
        let primary = match asked {
            Ok(Ok(primary)) => primary,
            Ok(Err(e)) => {
                tracing::warn!(master = %sentinel.master, error = %e, "the Redis sentinels name no primary yet; retrying");
                return;
            }
            Err(_) => {
                tracing::warn!(master = %sentinel.master, "the Redis sentinels did not answer; retrying");
                return;
            }
        };
        let to = primary.get_connection_info().addr().to_string();
        match ConnectionManager::new_with_config(primary, manager_config()).await {
            Ok(conn) => {
                *self.conn.write().unwrap_or_else(|p| p.into_inner()) = conn;
                tracing::info!(master = %sentinel.master, primary = %to, "following the Redis primary");
            }
            Err(e) => {
                tracing::warn!(master = %sentinel.master, primary = %to, error = %e, "cannot reach the Redis primary the sentinels name; retrying");
            }
        }
    }
}

/// A connection to `client`'s server that has answered `PING`.
async fn connect_and_ping(
    client: Client,
    config: ConnectionManagerConfig,
) -> Result<ConnectionManager, RedisError> {
    let mut conn = ConnectionManager::new_with_config(client, config).await?;
    redis::cmd("PING").query_async::<()>(&mut conn).await?;
    Ok(conn)
}

/// How the connection to a Redis server reconnects. Commands wait for an ongoing reconnect,
/// so keep it short: while Redis is down a page load fails over to "no saved state" within
/// about a second, and the Writer, not the connection, owns the long-running retries.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
}

/// `redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]`: the sentinels (as
/// `redis://` URLs), the primary's name, the database and the primary's password.
fn parse_sentinel_url(url: &str) -> Result<(Vec<String>, String, i64, Option<String>), StoreError> {
    let bad = || StoreError::RedisUrl {
        source: RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "expected redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER[/DB]",
        )),
    };
    let rest = url.strip_prefix(SENTINEL_SCHEME).ok_or_else(bad)?;
    let (hosts, path) = rest.split_once('/').ok_or_else(bad)?;
    let (password, hosts) = match hosts.rsplit_once('@') {
        Some((creds, hosts)) => {
            let password = creds.split_once(':').map_or(creds, |(_, p)| p);
            (Some(password.to_owned()).filter(|p| !p.is_empty()), hosts)
        }
        None => (None, hosts),
    };
    let sentinels: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{h}"))
        .collect();
    let (master, db) = match path.trim_end_matches('/').split_once('/') {
        Some((master, db)) => (master, db.parse::<i64>().map_err(|_| bad())?),
        None => (path.trim_end_matches('/'), 0),
    };
    if sentinels.is_empty() || master.is_empty() {
        return Err(bad());
    }
    Ok((sentinels, master.to_owned(), db, password))
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
        let mut conn = self.conn();
        match conn.get(state_key(&key.user, &key.app)).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.fail(e).await),
        }
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
        let mut conn = self.conn();
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e).await),
        }
    }

    async fn forget_user(&self, user: &str) -> Result<(), StoreError> {
        check_user(user)?;
        let mut conn = self.conn();
        let set = user_key(user);
        let apps: Vec<String> = match conn.smembers(&set).await {
            Ok(apps) => apps,
            Err(e) => return Err(self.fail(e).await),
        };
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
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e).await),
        }
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

    #[test]
    fn sentinel_urls_name_the_sentinels_the_primary_and_the_database() {
        let (s, m, db, pw) =
            parse_sentinel_url("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26380/main/2")
                .unwrap();
        assert_eq!(s, ["redis://10.0.0.1:26379", "redis://10.0.0.2:26380"]);
        assert_eq!((m.as_str(), db, pw.as_deref()), ("main", 2, Some("pw")));
        let (_, m, db, pw) =
            parse_sentinel_url("redis+sentinel://127.0.0.1:26379/mymaster").unwrap();
        assert_eq!((m.as_str(), db, pw), ("mymaster", 0, None));
        for bad in [
            "redis+sentinel://127.0.0.1:26379",
            "redis+sentinel:///mymaster",
            "redis+sentinel://h:1/m/x",
        ] {
            let err = parse_sentinel_url(bad).unwrap_err();
            assert!(
                err.to_string().contains("redis+sentinel://"),
                "{bad}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn a_bad_url_does_not_echo_the_password() {
        let err = RedisStore::connect("redis://:s3cret@host:notaport")
            .await
            .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
    }
}
