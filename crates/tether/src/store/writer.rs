//! The durability window: coalesces snapshots per key and writes them in batches.
//!
//! About 440 lines, most of them the documentation of one task and its shared map; split,
//! the window, the bound and the retries would each lose the invariant they share.
//!
//! `submit` never blocks and never waits for I/O: it replaces the key's pending
//! snapshot in a shared map (last wins) and wakes the writer task. The first snapshot
//! into an empty map opens a window; when it elapses (default 50 ms) everything pending
//! is written with one `save_batch`. A change is therefore durable about `window` plus
//! one commit after it was submitted, well inside the 100 ms target, and a busy user
//! costs one write per window, not one per keystroke.
//!
//! Bounds and failure: at most `max_pending` keys wait (plus one batch in flight). If the store fails (Redis down,
//! disk full), the batch goes back into the map (newer submissions win), the failure is
//! logged at most once per `log_every`, and the batch is retried with backoff from
//! `window` up to `max_retry_delay`, so writing resumes within that delay of the store
//! coming back. While failing, a new key beyond `max_pending` evicts the least
//! recently changed one, which is counted in `dropped`.
//!
//! A snapshot may be submitted as bytes or as a [`Source`] that makes them: a source is
//! encoded when its batch is taken, once per window however many changes it saw, so a user
//! who changes a widget ten times in a window costs one serialisation of their log, not ten.
//!
//! Dropping the last [`WriterHandle`] makes the task write what is pending once more
//! and exit. Time is Tokio's, so tests run with `tokio::time::pause()`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{StateKey, Store, StoreError};

/// Makes a key's snapshot when the writer takes it: the newest state at that moment.
pub trait Source: Send + Sync {
    fn snapshot(&self) -> Vec<u8>;
}

/// A key's waiting snapshot: made already, or to be made at write time.
enum Snapshot {
    Bytes(Vec<u8>),
    Later(Arc<dyn Source>),
}

impl Snapshot {
    fn into_bytes(self) -> Vec<u8> {
        match self {
            Snapshot::Bytes(bytes) => bytes,
            Snapshot::Later(source) => source.snapshot(),
        }
    }
}

/// How the writer batches and retries.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Longest a submitted snapshot waits before its batch is written.
    pub window: Duration,
    /// Expiry given to every snapshot written.
    pub ttl: Duration,
    /// Bound on distinct keys waiting; what happens beyond it is in the module docs.
    pub max_pending: usize,
    /// Longest pause between two attempts while the store keeps failing.
    pub max_retry_delay: Duration,
    /// Minimum time between two "store is failing" log lines.
    pub log_every: Duration,
}

impl WriterConfig {
    /// The defaults: 50 ms window, 10 000 pending keys, retries up to every 1 s,
    /// failures logged at most every 10 s.
    pub fn new(ttl: Duration) -> Self {
        Self {
            window: Duration::from_millis(50),
            ttl,
            max_pending: 10_000,
            max_retry_delay: Duration::from_secs(1),
            log_every: Duration::from_secs(10),
        }
    }
}

/// Counters for metrics, read with [`WriterHandle::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Snapshots written successfully (after coalescing).
    pub snapshots_written: u64,
    /// Successful `save_batch` calls.
    pub batches_written: u64,
    /// Failed `save_batch` calls (each retry counts).
    pub write_errors: u64,
    /// Snapshots discarded because `max_pending` was exceeded.
    pub dropped: u64,
    /// Snapshots not yet durable right now: waiting, or in the batch being written.
    pub pending: usize,
    /// The last write failed and the writer is retrying: the store is down or full.
    pub failing: bool,
    /// For the last successful batch: from the earliest submit it contained to commit.
    pub last_latency: Option<Duration>,
}

/// The writer task; built and started by [`Writer::spawn`].
pub struct Writer {
    /// State shared with the handles.
    shared: Arc<Shared>,
}

/// A cheap, cloneable way to feed the writer.
#[derive(Clone)]
pub struct WriterHandle {
    /// State shared with the task.
    shared: Arc<Shared>,
    /// Dropped with the last handle, which tells the task to finish.
    _close: Arc<CloseOnDrop>,
}

/// What the task and its handles share.
struct Shared {
    /// Where batches go.
    store: Arc<dyn Store>,
    /// Window, TTL and bounds.
    config: WriterConfig,
    /// Snapshots not yet written; a std mutex since it is never held across `.await`.
    pending: Mutex<Pending>,
    /// Wakes the task when a snapshot arrives in an empty map.
    wake: Notify,
    /// Wakes the task when the last handle is dropped.
    closing: Notify,
    /// Set when the last handle is dropped.
    closed: AtomicBool,
    /// Held across take-and-save, so an older batch can never commit after a newer one.
    flush_lock: tokio::sync::Mutex<()>,
    /// Metrics.
    counters: Counters,
}

/// Snapshots waiting to be written.
#[derive(Default)]
struct Pending {
    /// The latest snapshot per key.
    map: HashMap<StateKey, Entry>,
    /// When the current window opened (first submit into an empty map).
    since: Option<Instant>,
    /// Source of [`Entry::seq`].
    next_seq: u64,
    /// Size of the batch being written right now, which is no longer in `map`.
    in_flight: usize,
}

impl Pending {
    /// Snapshots not yet durable.
    fn unsaved(&self) -> usize {
        self.map.len() + self.in_flight
    }
}

/// One key's waiting snapshot.
struct Entry {
    /// The snapshot itself, or what makes it.
    snapshot: Snapshot,
    /// Submission order of the latest change, to find the least recently changed key.
    seq: u64,
    /// When the oldest unwritten change to this key was submitted, for latency.
    first_submitted: Instant,
}

/// Metrics, updated without locks.
#[derive(Default)]
struct Counters {
    /// See [`WriterStats::snapshots_written`].
    snapshots_written: AtomicU64,
    /// See [`WriterStats::batches_written`].
    batches_written: AtomicU64,
    /// See [`WriterStats::write_errors`].
    write_errors: AtomicU64,
    /// See [`WriterStats::dropped`].
    dropped: AtomicU64,
    /// Last latency in microseconds, plus one (0 = none yet).
    last_latency_us: AtomicU64,
    /// See [`WriterStats::failing`].
    failing: AtomicBool,
}

/// Closes the writer when the last handle goes away.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.closing.notify_one();
    }
}

impl Writer {
    /// Starts a writer with the default bounds (see [`WriterConfig::new`]).
    pub fn spawn(store: Arc<dyn Store>, window: Duration, ttl: Duration) -> WriterHandle {
        Self::spawn_with(
            store,
            WriterConfig {
                window,
                ..WriterConfig::new(ttl)
            },
        )
    }

    /// Starts a writer on the current Tokio runtime.
    pub fn spawn_with(store: Arc<dyn Store>, config: WriterConfig) -> WriterHandle {
        let shared = Arc::new(Shared {
            store,
            config,
            pending: Mutex::default(),
            wake: Notify::new(),
            closing: Notify::new(),
            closed: AtomicBool::new(false),
            flush_lock: tokio::sync::Mutex::new(()),
            counters: Counters::default(),
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
        };
        tokio::spawn(writer.run());
        WriterHandle {
            _close: Arc::new(CloseOnDrop(Arc::clone(&shared))),
            shared,
        }
    }

    /// The task: wait for a window to open, let it elapse, write, repeat.
    async fn run(self) {
        let shared = self.shared;
        let config = &shared.config;
        let mut retry_at: Option<Instant> = None;
        let mut delay = config.window;
        let mut failures: u64 = 0;
        let mut last_log: Option<Instant> = None;
        loop {
            let closed = shared.closed.load(Ordering::Acquire);
            let Some(since) = shared.lock().since else {
                if closed {
                    return;
                }
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = shared.closing.notified() => {}
                }
                continue;
            };
            if !closed {
                let deadline = retry_at.map_or(since + config.window, |r| r.max(since));
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = shared.closing.notified() => {}
                }
            }
            match shared.flush_once().await {
                Ok(written) => {
                    shared.counters.failing.store(false, Ordering::Relaxed);
                    // Nothing written (all discarded) proves nothing about the store.
                    if failures > 0 && written > 0 {
                        tracing::info!(failures, "the state store accepts writes again");
                    }
                    (retry_at, delay, failures, last_log) = (None, config.window, 0, None);
                }
                Err(error) => {
                    shared.counters.failing.store(true, Ordering::Relaxed);
                    failures += 1;
                    let pending = shared.lock().unsaved();
                    if shared.closed.load(Ordering::Acquire) {
                        tracing::error!(
                            error = &error as &dyn std::error::Error,
                            pending,
                            "shutting down with unsaved state: the state store failed"
                        );
                        return;
                    }
                    let now = Instant::now();
                    if last_log.is_none_or(|t| now - t >= config.log_every) {
                        tracing::warn!(
                            error = &error as &dyn std::error::Error,
                            failures,
                            pending,
                            dropped = shared.counters.dropped.load(Ordering::Relaxed),
                            "cannot write state snapshots; keeping them in memory and retrying"
                        );
                        last_log = Some(now);
                    }
                    retry_at = Some(now + delay);
                    delay = (delay * 2).min(config.max_retry_delay);
                }
            }
        }
    }
}

impl WriterHandle {
    /// Queues `bytes` as the newest snapshot of `key`. Never blocks; see the module
    /// docs for what happens when `max_pending` keys are already waiting.
    pub fn submit(&self, key: StateKey, bytes: Vec<u8>) {
        self.queue(key, Snapshot::Bytes(bytes));
    }

    /// Like [`WriterHandle::submit`], with the snapshot made from `source` when the batch
    /// is written (once, whatever number of submits came before).
    pub fn submit_later(&self, key: StateKey, source: Arc<dyn Source>) {
        self.queue(key, Snapshot::Later(source));
    }

    fn queue(&self, key: StateKey, snapshot: Snapshot) {
        let shared = &self.shared;
        let now = Instant::now();
        let mut pending = shared.lock();
        let seq = pending.next_seq;
        pending.next_seq += 1;
        let first_submitted = pending.map.get(&key).map_or(now, |e| e.first_submitted);
        pending.map.insert(
            key,
            Entry {
                snapshot,
                seq,
                first_submitted,
            },
        );
        let opened = pending.since.is_none();
        pending.since.get_or_insert(now);
        shared.enforce_bound(&mut pending);
        drop(pending);
        if opened {
            shared.wake.notify_one();
        }
    }

    /// Writes everything pending now, without waiting for the window; for shutdown and
    /// tests. On error the snapshots stay pending and the task keeps retrying.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.shared.flush_once().await.map(drop)
    }

    /// Drops every snapshot of `user` not yet written, including one in a batch being written
    /// now that fails and would be put back (it waits for that batch).
    pub async fn discard_user(&self, user: &str) {
        let _order = self.shared.flush_lock.lock().await;
        let mut pending = self.shared.lock();
        pending.map.retain(|key, _| key.user != user);
        if pending.map.is_empty() {
            pending.since = None;
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> WriterStats {
        let c = &self.shared.counters;
        let latency = c.last_latency_us.load(Ordering::Relaxed);
        WriterStats {
            snapshots_written: c.snapshots_written.load(Ordering::Relaxed),
            batches_written: c.batches_written.load(Ordering::Relaxed),
            write_errors: c.write_errors.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            pending: self.shared.lock().unsaved(),
            failing: c.failing.load(Ordering::Relaxed),
            last_latency: latency.checked_sub(1).map(Duration::from_micros),
        }
    }
}

impl Shared {
    /// Locks the pending map (a panic elsewhere leaves it consistent, so poison is ignored).
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Evicts least recently changed keys beyond `max_pending`.
    fn enforce_bound(&self, pending: &mut Pending) {
        while pending.map.len() > self.config.max_pending.max(1) {
            let oldest = pending
                .map
                .iter()
                .min_by_key(|(_, e)| e.seq)
                .map(|(k, _)| k.clone());
            if let Some(key) = oldest {
                pending.map.remove(&key);
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes everything pending and writes it as one batch; puts it back on failure or
    /// if this future is dropped mid-write (so a caller's timeout loses nothing).
    async fn flush_once(&self) -> Result<usize, StoreError> {
        let _order = self.flush_lock.lock().await;
        let taken = {
            let mut pending = self.lock();
            pending.since = None;
            pending.in_flight = pending.map.len();
            std::mem::take(&mut pending.map)
        };
        if taken.is_empty() {
            return Ok(0);
        }
        let mut batch = Batch {
            shared: self,
            items: Vec::with_capacity(taken.len()),
            marks: Vec::with_capacity(taken.len()),
            written: false,
        };
        for (key, entry) in taken {
            batch.marks.push((entry.seq, entry.first_submitted));
            batch.items.push((key, entry.snapshot.into_bytes()));
        }
        let c = &self.counters;
        if let Err(error) = self.store.save_batch(&batch.items, self.config.ttl).await {
            c.write_errors.fetch_add(1, Ordering::Relaxed);
            return Err(error); // dropping `batch` puts it back
        }
        batch.written = true;
        self.lock().in_flight = 0;
        let oldest = batch.marks.iter().map(|&(_, t)| t).min();
        let latency = oldest.map_or(Duration::ZERO, |t| t.elapsed());
        let latency = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        c.snapshots_written
            .fetch_add(batch.items.len() as u64, Ordering::Relaxed);
        c.batches_written.fetch_add(1, Ordering::Relaxed);
        c.last_latency_us
            .store(latency.saturating_add(1), Ordering::Relaxed);
        Ok(batch.items.len())
    }
}

/// A batch taken out of the map. Unless marked written, dropping it puts it back.
struct Batch<'a> {
    /// Where to put it back.
    shared: &'a Shared,
    /// What `save_batch` is given.
    items: Vec<(StateKey, Vec<u8>)>,
    /// Each item's `seq` and `first_submitted`, restored if it goes back.
    marks: Vec<(u64, Instant)>,
    /// Set once the store committed it.
    written: bool,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.written {
            return;
        }
        let shared = self.shared;
        let mut pending = shared.lock();
        pending.in_flight = 0;
        let items = std::mem::take(&mut self.items);
        for ((key, bytes), &(seq, first_submitted)) in items.into_iter().zip(&self.marks) {
            match pending.map.get_mut(&key) {
                // Submitted again meanwhile: the newer bytes win, the age stays.
                Some(newer) => newer.first_submitted = first_submitted,
                None => {
                    let entry = Entry {
                        snapshot: Snapshot::Bytes(bytes),
                        seq,
                        first_submitted,
                    };
                    pending.map.insert(key, entry);
                }
            }
        }
        pending.since.get_or_insert_with(Instant::now);
        shared.enforce_bound(&mut pending);
        drop(pending);
        // The task may have gone idle while the map was empty; it owns retries.
        shared.wake.notify_one();
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
