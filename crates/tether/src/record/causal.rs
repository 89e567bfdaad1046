//! Causality between recorded steps: what the worker touched in answer to a step, and
//! whether a later step depends on it.
//!
//! An effect is an attribute *slot*: the structural path of a model, `/`, and the attribute
//! (`r0/children/1/options`). A step depends on an earlier step whose effects touched an
//! attribute of its target model (new options make a new value valid) or of any model above
//! it (a rebuilt figure, new data under a selection). The slot `""` is the whole document (a
//! root added or removed). Pure: no I/O.

use serde_json::Value;

use super::{Entry, PATH_KEY};
use crate::protocol::{slot, Event, Graph, Seen};

/// Most distinct slots kept per step; past it a step counts as touching everything, which
/// only makes the restore wait more, never wrongly.
pub const MAX_EFFECTS: usize = 32;

/// The slot that stands for the whole document.
pub const EVERYTHING: &str = "";

/// The slots a worker PATCH-DOC touches, read off `graph` as it was before the patch.
///
/// Models the patch itself defines have no path yet; they hang off a slot of a model that
/// already had one, which is what is reported.
pub fn touched(graph: &mut Graph, events: &[Seen<'_>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    for seen in events {
        let (model, attr) = match seen {
            Seen::PlainChange { model, attr } => (*model, *attr),
            Seen::Columns { model } => (*model, "data"),
            Seen::Event(Event::ModelChanged { model, attr, .. }) => (model.as_str(), attr.as_str()),
            Seen::Event(
                Event::ColumnDataChanged { model, .. }
                | Event::ColumnsStreamed { model, .. }
                | Event::ColumnsPatched { model, .. },
            ) => (model.as_str(), "data"),
            Seen::Event(Event::RootAdded { .. } | Event::RootRemoved { .. }) => {
                add(EVERYTHING.to_owned());
                continue;
            }
            Seen::Event(_) => continue,
        };
        if let Some(at) = graph.path_of(model) {
            add(slot(&at.path, attr));
        }
    }
    out
}

/// Adds `new` slots to `effects` (no duplicates; past [`MAX_EFFECTS`], everything).
/// Returns whether `effects` changed.
pub fn merge(effects: &mut Vec<String>, new: &[String]) -> bool {
    if effects.iter().any(|s| s == EVERYTHING) {
        return false;
    }
    let mut changed = false;
    for s in new {
        if s == EVERYTHING {
            *effects = vec![EVERYTHING.to_owned()];
            return true;
        }
        if !effects.contains(s) {
            effects.push(s.clone());
            changed = true;
        }
    }
    if effects.len() > MAX_EFFECTS {
        *effects = vec![EVERYTHING.to_owned()];
    }
    changed
}

/// True when the path or slot `inner` is `outer` or lies below it, segment by segment.
pub fn at_or_below(inner: &str, outer: &str) -> bool {
    outer.is_empty()
        || inner == outer
        || (inner.starts_with(outer) && inner.as_bytes().get(outer.len()) == Some(&b'/'))
}

/// True when an effect on slot `effect` can change what the model at `path` means: the slot
/// is an attribute of that model, or of a model above it.
pub fn reaches(effect: &str, path: &str) -> bool {
    let model = effect
        .rsplit_once('/')
        .map_or(EVERYTHING, |(model, _)| model);
    at_or_below(path, model)
}

/// The model paths an entry acts on: its target, and every model its value refers to.
pub fn targets(entry: &Entry) -> Vec<&str> {
    let mut out = Vec::new();
    let value = match entry {
        Entry::Change { path, value, .. } => {
            out.push(path.as_str());
            value
        }
        Entry::Event { path, values, .. } => {
            if let Some(p) = path {
                out.push(p.as_str());
            }
            values
        }
    };
    refs(value, &mut out);
    out
}

/// The `$path` of every stored reference in `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        Value::Object(map) => match map.get(PATH_KEY).and_then(Value::as_str) {
            Some(p) => out.push(p),
            None => map.values().for_each(|v| refs(v, out)),
        },
        _ => {}
    }
}

/// True when `entry` must wait for a step with these effects to have taken effect:
/// unknown effects always; known ones when they reach one of its targets.
pub fn depends(entry: &Entry, effects: Option<&[String]>) -> bool {
    let Some(effects) = effects else {
        return true;
    };
    let targets = targets(entry);
    effects
        .iter()
        .any(|e| targets.iter().any(|t| reaches(e, t)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(path: &str, value: Value) -> Entry {
        Entry::Change {
            path: path.into(),
            type_name: "Select".into(),
            anchor: None,
            attr: "value".into(),
            value,
        }
    }

    #[test]
    fn an_effect_reaches_its_model_and_everything_below_its_slot() {
        let b = "r0/children/1";
        assert!(
            reaches("r0/children/1/options", b),
            "another attribute of it"
        );
        assert!(reaches("r0/children/1/value", b));
        assert!(reaches("r0/children", b), "its parent's list was replaced");
        assert!(reaches("", b), "the whole document");
        assert!(
            !reaches("r0/children/10/value", b),
            "a sibling with a longer index"
        );
        assert!(!reaches("r0/children/1/source/data", b), "a model below it");
        assert!(
            reaches("r0/children/1/source/data", "r0/children/1/source/selected"),
            "new data under a selection"
        );
        assert!(!reaches("r0/children/2/value", b));
    }

    #[test]
    fn a_step_depends_on_effects_that_reach_its_target_or_its_references() {
        let step = change("r0/children/1", json!("y2"));
        assert!(depends(&step, None), "unknown effects: wait");
        assert!(!depends(&step, Some(&[])));
        assert!(depends(&step, Some(&["r0/children/1/options".into()])));
        assert!(!depends(&step, Some(&["r0/children/0/value".into()])));
        let with_ref = change(
            "r0/children/1",
            json!([{"$path": "r0/children/3/children/0", "$type": "Figure"}]),
        );
        assert!(depends(&with_ref, Some(&["r0/children/3/children".into()])));
    }

    #[test]
    fn merging_is_bounded_and_everything_absorbs_the_rest() {
        let mut e = vec!["a/x".to_owned()];
        assert!(!merge(&mut e, &["a/x".into()]));
        assert!(merge(&mut e, &["b/y".into()]));
        let many: Vec<String> = (0..MAX_EFFECTS).map(|i| format!("m{i}/v")).collect();
        assert!(merge(&mut e, &many));
        assert_eq!(e, vec![EVERYTHING.to_owned()]);
        assert!(!merge(&mut e, &["c/z".into()]));
    }
}
