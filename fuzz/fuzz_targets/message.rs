//! Message assembly and everything the gateway does with a whole message.
//!
//! The input is a sequence of websocket frames, each `tag, len (u16 LE), payload` (the
//! last one may be short). Tag bit 0 set means a binary frame, else text; bit 1 set
//! means the frame comes from the browser, else from the worker. Each direction has its
//! own `Assembler`, as in `session/recorder.rs`. Whole messages are handled like the relay does:
//! a worker's PULL-DOC-REPLY builds the graph and its PATCH-DOCs update it; a browser's
//! PATCH-DOC is recorded under the default policy, and every recorded entry is replayed
//! (`step_patch`) into a second graph that saw the same worker messages, the way a
//! restore replays into a fresh session.
//!
//! Besides "never panics", it checks:
//! - after an error the assembler refuses everything until replaced;
//! - a replayed step is a PATCH-DOC that parses, and reassembles byte-identical;
//! - recording the replayed step in the replay graph gives back the same entry;
//! - a log of the entries survives its stored form;
//! - every model the graph lists is found again by its id and by its path.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tether::protocol::{parse_patch, Assembler, Graph, Message, MessageLimits, Part};
use tether::record::{record, step_patch, Entry, Log, LogLimits, Policy};

/// Browser limits are small so the limit paths are reached; the worker's are the defaults.
const BROWSER_LIMITS: MessageLimits = MessageLimits {
    max_buffers: 4,
    max_message_bytes: 96 * 1024,
};

/// A small log bound, so eviction and compaction are exercised.
const LOG_LIMITS: LogLimits = LogLimits {
    max_entries: 32,
    max_bytes: 64 * 1024,
};

/// Splits the input into `(tag, payload)` frames.
fn frames(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&tag, rest) = data.split_first()?;
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
            _ => (rest.len(), &rest[rest.len()..]),
        };
        let (payload, rest) = rest.split_at(len.min(rest.len()));
        data = rest;
        Some((tag, payload))
    })
}

/// One connection as the relay sees it.
struct Session {
    /// Frames from the worker.
    worker: Assembler,
    /// Frames from the browser.
    browser: Assembler,
    /// The live session's graph, which records.
    live: Option<Graph>,
    /// A second session of the same document, which replays.
    replay: Option<Graph>,
    /// The user's state log.
    log: Log,
    /// Replay message ids.
    next_msgid: u64,
}

impl Session {
    fn new() -> Session {
        Session {
            worker: Assembler::new(MessageLimits::default()),
            browser: Assembler::new(BROWSER_LIMITS),
            live: None,
            replay: None,
            log: Log::new(LOG_LIMITS),
            next_msgid: 0,
        }
    }

    fn frame(&mut self, tag: u8, payload: &[u8]) {
        let bytes = Bytes::copy_from_slice(payload);
        let part = if tag & 1 == 1 {
            Part::Binary(bytes)
        } else {
            Part::Text(bytes)
        };
        let from_browser = tag & 2 == 2;
        let (asm, limits) = if from_browser {
            (&mut self.browser, BROWSER_LIMITS)
        } else {
            (&mut self.worker, MessageLimits::default())
        };
        match asm.push(part.clone()) {
            Ok(None) => {}
            Ok(Some(msg)) if from_browser => self.from_browser(&msg),
            Ok(Some(msg)) => self.from_worker(&msg),
            Err(_) => {
                assert!(
                    asm.push(part).is_err(),
                    "a failed assembler accepted a frame"
                );
                *asm = Assembler::new(limits);
            }
        }
    }

    fn from_worker(&mut self, msg: &Message) {
        let content = msg.content();
        let _ = parse_patch(content);
        match msg.msgtype() {
            "PULL-DOC-REPLY" => {
                if let Ok(g) = Graph::from_pull_reply(content) {
                    self.live = Some(g);
                    self.replay = Graph::from_pull_reply(content).ok();
                }
            }
            "PATCH-DOC" => {
                for g in [&mut self.live, &mut self.replay].into_iter().flatten() {
                    let _ = g.apply_patch(content);
                }
            }
            _ => {}
        }
    }

    fn from_browser(&mut self, msg: &Message) {
        let content = msg.content();
        let _ = parse_patch(content);
        if msg.msgtype() != "PATCH-DOC" {
            return;
        }
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let Ok(entries) = record(live, content, &Policy::default()) else {
            return;
        };
        for entry in entries {
            let stored = serde_json::to_vec(&entry).expect("an entry serialises");
            serde_json::from_slice::<Entry>(&stored).expect("an entry reads back");
            self.log.push(entry.clone());
            if let Some(replay) = self.replay.as_mut() {
                self.next_msgid += 1;
                replay_one(replay, &entry, self.next_msgid);
            }
        }
    }

    fn finish(mut self) {
        let stored = self.log.to_bytes();
        let back = Log::from_bytes(&stored, LOG_LIMITS).expect("a stored log reads back");
        assert_eq!(back.len(), self.log.len());
        for g in [&mut self.live, &mut self.replay].into_iter().flatten() {
            for m in g.models() {
                assert_eq!(g.path_of(&m.id).as_ref(), Some(&m), "path_of disagrees");
                assert_eq!(g.id_at(&m.path).as_ref(), Some(&m), "id_at disagrees");
            }
        }
    }
}

/// Replays one entry into `graph` and checks the step.
fn replay_one(graph: &mut Graph, entry: &Entry, msgid: u64) {
    let Ok(step) = step_patch(graph, entry) else {
        return; // skipped: the path or a reference does not resolve here
    };
    assert!(
        parse_patch(step.as_bytes()).is_ok(),
        "replay step does not parse: {step}"
    );
    let msg = Message::build("PATCH-DOC", &format!("fuzz-{msgid}"), None, step.clone());
    let mut asm = Assembler::new(MessageLimits::default());
    let (last, rest) = msg.parts.split_last().expect("a built message has parts");
    for part in rest {
        assert_eq!(asm.push(part.clone()).expect("built frame"), None);
    }
    let again = asm.push(last.clone()).expect("built frame");
    assert_eq!(
        again.as_ref(),
        Some(&msg),
        "a built message does not reassemble"
    );
    let again = record(graph, step.as_bytes(), &Policy::default()).expect("replay step records");
    assert_eq!(
        again,
        vec![entry.clone()],
        "recording the replay of an entry gives another entry\nstep: {step}"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut session = Session::new();
    for (tag, payload) in frames(data) {
        session.frame(tag, payload);
    }
    session.finish();
});
