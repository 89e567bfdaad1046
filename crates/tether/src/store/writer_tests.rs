//! Writer tests on paused Tokio time, against an in-memory fake store that can fail.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::{Writer, WriterConfig};
use crate::store::{StateKey, Store, StoreError};

const WINDOW: Duration = Duration::from_millis(50);
const TTL: Duration = Duration::from_secs(3600);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn key(user: &str) -> StateKey {
    StateKey::new(user, "app")
}

/// One successful `save_batch`: when, and what.
type Batch = (Instant, Vec<(StateKey, Vec<u8>)>);

/// Records batches; fails every call while `failing` is set.
#[derive(Default)]
struct FakeStore {
    /// What a successful batch left behind.
    saved: Mutex<HashMap<StateKey, Vec<u8>>>,
    /// Every successful batch, with the (paused) time it was written.
    batches: Mutex<Vec<Batch>>,
    /// Simulates an unreachable store.
    failing: AtomicBool,
}

impl FakeStore {
    fn batches(&self) -> Vec<Batch> {
        self.batches.lock().unwrap().clone()
    }
    fn saved(&self, user: &str) -> Option<Vec<u8>> {
        self.saved.lock().unwrap().get(&key(user)).cloned()
    }
}

#[async_trait::async_trait]
impl Store for FakeStore {
    async fn load(&self, key: &StateKey) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.saved.lock().unwrap().get(key).cloned())
    }
    async fn save_batch(
        &self,
        items: &[(StateKey, Vec<u8>)],
        _: Duration,
    ) -> Result<(), StoreError> {
        // Like real I/O, let other tasks run while the batch is in flight.
        tokio::task::yield_now().await;
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::InvalidUser {
                user: "fake failure".into(),
            });
        }
        let mut saved = self.saved.lock().unwrap();
        for (k, v) in items {
            saved.insert(k.clone(), v.clone());
        }
        self.batches
            .lock()
            .unwrap()
            .push((Instant::now(), items.to_vec()));
        Ok(())
    }
    async fn forget_user(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

#[tokio::test(start_paused = true)]
async fn coalesces_per_key_and_the_last_snapshot_wins() {
    let store = Arc::new(FakeStore::default());
    let writer = Writer::spawn(store.clone(), WINDOW, TTL);
    writer.submit(key("a"), b"1".to_vec());
    writer.submit(key("a"), b"2".to_vec());
    writer.submit(key("b"), b"x".to_vec());
    sleep(WINDOW + ms(1)).await;

    let batches = store.batches();
    assert_eq!(batches.len(), 1, "one batch per window");
    let mut batch = batches[0].1.clone();
    batch.sort();
    assert_eq!(
        batch,
        vec![(key("a"), b"2".to_vec()), (key("b"), b"x".to_vec())]
    );
    let stats = writer.stats();
    assert_eq!(
        (
            stats.snapshots_written,
            stats.batches_written,
            stats.pending
        ),
        (2, 1, 0)
    );
    assert_eq!(stats.last_latency, Some(WINDOW));
}

/// A source that counts how often it is serialised and serialises its current value.
struct Counting {
    value: Mutex<u32>,
    made: std::sync::atomic::AtomicUsize,
}

impl super::Source for Counting {
    fn snapshot(&self) -> Vec<u8> {
        self.made.fetch_add(1, Ordering::SeqCst);
        self.value.lock().unwrap().to_string().into_bytes()
    }
}

#[tokio::test(start_paused = true)]
async fn a_source_is_serialised_once_per_window_with_its_newest_state() {
    let store = Arc::new(FakeStore::default());
    let writer = Writer::spawn(store.clone(), WINDOW, TTL);
    let source = Arc::new(Counting {
        value: Mutex::new(0),
        made: Default::default(),
    });
    for i in 1..=100 {
        *source.value.lock().unwrap() = i;
        writer.submit_later(key("a"), source.clone());
    }
    assert_eq!(
        source.made.load(Ordering::SeqCst),
        0,
        "nothing made at submit"
    );
    sleep(WINDOW + ms(1)).await;
    assert_eq!(
        source.made.load(Ordering::SeqCst),
        1,
        "one serialisation for 100 changes"
    );
    assert_eq!(store.saved("a"), Some(b"100".to_vec()));
    // A failed write keeps what it made and retries it; a later change wins over it.
    store.failing.store(true, Ordering::SeqCst);
    *source.value.lock().unwrap() = 101;
    writer.submit_later(key("a"), source.clone());
    sleep(WINDOW + ms(1)).await;
    *source.value.lock().unwrap() = 102;
    writer.submit_later(key("a"), source.clone());
    store.failing.store(false, Ordering::SeqCst);
    writer.flush().await.unwrap();
    assert_eq!(store.saved("a"), Some(b"102".to_vec()));
}

#[tokio::test(start_paused = true)]
async fn the_first_snapshot_opens_the_window_and_nothing_waits_longer() {
    let store = Arc::new(FakeStore::default());
    let writer = Writer::spawn(store.clone(), WINDOW, TTL);
    let start = Instant::now();
    writer.submit(key("a"), b"1".to_vec());
    sleep(WINDOW - ms(1)).await;
    assert!(
        store.batches().is_empty(),
        "written before the window elapsed"
    );
    sleep(ms(2)).await;
    assert_eq!(store.batches()[0].0 - start, WINDOW);

    // A steady stream of changes must not keep postponing the write.
    for i in 0..60u8 {
        writer.submit(key("a"), vec![i]);
        sleep(ms(7)).await;
        if let Some(latency) = writer.stats().last_latency {
            assert!(latency <= WINDOW, "latency {latency:?} beyond the window");
        }
    }
    assert!(
        store.batches().len() >= 7,
        "{} batches",
        store.batches().len()
    );
    sleep(WINDOW).await;
    assert_eq!(store.saved("a"), Some(vec![59]));
}

#[tokio::test(start_paused = true)]
async fn keeps_snapshots_through_failures_and_resumes() {
    let store = Arc::new(FakeStore::default());
    let writer = Writer::spawn(store.clone(), WINDOW, TTL);
    store.failing.store(true, Ordering::SeqCst);
    writer.submit(key("a"), b"old".to_vec());
    sleep(WINDOW + ms(1)).await;
    assert_eq!(writer.stats().write_errors, 1);
    assert_eq!(writer.stats().pending, 1);
    assert!(writer.stats().failing);

    writer.submit(key("a"), b"new".to_vec());
    writer.submit(key("b"), b"b".to_vec());
    sleep(Duration::from_secs(5)).await;
    let errors = writer.stats().write_errors;
    assert!(
        (2..=12).contains(&errors),
        "{errors} attempts in 5 s: backoff missing?"
    );
    assert!(writer.flush().await.is_err(), "flush reports the failure");
    assert_eq!(writer.stats().pending, 2, "a failed flush keeps snapshots");

    store.failing.store(false, Ordering::SeqCst);
    let recovered = Instant::now();
    while store.saved("a").is_none() {
        sleep(ms(10)).await;
    }
    assert!(recovered.elapsed() <= Duration::from_secs(1) + WINDOW);
    assert!(
        !writer.stats().failing,
        "a write that succeeds ends the failure"
    );
    assert_eq!(
        store.saved("a"),
        Some(b"new".to_vec()),
        "the newer snapshot won"
    );
    assert_eq!(store.saved("b"), Some(b"b".to_vec()));
    assert_eq!(writer.stats().pending, 0);
}

#[tokio::test(start_paused = true)]
async fn pending_keys_are_bounded_and_the_least_recent_is_dropped() {
    let store = Arc::new(FakeStore::default());
    let config = WriterConfig {
        max_pending: 3,
        ..WriterConfig::new(TTL)
    };
    let writer = Writer::spawn_with(store.clone(), config);
    store.failing.store(true, Ordering::SeqCst);
    for user in ["k1", "k2", "k3"] {
        writer.submit(key(user), user.as_bytes().to_vec());
    }
    sleep(WINDOW + ms(1)).await; // fails; the three go back into the map
    writer.submit(key("k1"), b"k1 again".to_vec()); // now the most recent
    writer.submit(key("k4"), b"k4".to_vec());
    writer.submit(key("k5"), b"k5".to_vec());
    let stats = writer.stats();
    assert_eq!((stats.pending, stats.dropped), (3, 2));

    store.failing.store(false, Ordering::SeqCst);
    writer.flush().await.unwrap();
    assert_eq!(store.saved("k1"), Some(b"k1 again".to_vec()));
    assert_eq!(store.saved("k2"), None);
    assert_eq!(store.saved("k3"), None);
    assert!(store.saved("k4").is_some() && store.saved("k5").is_some());
}

#[tokio::test(start_paused = true)]
async fn flush_writes_at_once() {
    let store = Arc::new(FakeStore::default());
    let writer = Writer::spawn(store.clone(), WINDOW, TTL);
    let start = Instant::now();
    writer.submit(key("a"), b"1".to_vec());
    writer.flush().await.unwrap();
    assert_eq!(store.saved("a"), Some(b"1".to_vec()));
    assert_eq!(start.elapsed(), Duration::ZERO);
    writer.flush().await.unwrap(); // nothing pending is fine
    assert_eq!(store.batches().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_writes_what_is_pending_and_ends_the_task() {
    let store = Arc::new(FakeStore::default());
    let writer = Writer::spawn(store.clone(), WINDOW, TTL);
    let clone = writer.clone();
    writer.submit(key("a"), b"1".to_vec());
    drop(writer);
    sleep(ms(1)).await;
    assert!(store.saved("a").is_none(), "a clone is still alive");
    clone.submit(key("b"), b"2".to_vec());
    drop(clone);
    sleep(ms(1)).await;
    assert_eq!(store.saved("a"), Some(b"1".to_vec()));
    assert_eq!(store.saved("b"), Some(b"2".to_vec()));
    assert_eq!(Arc::strong_count(&store), 1, "the writer task is gone");
}

#[tokio::test(start_paused = true)]
async fn a_failed_flush_from_the_handle_is_retried_by_the_task() {
    let store = Arc::new(FakeStore::default());
    let writer = Writer::spawn(store.clone(), WINDOW, TTL);
    store.failing.store(true, Ordering::SeqCst);
    writer.submit(key("a"), b"1".to_vec());
    assert!(writer.flush().await.is_err());
    store.failing.store(false, Ordering::SeqCst);
    sleep(Duration::from_secs(2)).await;
    assert_eq!(store.saved("a"), Some(b"1".to_vec()), "nobody retried");
}

/// Never finishes a write, like a hung server.
struct HungStore;

#[async_trait::async_trait]
impl Store for HungStore {
    async fn load(&self, _: &StateKey) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    async fn save_batch(&self, _: &[(StateKey, Vec<u8>)], _: Duration) -> Result<(), StoreError> {
        std::future::pending().await
    }
    async fn forget_user(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

#[tokio::test(start_paused = true)]
async fn a_flush_abandoned_by_its_caller_loses_nothing() {
    let writer = Writer::spawn(Arc::new(HungStore), Duration::from_secs(3600), TTL);
    writer.submit(key("a"), b"1".to_vec());
    let gave_up = tokio::time::timeout(ms(100), writer.flush()).await;
    assert!(gave_up.is_err(), "the hung store cannot finish");
    writer.submit(key("b"), b"2".to_vec());
    assert_eq!(
        writer.stats().pending,
        2,
        "the abandoned batch is back in the map"
    );
}

#[tokio::test(start_paused = true)]
async fn a_forgotten_user_is_never_written_even_after_failures() {
    let store = Arc::new(FakeStore::default());
    let writer = Writer::spawn(store.clone(), WINDOW, TTL);
    store.failing.store(true, Ordering::SeqCst);
    writer.submit(key("gone"), b"secret".to_vec());
    writer.submit(key("kept"), b"kept".to_vec());
    sleep(WINDOW * 3).await;
    assert!(writer.stats().write_errors > 0);
    // Forgotten while the store fails: the retries must not write it later.
    writer.discard_user("gone").await;
    store.failing.store(false, Ordering::SeqCst);
    while store.saved("kept").is_none() {
        sleep(ms(10)).await;
    }
    assert_eq!(store.saved("gone"), None);
    assert_eq!(writer.stats().pending, 0);
}
