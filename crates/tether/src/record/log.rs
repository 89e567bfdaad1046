//! The state log of one (user, app): ordered entries, compacted and bounded, with a
//! versioned JSON form for the store.
//!
//! Compaction: a `Change` replaces an earlier `Change` to the same (path, type, attr)
//! made after the last `Event`; UI events are barriers, because what a click did
//! depended on the values set before it.
//!
//! Bound: at most `max_entries` entries and `max_bytes` of serialised entries. When a
//! push goes over, the **oldest** entries are dropped (and counted in `dropped`), so the
//! user's newest choices survive. An entry that alone is larger than `max_bytes` is not
//! kept at all, and leaves the log as it was (counted in `dropped` too).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::Entry;

/// Bounds of one log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Most entries kept.
    pub max_entries: usize,
    /// Most bytes of serialised entries kept.
    pub max_bytes: usize,
}

impl Default for LogLimits {
    /// 10 000 entries and 4 MiB: hours of clicking, small enough to load per session.
    fn default() -> Self {
        LogLimits {
            max_entries: 10_000,
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

/// A stored log that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Not the JSON this module writes.
    #[error("stored state log is not valid JSON")]
    Json(#[from] serde_json::Error),
    /// Written by a newer tether.
    #[error("stored state log has version {0}; this tether reads version {VERSION}")]
    Version(u32),
}

/// Version of the persisted form.
const VERSION: u32 = 1;

/// One entry and its serialised size.
#[derive(Debug, Clone)]
struct Sized {
    /// The entry.
    entry: Entry,
    /// Bytes of its JSON, counted against `max_bytes`.
    bytes: usize,
}

/// An ordered, compacted, bounded list of entries.
#[derive(Debug, Clone)]
pub struct Log {
    /// The bounds applied on every push.
    limits: LogLimits,
    /// Entries, oldest first.
    entries: VecDeque<Sized>,
    /// Sum of `entries[..].bytes`.
    bytes: usize,
    /// Entries lost to the bound since the log was created, for metrics and the user.
    dropped: u64,
}

/// The persisted form.
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    /// Format version, [`VERSION`].
    version: u32,
    /// See [`Log::dropped`].
    #[serde(default)]
    dropped: u64,
    /// Entries, oldest first.
    entries: std::borrow::Cow<'a, [Entry]>,
}

impl Log {
    /// An empty log.
    pub fn new(limits: LogLimits) -> Log {
        Log {
            limits,
            entries: VecDeque::new(),
            bytes: 0,
            dropped: 0,
        }
    }

    /// Append an entry, compacting and bounding. Returns how many entries the bound
    /// dropped (0 normally).
    pub fn push(&mut self, entry: Entry) -> usize {
        let bytes = serde_json::to_vec(&entry)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if bytes > self.limits.max_bytes || self.limits.max_entries == 0 {
            self.dropped += 1;
            return 1;
        }
        if let Entry::Change {
            path,
            type_name,
            attr,
            ..
        } = &entry
        {
            let earlier = self.entries.iter().rposition(|s| match &s.entry {
                Entry::Event { .. } => true,
                Entry::Change {
                    path: p,
                    type_name: t,
                    attr: a,
                    ..
                } => p == path && t == type_name && a == attr,
            });
            if let Some(i) =
                earlier.filter(|i| matches!(self.entries[*i].entry, Entry::Change { .. }))
            {
                if let Some(old) = self.entries.remove(i) {
                    self.bytes -= old.bytes;
                }
            }
        }
        self.entries.push_back(Sized { entry, bytes });
        self.bytes += bytes;
        let mut evicted = 0;
        while self.entries.len() > self.limits.max_entries || self.bytes > self.limits.max_bytes {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.bytes;
            evicted += 1;
        }
        self.dropped += evicted as u64;
        evicted
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &Entry> + '_ {
        self.entries.iter().map(|s| &s.entry)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Serialised bytes of the entries, as counted against the bound.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries lost to the bound over the log's life.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The bounds in force.
    pub fn limits(&self) -> LogLimits {
        self.limits
    }

    /// The persisted form: `{"version":1,"dropped":N,"entries":[...]}`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let entries: Vec<Entry> = self.entries().cloned().collect();
        let stored = Stored {
            version: VERSION,
            dropped: self.dropped,
            entries: entries.into(),
        };
        // Entries are plain strings and JSON values; serialising cannot fail.
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// Read a persisted log, applying `limits` (a smaller bound drops the oldest).
    pub fn from_bytes(bytes: &[u8], limits: LogLimits) -> Result<Log, LogError> {
        let stored: Stored<'static> = serde_json::from_slice(bytes)?;
        if stored.version != VERSION {
            return Err(LogError::Version(stored.version));
        }
        let mut log = Log::new(limits);
        for entry in stored.entries.into_owned() {
            log.push(entry);
        }
        log.dropped += stored.dropped;
        Ok(log)
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
