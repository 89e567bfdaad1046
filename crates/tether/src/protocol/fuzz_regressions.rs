//! Regression tests for what fuzzing (`fuzz/`) found in the protocol and record layers.

use crate::protocol::{parse_patch, Assembler, Graph, Limits, Part};
use crate::record::{record, Policy};

/// A root with `n` `Div`s as children, as one RootAdded event.
fn wide_root(n: usize) -> String {
    let kids: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"type":"object","name":"Div","id":"d{i}"}}"#))
        .collect();
    format!(
        r#"{{"kind":"RootAdded","model":{{"type":"object","name":"Column","id":"c","attributes":{{"children":[{}]}}}}}}"#,
        kids.join(",")
    )
}

#[test]
fn probe_quadratic() {
    for n in [1000usize, 2000, 4000] {
        let mut events = vec![wide_root(n)];
        for i in 0..n {
            events.push(format!(
                r#"{{"kind":"ModelChanged","model":{{"id":"d{i}"}},"attr":"tags","new":[{{"id":"d0"}}]}}"#
            ));
        }
        let content = format!(r#"{{"events":[{}]}}"#, events.join(","));
        let mut g = Graph::from_pull_reply(br#"{"doc":{"roots":[]}}"#).unwrap();
        let t = std::time::Instant::now();
        let e = record(&mut g, content.as_bytes(), &Policy::default()).unwrap();
        eprintln!(
            "n={n} bytes={} entries={} {:?}",
            content.len(),
            e.len(),
            t.elapsed()
        );
    }
    let _ = (
        parse_patch,
        Assembler::new(Limits::default()),
        Part::Text(Default::default()),
    );
}
