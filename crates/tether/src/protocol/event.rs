//! PATCH-DOC content: parsing `{"events":[...]}` into events and writing it back.
//!
//! Values stay as borrowed [`RawValue`] slices of the content, so column data is never
//! parsed into a tree and what is not modified is written back byte for byte.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;

use super::anchor::Names;
use super::walk::{members, names_a_model, ref_id, string_member};
use super::ProtocolError;

/// One document event of a PATCH-DOC, borrowing from the message content.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// An attribute of a model got a new value.
    ModelChanged {
        /// Id of the changed model.
        model: String,
        /// Attribute name.
        attr: String,
        /// The serialised new value (may define or reference models).
        new: &'a RawValue,
    },
    /// A message outside the document state; `bokeh_event` carries UI events.
    MessageSent {
        /// `bokeh_event` or an extension's own type.
        msg_type: String,
        /// The payload; for `bokeh_event` see [`BokehEvent`].
        msg_data: &'a RawValue,
    },
    /// A model became a root; `model` is its full definition or a reference.
    RootAdded {
        /// The serialised root model.
        model: &'a RawValue,
    },
    /// A root was removed.
    RootRemoved {
        /// Id of the removed root.
        model: String,
    },
    /// The document title changed.
    TitleChanged {
        /// The new title.
        title: String,
    },
    /// A ColumnDataSource's data was replaced (columns only, no references).
    ColumnDataChanged {
        /// Id of the data source.
        model: String,
        /// The whole event, to relay as it came.
        raw: &'a RawValue,
    },
    /// Rows were streamed into a data source.
    ColumnsStreamed {
        /// Id of the data source.
        model: String,
        /// The whole event, to relay as it came.
        raw: &'a RawValue,
    },
    /// Cells of a data source were patched.
    ColumnsPatched {
        /// Id of the data source.
        model: String,
        /// The whole event, to relay as it came.
        raw: &'a RawValue,
    },
    /// An event kind this crate does not know.
    Other {
        /// The event's `kind`.
        kind: String,
        /// The whole event, to relay as it came.
        raw: &'a RawValue,
    },
}

/// A `MessageSent` with `msg_type: "bokeh_event"`, as BokehJS writes it:
/// `{"type":"event","name":"button_click","values":{"type":"map","entries":[["model",{"id":..}]]}}`.
#[derive(Debug, Clone)]
pub struct BokehEvent<'a> {
    /// Event name (`button_click`, `menu_item_click`, `document_ready`, ...).
    pub name: String,
    /// The serialised values, a `map` (BokehJS encodes plain objects so).
    pub values: &'a RawValue,
    /// Id of the model the event came from (`values.model`), for model events.
    pub origin: Option<String>,
}

impl<'a> BokehEvent<'a> {
    /// Parse the `msg_data` of a `bokeh_event` message.
    pub fn parse(msg_data: &'a RawValue) -> Result<BokehEvent<'a>, ProtocolError> {
        let map = members(msg_data)?;
        let name = string_member(&map, "name")
            .ok_or_else(|| ProtocolError::shape("bokeh_event", "no \"name\""))?;
        let values = map
            .get("values")
            .copied()
            .ok_or_else(|| ProtocolError::shape("bokeh_event", "no \"values\""))?;
        let origin = origin_of(values)?;
        Ok(BokehEvent {
            name,
            values,
            origin,
        })
    }
}

/// The `model` entry of an event's values, if it is a reference.
fn origin_of(values: &RawValue) -> Result<Option<String>, ProtocolError> {
    if !values.get().starts_with('{') {
        return Ok(None);
    }
    let map = members(values)?;
    let model = match string_member(&map, "type").as_deref() {
        Some("map") => {
            let Some(entries) = map.get("entries") else {
                return Ok(None);
            };
            let pairs: Vec<(&RawValue, &RawValue)> = serde_json::from_str(entries.get())
                .map_err(|e| ProtocolError::json("bokeh_event values", e))?;
            pairs
                .into_iter()
                .find(|(k, _)| k.get() == "\"model\"")
                .map(|(_, v)| v)
        }
        _ => map.get("model").copied(),
    };
    match model {
        Some(m) if m.get().starts_with('{') => ref_id(m).map(Some),
        _ => Ok(None),
    }
}

/// A required member, or a shape error naming the event kind.
fn need<'a>(
    map: &BTreeMap<String, &'a RawValue>,
    kind: &str,
    key: &str,
) -> Result<&'a RawValue, ProtocolError> {
    map.get(key)
        .copied()
        .ok_or_else(|| ProtocolError::shape("PATCH-DOC event", format!("{kind} without \"{key}\"")))
}

/// A required string member.
fn need_str(
    map: &BTreeMap<String, &RawValue>,
    kind: &str,
    key: &str,
) -> Result<String, ProtocolError> {
    let raw = need(map, kind, key)?;
    serde_json::from_str(raw.get()).map_err(|_| {
        ProtocolError::shape("PATCH-DOC event", format!("{kind}.{key} is not a string"))
    })
}

/// Parse one event object.
fn parse_event(raw: &RawValue) -> Result<Event<'_>, ProtocolError> {
    let map = members(raw)?;
    let kind = need_str(&map, "event", "kind")?;
    Ok(match kind.as_str() {
        "ModelChanged" => Event::ModelChanged {
            model: ref_id(need(&map, &kind, "model")?)?,
            attr: need_str(&map, &kind, "attr")?,
            new: need(&map, &kind, "new")?,
        },
        "MessageSent" => Event::MessageSent {
            msg_type: need_str(&map, &kind, "msg_type")?,
            msg_data: need(&map, &kind, "msg_data")?,
        },
        "RootAdded" => Event::RootAdded {
            model: need(&map, &kind, "model")?,
        },
        "RootRemoved" => Event::RootRemoved {
            model: ref_id(need(&map, &kind, "model")?)?,
        },
        "TitleChanged" => Event::TitleChanged {
            title: need_str(&map, &kind, "title")?,
        },
        "ColumnDataChanged" => Event::ColumnDataChanged {
            model: ref_id(need(&map, &kind, "model")?)?,
            raw,
        },
        "ColumnsStreamed" => Event::ColumnsStreamed {
            model: ref_id(need(&map, &kind, "model")?)?,
            raw,
        },
        "ColumnsPatched" => Event::ColumnsPatched {
            model: ref_id(need(&map, &kind, "model")?)?,
            raw,
        },
        _ => Event::Other { kind, raw },
    })
}

/// The events of PATCH-DOC content `{"events":[...]}`, each left raw until parsed on its own.
/// Other top-level keys are ignored.
fn events_of(content: &[u8]) -> Result<Vec<&RawValue>, ProtocolError> {
    #[derive(serde::Deserialize)]
    struct Patch<'a> {
        #[serde(borrow)]
        events: Vec<&'a RawValue>,
    }
    let patch: Patch<'_> =
        serde_json::from_slice(content).map_err(|e| ProtocolError::json("PATCH-DOC content", e))?;
    Ok(patch.events)
}

/// Parse PATCH-DOC content `{"events":[...]}`. Other top-level keys are ignored.
pub fn parse_patch(content: &[u8]) -> Result<Vec<Event<'_>>, ProtocolError> {
    events_of(content)?.into_iter().map(parse_event).collect()
}

/// An event of a worker patch as [`scan_patch`] read it.
#[derive(Debug)]
pub enum Seen<'a> {
    /// Parsed in full.
    Event(Event<'a>),
    /// A big `ModelChanged` whose new value names no model (a data source's columns): only
    /// located, so that what the attribute referred to before can be dropped.
    PlainChange {
        /// Id of the changed model.
        model: &'a str,
        /// Attribute name.
        attr: &'a str,
    },
    /// A big `ColumnDataChanged`, `ColumnsStreamed` or `ColumnsPatched`: new data in a data
    /// source, which refers to no model; only its source is read.
    Columns {
        /// Id of the data source.
        model: &'a str,
    },
}

/// Events at least this long are first read from their head (see [`scan_patch`]).
pub const PLAIN_SCAN_BYTES: usize = 16 << 10;

/// Like [`parse_patch`], but each big event that can change no reference (new column data,
/// or an attribute set to a value naming no model) is read from its head alone: its value,
/// often megabytes of numbers, is parsed once (to split the events), not three times.
/// Everything else is parsed as `parse_patch` does.
pub fn scan_patch(content: &[u8]) -> Result<Vec<Seen<'_>>, ProtocolError> {
    events_of(content)?
        .into_iter()
        .map(|raw| match plain_event(raw.get()) {
            Some(seen) => Ok(seen),
            None => parse_event(raw).map(Seen::Event),
        })
        .collect()
}

/// A model id or attribute name as Bokeh writes them: nothing to unescape.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A big event read from its head as Bokeh writes it
/// (`{"kind":"ModelChanged","model":{"id":"p1"},"attr":"data","new":...}`, or a column event
/// `{"kind":"ColumnsStreamed","model":{"id":"p1"},...`), when it can change no reference.
/// Names (titles, labels) are left to the full parse, which reads them.
fn plain_event(event: &str) -> Option<Seen<'_>> {
    if event.len() < PLAIN_SCAN_BYTES {
        return None;
    }
    let rest = event.strip_prefix(r#"{"kind":""#)?;
    let (kind, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix(r#","model":{"id":""#)?;
    let (model, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix('}')?;
    if !plain_name(model) {
        return None;
    }
    match kind {
        "ColumnDataChanged" | "ColumnsStreamed" | "ColumnsPatched" => Some(Seen::Columns { model }),
        "ModelChanged" => {
            let (attr, rest) = rest.strip_prefix(r#","attr":""#)?.split_once('"')?;
            let value = rest.strip_prefix(r#","new":"#)?.strip_suffix('}')?;
            (plain_name(attr) && !Names::names_attribute(attr) && !names_a_model(value))
                .then_some(Seen::PlainChange { model, attr })
        }
        _ => None,
    }
}

/// `{"id": ...}`, how a known model is referred to.
#[derive(Serialize)]
pub(crate) struct Ref<'a> {
    /// The model id.
    pub id: &'a str,
}

/// Serialisable forms of the events, in BokehJS's key order.
#[derive(Serialize)]
#[serde(tag = "kind")]
enum Out<'a> {
    /// See [`Event::ModelChanged`].
    ModelChanged {
        model: Ref<'a>,
        attr: &'a str,
        new: &'a RawValue,
    },
    /// See [`Event::MessageSent`].
    MessageSent {
        msg_type: &'a str,
        msg_data: &'a RawValue,
    },
    /// See [`Event::RootAdded`].
    RootAdded { model: &'a RawValue },
    /// See [`Event::RootRemoved`].
    RootRemoved { model: Ref<'a> },
    /// See [`Event::TitleChanged`].
    TitleChanged { title: &'a str },
}

/// Write PATCH-DOC content for `events`.
pub fn build_patch(events: &[Event<'_>]) -> String {
    let mut out = String::from("{\"events\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_event(event, &mut out);
    }
    out.push_str("]}");
    out
}

/// PATCH-DOC content made of events already written as JSON (by [`event_json`]).
pub fn patch_of(events: &[String]) -> String {
    format!("{{\"events\":[{}]}}", events.join(","))
}

/// One event as PATCH-DOC JSON, in BokehJS's key order.
pub fn event_json(event: &Event<'_>) -> String {
    let mut out = String::new();
    write_event(event, &mut out);
    out
}

/// [`event_json`] into a buffer.
fn write_event(event: &Event<'_>, out: &mut String) {
    let typed = match event {
        Event::ModelChanged { model, attr, new } => Out::ModelChanged {
            model: Ref { id: model },
            attr,
            new,
        },
        Event::MessageSent { msg_type, msg_data } => Out::MessageSent { msg_type, msg_data },
        Event::RootAdded { model } => Out::RootAdded { model },
        Event::RootRemoved { model } => Out::RootRemoved {
            model: Ref { id: model },
        },
        Event::TitleChanged { title } => Out::TitleChanged { title },
        Event::ColumnDataChanged { raw, .. }
        | Event::ColumnsStreamed { raw, .. }
        | Event::ColumnsPatched { raw, .. }
        | Event::Other { raw, .. } => {
            out.push_str(raw.get());
            return;
        }
    };
    // Serialising strings and already-valid raw JSON cannot fail.
    out.push_str(&serde_json::to_string(&typed).unwrap_or_default());
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
