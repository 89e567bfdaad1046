//! Users' state logs: held in memory while in use, written through the batching writer, and
//! loaded from the durable store on a user's first visit after a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::auth::UserId;
use crate::config::Config;
use crate::record::{Log, LogLimits, Policy, PolicyError, Step};
use crate::store::{
    self, Clock, Source, StateKey, Store, StoreError, SystemClock, Writer, WriterHandle,
};

/// Most logs kept in memory; beyond it, logs no tab is using are dropped (they are saved).
const MAX_LOGS_IN_MEMORY: usize = 50_000;

/// How often expired saved state is deleted from the store.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Longest time from a recorded change to its durable write (plus one commit).
pub const DURABILITY_WINDOW: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the --exclude list is not valid; {0}")]
    Policy(#[from] PolicyError),
}

/// One (user, app) history in memory.
#[derive(Debug)]
struct Held {
    /// The compacted log of changes.
    log: Log,
    /// When it last changed (ms since the epoch, strictly increasing per log). Saved with the
    /// log, so a gateway can tell whether the store holds a newer history written elsewhere.
    stamp: u64,
}

/// One (user, app) history, shared by that user's tabs.
#[derive(Debug, Clone)]
pub struct History(Arc<Mutex<Held>>);

impl History {
    fn new(held: Held) -> History {
        History(Arc::new(Mutex::new(held)))
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        self.0.lock().expect("history lock")
    }

    /// Nothing has been recorded (or it was all forgotten).
    pub fn is_empty(&self) -> bool {
        self.lock().log.is_empty()
    }

    /// The recorded steps with their effects, oldest first, as they are now.
    pub fn steps(&self) -> Vec<Step> {
        self.lock().log.steps().cloned().collect()
    }
}

/// The writer serialises a history when it writes it, not at every change.
impl Source for Mutex<Held> {
    fn snapshot(&self) -> Vec<u8> {
        encode(&self.lock().expect("history lock"))
    }
}

/// What a page load learns about a user's history.
pub struct Synced {
    /// The history, now current with the store.
    pub log: History,
    /// Another gateway wrote a newer history since this gateway last saw it.
    pub changed_elsewhere: bool,
    /// There is something to restore.
    pub has_state: bool,
}

/// Bytes of the stamp that precedes the log in a stored snapshot.
const STAMP_BYTES: usize = 8;

fn encode(held: &Held) -> Vec<u8> {
    let log = held.log.to_bytes();
    let mut out = Vec::with_capacity(STAMP_BYTES + log.len());
    out.extend_from_slice(&held.stamp.to_be_bytes());
    out.extend_from_slice(&log);
    out
}

fn decode(bytes: &[u8], limits: LogLimits) -> Option<Held> {
    let (stamp, log) = bytes.split_at_checked(STAMP_BYTES)?;
    let stamp = u64::from_be_bytes(stamp.try_into().ok()?);
    Some(Held {
        log: Log::from_bytes(log, limits).ok()?,
        stamp,
    })
}

/// Where snapshot `id` of `app` is kept: under a user that no cookie can name (real ids are
/// bare hex), so no user's history and no snapshot can reach each other.
fn snapshot_key(id: &str, app: &str) -> StateKey {
    StateKey::new(format!("snapshot-{id}"), app)
}

fn now_ms() -> u64 {
    u64::try_from(SystemClock.now_millis()).unwrap_or(0)
}

/// Every (user, app) history this gateway has touched, and where they are saved.
pub struct States {
    /// Durable backend (SQLite or Redis).
    store: Arc<dyn Store>,
    /// Batches snapshots into the store within the durability window.
    writer: WriterHandle,
    /// Histories in memory. Loaded on first use; a user's tabs share one.
    logs: Mutex<HashMap<StateKey, History>>,
    /// What is never recorded.
    pub policy: Policy,
    /// Size bound of each log.
    limits: LogLimits,
}

impl States {
    pub async fn open(config: &Config) -> Result<States, StateError> {
        let policy = match &config.exclude {
            Some(rules) => Policy::default_with(rules)?,
            None => Policy::default(),
        };
        let store = store::open_with_ca(&config.state_url, config.redis_ca_file.as_deref()).await?;
        let writer = Writer::spawn(store.clone(), DURABILITY_WINDOW, config.state_ttl);
        // Expired state is never loaded; this only gives its space back.
        let purging = Arc::downgrade(&store);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PURGE_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                let Some(store) = purging.upgrade() else {
                    return;
                };
                match store.purge_expired().await {
                    Ok(n) if n > 0 => tracing::info!(purged = n, "expired saved state removed"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot purge expired state"),
                }
            }
        });
        Ok(States {
            store,
            writer,
            logs: Mutex::new(HashMap::new()),
            policy,
            limits: LogLimits::default(),
        })
    }

    /// Reads the stored history. `None` when the store cannot be read right now: then nothing
    /// is cached, so a later visit tries again instead of overwriting the saved history.
    async fn load(&self, key: &StateKey) -> Option<Held> {
        match self.store.load(key).await {
            Ok(Some(bytes)) => Some(decode(&bytes, self.limits).unwrap_or_else(|| {
                tracing::warn!(app = %key.app, "saved state unreadable; starting empty");
                Held {
                    log: Log::new(self.limits),
                    stamp: 0,
                }
            })),
            Ok(None) => Some(Held {
                log: Log::new(self.limits),
                stamp: 0,
            }),
            Err(e) => {
                tracing::warn!(app = %key.app, error = %e, "cannot load saved state; not recording this visit");
                None
            }
        }
    }

    fn cache(&self, key: StateKey, held: Held) -> History {
        let mut logs = self.logs.lock().expect("logs lock");
        if logs.len() >= MAX_LOGS_IN_MEMORY {
            // Only this map holds them: no tab records into them, and their state is saved.
            logs.retain(|_, log| Arc::strong_count(&log.0) > 1);
        }
        logs.entry(key)
            .or_insert_with(|| History::new(held))
            .clone()
    }

    /// The history of (user, app) for a websocket: the cached one, or loaded from the store.
    pub async fn log(&self, user: &UserId, app: &str) -> Option<History> {
        let key = StateKey::new(user.as_str(), app);
        if let Some(log) = self.logs.lock().expect("logs lock").get(&key) {
            return Some(log.clone());
        }
        let held = self.load(&key).await?;
        Some(self.cache(key, held))
    }

    /// For a page load: brings the cached history up to date with the store, which another
    /// gateway sharing it may have written. `None` when the store cannot be read.
    pub async fn sync(&self, user: &UserId, app: &str) -> Option<Synced> {
        let key = StateKey::new(user.as_str(), app);
        let stored = self.load(&key).await?;
        let cached = self.logs.lock().expect("logs lock").get(&key).cloned();
        let (log, changed_elsewhere) = match cached {
            Some(shared) => {
                let changed = {
                    let mut held = shared.lock();
                    // Ours is newer or equal when the writer has not flushed it yet.
                    let newer = stored.stamp > held.stamp;
                    if newer {
                        *held = stored;
                    }
                    newer
                };
                (shared, changed)
            }
            None => (self.cache(key, stored), false),
        };
        let has_state = !log.is_empty();
        Some(Synced {
            log,
            changed_elsewhere,
            has_state,
        })
    }

    /// Appends steps to a history and schedules its snapshot for writing. Returns the
    /// sequence numbers of the steps kept, for [`States::add_effects`].
    pub fn record(&self, user: &UserId, app: &str, log: &History, steps: Vec<Step>) -> Vec<u64> {
        if steps.is_empty() {
            return Vec::new();
        }
        let mut seqs = Vec::with_capacity(steps.len());
        {
            let mut held = log.lock();
            for step in steps {
                seqs.extend(held.log.push_step(step).0);
            }
            held.stamp = now_ms().max(held.stamp + 1);
        }
        self.writer
            .submit_later(StateKey::new(user.as_str(), app), log.0.clone());
        seqs
    }

    /// Adds effects to recorded steps; the snapshot is written again only if they changed.
    pub fn add_effects(
        &self,
        user: &UserId,
        app: &str,
        log: &History,
        seqs: &[u64],
        slots: &[String],
    ) {
        {
            let mut held = log.lock();
            let mut changed = false;
            for &seq in seqs {
                changed |= held.log.add_effects(seq, slots);
            }
            if !changed {
                return;
            }
            held.stamp = now_ms().max(held.stamp + 1);
        }
        self.writer
            .submit_later(StateKey::new(user.as_str(), app), log.0.clone());
    }

    /// Freezes the user's current history of `app` into a snapshot of its own, kept `ttl`,
    /// and returns its id (128 random bits, as hex). `Ok(None)` when there is nothing to share.
    pub async fn share(
        &self,
        user: &UserId,
        app: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let Some(synced) = self.sync(user, app).await else {
            return Err(StoreError::Unavailable);
        };
        if !synced.has_state {
            return Ok(None);
        }
        // The owner's id first, so that they alone may delete it.
        let mut bytes = user.as_str().as_bytes().to_vec();
        bytes.extend(encode(&synced.log.lock()));
        let id = UserId::random().as_str().to_owned();
        self.store
            .save_batch(&[(snapshot_key(&id, app), bytes)], ttl)
            .await?;
        Ok(Some(id))
    }

    /// Makes the snapshot `id` of `app` the user's history of it: what they do next is
    /// recorded into their own history, never into the snapshot. `Ok(false)` when there is no
    /// such snapshot of this app (expired, made up, or another app's).
    pub async fn open_snapshot(
        &self,
        id: &str,
        user: &UserId,
        app: &str,
    ) -> Result<bool, StoreError> {
        let Some((_owner, bytes)) = self.load_snapshot(id, app).await? else {
            return Ok(false);
        };
        let Some(mut shared) = decode(&bytes, self.limits) else {
            return Ok(false);
        };
        let key = StateKey::new(user.as_str(), app);
        let cached = self.logs.lock().expect("logs lock").get(&key).cloned();
        let history = cached.unwrap_or_else(|| {
            let empty = Held {
                log: Log::new(self.limits),
                stamp: 0,
            };
            self.cache(key.clone(), empty)
        });
        {
            let mut held = history.lock();
            shared.stamp = now_ms().max(held.stamp + 1);
            *held = shared;
        }
        self.writer.submit_later(key, history.0.clone());
        self.writer.flush().await?;
        Ok(true)
    }

    /// Deletes snapshot `id` of `app` if `user` made it. `Ok(false)` when there is no such
    /// snapshot, or it is someone else's.
    pub async fn delete_snapshot(
        &self,
        id: &str,
        user: &UserId,
        app: &str,
    ) -> Result<bool, StoreError> {
        match self.load_snapshot(id, app).await? {
            Some((owner, _)) if owner == user.as_str() => {
                self.store.forget_user(&snapshot_key(id, app).user).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Snapshot `id` of `app`, as its owner's id and the history's bytes.
    async fn load_snapshot(
        &self,
        id: &str,
        app: &str,
    ) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let valid = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Ok(None);
        }
        let Some(mut bytes) = self.store.load(&snapshot_key(id, app)).await? else {
            return Ok(None);
        };
        if bytes.len() < 32 {
            return Ok(None);
        }
        let history = bytes.split_off(32);
        Ok(String::from_utf8(bytes).ok().map(|owner| (owner, history)))
    }

    /// Forgets everything saved for a user. An error means the store still holds it.
    pub async fn forget(&self, user: &UserId) -> Result<(), StoreError> {
        self.logs
            .lock()
            .expect("logs lock")
            .retain(|k, _| k.user != user.as_str());
        // Pending writes for this user would resurrect it, even after a failed delete.
        self.writer.discard_user(user.as_str()).await;
        self.store
            .forget_user(user.as_str())
            .await
            .inspect_err(|e| tracing::warn!(user = %user, error = %e, "cannot forget saved state"))
    }

    /// Writes everything pending (at shutdown).
    pub async fn flush(&self) {
        if let Err(e) = self.writer.flush().await {
            tracing::warn!(error = %e, "state not fully written at shutdown");
        }
    }

    /// The store refuses writes right now (full, read-only or down): changes wait in memory.
    pub fn refusing_writes(&self) -> bool {
        self.writer.stats().failing || self.store.refuses_writes()
    }

    pub fn writer_stats(&self) -> store::WriterStats {
        self.writer.stats()
    }
}
