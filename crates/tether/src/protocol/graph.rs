//! The reference graph of one session's document: which model id sits at which
//! structural path from the roots, and with which type.
//!
//! Model ids are per-process counters, so the same widget has another id in another
//! session; its path (`r0/children/2/source/selected`) is what survives. A path is the
//! first place a depth-first walk from the roots reaches the model: roots in document
//! order, then each model's attributes **sorted by name** (not in wire order, so a path
//! does not depend on whether an attribute came in the first definition or a later
//! patch), then list indices, map keys and struct keys within a value. Segments are
//! `/`-separated with `%` and `/` escaped as `%25` and `%2F`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::value::RawValue;

use super::anchor::{push_pair, Names};
use super::event::{scan_patch, Event, Seen};
use super::walk::{escape_segment, members, names_a_model, ref_id, Def, Edge, Walk};
use super::ProtocolError;

/// The slot of attribute `attr` on the model at `path`: `path/attr`, the attribute escaped
/// as a path segment.
pub fn slot(path: &str, attr: &str) -> String {
    let mut out = String::with_capacity(path.len() + attr.len() + 1);
    out.push_str(path);
    out.push('/');
    escape_segment(attr, &mut out);
    out
}

/// Where a model is: its id in this session, its path and its type name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelAt {
    /// The model's id in this session (`p1065`).
    pub id: Arc<str>,
    /// Structural path from the roots (`r0/children/0/source/selected`).
    pub path: Arc<str>,
    /// Bokeh type name (`Selection`, `panel.models.widgets.Button`).
    pub type_name: Arc<str>,
}

/// One model as the graph knows it.
#[derive(Debug, Clone)]
struct Node {
    /// Type name, checked when a path is resolved in another session.
    type_name: Arc<str>,
    /// Per attribute (sorted), the references its value holds, in value order.
    attrs: BTreeMap<String, Vec<Edge>>,
    /// What names it for a person, for anchors; `None` for most models.
    names: Option<Box<Names>>,
}

/// The path index, derived from nodes and roots.
#[derive(Debug, Default)]
struct Index {
    /// Model id → its path.
    path_of: HashMap<Arc<str>, Arc<str>>,
    /// Path → model id.
    id_at: HashMap<Arc<str>, Arc<str>>,
}

/// The reference graph of one document. Paths are recomputed lazily after changes.
#[derive(Debug, Default)]
pub struct Graph {
    /// Every known model by id.
    nodes: HashMap<Arc<str>, Node>,
    /// Root model ids in document order; root `i` has path `r{i}`.
    roots: Vec<Arc<str>>,
    /// Paths, or `None` when a change made them stale.
    index: Option<Index>,
    /// Models reachable at the last recomputation, to decide when to drop the rest.
    reachable: usize,
    /// Models and references visited by path recomputations so far: the cost a caller
    /// may bound (the recorder does, so one patch cannot make it quadratic).
    work: u64,
}

impl Graph {
    /// An empty graph (no document yet).
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Build from PULL-DOC-REPLY content `{"doc":{"roots":[...], ...}}`. Models only
    /// reachable from `config` or `defs` get no path.
    pub fn from_pull_reply(content: &[u8]) -> Result<Graph, ProtocolError> {
        #[derive(serde::Deserialize)]
        struct Reply<'a> {
            /// The serialised document.
            #[serde(borrow)]
            doc: Doc<'a>,
        }
        #[derive(serde::Deserialize)]
        struct Doc<'a> {
            /// Root models, full definitions in document order.
            #[serde(borrow)]
            roots: Vec<&'a RawValue>,
        }
        let reply: Reply<'_> = serde_json::from_slice(content)
            .map_err(|e| ProtocolError::json("PULL-DOC-REPLY content", e))?;
        let mut graph = Graph::new();
        for root in reply.doc.roots {
            let id = graph.define_value(root)?;
            graph.roots.push(id);
        }
        Ok(graph)
    }

    /// Apply a PATCH-DOC from either side: the worker's, or a browser's (which can replace
    /// references too, and is not echoed back). The recorder applies the browser patches
    /// it records itself, event by event.
    pub fn apply_patch(&mut self, content: &[u8]) -> Result<(), ProtocolError> {
        self.apply_seen(&scan_patch(content)?)
    }

    /// Apply the events of one whole patch as [`scan_patch`] read them, in order. On error,
    /// the events before the failing one stay applied.
    pub fn apply_seen(&mut self, seen: &[Seen<'_>]) -> Result<(), ProtocolError> {
        for s in seen {
            match s {
                Seen::Event(event) => self.apply_event(event)?,
                // New data in a data source changes no reference.
                Seen::Columns { .. } => {}
                // The new value refers to no model: whatever the attribute held is gone.
                Seen::PlainChange { model, attr } => self.drop_references(model, attr),
            }
        }
        self.end_patch();
        Ok(())
    }

    /// Forgets what attribute `attr` of `model` referred to.
    fn drop_references(&mut self, model: &str, attr: &str) {
        if let Some(node) = self.nodes.get_mut(model) {
            if node.attrs.remove(attr).is_some() {
                self.index = None;
            }
        }
    }

    /// Apply one event. Call [`Graph::end_patch`] after the last event of a patch.
    pub(crate) fn apply_event(&mut self, event: &Event<'_>) -> Result<(), ProtocolError> {
        match event {
            Event::ModelChanged { model, attr, new } => self.model_changed(model, attr, new),
            Event::RootAdded { model } => {
                let id = self.define_value(model)?;
                self.roots.push(id);
                self.index = None;
                Ok(())
            }
            Event::RootRemoved { model } => {
                self.roots.retain(|r| **r != **model);
                self.index = None;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// At a patch boundary, drop models no longer reachable from the roots once they
    /// outnumber the reachable ones, so a long session's graph stays the document's size.
    /// (Bokeh re-sends a detached model in full if it is attached again.)
    pub(crate) fn end_patch(&mut self) {
        if self.nodes.len() > 2 * self.reachable + 256 {
            self.reindex();
            let index = self.index.get_or_insert_with(Index::default);
            self.nodes.retain(|id, _| index.path_of.contains_key(id));
        }
    }

    /// Where the model with this id is, if it is known and reachable from a root.
    pub fn path_of(&mut self, id: &str) -> Option<ModelAt> {
        let index = self.reindex();
        let (id, path) = index.path_of.get_key_value(id)?;
        let (id, path) = (id.clone(), path.clone());
        self.model_at(id, path)
    }

    /// Which model is at this path, if any.
    pub fn id_at(&mut self, path: &str) -> Option<ModelAt> {
        let index = self.reindex();
        let (path, id) = index.id_at.get_key_value(path)?;
        let (id, path) = (id.clone(), path.clone());
        self.model_at(id, path)
    }

    fn model_at(&self, id: Arc<str>, path: Arc<str>) -> Option<ModelAt> {
        let type_name = self.nodes.get(&id)?.type_name.clone();
        Some(ModelAt {
            id,
            path,
            type_name,
        })
    }

    /// Every reachable model, sorted by path (for diagnostics and tests).
    pub fn models(&mut self) -> Vec<ModelAt> {
        let ids: Vec<Arc<str>> = self.reindex().path_of.keys().cloned().collect();
        let mut all: Vec<ModelAt> = ids.iter().filter_map(|id| self.path_of(id)).collect();
        all.sort_by(|a, b| a.path.cmp(&b.path));
        all
    }

    /// The type name of a known model, reachable or not.
    pub fn type_of(&self, id: &str) -> Option<&str> {
        self.nodes.get(id).map(|n| &*n.type_name)
    }

    /// The anchor of the model at `path` (see [`super::anchor`]): `None` when neither it
    /// nor any model above it has a name.
    pub fn anchor_at(&mut self, path: &str) -> Option<String> {
        self.reindex();
        let index = self.index.as_ref()?;
        anchor(&self.nodes, index, path)
    }

    /// The one reachable model of this type whose anchor is `anchor`; `None` when there is
    /// none, or more than one.
    pub fn find_anchor(&mut self, type_name: &str, anchor_text: &str) -> Option<ModelAt> {
        self.reindex();
        let index = self.index.as_ref()?;
        let mut found = index.path_of.iter().filter(|(id, path)| {
            self.nodes
                .get(*id)
                .is_some_and(|n| *n.type_name == *type_name)
                && anchor(&self.nodes, index, path).as_deref() == Some(anchor_text)
        });
        let (id, path) = found.next()?;
        if found.next().is_some() {
            return None;
        }
        let (id, path) = (id.clone(), path.clone());
        self.model_at(id, path)
    }

    /// Models and references visited by path recomputations over the graph's life.
    pub fn reindex_work(&self) -> u64 {
        self.work
    }

    /// Number of models known (reachable or not yet dropped).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no model is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Root ids in document order.
    pub fn roots(&self) -> impl Iterator<Item = &str> {
        self.roots.iter().map(|r| &**r)
    }

    /// A model's attribute got a new value: replace that attribute's edges.
    fn model_changed(
        &mut self,
        model: &str,
        attr: &str,
        new: &RawValue,
    ) -> Result<(), ProtocolError> {
        let Some(node) = self.nodes.get_mut(model) else {
            return Ok(());
        };
        if Names::names_attribute(attr) {
            node.names = Names::changed(node.names.take(), attr, new);
        }
        if !names_a_model(new.get()) {
            // The common case (a scalar, or columns of numbers): whatever the attribute
            // referred to before is gone, and the value is not walked.
            self.drop_references(model, attr);
            return Ok(());
        }
        let mut walk = Walk::default();
        walk.value(new, &mut String::new(), 0)?;
        let edges = std::mem::take(&mut walk.edges);
        let defined = !walk.defs.is_empty();
        self.define_all(walk.defs)?;
        if let Some(node) = self.nodes.get_mut(model) {
            let old = node.attrs.get(attr).map_or(&[][..], Vec::as_slice);
            if !defined && old == edges.as_slice() {
                return Ok(()); // same references as before: every path still holds
            }
            if edges.is_empty() {
                node.attrs.remove(attr);
            } else {
                node.attrs.insert(attr.to_owned(), edges);
            }
        }
        self.index = None;
        Ok(())
    }

    /// Register a root value (a full definition or a reference); returns its id.
    fn define_value(&mut self, value: &RawValue) -> Result<Arc<str>, ProtocolError> {
        let mut walk = Walk::default();
        walk.value(value, &mut String::new(), 0)?;
        let id = match walk.edges.first() {
            Some(edge) if edge.rel.is_empty() => edge.child.clone(),
            _ => ref_id(value)?,
        };
        self.define_all(walk.defs)?;
        self.index = None;
        Ok(self.intern(&id))
    }

    /// Register full definitions, and the ones nested in their attributes (worklist,
    /// so nesting of models does not nest calls).
    fn define_all<'a>(&mut self, mut work: Vec<Def<'a>>) -> Result<(), ProtocolError> {
        while let Some(def) = work.pop() {
            let mut attrs = BTreeMap::new();
            let mut names = None;
            if let Some(raw) = def.attributes {
                let members = members(raw)?;
                names = Names::of_attributes(&members);
                for (name, value) in members {
                    let mut walk = Walk::default();
                    walk.value(value, &mut String::new(), def.depth + 1)?;
                    work.append(&mut walk.defs);
                    if !walk.edges.is_empty() {
                        attrs.insert(name, walk.edges);
                    }
                }
            }
            let id = self.intern(&def.id);
            let type_name = Arc::from(def.type_name);
            self.nodes.insert(
                id,
                Node {
                    type_name,
                    attrs,
                    names,
                },
            );
        }
        Ok(())
    }

    /// The shared `Arc` for a known id, or a new one.
    fn intern(&self, id: &str) -> Arc<str> {
        self.nodes
            .get_key_value(id)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| Arc::from(id))
    }

    /// Recompute paths if stale: depth-first from the roots, first visit wins.
    fn reindex(&mut self) -> &Index {
        if self.index.is_none() {
            let mut index = Index::default();
            // Reversed so the stack pops in document order.
            let mut stack: Vec<(&str, String)> = self
                .roots
                .iter()
                .enumerate()
                .rev()
                .map(|(i, id)| (&**id, format!("r{i}")))
                .collect();
            // Every root and edge is pushed once, so the pops are the whole cost.
            let mut visited: u64 = 0;
            while let Some((id, path)) = stack.pop() {
                visited += 1;
                let Some((id, node)) = self.nodes.get_key_value(id) else {
                    continue;
                };
                if index.path_of.contains_key(id) {
                    continue;
                }
                for (attr, edges) in node.attrs.iter().rev() {
                    for edge in edges.iter().rev() {
                        let mut child =
                            String::with_capacity(path.len() + attr.len() + edge.rel.len() + 2);
                        child.push_str(&path);
                        child.push('/');
                        escape_segment(attr, &mut child);
                        if !edge.rel.is_empty() {
                            child.push('/');
                            child.push_str(&edge.rel);
                        }
                        stack.push((&edge.child, child));
                    }
                }
                let path: Arc<str> = Arc::from(path);
                index.path_of.insert(id.clone(), path.clone());
                index.id_at.insert(path, id.clone());
            }
            self.reachable = index.path_of.len();
            self.work += visited;
            self.index = Some(index);
        }
        self.index.get_or_insert_with(Index::default)
    }
}

/// The anchor of the model at `path`, from an up-to-date index.
fn anchor(nodes: &HashMap<Arc<str>, Node>, index: &Index, path: &str) -> Option<String> {
    let node = nodes.get(index.id_at.get(path)?)?;
    let own = label(nodes, index, node, path);
    // The nearest ancestor with a name: the longest prefix of the path that is a model's.
    let mut above = path;
    let named = loop {
        let Some((prefix, _)) = above.rsplit_once('/') else {
            break None;
        };
        above = prefix;
        let named = index
            .id_at
            .get(above)
            .and_then(|id| nodes.get(id))
            .is_some_and(|n| label(nodes, index, n, above).is_some());
        if named {
            break Some(above);
        }
    };
    let mut out = String::from(&*node.type_name);
    match (own, named) {
        (Some(own), _) => {
            out.push('[');
            out.push_str(&own);
            out.push(']');
        }
        (None, Some(ancestor)) => {
            out.push('@');
            out.push_str(&path[ancestor.len() + 1..]);
        }
        (None, None) => return None,
    }
    if let Some(ancestor) = named.and_then(|p| anchor(nodes, index, p)) {
        out.push_str(" in ");
        out.push_str(&ancestor);
    }
    Some(out)
}

/// A model's own names as an anchor lists them; a Panel Card is named by its header's title.
fn label(
    nodes: &HashMap<Arc<str>, Node>,
    index: &Index,
    node: &Node,
    path: &str,
) -> Option<String> {
    let mut own = node.names.as_ref().and_then(|n| n.label());
    if node.type_name.ends_with("layout.Card") {
        let title = format!("{path}/children/0/children/0");
        let text = index
            .id_at
            .get(title.as_str())
            .and_then(|id| nodes.get(id))
            .and_then(|n| n.names.as_ref())
            .and_then(|n| n.title_text());
        if let Some(text) = text {
            push_pair(own.get_or_insert_with(String::new), "header", text);
        }
    }
    own
}

#[cfg(test)]
#[path = "graph_tests.rs"]
mod tests;
