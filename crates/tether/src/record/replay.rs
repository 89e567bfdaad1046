//! Turning state log entries back into PATCH-DOC content for a fresh session, with
//! paths resolved to that session's model ids.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::protocol::event::{event_json, patch_of, Event};
use crate::protocol::{Graph, Message};

use super::translate::{paths_to_ids, to_bokeh_json, Skip};
use super::Entry;

/// `msg_data` of a `bokeh_event`, in BokehJS's key order.
#[derive(Serialize)]
struct EventData<'a> {
    /// Always `"event"`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// Event name.
    name: &'a str,
    /// Serialised values, references already translated.
    values: &'a RawValue,
}

/// Resolve the entry's own model and check its type.
fn resolve(graph: &mut Graph, path: &str, type_name: &str) -> Result<String, Skip> {
    let at = graph.id_at(path).ok_or_else(|| Skip::PathUnresolved {
        path: path.to_owned(),
    })?;
    if *at.type_name != *type_name {
        return Err(Skip::TypeDiffers {
            path: path.to_owned(),
            expected: type_name.to_owned(),
            found: at.type_name.to_string(),
        });
    }
    Ok(at.id.to_string())
}

/// Raw JSON of a value in Bokeh's key order.
fn raw(value: &serde_json::Value) -> Box<RawValue> {
    // A serialised Value is always valid JSON; fall back to null rather than panic.
    RawValue::from_string(to_bokeh_json(value)).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// PATCH-DOC content replaying `entry` in the session whose graph is `graph`.
///
/// A `Change` becomes one `ModelChanged`; an `Event` becomes the `MessageSent` that
/// BokehJS sends for it. The graph is only read: apply the patch to it as it is sent
/// ([`Graph::apply_patch`]) to keep it current.
pub fn step_patch(graph: &mut Graph, entry: &Entry) -> Result<String, Skip> {
    Ok(patch_of(&[step_event(graph, entry)?]))
}

/// The one PATCH-DOC event replaying `entry`, as JSON (see [`step_patch`]); several of them
/// make one patch with [`patch_of`].
pub fn step_event(graph: &mut Graph, entry: &Entry) -> Result<String, Skip> {
    match entry {
        Entry::Change {
            path,
            type_name,
            attr,
            value,
        } => {
            let id = resolve(graph, path, type_name)?;
            let mut value = value.clone();
            paths_to_ids(&mut value, graph)?;
            let new = raw(&value);
            Ok(event_json(&Event::ModelChanged {
                model: id,
                attr: attr.clone(),
                new: &new,
            }))
        }
        Entry::Event {
            name,
            path,
            type_name,
            values,
        } => {
            if let (Some(path), Some(type_name)) = (path, type_name) {
                resolve(graph, path, type_name)?;
            }
            let mut values = values.clone();
            paths_to_ids(&mut values, graph)?;
            let values = raw(&values);
            let data = EventData {
                kind: "event",
                name,
                values: &values,
            };
            let msg_data = serde_json::value::to_raw_value(&data)
                .unwrap_or_else(|_| RawValue::NULL.to_owned());
            Ok(event_json(&Event::MessageSent {
                msg_type: "bokeh_event".to_owned(),
                msg_data: &msg_data,
            }))
        }
    }
}

/// A whole PATCH-DOC message replaying `entry`, with the given message id.
pub fn step_message(graph: &mut Graph, entry: &Entry, msgid: &str) -> Result<Message, Skip> {
    Ok(Message::build(
        "PATCH-DOC",
        msgid,
        None,
        step_patch(graph, entry)?,
    ))
}
