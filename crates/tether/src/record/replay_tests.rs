//! Finding recorded targets again after an edit of the app: by path first, then by anchor.

use serde_json::json;

use super::*;
use crate::record::{record, Policy, SkipReason};

/// A Bokeh model definition.
fn model(name: &str, id: &str, attributes: serde_json::Value) -> serde_json::Value {
    json!({"type": "object", "name": name, "id": id, "attributes": attributes})
}

fn slider(id: &str, title: &str) -> serde_json::Value {
    model("Slider", id, json!({"title": title, "value": 0}))
}

/// A graph whose one root is a Column of `children`, named as Panel names it.
fn column(children: Vec<serde_json::Value>) -> Graph {
    let root = model(
        "Column",
        "root",
        json!({"name": "Column00017", "children": children}),
    );
    let reply = json!({"doc": {"roots": [root]}});
    Graph::from_pull_reply(reply.to_string().as_bytes()).unwrap()
}

/// What the browser records when it sets `value` on model `id`.
fn set(graph: &mut Graph, id: &str, value: serde_json::Value) -> Entry {
    let patch = json!({"events": [{"kind": "ModelChanged", "model": {"id": id}, "attr": "value", "new": value}]});
    let mut entries = record(graph, patch.to_string().as_bytes(), &Policy::none()).unwrap();
    assert_eq!(entries.len(), 1);
    entries.remove(0)
}

/// The id the replayed change targets, or why it was skipped.
fn target(graph: &mut Graph, entry: &Entry) -> Result<String, Skip> {
    let here = relocate(graph, &mut Moves::new(), entry)?;
    let event: serde_json::Value = serde_json::from_str(&step_event(graph, &here)?).unwrap();
    Ok(event["model"]["id"].as_str().unwrap().to_owned())
}

#[test]
fn a_widget_moved_by_an_insert_is_found_by_its_anchor() {
    let mut v1 = column(vec![slider("a1", "a"), slider("b1", "b")]);
    let entry = set(&mut v1, "b1", json!(7));
    assert!(matches!(&entry, Entry::Change { path, anchor: Some(a), .. }
        if path == "r0/children/1" && a == r#"Slider[title="b"]"#));

    let mut same = column(vec![slider("a2", "a"), slider("b2", "b")]);
    assert_eq!(
        target(&mut same, &entry).unwrap(),
        "b2",
        "same code: by path"
    );

    let mut inserted = column(vec![
        slider("n3", "new"),
        slider("a3", "a"),
        slider("b3", "b"),
    ]);
    assert_eq!(target(&mut inserted, &entry).unwrap(), "b3");
    let mut moves = Moves::new();
    relocate(&mut inserted, &mut moves, &entry).unwrap();
    assert_eq!(moves.forward("r0/children/1/value"), "r0/children/2/value");
    assert_eq!(moves.forward("r0/children/0/value"), "r0/children/0/value");
}

#[test]
fn removed_and_renamed_widgets_are_skipped_not_misapplied() {
    let mut v1 = column(vec![slider("a1", "a"), slider("b1", "b")]);
    let entry = set(&mut v1, "b1", json!(7));
    let mut removed = column(vec![slider("a2", "a")]);
    assert!(matches!(
        target(&mut removed, &entry),
        Err(Skip::PathUnresolved { .. })
    ));
    let mut renamed = column(vec![slider("a3", "a"), slider("c3", "c")]);
    let skip = target(&mut renamed, &entry).unwrap_err();
    assert_eq!(skip.reason(), SkipReason::Renamed, "{skip}");
    let mut twice = column(vec![slider("x", "b"), slider("a4", "a"), slider("y", "b")]);
    assert!(
        target(&mut twice, &entry).is_err(),
        "two sliders named b: neither is guessed"
    );
}

#[test]
fn a_log_written_before_anchors_replays_by_path() {
    let stored =
        r#"{"kind":"change","path":"r0/children/1","type_name":"Slider","attr":"value","value":7}"#;
    let entry: Entry = serde_json::from_str(stored).unwrap();
    let mut renamed = column(vec![slider("a2", "a"), slider("c2", "c")]);
    assert_eq!(target(&mut renamed, &entry).unwrap(), "c2");
}

#[test]
fn the_nearest_named_ancestor_tells_equal_names_apart() {
    let tab = |id: &str, title: &str, child: serde_json::Value| {
        model("TabPanel", id, json!({"title": title, "child": child}))
    };
    let tabs = |suffix: &str, titles: &[&str]| {
        let panels: Vec<_> = titles
            .iter()
            .map(|t| {
                let inner = model(
                    "Column",
                    &format!("col-{t}{suffix}"),
                    json!({"children": [slider(&format!("s-{t}{suffix}"), "size")]}),
                );
                tab(&format!("tab-{t}{suffix}"), t, inner)
            })
            .collect();
        column(vec![model(
            "Tabs",
            &format!("tabs{suffix}"),
            json!({"tabs": panels}),
        )])
    };
    let mut v1 = tabs("1", &["Plot", "Table"]);
    let entry = set(&mut v1, "s-Table1", json!(3));
    assert!(matches!(&entry, Entry::Change { anchor: Some(a), .. }
        if a == r#"Slider[title="size"] in TabPanel[title="Table"]"#));
    let mut reordered = tabs("2", &["Table", "Map", "Plot"]);
    assert_eq!(target(&mut reordered, &entry).unwrap(), "s-Table2");
}

#[test]
fn a_card_is_named_by_its_header_and_unnamed_models_by_their_place_in_it() {
    let card = |n: &str, title: &str| {
        let header = model(
            "panel.models.markup.HTML",
            &format!("h{n}"),
            json!({"css_classes": ["card-title"], "text": format!("&lt;h3&gt;{title}&lt;/h3&gt;")}),
        );
        let row = model(
            "Row",
            &format!("row{n}"),
            json!({"css_classes": ["card-header-row"], "children": [header]}),
        );
        let selection = model("Selection", &format!("sel{n}"), json!({"indices": []}));
        let source = model(
            "ColumnDataSource",
            &format!("src{n}"),
            json!({"selected": selection}),
        );
        let table = model("DataTable", &format!("t{n}"), json!({"source": source}));
        model(
            "panel.models.layout.Card",
            &format!("card{n}"),
            json!({"name": format!("Card0000{n}"), "children": [row, table]}),
        )
    };
    let mut v1 = column(vec![card("1", "Orders"), card("2", "Stock")]);
    let patch = json!({"events": [{"kind": "ModelChanged", "model": {"id": "sel2"}, "attr": "indices", "new": [2]}]});
    let entry = record(&mut v1, patch.to_string().as_bytes(), &Policy::none())
        .unwrap()
        .remove(0);
    let expected = r#"Selection@children/1/source/selected in panel.models.layout.Card[header="&lt;h3&gt;Stock&lt;/h3&gt;"]"#;
    assert!(
        matches!(&entry, Entry::Change { anchor: Some(a), .. } if a == expected),
        "{entry:?}"
    );
    let mut swapped = column(vec![card("3", "Stock"), card("4", "Orders")]);
    let here = relocate(&mut swapped, &mut Moves::new(), &entry).unwrap();
    assert!(
        matches!(&*here, Entry::Change { path, .. } if path == "r0/children/0/children/1/source/selected")
    );
}

#[test]
fn references_in_a_value_follow_the_moves_found() {
    let mut v1 = column(vec![slider("a1", "a"), slider("b1", "b")]);
    let entry = Entry::Change {
        path: "r0/children/1".into(),
        type_name: "Slider".into(),
        anchor: v1.anchor_at("r0/children/1"),
        attr: "tags".into(),
        value: json!([{"$path": "r0/children/1", "$type": "Slider"}]),
    };
    let mut inserted = column(vec![
        slider("n2", "new"),
        slider("a2", "a"),
        slider("b2", "b"),
    ]);
    let here = relocate(&mut inserted, &mut Moves::new(), &entry).unwrap();
    let event: serde_json::Value =
        serde_json::from_str(&step_event(&mut inserted, &here).unwrap()).unwrap();
    assert_eq!(event["new"], json!([{"id": "b2"}]));
}

#[test]
fn a_retitled_widget_keeps_its_anchor_current() {
    let mut g = column(vec![slider("a1", "a")]);
    let retitle = json!({"events": [{"kind": "ModelChanged", "model": {"id": "a1"}, "attr": "title", "new": "Amplitude"}]});
    g.apply_patch(retitle.to_string().as_bytes()).unwrap();
    assert_eq!(
        g.anchor_at("r0/children/0").as_deref(),
        Some(r#"Slider[title="Amplitude"]"#)
    );
    assert_eq!(g.anchor_at("r0"), None, "a generated name names nothing");
}
