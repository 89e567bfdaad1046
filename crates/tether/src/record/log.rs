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
//!
//! Effects: each entry may carry what the worker changed in response to it (see
//! [`super::causal`]), which the restore uses to order its steps. Entries of version 1 logs,
//! written before effects were recorded, have them unknown (`None`). Entries get a sequence
//! number when pushed, so effects arriving later find their entry even after compaction has
//! moved others.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::causal;
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
    #[error("stored state log has version {0}; this tether reads versions 1 to {VERSION}")]
    Version(u32),
}

/// Version of the persisted form: 2 added each entry's `effects`.
const VERSION: u32 = 2;

/// One recorded step as the restore replays it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// What the user did.
    #[serde(flatten)]
    pub entry: Entry,
    /// What the worker changed in response, as attribute slots (`path/attr`); `None` when
    /// unknown (written before effects were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effects: Option<Vec<String>>,
}

/// One step, its sequence number and its serialised size.
#[derive(Debug, Clone)]
struct Sized {
    /// The step.
    step: Step,
    /// Given at push, unique within the log.
    seq: u64,
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
    /// The next entry's sequence number.
    next_seq: u64,
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
    entries: std::borrow::Cow<'a, [Step]>,
}

impl Log {
    /// An empty log.
    pub fn new(limits: LogLimits) -> Log {
        Log {
            limits,
            entries: VecDeque::new(),
            bytes: 0,
            dropped: 0,
            next_seq: 0,
        }
    }

    /// Append an entry whose effects are unknown, compacting and bounding. Returns how many
    /// entries the bound dropped (0 normally).
    pub fn push(&mut self, entry: Entry) -> usize {
        self.push_step(Step {
            entry,
            effects: None,
        })
        .1
    }

    /// Append a step, compacting and bounding. Returns its sequence number (`None` when it
    /// alone is over the bound and was not kept) and how many entries the bound dropped.
    pub fn push_step(&mut self, step: Step) -> (Option<u64>, usize) {
        let bytes = serde_json::to_vec(&step)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if bytes > self.limits.max_bytes || self.limits.max_entries == 0 {
            self.dropped += 1;
            return (None, 1);
        }
        let entry = &step.entry;
        if let Entry::Change {
            path,
            type_name,
            attr,
            ..
        } = &entry
        {
            let earlier = self.entries.iter().rposition(|s| match &s.step.entry {
                Entry::Event { .. } => true,
                Entry::Change {
                    path: p,
                    type_name: t,
                    attr: a,
                    ..
                } => p == path && t == type_name && a == attr,
            });
            if let Some(i) =
                earlier.filter(|i| matches!(self.entries[*i].step.entry, Entry::Change { .. }))
            {
                if let Some(old) = self.entries.remove(i) {
                    self.bytes -= old.bytes;
                }
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push_back(Sized { step, seq, bytes });
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
        let kept = self.entries.back().filter(|s| s.seq == seq).map(|s| s.seq);
        (kept, evicted)
    }

    /// Adds effects to the step pushed as `seq`, if it is still in the log. Returns whether
    /// anything changed (new slots, or the entry's effects were unknown).
    pub fn add_effects(&mut self, seq: u64, slots: &[String]) -> bool {
        let Some(s) = self.entries.iter_mut().rev().find(|s| s.seq == seq) else {
            return false;
        };
        let effects = s.step.effects.get_or_insert_with(Vec::new);
        if !causal::merge(effects, slots) {
            return false;
        }
        let bytes = serde_json::to_vec(&s.step)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        self.bytes = self.bytes - s.bytes + bytes;
        s.bytes = bytes;
        true
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &Entry> + '_ {
        self.entries.iter().map(|s| &s.step.entry)
    }

    /// The steps (entries with their effects), oldest first.
    pub fn steps(&self) -> impl ExactSizeIterator<Item = &Step> + '_ {
        self.entries.iter().map(|s| &s.step)
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

    /// The persisted form: `{"version":2,"dropped":N,"entries":[...]}`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let entries: Vec<Step> = self.steps().cloned().collect();
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
        if !(1..=VERSION).contains(&stored.version) {
            return Err(LogError::Version(stored.version));
        }
        let mut log = Log::new(limits);
        for step in stored.entries.into_owned() {
            log.push_step(step);
        }
        log.dropped += stored.dropped;
        Ok(log)
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
