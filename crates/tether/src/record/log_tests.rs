//! Tests of log compaction, bounds and the persisted form.

use super::*;
use serde_json::json;

fn change(path: &str, attr: &str, value: serde_json::Value) -> Entry {
    Entry::Change {
        path: path.into(),
        type_name: "Slider".into(),
        anchor: None,
        attr: attr.into(),
        value,
    }
}

fn click(path: &str) -> Entry {
    Entry::Event {
        name: "button_click".into(),
        path: Some(path.into()),
        type_name: Some("panel.models.widgets.Button".into()),
        anchor: None,
        values: json!({"type": "map", "entries": [["model", {"$path": path, "$type": "panel.models.widgets.Button"}]]}),
    }
}

fn log_of(entries: Vec<Entry>, limits: LogLimits) -> Log {
    let mut log = Log::new(limits);
    for e in entries {
        log.push(e);
    }
    log
}

fn list(log: &Log) -> Vec<Entry> {
    log.entries().cloned().collect()
}

#[test]
fn a_change_replaces_the_earlier_change_to_the_same_attribute() {
    let log = log_of(
        vec![
            change("r0/a", "value", json!(1)),
            change("r0/b", "value", json!(1)),
            change("r0/a", "value", json!(2)),
        ],
        LogLimits::default(),
    );
    assert_eq!(
        list(&log),
        vec![
            change("r0/b", "value", json!(1)),
            change("r0/a", "value", json!(2))
        ]
    );
    // Another attribute or another type at the same path is another key.
    let mut log = log;
    log.push(change("r0/a", "value_throttled", json!(2)));
    let mut other_type = change("r0/a", "value", json!(3));
    if let Entry::Change { type_name, .. } = &mut other_type {
        *type_name = "TextInput".into();
    }
    log.push(other_type.clone());
    assert_eq!(log.len(), 4);
    assert_eq!(log.dropped(), 0);
}

#[test]
fn events_are_barriers() {
    let mut log = log_of(
        vec![
            change("r0/a", "value", json!(1)),
            click("r0/b"),
            change("r0/a", "value", json!(2)),
        ],
        LogLimits::default(),
    );
    log.push(change("r0/a", "value", json!(3)));
    log.push(click("r0/b"));
    assert_eq!(
        list(&log),
        vec![
            change("r0/a", "value", json!(1)),
            click("r0/b"),
            change("r0/a", "value", json!(3)),
            click("r0/b")
        ]
    );
}

#[test]
fn the_entry_bound_drops_the_oldest() {
    let limits = LogLimits {
        max_entries: 3,
        max_bytes: usize::MAX,
    };
    let mut log = Log::new(limits);
    let mut evicted = 0;
    for i in 0..5 {
        evicted += log.push(change(&format!("r0/{i}"), "value", json!(i)));
    }
    assert_eq!(evicted, 2);
    assert_eq!(log.dropped(), 2);
    let paths: Vec<_> = log
        .entries()
        .map(|e| {
            if let Entry::Change { path, .. } = e {
                path.clone()
            } else {
                unreachable!()
            }
        })
        .collect();
    assert_eq!(paths, ["r0/2", "r0/3", "r0/4"]);
}

#[test]
fn the_byte_bound_drops_the_oldest_and_refuses_giants() {
    let one = serde_json::to_vec(&change("r0/0", "value", json!(0)))
        .unwrap()
        .len();
    let limits = LogLimits {
        max_entries: 100,
        max_bytes: one * 2 + 1,
    };
    let mut log = Log::new(limits);
    for i in 0..4 {
        log.push(change(&format!("r0/{i}"), "value", json!(i)));
    }
    assert_eq!(log.len(), 2);
    assert_eq!(log.bytes(), one * 2);
    assert_eq!(log.dropped(), 2);
    let before = list(&log);
    assert_eq!(
        log.push(change("r0/3", "value", json!("x".repeat(one * 3)))),
        1
    );
    assert_eq!(list(&log), before, "a giant entry leaves the log as it was");
    assert_eq!(log.dropped(), 3);
    let bytes: usize = log
        .entries()
        .map(|e| serde_json::to_vec(e).unwrap().len())
        .sum();
    assert_eq!(log.bytes(), bytes);
}

#[test]
fn persisted_form_round_trips_and_is_versioned() {
    let mut log = log_of(
        vec![change("r0/a", "value", json!([1, 3])), click("r0/b")],
        LogLimits {
            max_entries: 2,
            max_bytes: usize::MAX,
        },
    );
    log.push(change("r0/c", "value", json!("hi")));
    let bytes = log.to_bytes();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        text.starts_with(
            r#"{"version":2,"dropped":1,"entries":[{"kind":"event","name":"button_click""#
        ),
        "{text}"
    );
    let back = Log::from_bytes(&bytes, LogLimits::default()).unwrap();
    assert_eq!(list(&back), list(&log));
    assert_eq!(back.dropped(), 1);
    // A smaller bound on load keeps the newest.
    let small = Log::from_bytes(
        &bytes,
        LogLimits {
            max_entries: 1,
            max_bytes: usize::MAX,
        },
    )
    .unwrap();
    assert_eq!(list(&small), vec![change("r0/c", "value", json!("hi"))]);
    assert_eq!(small.dropped(), 2);
    assert!(matches!(
        Log::from_bytes(br#"{"version":3,"entries":[]}"#, LogLimits::default()),
        Err(LogError::Version(3))
    ));
    for bad in [
        &b""[..],
        b"[]",
        b"{\"version\":1}",
        b"{\"version\":1,\"entries\":[{\"kind\":\"nope\"}]}",
        b"\xff",
    ] {
        assert!(matches!(
            Log::from_bytes(bad, LogLimits::default()),
            Err(LogError::Json(_))
        ));
    }
}

#[test]
fn a_zero_bound_keeps_nothing() {
    let mut log = Log::new(LogLimits {
        max_entries: 0,
        max_bytes: 0,
    });
    log.push(click("r0"));
    assert!(log.is_empty());
    assert_eq!(log.dropped(), 1);
}

#[test]
fn effects_are_kept_found_by_sequence_and_unknown_in_version_1_logs() {
    let mut log = Log::new(LogLimits::default());
    let (a, _) = log.push_step(Step {
        entry: change("r0/a", "value", json!(1)),
        effects: Some(Vec::new()),
    });
    let (b, _) = log.push_step(Step {
        entry: change("r0/b", "value", json!(1)),
        effects: Some(Vec::new()),
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(log.add_effects(a, &["r0/c/text".into()]));
    assert!(!log.add_effects(a, &["r0/c/text".into()]), "no news");
    // Compaction moves r0/a to the end; its effects go with the newer entry only.
    log.push_step(Step {
        entry: change("r0/a", "value", json!(2)),
        effects: Some(vec!["r0/d/text".into()]),
    });
    assert!(!log.add_effects(a, &["r0/x/y".into()]), "compacted away");
    assert!(log.add_effects(b, &["r0/e/text".into()]));
    let steps: Vec<Step> = log.steps().cloned().collect();
    assert_eq!(steps[0].effects, Some(vec!["r0/e/text".to_owned()]));
    assert_eq!(steps[1].effects, Some(vec!["r0/d/text".to_owned()]));
    let bytes: usize = log
        .steps()
        .map(|s| serde_json::to_vec(s).unwrap().len())
        .sum();
    assert_eq!(log.bytes(), bytes, "the size bound counts the effects");
    let back = Log::from_bytes(&log.to_bytes(), LogLimits::default()).unwrap();
    assert_eq!(back.steps().cloned().collect::<Vec<_>>(), steps);
    // A log written before effects were recorded restores, with them unknown.
    let v1 = br#"{"version":1,"dropped":0,"entries":[{"kind":"change","path":"r0/a","type_name":"Slider","attr":"value","value":3}]}"#;
    let old = Log::from_bytes(v1, LogLimits::default()).unwrap();
    let step = old.steps().next().unwrap();
    assert_eq!(step.entry, change("r0/a", "value", json!(3)));
    assert_eq!(step.effects, None);
}
