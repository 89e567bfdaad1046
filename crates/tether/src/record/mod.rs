//! State logs: recording a browser's changes by structural path, and turning them back
//! into replay steps for a fresh session. Pure: no I/O.

pub mod causal;
mod log;
mod policy;
mod replay;
mod translate;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::protocol::event::{parse_patch, BokehEvent, Event};
use crate::protocol::{Graph, ProtocolError};

pub use log::{Log, LogError, LogLimits, Step};
pub use policy::{Policy, PolicyError, DEFAULT_MAX_VALUE_BYTES};
pub use replay::{locate, relocate, step_event, step_message, step_patch, Moves};
pub use translate::{Skip, SkipReason, PATH_KEY, TYPE_KEY};

use translate::{ids_to_paths, Unrecordable};

/// One recorded user action. Persisted: the JSON form is stable
/// (`{"kind":"change",...}` / `{"kind":"event",...}`).
///
/// Model references inside values are stored as `{"$path": .., "$type": ..}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A `ModelChanged` from the browser: the user set an attribute.
    Change {
        /// Structural path of the changed model.
        path: String,
        /// Its type name, checked before replaying into another session.
        type_name: String,
        /// What names it for a person, to find it again when an edit of the app moved it
        /// (see [`Graph::anchor_at`]); absent when nothing names it, and in older logs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        anchor: Option<String>,
        /// The attribute.
        attr: String,
        /// The new value in Bokeh's serialised form.
        value: Value,
    },
    /// A `bokeh_event` from the browser (`button_click`, `menu_item_click`, ...).
    Event {
        /// Event name.
        name: String,
        /// Path of the model the event came from, for model events.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// Its type name, for model events.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        type_name: Option<String>,
        /// What names the model, for model events (as for a change).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        anchor: Option<String>,
        /// The event's serialised values (a `map`), including the `model` entry.
        values: Value,
    },
}

/// Parse a recorded value, translating references; `None` (and a debug log) if it
/// cannot be recorded.
fn value_for_log(raw: &RawValue, graph: &mut Graph, policy: &Policy, what: &str) -> Option<Value> {
    if raw.get().len() > policy.max_value_bytes {
        tracing::debug!(
            what,
            bytes = raw.get().len(),
            "not recorded: value over max_value_bytes"
        );
        return None;
    }
    let mut value: Value = match serde_json::from_str(raw.get()) {
        Ok(v) => v,
        Err(error) => {
            tracing::debug!(what, %error, "not recorded: value does not parse");
            return None;
        }
    };
    match ids_to_paths(&mut value, graph) {
        Ok(()) if names_secret(&value, policy) => {
            tracing::debug!(what, "not recorded: refers to a model that holds a secret");
            None
        }
        Ok(()) => Some(value),
        Err(Unrecordable::UnknownRef(id)) => {
            tracing::debug!(what, id, "not recorded: refers to a model with no path");
            None
        }
        Err(Unrecordable::NewModel(id)) => {
            tracing::debug!(what, id, "not recorded: defines a new model");
            None
        }
    }
}

/// Whether a recorded value refers to a model of a secret type.
fn names_secret(value: &Value, policy: &Policy) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|v| names_secret(v, policy)),
        Value::Object(map) => match map.get(TYPE_KEY).and_then(Value::as_str) {
            Some(t) if map.contains_key(PATH_KEY) => policy.is_secret(t),
            _ => map.values().any(|v| names_secret(v, policy)),
        },
        _ => false,
    }
}

/// The entry for one browser event, if it is recorded.
fn entry_for(
    graph: &mut Graph,
    event: &Event<'_>,
    policy: &Policy,
) -> Result<Option<Entry>, ProtocolError> {
    match event {
        Event::ModelChanged { model, attr, new } => {
            let Some(at) = graph.path_of(model) else {
                tracing::debug!(model, attr, "not recorded: model has no path");
                return Ok(None);
            };
            if !policy.records_change(&at.type_name, attr) {
                return Ok(None);
            }
            let Some(value) = value_for_log(new, graph, policy, attr) else {
                return Ok(None);
            };
            Ok(Some(Entry::Change {
                anchor: graph.anchor_at(&at.path),
                path: at.path.to_string(),
                type_name: at.type_name.to_string(),
                attr: attr.clone(),
                value,
            }))
        }
        Event::MessageSent { msg_type, msg_data } if msg_type == "bokeh_event" => {
            let event = BokehEvent::parse(msg_data)?;
            let origin = match &event.origin {
                Some(id) => match graph.path_of(id) {
                    Some(at) => Some(at),
                    None => {
                        tracing::debug!(
                            name = event.name,
                            id,
                            "not recorded: event origin has no path"
                        );
                        return Ok(None);
                    }
                },
                None => None,
            };
            if !policy.records_event(&event.name, origin.as_ref().map(|o| &*o.type_name)) {
                return Ok(None);
            }
            let Some(values) = value_for_log(event.values, graph, policy, &event.name) else {
                return Ok(None);
            };
            Ok(Some(Entry::Event {
                name: event.name,
                anchor: origin.as_ref().and_then(|o| graph.anchor_at(&o.path)),
                path: origin.as_ref().map(|o| o.path.to_string()),
                type_name: origin.map(|o| o.type_name.to_string()),
                values,
            }))
        }
        _ => Ok(None),
    }
}

/// Most models and references that recomputing paths may visit while recording one
/// patch. Each event that moves references makes the next lookup walk the whole graph,
/// so a patch of many such events would cost events × graph size; past this bound
/// (a fraction of a second) the rest of the patch is applied but not recorded.
pub const MAX_RECORD_WORK: u64 = 1 << 20;

/// Record a browser→server PATCH-DOC: the entries it yields under `policy`, in order.
///
/// Each event is translated with the graph as it was before that event, then applied
/// to the graph (the browser can replace references too), so callers must not apply
/// the same patch again. Changes to models with no known path, excluded ones, and
/// values that define new models are skipped. `ColumnDataChanged`, `ColumnsStreamed`
/// and `ColumnsPatched` from the browser (e.g. table cell edits) are not recorded.
/// Once translating has cost [`MAX_RECORD_WORK`], later events of the patch are
/// applied to the graph but not recorded.
pub fn record(
    graph: &mut Graph,
    content: &[u8],
    policy: &Policy,
) -> Result<Vec<Entry>, ProtocolError> {
    let events = parse_patch(content)?;
    let mut entries = Vec::new();
    let mut result = Ok(());
    let budget = graph.reindex_work().saturating_add(MAX_RECORD_WORK);
    let mut translating = true;
    for (i, event) in events.iter().enumerate() {
        if translating && graph.reindex_work() > budget {
            tracing::debug!(
                events = events.len() - i,
                "not recorded: the rest of a patch too costly to translate"
            );
            translating = false;
        }
        let entry = if translating {
            entry_for(graph, event, policy)
        } else {
            Ok(None)
        };
        match entry {
            Ok(Some(entry)) => entries.push(entry),
            Ok(None) => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        if let Err(e) = graph.apply_event(event) {
            result = Err(e);
            break;
        }
    }
    graph.end_patch();
    result.map(|()| entries)
}

#[cfg(test)]
mod fuzz_regressions;

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
