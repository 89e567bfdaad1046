//! Model references inside recorded values: ids → paths when recording, paths → ids when
//! replaying, and writing values back in BokehJS's key order.
//!
//! A reference `{"id":"p1070"}` is stored as `{"$path":"r0/children/2","$type":"Slider"}`.
//! Bokeh's wire format never has plain JSON objects with `$`-keys (BokehJS writes plain
//! objects as `{"type":"map",...}`), so the marker cannot collide with user data.

use serde_json::{Map, Value};

use crate::protocol::Graph;

/// Key holding a reference's structural path.
pub const PATH_KEY: &str = "$path";
/// Key holding a reference's type name.
pub const TYPE_KEY: &str = "$type";

/// Why an entry was not replayed. Not an error: the app may have changed since.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// No model sits at the entry's path in this session.
    #[error("no model at {path}")]
    PathUnresolved {
        /// The recorded path.
        path: String,
    },
    /// A model sits at the path, but of another type (the app was edited).
    #[error("model at {path} is a {found}, the log has a {expected}")]
    TypeDiffers {
        /// The recorded path.
        path: String,
        /// The recorded type name.
        expected: String,
        /// The type name found now.
        found: String,
    },
    /// A model of the type sits at the path, but named otherwise, and no model has the
    /// recorded name (it was renamed, or removed and another took its place).
    #[error("model at {path} is not {anchor}, and no model is")]
    Renamed {
        /// The recorded path.
        path: String,
        /// The recorded anchor.
        anchor: String,
    },
    /// A model referenced inside the value has no counterpart in this session.
    #[error("value refers to {path}, which is not in this document")]
    RefUnresolved {
        /// The path the value refers to.
        path: String,
    },
}

impl Skip {
    /// The reason, as counted.
    pub fn reason(&self) -> SkipReason {
        match self {
            Skip::PathUnresolved { .. } => SkipReason::NoModel,
            Skip::TypeDiffers { .. } => SkipReason::TypeDiffers,
            Skip::Renamed { .. } => SkipReason::Renamed,
            Skip::RefUnresolved { .. } => SkipReason::RefUnresolved,
        }
    }
}

/// Why a recorded step was not applied where the user applied it, as counted in the restore
/// log line and `/.tether/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// No model at its path (the app changed).
    NoModel,
    /// A model of another type at its path (the app changed).
    TypeDiffers,
    /// A model its value refers to is not in the document.
    RefUnresolved,
    /// A model of its type at its path is named otherwise, and none has its name.
    Renamed,
    /// The worker answered ERROR.
    Refused,
    /// Its target was replaced after the step was applied, by nothing the recording foresaw.
    Replaced,
}

impl SkipReason {
    /// Every reason, in a fixed order.
    pub const ALL: [SkipReason; 6] = [
        SkipReason::NoModel,
        SkipReason::TypeDiffers,
        SkipReason::RefUnresolved,
        SkipReason::Renamed,
        SkipReason::Refused,
        SkipReason::Replaced,
    ];

    /// Its name in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NoModel => "no_model",
            SkipReason::TypeDiffers => "type_differs",
            SkipReason::RefUnresolved => "ref_unresolved",
            SkipReason::Renamed => "renamed",
            SkipReason::Refused => "refused",
            SkipReason::Replaced => "replaced",
        }
    }

    /// Its position in [`SkipReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a value could not be recorded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unrecordable {
    /// The value references a model with no known path.
    UnknownRef(String),
    /// The value defines a new model in full; its id would mean nothing in another session.
    NewModel(String),
}

/// Replace every model reference in `value` by its path and type.
pub(crate) fn ids_to_paths(value: &mut Value, graph: &mut Graph) -> Result<(), Unrecordable> {
    match value {
        Value::Array(items) => items.iter_mut().try_for_each(|v| ids_to_paths(v, graph)),
        Value::Object(map) => {
            let typ = map.get("type").and_then(Value::as_str);
            let id = map.get("id").and_then(Value::as_str).map(str::to_owned);
            match (typ, id) {
                (Some("object"), Some(id)) => Err(Unrecordable::NewModel(id)),
                (None | Some("ref"), Some(id)) => {
                    let at = graph.path_of(&id).ok_or(Unrecordable::UnknownRef(id))?;
                    *value = reference(&at.path, &at.type_name);
                    Ok(())
                }
                _ => map.values_mut().try_for_each(|v| ids_to_paths(v, graph)),
            }
        }
        _ => Ok(()),
    }
}

/// The stored form of a reference.
fn reference(path: &str, type_name: &str) -> Value {
    let mut map = Map::new();
    map.insert(PATH_KEY.to_owned(), Value::String(path.to_owned()));
    map.insert(TYPE_KEY.to_owned(), Value::String(type_name.to_owned()));
    Value::Object(map)
}

/// Replace every stored reference in `value` by the id now at its path, checking the type.
pub(crate) fn paths_to_ids(value: &mut Value, graph: &mut Graph) -> Result<(), Skip> {
    match value {
        Value::Array(items) => items.iter_mut().try_for_each(|v| paths_to_ids(v, graph)),
        Value::Object(map) => match map.get(PATH_KEY).and_then(Value::as_str) {
            Some(path) => {
                let at = graph.id_at(path).ok_or_else(|| Skip::RefUnresolved {
                    path: path.to_owned(),
                })?;
                let expected = map
                    .get(TYPE_KEY)
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if *at.type_name != *expected {
                    return Err(Skip::TypeDiffers {
                        path: path.to_owned(),
                        expected: expected.to_owned(),
                        found: at.type_name.to_string(),
                    });
                }
                let mut reference = Map::new();
                reference.insert("id".to_owned(), Value::String(at.id.to_string()));
                *value = Value::Object(reference);
                Ok(())
            }
            None => map.values_mut().try_for_each(|v| paths_to_ids(v, graph)),
        },
        _ => Ok(()),
    }
}

/// Write `value` as JSON with `"type"` first in every object, as BokehJS and Bokeh do
/// (`{"type":"map","entries":[...]}`); other keys follow in sorted order.
pub(crate) fn to_bokeh_json(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// [`to_bokeh_json`] into a buffer.
fn write(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(v, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            let typed = map.get_key_value("type");
            let rest = map.iter().filter(|(k, _)| k.as_str() != "type");
            for (i, (k, v)) in typed.into_iter().chain(rest).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // A string key always serialises.
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                write(v, out);
            }
            out.push('}');
        }
        // Scalars serialise without failing.
        scalar => out.push_str(&serde_json::to_string(scalar).unwrap_or_default()),
    }
}
