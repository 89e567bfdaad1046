//! Tests of PATCH-DOC parsing and writing, on patches captured from BokehJS and Bokeh.

use super::*;

/// Every browser→server PATCH-DOC content of the first captured session, in order.
const CLIENT_PATCHES: &str = include_str!("fixtures/s1_client_patches.jsonl");
/// The server→browser PATCH-DOC content caused by the Plot button click.
const SERVER_PATCHES: &str = include_str!("fixtures/s1_server_patches.jsonl");

fn client_patches() -> Vec<&'static str> {
    CLIENT_PATCHES.lines().collect()
}

#[test]
fn parses_every_captured_browser_patch() {
    let patches = client_patches();
    let mut kinds = Vec::new();
    for p in &patches {
        for e in parse_patch(p.as_bytes()).unwrap() {
            kinds.push(match e {
                Event::ModelChanged { attr, .. } => format!("changed:{attr}"),
                Event::MessageSent { msg_type, msg_data } => {
                    assert_eq!(msg_type, "bokeh_event");
                    format!("event:{}", BokehEvent::parse(msg_data).unwrap().name)
                }
                other => panic!("unexpected {other:?}"),
            });
        }
    }
    assert_eq!(kinds[..8].last().unwrap(), "event:document_ready");
    assert!(kinds.contains(&"changed:indices".to_owned()));
    assert!(kinds.contains(&"event:button_click".to_owned()));
    assert!(kinds.contains(&"event:menu_item_click".to_owned()));
    assert!(kinds.contains(&"changed:inner_width".to_owned()));
}

#[test]
fn bokeh_events_carry_their_origin() {
    let find = |name: &str| {
        client_patches()
            .into_iter()
            .find(|p| p.contains(&format!("\"name\":\"{name}\"")))
            .unwrap()
    };
    let parse = |content: &'static str| match parse_patch(content.as_bytes()).unwrap().remove(0) {
        Event::MessageSent { msg_data, .. } => BokehEvent::parse(msg_data).unwrap(),
        other => panic!("{other:?}"),
    };
    let ready = parse(find("document_ready"));
    assert_eq!(ready.origin, None);
    assert_eq!(ready.values.get(), r#"{"type":"map"}"#);
    let click = parse(find("button_click"));
    assert_eq!(click.origin.as_deref(), Some("p1069"));
    assert_eq!(
        click.values.get(),
        r#"{"type":"map","entries":[["model",{"id":"p1069"}]]}"#
    );
    let menu = parse(find("menu_item_click"));
    assert_eq!(menu.origin.as_deref(), Some("p1075"));
}

#[test]
fn build_patch_reproduces_captured_patches_byte_for_byte() {
    for p in client_patches().into_iter().chain(SERVER_PATCHES.lines()) {
        let events = parse_patch(p.as_bytes()).unwrap();
        assert_eq!(build_patch(&events), p);
    }
}

#[test]
fn column_and_unknown_events_are_kept_raw() {
    let content = r#"{"events":[{"kind":"ColumnsStreamed","model":{"id":"p1"},"attr":"data","data":{"type":"map","entries":[["x",[1,2]]]},"rollover":null},{"kind":"ColumnsPatched","model":{"id":"p1"},"attr":"data","patches":{"type":"map"}},{"kind":"ColumnDataChanged","model":{"id":"p1"},"attr":"data","data":{"type":"map"},"cols":null},{"kind":"Future","x":1},{"kind":"TitleChanged","title":"T"},{"kind":"RootRemoved","model":{"id":"p9"}},{"kind":"RootAdded","model":{"id":"p9"}}]}"#;
    let events = parse_patch(content.as_bytes()).unwrap();
    assert!(matches!(&events[0], Event::ColumnsStreamed { model, .. } if model == "p1"));
    assert!(matches!(&events[1], Event::ColumnsPatched { .. }));
    assert!(matches!(&events[2], Event::ColumnDataChanged { .. }));
    assert!(matches!(&events[3], Event::Other { kind, .. } if kind == "Future"));
    assert!(matches!(&events[4], Event::TitleChanged { title } if title == "T"));
    assert!(matches!(&events[5], Event::RootRemoved { model } if model == "p9"));
    assert_eq!(build_patch(&events), content);
}

#[test]
fn malformed_patches_are_errors() {
    let bad: &[&[u8]] = &[
        b"",
        b"not json",
        b"\xff\xfe",
        br#"{"events":{}}"#,
        br#"{"nope":[]}"#,
        br#"{"events":[1]}"#,
        br#"{"events":[{"model":{"id":"p1"}}]}"#,
        br#"{"events":[{"kind":5}]}"#,
        br#"{"events":[{"kind":"ModelChanged","attr":"a","new":1}]}"#,
        br#"{"events":[{"kind":"ModelChanged","model":"p1","attr":"a","new":1}]}"#,
        br#"{"events":[{"kind":"ModelChanged","model":{"id":1},"attr":"a","new":1}]}"#,
        br#"{"events":[{"kind":"ModelChanged","model":{"id":"p1"},"attr":["a"],"new":1}]}"#,
        br#"{"events":[{"kind":"ModelChanged","model":{"id":"p1"},"attr":"a"}]}"#,
        br#"{"events":[{"kind":"MessageSent","msg_type":"bokeh_event"}]}"#,
        br#"{"events":[{"kind":"RootRemoved"}]}"#,
        br#"{"events":[{"kind":"ColumnsStreamed","model":null}]}"#,
    ];
    for content in bad {
        assert!(
            parse_patch(content).is_err(),
            "{}",
            String::from_utf8_lossy(content)
        );
    }
    // A null value is a value, not a missing one.
    assert!(parse_patch(
        br#"{"events":[{"kind":"ModelChanged","model":{"id":"p1"},"attr":"a","new":null}]}"#
    )
    .is_ok());
}

#[test]
fn malformed_bokeh_events_are_errors() {
    let raw = |s: &str| serde_json::value::RawValue::from_string(s.to_owned()).unwrap();
    for bad in [
        r#"{"type":"event","values":{"type":"map"}}"#,
        r#"{"type":"event","name":"x"}"#,
        r#"{"type":"event","name":"x","values":{"type":"map","entries":{}}}"#,
        r#"{"type":"event","name":"x","values":{"type":"map","entries":[["model",{"nope":1}]]}}"#,
        r#"[1]"#,
    ] {
        assert!(BokehEvent::parse(&raw(bad)).is_err(), "{bad}");
    }
    // A null origin or plain-object values are tolerated.
    let ok =
        raw(r#"{"type":"event","name":"x","values":{"type":"map","entries":[["model",null]]}}"#);
    assert_eq!(BokehEvent::parse(&ok).unwrap().origin, None);
    let plain = raw(r#"{"type":"event","name":"x","values":{"model":{"id":"p3"}}}"#);
    assert_eq!(
        BokehEvent::parse(&plain).unwrap().origin.as_deref(),
        Some("p3")
    );
}
