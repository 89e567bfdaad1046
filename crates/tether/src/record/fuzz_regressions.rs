//! Regression tests for what fuzzing (`fuzz/`) and its review found in the protocol and
//! record layers, and for the properties the fuzz targets check.

use crate::protocol::{Assembler, Graph, MessageLimits, Part, ProtocolError};
use crate::record::{record, step_patch, Policy, MAX_RECORD_WORK};

const S1_PULL: &str = include_str!("../protocol/fixtures/s1_pull_reply.json");
const S1_CLIENT: &str = include_str!("../protocol/fixtures/s1_client_patches.jsonl");

/// A PATCH-DOC that adds a root with `n` `Div`s, then points each Div's `tags` at the
/// first one: every event moves references, so each lookup needs fresh paths.
fn reference_storm(n: usize) -> String {
    let kids: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"type":"object","name":"Div","id":"d{i}"}}"#))
        .collect();
    let mut events = vec![format!(
        r#"{{"kind":"RootAdded","model":{{"type":"object","name":"Column","id":"c","attributes":{{"children":[{}]}}}}}}"#,
        kids.join(",")
    )];
    events.extend((0..n).map(|i| {
        format!(r#"{{"kind":"ModelChanged","model":{{"id":"d{i}"}},"attr":"tags","new":[{{"id":"d0"}}]}}"#)
    }));
    format!(r#"{{"events":[{}]}}"#, events.join(","))
}

/// Found in review of the message target: a browser patch of `n` reference changes cost
/// n × graph size, so 500 KB took 6.5 s of a gateway thread (release build). Now the
/// work is bounded and the rest of such a patch is applied without being recorded.
#[test]
fn recording_a_reference_storm_is_bounded() {
    let n = 1500; // unbounded, this is n² ≈ 2.25M visits, over the bound
    let mut g = Graph::from_pull_reply(br#"{"doc":{"roots":[]}}"#).unwrap();
    let entries = record(&mut g, reference_storm(n).as_bytes(), &Policy::default()).unwrap();
    let graph_size = 2 * n as u64 + 1;
    assert!(
        g.reindex_work() <= MAX_RECORD_WORK + 2 * graph_size,
        "recording visited {} models",
        g.reindex_work()
    );
    assert!(
        !entries.is_empty() && entries.len() < n,
        "{}",
        entries.len()
    );
    // Every event was still applied: the graph knows the last Div and records it.
    let last = format!(
        r#"{{"events":[{{"kind":"ModelChanged","model":{{"id":"d{}"}},"attr":"text","new":"x"}}]}}"#,
        n - 1
    );
    let entries = record(&mut g, last.as_bytes(), &Policy::default()).unwrap();
    assert_eq!(entries.len(), 1);
}

/// A value with braces but no references, or the same references as before, leaves
/// every path valid, so the next lookup does not walk the graph again.
#[test]
fn unchanged_references_keep_the_paths() {
    let mut g = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
    let set = |g: &mut Graph, new: &str| {
        let patch = format!(
            r#"{{"events":[{{"kind":"ModelChanged","model":{{"id":"p1070"}},"attr":"tags","new":{new}}}]}}"#
        );
        record(g, patch.as_bytes(), &Policy::none()).unwrap();
        g.path_of("p1070"); // recomputes the paths if the change made them stale
        g.reindex_work()
    };
    let start = set(&mut g, r#"{"type":"map","entries":[["a",1]]}"#);
    assert_eq!(set(&mut g, r#"[{"type":"map"}]"#), start);
    let moved = set(&mut g, r#"[{"id":"p1065"}]"#);
    assert!(moved > start, "a new reference must be seen");
    let again = set(&mut g, r#"[{"id":"p1065"}]"#);
    assert_eq!(set(&mut g, r#"[{"type":"ref","id":"p1065"}]"#), again);
}

/// The message target's check: a failed assembler refuses every later frame.
#[test]
fn failed_assembler_refuses_until_replaced() {
    let mut asm = Assembler::new(MessageLimits::default());
    assert!(asm.push(Part::Binary(Default::default())).is_err());
    let header = br#"{"msgid":"1","msgtype":"ACK"}"#;
    let again = asm.push(Part::Text(bytes::Bytes::from_static(header)));
    assert!(matches!(again, Err(ProtocolError::Poisoned)));
}

/// The message target's check: recording the replay of an entry, in a session of the
/// same document, gives back that entry.
#[test]
fn replayed_entries_record_as_themselves() {
    let mut live = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
    let mut replay = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
    let mut replayed = 0;
    for patch in S1_CLIENT.lines() {
        for entry in record(&mut live, patch.as_bytes(), &Policy::default()).unwrap() {
            let Ok(step) = step_patch(&mut replay, &entry) else {
                continue;
            };
            let again = record(&mut replay, step.as_bytes(), &Policy::default()).unwrap();
            assert_eq!(again, vec![entry], "{step}");
            replayed += 1;
        }
    }
    assert!(replayed >= 8, "only {replayed} entries replayed");
}
