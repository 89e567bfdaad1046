//! Finding model references inside serialised Bokeh values without building JSON trees.
//!
//! Values stay as [`RawValue`] slices: an array or object is only split into its
//! members when its text contains a `{` (nothing else can hold a reference), and typed
//! leaves such as `ndarray` or `bytes` are never entered. Column data of megabytes is
//! therefore scanned, not parsed into a tree.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use super::ProtocolError;

/// Deepest nesting followed inside one document or patch. Bokeh values are shallow; a
/// limit turns hostile nesting into an error instead of a stack overflow.
pub(crate) const MAX_DEPTH: usize = 100;

/// Typed values (`{"type": ...}`) that never contain model references.
const LEAF_TYPES: &[&str] = &[
    "ndarray",
    "bytes",
    "typed_array",
    "number",
    "symbol",
    "slice",
    "date",
];

/// A reference from inside an attribute value to a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Edge {
    /// Path segments from the attribute to the reference, `/`-joined (`""` when the
    /// attribute holds the reference itself, `"2"` for the third list element, ...).
    pub rel: String,
    /// The referenced model's id.
    pub child: String,
}

/// A model written in full, `{"type":"object","name":..,"id":..,"attributes":{..}}`.
#[derive(Debug)]
pub(crate) struct Def<'a> {
    /// The model's id.
    pub id: String,
    /// The model's type name (`Selection`, `panel.models.tabulator.DataTabulator`).
    pub type_name: String,
    /// The raw `attributes` object, if present (absent when all are defaults).
    pub attributes: Option<&'a RawValue>,
    /// Nesting depth at which it was found, so depth limits span definitions.
    pub depth: usize,
}

/// Collects the edges of one value and the definitions nested in it.
#[derive(Debug, Default)]
pub(crate) struct Walk<'a> {
    /// References found, in document order.
    pub edges: Vec<Edge>,
    /// Full model definitions found; their own attributes are not walked yet.
    pub defs: Vec<Def<'a>>,
}

/// Escape a path segment so `/` only ever separates segments.
pub(crate) fn escape_segment(seg: &str, out: &mut String) {
    for c in seg.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
}

/// Parse a raw JSON object into its members (sorted by key; duplicates keep the last).
pub(crate) fn members(raw: &RawValue) -> Result<BTreeMap<String, &RawValue>, ProtocolError> {
    serde_json::from_str(raw.get()).map_err(|e| ProtocolError::json("model value", e))
}

/// Whether serialised value `json` may define or refer to a model: every definition and every
/// reference has an `"id"` key, so a value without one (a data source's columns, megabytes of
/// numbers) names none and need not be walked.
pub(crate) fn names_a_model(json: &str) -> bool {
    json.contains("\"id\"")
}

/// A member that must be a string, or `None`.
pub(crate) fn string_member(map: &BTreeMap<String, &RawValue>, key: &str) -> Option<String> {
    map.get(key)
        .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
}

/// The id of a bare reference `{"id": ...}` or `{"type":"ref","id": ...}`.
pub(crate) fn ref_id(raw: &RawValue) -> Result<String, ProtocolError> {
    let map = members(raw)?;
    string_member(&map, "id")
        .ok_or_else(|| ProtocolError::shape("model reference", "no string \"id\""))
}

impl<'a> Walk<'a> {
    /// Walk one value found at `rel` (relative to its attribute) at nesting `depth`.
    pub fn value(
        &mut self,
        raw: &'a RawValue,
        rel: &mut String,
        depth: usize,
    ) -> Result<(), ProtocolError> {
        if depth > MAX_DEPTH {
            return Err(ProtocolError::TooDeep(MAX_DEPTH));
        }
        let text = raw.get();
        if !text.contains('{') {
            return Ok(()); // scalars and arrays of scalars hold no references
        }
        match text.as_bytes().first() {
            Some(b'[') => {
                let items: Vec<&'a RawValue> = serde_json::from_str(text)
                    .map_err(|e| ProtocolError::json("model value", e))?;
                self.list(&items, rel, depth)
            }
            Some(b'{') => self.object(raw, rel, depth),
            _ => Ok(()),
        }
    }

    /// Walk list elements, each under its index.
    fn list(
        &mut self,
        items: &[&'a RawValue],
        rel: &mut String,
        depth: usize,
    ) -> Result<(), ProtocolError> {
        for (i, item) in items.iter().enumerate() {
            let len = push_segment(rel, &i.to_string());
            self.value(item, rel, depth + 1)?;
            rel.truncate(len);
        }
        Ok(())
    }

    /// Walk a JSON object: a model, a reference, a typed value or a plain struct.
    fn object(
        &mut self,
        raw: &'a RawValue,
        rel: &mut String,
        depth: usize,
    ) -> Result<(), ProtocolError> {
        let map: BTreeMap<String, &'a RawValue> =
            serde_json::from_str(raw.get()).map_err(|e| ProtocolError::json("model value", e))?;
        match string_member(&map, "type").as_deref() {
            Some("object") => match string_member(&map, "id") {
                Some(id) => {
                    self.edges.push(Edge {
                        rel: rel.clone(),
                        child: id.clone(),
                    });
                    let type_name = string_member(&map, "name").ok_or_else(|| {
                        ProtocolError::shape("model definition", format!("{id} has no \"name\""))
                    })?;
                    let attributes = map.get("attributes").copied();
                    self.defs.push(Def {
                        id,
                        type_name,
                        attributes,
                        depth: depth + 1,
                    });
                    Ok(())
                }
                // A dataclass-like object without identity: its fields are plain values.
                None => match map.get("attributes") {
                    Some(attrs) => self.value(attrs, rel, depth + 1),
                    None => Ok(()),
                },
            },
            Some("ref") => {
                let id = string_member(&map, "id")
                    .ok_or_else(|| ProtocolError::shape("model reference", "no id"))?;
                self.edges.push(Edge {
                    rel: rel.clone(),
                    child: id,
                });
                Ok(())
            }
            Some("map") => self.map_entries(map.get("entries").copied(), rel, depth),
            Some("array") | Some("set") => match map.get("entries") {
                Some(entries) => self.value(entries, rel, depth + 1),
                None => Ok(()),
            },
            Some(t) if LEAF_TYPES.contains(&t) => Ok(()),
            Some(_) => self.fields(&map, rel, depth, true),
            None => match string_member(&map, "id") {
                Some(id) => {
                    self.edges.push(Edge {
                        rel: rel.clone(),
                        child: id,
                    });
                    Ok(())
                }
                None => self.fields(&map, rel, depth, false),
            },
        }
    }

    /// Walk `{"type":"map","entries":[[k, v], ...]}`, each value under its key.
    fn map_entries(
        &mut self,
        entries: Option<&'a RawValue>,
        rel: &mut String,
        depth: usize,
    ) -> Result<(), ProtocolError> {
        let Some(entries) = entries else {
            return Ok(());
        };
        if !entries.get().contains('{') {
            return Ok(());
        }
        let pairs: Vec<(&'a RawValue, &'a RawValue)> = serde_json::from_str(entries.get())
            .map_err(|e| ProtocolError::json("map entries", e))?;
        for (key, value) in pairs {
            let key =
                serde_json::from_str::<String>(key.get()).unwrap_or_else(|_| key.get().to_owned());
            let len = push_segment(rel, &key);
            self.value(value, rel, depth + 1)?;
            rel.truncate(len);
        }
        Ok(())
    }

    /// Walk the members of a plain or unknown typed object, each under its key.
    fn fields(
        &mut self,
        map: &BTreeMap<String, &'a RawValue>,
        rel: &mut String,
        depth: usize,
        skip_type: bool,
    ) -> Result<(), ProtocolError> {
        for (key, value) in map {
            if skip_type && key == "type" {
                continue;
            }
            let len = push_segment(rel, key);
            self.value(value, rel, depth + 1)?;
            rel.truncate(len);
        }
        Ok(())
    }
}

/// Append `/seg` (or `seg` when `rel` is empty), escaped; returns the old length.
fn push_segment(rel: &mut String, seg: &str) -> usize {
    let len = rel.len();
    if !rel.is_empty() {
        rel.push('/');
    }
    escape_segment(seg, rel);
    len
}
