//! Tests of the reference graph, on documents captured from two sessions of one app.

use super::*;

/// PULL-DOC-REPLY content of the first session (ids from p1046).
const S1_PULL: &str = include_str!("fixtures/s1_pull_reply.json");
/// PULL-DOC-REPLY content of a second session of the same app (other ids).
const S2_PULL: &str = include_str!("fixtures/s2_pull_reply.json");
/// The server's PATCH-DOC after the Plot click in session 1 (a HoloViews Figure).
const S1_CLICK_PATCH: &str = include_str!("fixtures/s1_server_patches.jsonl");

fn at(graph: &mut Graph, path: &str) -> (String, String) {
    let m = graph
        .id_at(path)
        .unwrap_or_else(|| panic!("nothing at {path}"));
    assert_eq!(&*m.path, path);
    (m.id.to_string(), m.type_name.to_string())
}

#[test]
fn pulled_document_has_the_widgets_at_their_paths() {
    let mut g = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
    assert_eq!(g.roots().collect::<Vec<_>>(), ["p1048", "p1080", "p1081"]);
    assert_eq!(
        at(&mut g, "r0"),
        ("p1048".into(), "panel.models.layout.Column".into())
    );
    assert_eq!(
        at(&mut g, "r0/children/0"),
        (
            "p1067".into(),
            "panel.models.tabulator.DataTabulator".into()
        )
    );
    assert_eq!(
        at(&mut g, "r0/children/0/source"),
        ("p1064".into(), "ColumnDataSource".into())
    );
    assert_eq!(
        at(&mut g, "r0/children/0/source/selected"),
        ("p1065".into(), "Selection".into())
    );
    assert_eq!(
        at(&mut g, "r0/children/1"),
        ("p1069".into(), "panel.models.widgets.Button".into())
    );
    assert_eq!(
        at(&mut g, "r0/children/2"),
        ("p1070".into(), "Slider".into())
    );
    assert_eq!(
        at(&mut g, "r0/children/4"),
        ("p1072".into(), "PasswordInput".into())
    );
    assert_eq!(
        at(&mut g, "r0/children/6"),
        ("p1075".into(), "Dropdown".into())
    );
    assert_eq!(
        at(&mut g, "r1"),
        ("p1080".into(), "panel.models.location.Location".into())
    );
    assert_eq!(
        at(&mut g, "r2"),
        ("p1081".into(), "panel.models.browser.BrowserInfo".into())
    );
    let sel = g.path_of("p1065").unwrap();
    assert_eq!(&*sel.path, "r0/children/0/source/selected");
    // A shared stylesheet gets the first path a depth-first walk reaches.
    assert_eq!(
        &*g.path_of("p1052").unwrap().path,
        "r0/children/0/stylesheets/1"
    );
    // Buffer references inside ndarrays are not models.
    assert!(g.path_of("p1085").is_none());
    // The DocumentConfig is not under a root.
    assert!(g.path_of("p1046").is_none());
    assert!(g.path_of("nope").is_none());
    assert!(g.id_at("r9").is_none());
}

#[test]
fn two_sessions_have_the_same_paths_and_types_but_other_ids() {
    let mut a = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
    let mut b = Graph::from_pull_reply(S2_PULL.as_bytes()).unwrap();
    let shape = |g: &mut Graph| {
        g.models()
            .into_iter()
            .map(|m| (m.path, m.type_name))
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&mut a), shape(&mut b));
    assert_eq!(a.models().len(), 30);
    let (ida, _) = at(&mut a, "r0/children/0/source/selected");
    let (idb, _) = at(&mut b, "r0/children/0/source/selected");
    assert_ne!(ida, idb);
}

#[test]
fn click_patch_adds_the_plot_and_drops_the_placeholder() {
    let mut g = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
    assert_eq!(
        at(&mut g, "r0/children/7/children/0").1,
        "panel.models.markup.HTML"
    );
    g.apply_patch(S1_CLICK_PATCH.trim_end().as_bytes()).unwrap();
    let plot = "r0/children/7/children/0";
    assert_eq!(at(&mut g, plot), ("p1116".into(), "Figure".into()));
    assert_eq!(
        at(&mut g, &format!("{plot}/renderers/0")).1,
        "GlyphRenderer"
    );
    assert_eq!(
        at(&mut g, &format!("{plot}/renderers/0/data_source")).1,
        "ColumnDataSource"
    );
    assert_eq!(
        at(&mut g, &format!("{plot}/renderers/0/data_source/selected")),
        ("p1150".into(), "Selection".into())
    );
    assert_eq!(
        at(&mut g, &format!("{plot}/x_range")),
        ("p1110".into(), "Range1d".into())
    );
    assert_eq!(
        at(&mut g, &format!("{plot}/toolbar/tools/3/overlay")).1,
        "BoxAnnotation"
    );
    // Referenced twice (below/0 and center/0/axis): the first in sorted attribute order wins.
    assert_eq!(
        &*g.path_of("p1128").unwrap().path,
        &format!("{plot}/below/0")
    );
    // The placeholder is gone from the document.
    assert!(g.path_of("p1078").is_none());
    // The rest of the document is untouched.
    assert_eq!(at(&mut g, "r0/children/0/source/selected").0, "p1065");
}

#[test]
fn browser_changes_can_move_references() {
    let mut g = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
    let swap = r#"{"events":[{"kind":"ModelChanged","model":{"id":"p1048"},"attr":"children","new":[{"id":"p1069"},{"id":"p1067"}]}]}"#;
    g.apply_patch(swap.as_bytes()).unwrap();
    assert_eq!(at(&mut g, "r0/children/0").0, "p1069");
    assert_eq!(
        &*g.path_of("p1065").unwrap().path,
        "r0/children/1/source/selected"
    );
    assert!(g.path_of("p1070").is_none(), "the slider left the document");
    // Scalar changes and changes to unknown models leave paths alone.
    let scalar = r#"{"events":[{"kind":"ModelChanged","model":{"id":"p1065"},"attr":"indices","new":[1,3]},{"kind":"ModelChanged","model":{"id":"zzz"},"attr":"x","new":{"id":"p1048"}}]}"#;
    g.apply_patch(scalar.as_bytes()).unwrap();
    assert_eq!(
        &*g.path_of("p1065").unwrap().path,
        "r0/children/1/source/selected"
    );
}

#[test]
fn roots_can_be_added_and_removed() {
    let mut g = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
    let patch = r#"{"events":[{"kind":"RootRemoved","model":{"id":"p1080"}},{"kind":"RootAdded","model":{"type":"object","name":"Div","id":"n1","attributes":{"text":"hi","tags":[{"type":"map","entries":[["a/b",{"type":"object","name":"Span","id":"n2"}]]}]}}}]}"#;
    g.apply_patch(patch.as_bytes()).unwrap();
    assert_eq!(at(&mut g, "r1").1, "panel.models.browser.BrowserInfo");
    assert_eq!(at(&mut g, "r2"), ("n1".into(), "Div".into()));
    // Map keys are path segments, with '/' escaped.
    assert_eq!(at(&mut g, "r2/tags/0/a%2Fb"), ("n2".into(), "Span".into()));
    assert!(g.path_of("p1080").is_none());
}

#[test]
fn replaced_models_are_forgotten_so_the_graph_stays_bounded() {
    let mut g = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
    let base = g.len();
    for i in 0..2000 {
        let patch = format!(
            r#"{{"events":[{{"kind":"ModelChanged","model":{{"id":"p1076"}},"attr":"children","new":[{{"type":"object","name":"Div","id":"d{i}","attributes":{{"child":{{"type":"object","name":"Span","id":"s{i}"}}}}}}]}}]}}"#
        );
        g.apply_patch(patch.as_bytes()).unwrap();
    }
    assert!(g.len() < base + 600, "{} models kept", g.len());
    assert_eq!(
        at(&mut g, "r0/children/7/children/0/child"),
        ("s1999".into(), "Span".into())
    );
}

#[test]
fn big_column_data_is_scanned_not_walked() {
    let column: Vec<String> = (0..200_000).map(|i| format!("{}.5", i)).collect();
    let patch = format!(
        r#"{{"events":[{{"kind":"ModelChanged","model":{{"id":"p1064"}},"attr":"data","new":{{"type":"map","entries":[["x",[{}]],["y",{{"type":"ndarray","array":{{"type":"bytes","data":{{"id":"b1"}}}},"shape":[2],"dtype":"int32","order":"little"}}]]}}}}]}}"#,
        column.join(",")
    );
    assert!(patch.len() > 1_000_000);
    let mut g = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
    g.apply_patch(patch.as_bytes()).unwrap();
    assert!(g.path_of("b1").is_none());
    assert_eq!(at(&mut g, "r0/children/0/source/selected").0, "p1065");
}

#[test]
fn a_value_that_refers_to_no_model_drops_the_references_the_attribute_had() {
    let mut g = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
    let (child, _) = at(&mut g, "r0/children/0");
    let root = g.roots().next().unwrap().to_owned();
    let patch = format!(
        r#"{{"events":[{{"kind":"ModelChanged","model":{{"id":"{root}"}},"attr":"children","new":[]}}]}}"#
    );
    g.apply_patch(patch.as_bytes()).unwrap();
    assert!(
        g.path_of(&child).is_none(),
        "{child} is no longer reachable"
    );
    assert!(g.id_at("r0/children/0").is_none());
}

#[test]
fn malformed_documents_and_patches_are_errors() {
    let bad_pulls: &[&str] = &[
        "",
        "{}",
        r#"{"doc":{}}"#,
        r#"{"doc":{"roots":{}}}"#,
        r#"{"doc":{"roots":[1]}}"#,
        r#"{"doc":{"roots":[{"type":"object","id":"p1"}]}}"#,
        r#"{"doc":{"roots":[{"type":"object","name":"X","id":"p1","attributes":[1]}]}}"#,
        r#"{"doc":{"roots":[{"type":"object","name":"X","id":"p1","attributes":{"a":{"type":"map","entries":{"x":{}}}}}]}}"#,
    ];
    for bad in bad_pulls {
        assert!(Graph::from_pull_reply(bad.as_bytes()).is_err(), "{bad}");
    }
    let mut g = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
    assert!(g
        .apply_patch(b"{\"events\":[{\"kind\":\"RootAdded\",\"model\":7}]}")
        .is_err());
    assert!(g.apply_patch(b"garbage").is_err());
    // Still usable afterwards.
    assert_eq!(at(&mut g, "r0/children/0/source/selected").0, "p1065");
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [150, 20_000] {
        let arrays = format!("{}{{}}{}", "[".repeat(depth), "]".repeat(depth));
        let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        for value in [&arrays, &objects] {
            let pull = format!(
                r#"{{"doc":{{"roots":[{{"type":"object","name":"X","id":"p1","attributes":{{"v":{value}}}}}]}}}}"#
            );
            assert!(
                Graph::from_pull_reply(pull.as_bytes()).is_err(),
                "depth {depth}"
            );
            // In a patch, a deep value that names no model is not walked at all: the root's
            // children are simply gone. With a reference inside, it is walked, and refused.
            let patch = format!(
                r#"{{"events":[{{"kind":"ModelChanged","model":{{"id":"p1048"}},"attr":"children","new":{value}}}]}}"#
            );
            let mut g = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
            if g.apply_patch(patch.as_bytes()).is_ok() {
                assert!(g.id_at("r0/children/0").is_none(), "depth {depth}");
            }
            let with_ref = patch
                .replacen(r#""new":["#, r#""new":[{"id":"p1065"},"#, 1)
                .replacen(r#""new":{"a":"#, r#""new":{"b":{"id":"p1065"},"a":"#, 1);
            assert!(with_ref.contains(r#"{"id":"p1065"}"#));
            let mut g = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
            assert!(g.apply_patch(with_ref.as_bytes()).is_err(), "depth {depth}");
        }
    }
    // Nested model definitions count towards the limit too.
    let mut nested = String::from("1");
    for i in 0..300 {
        nested =
            format!(r#"{{"type":"object","name":"X","id":"n{i}","attributes":{{"c":{nested}}}}}"#);
    }
    let pull = format!(r#"{{"doc":{{"roots":[{nested}]}}}}"#);
    assert!(Graph::from_pull_reply(pull.as_bytes()).is_err());
}

/// The graph after each patch, and the slots each touched, read both ways: in full
/// (`parse_patch`) and as the relay reads worker patches (`scan_patch`).
fn both_ways(patches: &[String]) -> [(Vec<ModelAt>, Vec<Vec<String>>); 2] {
    let run = |scan: bool| {
        let mut g = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
        let mut touched = Vec::new();
        for p in patches {
            let seen: Vec<Seen<'_>> = if scan {
                crate::protocol::scan_patch(p.as_bytes()).unwrap()
            } else {
                crate::protocol::parse_patch(p.as_bytes())
                    .unwrap()
                    .into_iter()
                    .map(Seen::Event)
                    .collect()
            };
            touched.push(crate::record::causal::touched(&mut g, &seen));
            g.apply_seen(&seen).unwrap();
        }
        let mut models = g.models();
        models.sort_by(|a, b| a.path.cmp(&b.path));
        (models, touched)
    };
    [run(false), run(true)]
}

#[test]
fn big_plain_changes_are_located_not_parsed_and_leave_the_same_graph() {
    let mut g = Graph::from_pull_reply(S1_PULL.as_bytes()).unwrap();
    let root = g.roots().next().unwrap().to_owned();
    let source = at(&mut g, "r0/children/0/source").0;
    let numbers: Vec<String> = (0..20_000).map(|i| format!("{i}.25")).collect();
    let numbers = numbers.join(",");
    let change = |model: &str, attr: &str, new: &str| {
        format!(
            r#"{{"events":[{{"kind":"ModelChanged","model":{{"id":"{model}"}},"attr":"{attr}","new":{new}}}]}}"#
        )
    };
    let data = format!(r#"{{"type":"map","entries":[["x",[{numbers}]],["y",[{numbers}]]]}}"#);
    let patches = vec![
        // Columns of numbers: located only.
        change(&source, "data", &data),
        // A big value that defines a model is parsed in full.
        change(
            &source,
            "selected",
            &format!(
                r#"{{"type":"object","name":"Selection","id":"p9001","attributes":{{"indices":[{}]}}}}"#,
                (0..5000)
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ),
        // New columns, and streamed ones, as Bokeh sends `source.data = ...` and `stream`.
        format!(
            r#"{{"events":[{{"kind":"ColumnDataChanged","model":{{"id":"{source}"}},"attr":"data","data":{data},"cols":["x","y"]}}]}}"#
        ),
        format!(
            r#"{{"events":[{{"kind":"ColumnsStreamed","model":{{"id":"{source}"}},"attr":"data","data":{data},"rollover":null}}]}}"#
        ),
        // The layout's children replaced by a big list of plain values: every child is gone.
        change(&root, "children", &format!("[{numbers}]")),
    ];
    assert!(matches!(
        crate::protocol::scan_patch(patches[2].as_bytes()).unwrap()[..],
        [Seen::Columns { .. }]
    ));
    assert!(matches!(
        crate::protocol::scan_patch(patches[0].as_bytes()).unwrap()[..],
        [Seen::PlainChange { .. }]
    ));
    assert!(matches!(
        crate::protocol::scan_patch(patches[1].as_bytes()).unwrap()[..],
        [Seen::Event(_)]
    ));
    let [full, scanned] = both_ways(&patches);
    assert_eq!(full, scanned);
    assert!(full.1.iter().all(|t| !t.is_empty()), "{:?}", full.1);
    assert!(
        full.0.iter().all(|m| !m.path.starts_with("r0/children")),
        "the children are gone: {:?}",
        full.0
    );
}

#[test]
fn recorded_worker_patches_read_the_same_either_way() {
    let patches: Vec<String> = S1_CLICK_PATCH.lines().map(str::to_owned).collect();
    let [full, scanned] = both_ways(&patches);
    assert_eq!(full, scanned);
}
