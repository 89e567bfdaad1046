//! Turning state log entries back into PATCH-DOC content for a fresh session, with
//! paths resolved to that session's model ids.
//!
//! An entry's path is tried first. When it does not hold a model of the entry's type and
//! anchor (the app was edited: a widget inserted above it, or it was moved), the one model
//! with that anchor is used instead ([`relocate`]), and the move is kept in [`Moves`] so
//! references and recorded effects below the old path follow it.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::protocol::event::{event_json, patch_of, Event};
use crate::protocol::{Graph, Message};

use super::causal::at_or_below;
use super::translate::{paths_to_ids, to_bokeh_json, Skip};
use super::{Entry, PATH_KEY};

/// Recorded paths whose models were found elsewhere in this session, by anchor.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Moves {
    /// (recorded path, path in this session), one per recorded path.
    moved: Vec<(String, Arc<str>)>,
}

impl Moves {
    /// No moves.
    pub fn new() -> Moves {
        Moves::default()
    }

    /// A recorded path or slot as it is in this session: below the longest moved path that
    /// holds it, else unchanged.
    pub fn forward<'a>(&self, path: &'a str) -> Cow<'a, str> {
        let best = self
            .moved
            .iter()
            .filter(|(old, _)| at_or_below(path, old))
            .max_by_key(|(old, _)| old.len());
        match best {
            Some((old, new)) => Cow::Owned(format!("{new}{}", &path[old.len()..])),
            None => Cow::Borrowed(path),
        }
    }

    /// Whether no recorded path has moved.
    pub fn is_empty(&self) -> bool {
        self.moved.is_empty()
    }

    fn add(&mut self, old: &str, new: Arc<str>) {
        match self.moved.iter_mut().find(|(o, _)| o == old) {
            Some(entry) => entry.1 = new,
            None => self.moved.push((old.to_owned(), new)),
        }
    }
}

/// Where the model recorded at `path` is in this session: `path` itself when a model of
/// `type_name` and `anchor` sits there (any model of the type, for an entry with no anchor),
/// else the one model with that anchor (and the move is added to `moves`).
pub fn locate(
    graph: &mut Graph,
    moves: &mut Moves,
    path: &str,
    type_name: &str,
    anchor: Option<&str>,
) -> Result<Arc<str>, Skip> {
    let here = graph.id_at(path);
    if let Some(at) = &here {
        if *at.type_name == *type_name
            && anchor.is_none_or(|a| graph.anchor_at(path).as_deref() == Some(a))
        {
            return Ok(at.path.clone());
        }
    }
    if let Some(found) = anchor.and_then(|a| graph.find_anchor(type_name, a)) {
        moves.add(path, found.path.clone());
        return Ok(found.path);
    }
    // Its own name still matches where it was, and only something around it was renamed (a
    // title the app computes): by path, as before anchors.
    if let (Some(at), Some(a)) = (&here, anchor) {
        let now = graph.anchor_at(path);
        let own = |x: &str| x.split(" in ").next().map(str::to_owned);
        if *at.type_name == *type_name && now.as_deref().and_then(own) == own(a) {
            return Ok(at.path.clone());
        }
    }
    Err(match here {
        None => Skip::PathUnresolved {
            path: path.to_owned(),
        },
        Some(at) if *at.type_name != *type_name => Skip::TypeDiffers {
            path: path.to_owned(),
            expected: type_name.to_owned(),
            found: at.type_name.to_string(),
        },
        Some(_) => Skip::Renamed {
            path: path.to_owned(),
            anchor: anchor.unwrap_or_default().to_owned(),
        },
    })
}

/// `entry` with its target's path as it is in this session ([`locate`]), and the references in
/// its value moved along with [`Moves`].
pub fn relocate<'e>(
    graph: &mut Graph,
    moves: &mut Moves,
    entry: &'e Entry,
) -> Result<Cow<'e, Entry>, Skip> {
    let (path, type_name, anchor) = match entry {
        Entry::Change {
            path,
            type_name,
            anchor,
            ..
        } => (Some(path), Some(type_name), anchor),
        Entry::Event {
            path,
            type_name,
            anchor,
            ..
        } => (path.as_ref(), type_name.as_ref(), anchor),
    };
    let now = match (path, type_name) {
        (Some(path), Some(type_name)) => {
            Some(locate(graph, moves, path, type_name, anchor.as_deref())?)
        }
        _ => None,
    };
    let moved = now.as_deref().zip(path).is_some_and(|(n, p)| n != p);
    if !moved && moves.is_empty() {
        return Ok(Cow::Borrowed(entry));
    }
    let mut entry = entry.clone();
    let (path, value) = match &mut entry {
        Entry::Change { path, value, .. } => (Some(path), value),
        Entry::Event { path, values, .. } => (path.as_mut(), values),
    };
    if let (Some(path), Some(now)) = (path, now) {
        *path = now.to_string();
    }
    move_refs(value, moves);
    Ok(Cow::Owned(entry))
}

/// Moves every stored reference in `value` along with `moves`.
fn move_refs(value: &mut serde_json::Value, moves: &Moves) {
    use serde_json::Value;
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| move_refs(v, moves)),
        Value::Object(map) => match map.get_mut(PATH_KEY) {
            Some(Value::String(p)) => {
                if let Cow::Owned(moved) = moves.forward(p) {
                    *p = moved;
                }
            }
            _ => map.values_mut().for_each(|v| move_refs(v, moves)),
        },
        _ => {}
    }
}

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
            ..
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
            ..
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

#[cfg(test)]
#[path = "replay_tests.rs"]
mod tests;
