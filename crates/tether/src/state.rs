//! Users' state logs: held in memory while in use, written through the batching writer, and
//! loaded from the durable store on a user's first visit after a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::identity::UserId;
use crate::record::{Entry, Log, LogLimits, Policy, PolicyError};
use crate::store::{self, StateKey, Store, StoreError, Writer, WriterHandle};

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

/// One (user, app) log, shared by that user's tabs.
pub type SharedLog = Arc<Mutex<Log>>;

/// Every (user, app) log this gateway has touched, and where they are saved.
pub struct States {
    /// Durable backend (SQLite or Redis).
    store: Arc<dyn Store>,
    /// Batches snapshots into the store within the durability window.
    writer: WriterHandle,
    /// Logs in memory. Loaded on first use; a user's tabs share one.
    logs: Mutex<HashMap<StateKey, SharedLog>>,
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
        let store = store::open(&config.state_url).await?;
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

    /// The log of (user, app), loading it from the store on first use. A log that cannot be
    /// read is logged and replaced by an empty one: a broken record must not break the page.
    pub async fn log(&self, user: &UserId, app: &str) -> SharedLog {
        let key = StateKey::new(user.as_str(), app);
        if let Some(log) = self.logs.lock().expect("logs lock").get(&key) {
            return log.clone();
        }
        let loaded = match self.store.load(&key).await {
            Ok(Some(bytes)) => Log::from_bytes(&bytes, self.limits).unwrap_or_else(|e| {
                tracing::warn!(user = %user, app, error = %e, "saved state unreadable; starting empty");
                Log::new(self.limits)
            }),
            Ok(None) => Log::new(self.limits),
            Err(e) => {
                tracing::warn!(user = %user, app, error = %e, "cannot load saved state; starting empty");
                Log::new(self.limits)
            }
        };
        let mut logs = self.logs.lock().expect("logs lock");
        if logs.len() >= MAX_LOGS_IN_MEMORY {
            // Only this map holds them: no tab records into them, and their state is saved.
            logs.retain(|_, log| Arc::strong_count(log) > 1);
        }
        logs.entry(key)
            .or_insert_with(|| Arc::new(Mutex::new(loaded)))
            .clone()
    }

    pub async fn has_state(&self, user: &UserId, app: &str) -> bool {
        !self
            .log(user, app)
            .await
            .lock()
            .expect("log lock")
            .is_empty()
    }

    /// Appends entries to a log and schedules its snapshot for writing.
    pub fn record(&self, user: &UserId, app: &str, log: &SharedLog, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let snapshot = {
            let mut log = log.lock().expect("log lock");
            for e in entries {
                log.push(e);
            }
            log.to_bytes()
        };
        self.writer
            .submit(StateKey::new(user.as_str(), app), snapshot);
    }

    /// Forgets everything saved for a user.
    pub async fn forget(&self, user: &UserId) {
        self.logs
            .lock()
            .expect("logs lock")
            .retain(|k, _| k.user != user.as_str());
        // Pending writes for this user would resurrect it: write them first, then delete.
        let _ = self.writer.flush().await;
        if let Err(e) = self.store.forget_user(user.as_str()).await {
            tracing::warn!(user = %user, error = %e, "cannot forget saved state");
        }
    }

    /// Writes everything pending (at shutdown).
    pub async fn flush(&self) {
        if let Err(e) = self.writer.flush().await {
            tracing::warn!(error = %e, "state not fully written at shutdown");
        }
    }

    pub fn writer_stats(&self) -> store::WriterStats {
        self.writer.stats()
    }
}
