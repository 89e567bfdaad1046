//! Tests of recording and replay, on real traffic: record in one captured session,
//! replay into a second captured session whose ids differ.

use super::*;
use serde_json::json;

const S1_PULL: &str = include_str!("../protocol/fixtures/s1_pull_reply.json");
const S2_PULL: &str = include_str!("../protocol/fixtures/s2_pull_reply.json");
const S1_CLIENT: &str = include_str!("../protocol/fixtures/s1_client_patches.jsonl");
const S1_SERVER: &str = include_str!("../protocol/fixtures/s1_server_patches.jsonl");

/// Replays session 1 as the relay sees it: browser patches recorded in order, the
/// server's plot patch applied right after the click that caused it.
fn record_session_one(policy: &Policy) -> (Graph, Vec<(String, Vec<Entry>)>) {
    let mut graph = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
    let mut out = Vec::new();
    for content in S1_CLIENT.lines() {
        let entries = record(&mut graph, content.as_bytes(), policy).unwrap();
        if content.contains("button_click") {
            graph.apply_patch(S1_SERVER.trim_end().as_bytes()).unwrap();
        }
        out.push((content.to_owned(), entries));
    }
    (graph, out)
}

fn all_entries(recorded: &[(String, Vec<Entry>)]) -> Vec<Entry> {
    recorded.iter().flat_map(|(_, e)| e.clone()).collect()
}

fn change(path: &str, type_name: &str, attr: &str, value: serde_json::Value) -> Entry {
    Entry::Change {
        path: path.into(),
        type_name: type_name.into(),
        anchor: None,
        attr: attr.into(),
        value,
    }
}

/// `entry` with the anchor `a`.
fn anchored(mut entry: Entry, a: &str) -> Entry {
    match &mut entry {
        Entry::Change { anchor, .. } | Entry::Event { anchor, .. } => *anchor = Some(a.into()),
    }
    entry
}

#[test]
fn records_user_choices_by_path_and_skips_browser_facts_and_passwords() {
    let (_, recorded) = record_session_one(&Policy::default());
    let button = "panel.models.widgets.Button";
    let expected = vec![
        change(
            "r0/children/0/source/selected",
            "Selection",
            "indices",
            json!([1, 3]),
        ),
        anchored(
            change("r0/children/2", "Slider", "value", json!(7)),
            r#"Slider[title="n"]"#,
        ),
        anchored(
            change("r0/children/2", "Slider", "value_throttled", json!(7)),
            r#"Slider[title="n"]"#,
        ),
        anchored(
            change(
                "r0/children/3",
                "panel.models.widgets.TextInput",
                "value_input",
                json!("hi"),
            ),
            r#"panel.models.widgets.TextInput[title="text"]"#,
        ),
        anchored(
            change(
                "r0/children/3",
                "panel.models.widgets.TextInput",
                "value",
                json!("hi"),
            ),
            r#"panel.models.widgets.TextInput[title="text"]"#,
        ),
        anchored(
            change(
                "r0/children/5",
                "panel.models.widgets.CustomSelect",
                "value",
                json!("b"),
            ),
            r#"panel.models.widgets.CustomSelect[title="sel"]"#,
        ),
        Entry::Event {
            name: "button_click".into(),
            path: Some("r0/children/1".into()),
            type_name: Some(button.into()),
            anchor: Some(format!(r#"{button}[label="Plot",css_classes="solid"]"#)),
            values: json!({"type": "map", "entries": [["model", {"$path": "r0/children/1", "$type": button}]]}),
        },
        Entry::Event {
            name: "menu_item_click".into(),
            path: Some("r0/children/6".into()),
            type_name: Some("Dropdown".into()),
            anchor: Some(r#"Dropdown[label="Menu",css_classes="solid"]"#.into()),
            values: json!({"type": "map", "entries": [
                ["model", {"$path": "r0/children/6", "$type": "Dropdown"}], ["item", "two"]]}),
        },
    ];
    assert_eq!(all_entries(&recorded), expected);
    assert!(!serde_json::to_string(&all_entries(&recorded))
        .unwrap()
        .contains("s3cret"));
}

#[test]
fn an_empty_policy_records_everything_with_a_path() {
    let (_, recorded) = record_session_one(&Policy::none());
    let all = all_entries(&recorded);
    assert!(all.iter().any(
        |e| matches!(e, Entry::Change { type_name, .. } if type_name.ends_with("BrowserInfo"))
    ));
    assert!(all
        .iter()
        .any(|e| matches!(e, Entry::Change { value, .. } if value == "s3cret")));
    assert!(all
        .iter()
        .any(|e| matches!(e, Entry::Event { name, path: None, .. } if name == "document_ready")));
    // The plot drawn after the click is known by path when the browser reports its size.
    assert!(all.contains(&change(
        "r0/children/7/children/0",
        "Figure",
        "inner_width",
        json!(218)
    )));
}

#[test]
fn replay_into_a_second_session_targets_its_own_ids_exactly_as_bokehjs_writes() {
    let (mut g1, recorded) = record_session_one(&Policy::default());
    let mut g2 = Graph::from_pull_reply(S2_PULL.as_bytes()).unwrap();
    let mut checked = 0;
    for (original, entries) in &recorded {
        for entry in entries {
            let replay = step_patch(&mut g2, entry).unwrap();
            // The captured session-1 message with session-2's ids is what must come out.
            let path = match entry {
                Entry::Change { path, .. } => path,
                Entry::Event { path, .. } => path.as_ref().unwrap(),
            };
            let old = g1.id_at(path).unwrap().id;
            let new = g2.id_at(path).unwrap().id;
            assert_ne!(old, new);
            let expected = original.replace(&format!("\"{old}\""), &format!("\"{new}\""));
            assert_eq!(replay, expected);
            checked += 1;
        }
    }
    assert_eq!(checked, 8);
    // And as a message.
    let entry = &recorded.iter().flat_map(|(_, e)| e).next().unwrap();
    let msg = step_message(&mut g2, entry, "tether-replay-1").unwrap();
    assert_eq!(msg.msgtype(), "PATCH-DOC");
    assert!(msg
        .content()
        .starts_with(br#"{"events":[{"kind":"ModelChanged""#));
}

#[test]
fn entries_have_a_stable_json_form() {
    let (_, recorded) = record_session_one(&Policy::default());
    let all = all_entries(&recorded);
    assert_eq!(
        serde_json::to_string(&all[0]).unwrap(),
        r#"{"kind":"change","path":"r0/children/0/source/selected","type_name":"Selection","attr":"indices","value":[1,3]}"#
    );
    assert_eq!(
        serde_json::to_string(&all[6]).unwrap(),
        r#"{"kind":"event","name":"button_click","path":"r0/children/1","type_name":"panel.models.widgets.Button","anchor":"panel.models.widgets.Button[label=\"Plot\",css_classes=\"solid\"]","values":{"entries":[["model",{"$path":"r0/children/1","$type":"panel.models.widgets.Button"}]],"type":"map"}}"#
    );
    let back: Vec<Entry> = serde_json::from_str(&serde_json::to_string(&all).unwrap()).unwrap();
    assert_eq!(back, all);
}

#[test]
fn references_in_values_are_recorded_by_path_and_resolved_back() {
    let mut g1 = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
    let content = r#"{"events":[{"kind":"ModelChanged","model":{"id":"p1075"},"attr":"tags","new":[{"id":"p1070"},{"type":"map","entries":[["k",{"id":"p1065"}]]}]}]}"#;
    let entries = record(&mut g1, content.as_bytes(), &Policy::default()).unwrap();
    assert_eq!(
        entries,
        vec![anchored(
            change(
                "r0/children/6",
                "Dropdown",
                "tags",
                json!([{"$path": "r0/children/2", "$type": "Slider"},
                   {"type": "map", "entries": [["k", {"$path": "r0/children/0/source/selected", "$type": "Selection"}]]}])
            ),
            r#"Dropdown[label="Menu",css_classes="solid"]"#
        )]
    );
    let mut g2 = Graph::from_pull_reply(S2_PULL.as_bytes()).unwrap();
    let ids: Vec<String> = [
        "r0/children/6",
        "r0/children/2",
        "r0/children/0/source/selected",
    ]
    .iter()
    .map(|p| g2.id_at(p).unwrap().id.to_string())
    .collect();
    assert_eq!(
        step_patch(&mut g2, &entries[0]).unwrap(),
        format!(
            r#"{{"events":[{{"kind":"ModelChanged","model":{{"id":"{}"}},"attr":"tags","new":[{{"id":"{}"}},{{"type":"map","entries":[["k",{{"id":"{}"}}]]}}]}}]}}"#,
            ids[0], ids[1], ids[2]
        )
    );
}

#[test]
fn unresolvable_entries_are_skipped_with_a_reason() {
    let mut g = Graph::from_pull_reply(S2_PULL.as_bytes()).unwrap();
    let gone = change("r0/children/99", "Slider", "value", json!(1));
    assert_eq!(
        step_patch(&mut g, &gone),
        Err(Skip::PathUnresolved {
            path: "r0/children/99".into()
        })
    );
    let edited = change("r0/children/1", "Slider", "value", json!(1));
    assert_eq!(
        step_patch(&mut g, &edited),
        Err(Skip::TypeDiffers {
            path: "r0/children/1".into(),
            expected: "Slider".into(),
            found: "panel.models.widgets.Button".into()
        })
    );
    let dangling = change(
        "r0/children/2",
        "Slider",
        "tags",
        json!([{"$path": "r0/children/42", "$type": "X"}]),
    );
    assert_eq!(
        step_patch(&mut g, &dangling),
        Err(Skip::RefUnresolved {
            path: "r0/children/42".into()
        })
    );
    let wrong_ref = change(
        "r0/children/2",
        "Slider",
        "tags",
        json!([{"$path": "r0/children/1", "$type": "X"}]),
    );
    assert!(matches!(
        step_patch(&mut g, &wrong_ref),
        Err(Skip::TypeDiffers { .. })
    ));
    let plot_click = Entry::Event {
        name: "tap".into(),
        path: Some("r0/children/7/children/0".into()),
        type_name: Some("Figure".into()),
        anchor: None,
        values: json!({"type": "map"}),
    };
    assert!(matches!(
        step_patch(&mut g, &plot_click),
        Err(Skip::TypeDiffers { .. })
    ));
    assert!(!Skip::PathUnresolved { path: "x".into() }
        .to_string()
        .is_empty());
}

#[test]
fn unrecordable_changes_are_skipped_and_still_applied() {
    let mut g = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
    let policy = Policy {
        max_value_bytes: 20,
        ..Policy::default()
    };
    let content = r#"{"events":[
        {"kind":"ModelChanged","model":{"id":"unknown"},"attr":"value","new":1},
        {"kind":"ModelChanged","model":{"id":"p1070"},"attr":"tags","new":[{"id":"nowhere"}]},
        {"kind":"ModelChanged","model":{"id":"p1070"},"attr":"title","new":"a string longer than twenty bytes"},
        {"kind":"MessageSent","msg_type":"bokeh_event","msg_data":{"type":"event","name":"tap","values":{"type":"map","entries":[["model",{"id":"unknown"}]]}}},
        {"kind":"MessageSent","msg_type":"other","msg_data":{"x":1}},
        {"kind":"ModelChanged","model":{"id":"p1048"},"attr":"children","new":[{"type":"object","name":"Div","id":"js1"}]}
    ]}"#;
    assert_eq!(record(&mut g, content.as_bytes(), &policy).unwrap(), vec![]);
    // The browser's new child was applied to the graph even though it was not recorded.
    assert_eq!(&*g.id_at("r0/children/0").unwrap().id, "js1");
}

#[test]
fn malformed_browser_patches_are_errors() {
    let mut g = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
    let policy = Policy::default();
    for bad in [
        &b"garbage"[..],
        br#"{"events":[{"kind":"MessageSent","msg_type":"bokeh_event","msg_data":{"type":"event"}}]}"#,
        br#"{"events":[{"kind":"ModelChanged","model":{"id":"p1048"},"attr":"children","new":[{"type":"object","id":"x"}]}]}"#,
    ] {
        assert!(record(&mut g, bad, &policy).is_err());
    }
    assert_eq!(
        &*g.id_at("r0/children/0/source/selected").unwrap().id,
        "p1065"
    );
}

/// Every way a password can leave the browser: its `value`, its `value_input` on each key,
/// any other attribute, the `value_submit` event on Enter, and an event from elsewhere
/// whose values name the password model.
#[test]
fn nothing_a_password_input_sends_is_recorded() {
    let doc = r#"{"doc":{"roots":[{"type":"object","name":"Column","id":"c","attributes":{"children":[{"type":"object","name":"PasswordInput","id":"pw"},{"type":"object","name":"Button","id":"b"}]}}]}}"#;
    let mut graph = Graph::from_pull_reply(doc.as_bytes()).unwrap();
    let policy = Policy::default();
    let submit = |model: &str, extra: &str| {
        format!(
            r#"{{"events":[{{"kind":"MessageSent","msg_type":"bokeh_event","msg_data":{{"type":"event","name":"value_submit","values":{{"type":"map","entries":[["model",{{"id":"{model}"}}]{extra}]}}}}}}]}}"#
        )
    };
    for patch in [
        r#"{"events":[{"kind":"ModelChanged","model":{"id":"pw"},"attr":"value","new":"hunter2"}]}"#.to_owned(),
        r#"{"events":[{"kind":"ModelChanged","model":{"id":"pw"},"attr":"value_input","new":"hunter2"}]}"#.to_owned(),
        r#"{"events":[{"kind":"ModelChanged","model":{"id":"pw"},"attr":"placeholder","new":"hunter2"}]}"#.to_owned(),
        submit("pw", r#",["value","hunter2"]"#),
        submit("b", r#",["from",{"id":"pw"}],["value","hunter2"]"#),
    ] {
        let entries = record(&mut graph, patch.as_bytes(), &policy).unwrap();
        assert!(entries.is_empty(), "{patch} recorded {entries:?}");
    }
    // The same event from a plain text input is a choice, and is recorded.
    let mut graph =
        Graph::from_pull_reply(doc.replace("PasswordInput", "TextInput").as_bytes()).unwrap();
    let entries = record(&mut graph, submit("pw", "").as_bytes(), &policy).unwrap();
    assert_eq!(entries.len(), 1);
}
