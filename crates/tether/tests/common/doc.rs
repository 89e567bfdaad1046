//! A test-side copy of a Bokeh document: every model by id, kept current from patches.

use std::collections::HashMap;

use serde_json::Value;

/// Models by id, as full JSON objects (`type`, `name`, `id`, `attributes`).
#[derive(Debug, Default, Clone)]
pub struct Doc {
    pub models: HashMap<String, Value>,
    pub roots: Vec<String>,
}

fn collect(v: &Value, out: &mut HashMap<String, Value>) {
    match v {
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str) == Some("object") {
                if let Some(id) = o.get("id").and_then(Value::as_str) {
                    out.insert(id.to_owned(), v.clone());
                }
            }
            for x in o.values() {
                collect(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
        _ => {}
    }
}

impl Doc {
    pub fn from_pull(content: &Value) -> Doc {
        let mut d = Doc::default();
        collect(&content["doc"], &mut d.models);
        d.roots = content["doc"]["roots"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        d
    }

    pub fn apply_patch(&mut self, content: &Value) {
        for e in content["events"].as_array().into_iter().flatten() {
            collect(e, &mut self.models);
            if e["kind"] == "ModelChanged" {
                let id = e["model"]["id"].as_str().unwrap_or_default();
                let attr = e["attr"].as_str().unwrap_or_default();
                if let Some(m) = self.models.get_mut(id) {
                    if !m["attributes"].is_object() {
                        m["attributes"] = Value::Object(Default::default());
                    }
                    m["attributes"][attr] = e["new"].clone();
                }
            }
        }
    }

    /// Models whose type name ends with `suffix`.
    pub fn of_type(&self, suffix: &str) -> Vec<&Value> {
        let mut v: Vec<&Value> = self
            .models
            .values()
            .filter(|m| {
                m["name"]
                    .as_str()
                    .is_some_and(|n| n == suffix || n.ends_with(&format!(".{suffix}")))
            })
            .collect();
        v.sort_by_key(|m| id_num(m["id"].as_str().unwrap_or("")));
        v
    }

    /// The one model of a type whose attribute `key` equals `value` (e.g. a widget's title).
    pub fn find(&self, suffix: &str, key: &str, value: &str) -> Option<&Value> {
        self.of_type(suffix)
            .into_iter()
            .find(|m| m["attributes"][key].as_str() == Some(value))
    }

    pub fn id_of(&self, suffix: &str, key: &str, value: &str) -> String {
        self.find(suffix, key, value)
            .unwrap_or_else(|| panic!("no {suffix} with {key}={value}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub fn get(&self, id: &str) -> &Value {
        &self.models[id]
    }

    /// An attribute of a model (Null when left at its default).
    pub fn attr(&self, id: &str, name: &str) -> Value {
        self.models
            .get(id)
            .map(|m| m["attributes"][name].clone())
            .unwrap_or(Value::Null)
    }

    /// Models of a type reachable from the roots now: what the browser shows, without the
    /// models a patch has replaced.
    pub fn shown(&self, suffix: &str) -> Vec<&Value> {
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(o) => match o.get("id").and_then(Value::as_str) {
                    // A model, by reference or in full: its current copy is in `models`; a
                    // nested full copy may be stale.
                    Some(id) => out.push(id.to_owned()),
                    None => o.values().for_each(|x| refs(x, out)),
                },
                Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
                _ => {}
            }
        }
        let mut seen = std::collections::HashSet::new();
        let mut todo: Vec<String> = self.roots.clone();
        while let Some(id) = todo.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            if let Some(m) = self.models.get(&id) {
                refs(&m["attributes"], &mut todo);
            }
        }
        let mut v: Vec<&Value> = self
            .of_type(suffix)
            .into_iter()
            .filter(|m| m["id"].as_str().is_some_and(|id| seen.contains(id)))
            .collect();
        v.sort_by_key(|m| id_num(m["id"].as_str().unwrap_or("")));
        v
    }

    /// The whole document as text, for "this never appears" checks.
    pub fn text(&self) -> String {
        serde_json::to_string(&self.models).unwrap()
    }

    /// The Tabulator's selected row indices (the first `Selection` model).
    pub fn selection(&self) -> Value {
        let id = self.of_type("Selection")[0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        self.attr(&id, "indices")
    }

    /// Texts of every `Title` model: HoloViews puts the overlay title there.
    pub fn titles(&self) -> Vec<String> {
        self.of_type("Title")
            .iter()
            .filter_map(|m| m["attributes"]["text"].as_str().map(str::to_owned))
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// Labels of every legend item.
    pub fn legend_labels(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .of_type("LegendItem")
            .iter()
            .filter_map(|m| {
                let l = &m["attributes"]["label"];
                l["value"].as_str().or(l.as_str()).map(str::to_owned)
            })
            .collect();
        v.sort();
        v
    }
}

fn id_num(id: &str) -> u64 {
    id.trim_start_matches('p').parse().unwrap_or(u64::MAX)
}
