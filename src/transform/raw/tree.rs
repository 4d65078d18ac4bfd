//! Field rules on the raw walk. Only the objects (and arrays) that a rule reaches are kept as
//! nodes; everything else is written once, as JSON bytes, by the walk, and copied at the end.
//! The rules run in the order and with the semantics of [`crate::transform::FieldRules::apply`]
//! (`fields.rs`), on these nodes instead of `serde_json::Value`s.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use mongodb::bson::{DateTime, RawBsonRef, RawDocument};
use serde_json::Value;

use super::walk::{write_json, Invalid, Seg, Walk};
use crate::transform::bson_to_json as reference;
use crate::transform::{AddedValue, FieldRules};

/// A converted value: JSON bytes already written (in the scratch buffer), or an object or array
/// kept apart because a rule reaches into it.
#[derive(Debug, Clone)]
pub(super) enum Node<'a> {
    Json(Range<usize>),
    Null,
    Object(Entries<'a>),
    Array(Vec<Node<'a>>),
}

pub(super) type Entries<'a> = Vec<(Cow<'a, str>, Node<'a>)>;

/// The field rules, split into path segments once per collection.
#[derive(Debug, Default)]
pub(super) struct Plan {
    include: Vec<Vec<String>>,
    exclude: Vec<Vec<String>>,
    rename: Vec<(Vec<String>, Vec<String>)>,
    add: Vec<(Vec<String>, AddedValue)>,
    flatten: Option<String>,
    /// The paths include, exclude and add reach through: objects and arrays there become nodes.
    reach: Trie,
    /// Renames move values between any paths, and flattening opens every object: then every
    /// object outside arrays becomes a node.
    every_object: bool,
}

#[derive(Debug, Default)]
struct Trie {
    children: Vec<(String, Trie)>,
}

impl Trie {
    fn insert(&mut self, path: &[String]) {
        if let [first, rest @ ..] = path {
            let i = match self.children.iter().position(|(key, _)| key == first) {
                Some(i) => i,
                None => {
                    self.children.push((first.clone(), Trie::default()));
                    self.children.len() - 1
                }
            };
            self.children[i].1.insert(rest);
        }
    }

    fn child(&self, key: &str) -> Option<&Trie> {
        self.children.iter().find(|(k, _)| k == key).map(|(_, t)| t)
    }
}

fn opens(trie: Option<&Trie>) -> bool {
    trie.is_some_and(|t| !t.children.is_empty())
}

fn split(path: &str) -> Vec<String> {
    path.split('.').map(str::to_owned).collect()
}

impl Plan {
    pub fn new(rules: &FieldRules) -> Plan {
        let mut plan = Plan {
            include: rules.include.iter().map(|p| split(p)).collect(),
            exclude: rules.exclude.iter().map(|p| split(p)).collect(),
            rename: rules.rename.iter().map(|(from, to)| (split(from), split(to))).collect(),
            add: rules.add.iter().map(|(path, value)| (split(path), value.clone())).collect(),
            flatten: rules.flatten.clone(),
            reach: Trie::default(),
            every_object: !rules.rename.is_empty() || rules.flatten.is_some(),
        };
        for path in plan.include.iter().chain(&plan.exclude).chain(plan.add.iter().map(|(p, _)| p)) {
            plan.reach.insert(path);
        }
        plan
    }

    /// The top-level fields of `doc` (its `_id` apart, then added under `keep_id_as`), as nodes
    /// where a rule reaches; and the `_id`.
    pub fn root<'a>(&'a self, walk: &mut Walk<'a, '_>, scratch: &mut Vec<u8>, doc: &'a RawDocument) -> Result<(Entries<'a>, Option<RawBsonRef<'a>>), Invalid> {
        let mut entries = Entries::new();
        let mut id = None;
        let mark = walk.begin_object();
        for item in doc.iter_elements() {
            let (key, value) = walk.element(item)?;
            walk.seen_key(key);
            walk.path.push(Seg::Key(key));
            if key == "_id" {
                walk.validate(value)?;
                id = Some(value);
            } else {
                self.entry(walk, scratch, &mut entries, key, value, Some(&self.reach))?;
            }
            walk.path.pop();
        }
        walk.end_object(mark);
        if let (Some(field), Some(id)) = (&walk.opts.keep_id_as, id) {
            walk.path.push(Seg::Key(field));
            if let Some(node) = self.node(walk, scratch, id, self.reach.child(field), self.every_object)? {
                match entries.iter().position(|(k, _)| k == field) {
                    Some(i) => {
                        entries[i].1 = node;
                        walk.warn(reference::ID_OVERWRITTEN.to_owned());
                    }
                    None => entries.push((Cow::Borrowed(field.as_str()), node)),
                }
            }
            walk.path.pop();
        }
        Ok((entries, id))
    }

    /// Converts one field of an object (the walk's path ends at it) into `entries`.
    fn entry<'a>(
        &'a self,
        walk: &mut Walk<'a, '_>,
        scratch: &mut Vec<u8>,
        entries: &mut Entries<'a>,
        key: &'a str,
        value: RawBsonRef<'a>,
        parent: Option<&'a Trie>,
    ) -> Result<(), Invalid> {
        if let Some(node) = self.node(walk, scratch, value, parent.and_then(|t| t.child(key)), self.every_object)? {
            if reference::is_rejected_key(key) {
                walk.warn(reference::rejected_key(key));
            }
            entries.push((Cow::Borrowed(key), node));
        }
        Ok(())
    }

    /// One value as a node (`None`: dropped), opened where `reach` goes on below it.
    fn node<'a>(
        &'a self,
        walk: &mut Walk<'a, '_>,
        scratch: &mut Vec<u8>,
        value: RawBsonRef<'a>,
        reach: Option<&'a Trie>,
        every_object: bool,
    ) -> Result<Option<Node<'a>>, Invalid> {
        match value {
            RawBsonRef::Document(doc) if every_object || opens(reach) => {
                walk.check_depth()?;
                let mut entries = Entries::new();
                let mark = walk.begin_object();
                for item in doc.iter_elements() {
                    let (key, value) = walk.element(item)?;
                    walk.seen_key(key);
                    walk.path.push(Seg::Key(key));
                    self.entry(walk, scratch, &mut entries, key, value, reach)?;
                    walk.path.pop();
                }
                walk.end_object(mark);
                Ok(Some(Node::Object(entries)))
            }
            // Include and exclude reach into arrays (renames, additions and flattening do not).
            RawBsonRef::Array(items) if opens(reach) => {
                walk.check_depth()?;
                let mut nodes = Vec::new();
                for (i, item) in walk.array_doc(items)?.iter_elements().enumerate() {
                    let (_, value) = walk.element(item)?;
                    walk.path.push(Seg::Index(i));
                    nodes.push(self.node(walk, scratch, value, reach, false)?.unwrap_or(Node::Null));
                    walk.path.pop();
                }
                Ok(Some(Node::Array(nodes)))
            }
            // Converted to `{"t": …, "i": …}`: an object for the rules too.
            RawBsonRef::Timestamp(ts) if every_object || opens(reach) => {
                let mut field = |key: &'static str, n: u32| {
                    let start = scratch.len();
                    write_json(scratch, &n);
                    (Cow::Borrowed(key), Node::Json(start..scratch.len()))
                };
                Ok(Some(Node::Object(vec![field("t", ts.time), field("i", ts.increment)])))
            }
            _ => {
                let start = scratch.len();
                let kept = walk.value(scratch, value)?;
                Ok(kept.then_some(Node::Json(start..scratch.len())))
            }
        }
    }

    /// Include, exclude, rename, add, flatten: as `FieldRules::apply_at`.
    pub fn apply<'a>(&'a self, entries: Entries<'a>, scratch: &mut Vec<u8>, now: DateTime) -> Entries<'a> {
        let mut entries = if self.include.is_empty() {
            entries
        } else {
            let paths: Vec<&[String]> = self.include.iter().map(Vec::as_slice).collect();
            match keep(Node::Object(entries), &paths) {
                Node::Object(kept) => kept,
                _ => Entries::new(),
            }
        };
        for path in &self.exclude {
            remove(&mut entries, path);
        }
        for (from, to) in &self.rename {
            if let Some(node) = take(&mut entries, from) {
                put(&mut entries, to, node);
            }
        }
        for (path, value) in &self.add {
            let node = match value {
                AddedValue::Constant(v) => constant(v, scratch),
                AddedValue::SyncedAt => {
                    let start = scratch.len();
                    write_json(scratch, &now.try_to_rfc3339_string().unwrap_or_default());
                    Node::Json(start..scratch.len())
                }
                // Every collection's rules went through `for_namespace` before it runs.
                AddedValue::Namespace | AddedValue::Database | AddedValue::Collection => continue,
            };
            put(&mut entries, path, node);
        }
        match &self.flatten {
            Some(separator) => {
                let mut flat = Flat::default();
                flat.extend("", separator, entries);
                flat.entries
            }
            None => entries,
        }
    }
}

/// The JSON text of `entries` as an object.
pub(super) fn write_object(out: &mut Vec<u8>, scratch: &[u8], entries: &Entries<'_>) {
    out.push(b'{');
    for (i, (key, node)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json(out, key.as_ref());
        out.push(b':');
        write_node(out, scratch, node);
    }
    out.push(b'}');
}

fn write_node(out: &mut Vec<u8>, scratch: &[u8], node: &Node<'_>) {
    match node {
        Node::Json(range) => out.extend_from_slice(&scratch[range.clone()]),
        Node::Null => out.extend_from_slice(b"null"),
        Node::Object(entries) => write_object(out, scratch, entries),
        Node::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_node(out, scratch, item);
            }
            out.push(b']');
        }
    }
}

/// An added constant: objects as nodes (later additions and flattening reach into them).
fn constant<'a>(value: &'a Value, scratch: &mut Vec<u8>) -> Node<'a> {
    match value {
        Value::Object(map) => Node::Object(map.iter().map(|(k, v)| (Cow::Borrowed(k.as_str()), constant(v, scratch))).collect()),
        other => {
            let start = scratch.len();
            write_json(scratch, other);
            Node::Json(start..scratch.len())
        }
    }
}

fn position(entries: &Entries<'_>, key: &str) -> Option<usize> {
    entries.iter().position(|(k, _)| k == key)
}

/// The parts of `node` that the paths reach; an empty path keeps everything below it.
fn keep<'a>(node: Node<'a>, paths: &[&[String]]) -> Node<'a> {
    if paths.iter().any(|p| p.is_empty()) {
        return node;
    }
    match node {
        Node::Object(entries) => Node::Object(
            entries
                .into_iter()
                .filter_map(|(key, child)| {
                    let tails: Vec<&[String]> = paths.iter().filter(|p| p[0] == key).map(|p| &p[1..]).collect();
                    if tails.is_empty() {
                        return None;
                    }
                    let whole = tails.iter().any(|t| t.is_empty());
                    let kept = keep(child, &tails);
                    // A path into a scalar reaches nothing: the field goes.
                    (whole || matches!(kept, Node::Object(_) | Node::Array(_))).then_some((key, kept))
                })
                .collect(),
        ),
        Node::Array(items) => Node::Array(items.into_iter().map(|item| keep(item, paths)).collect()),
        // Objects and arrays that a path goes into are nodes: this is a scalar.
        Node::Json(_) | Node::Null => Node::Null,
    }
}

fn remove(entries: &mut Entries<'_>, path: &[String]) {
    match path {
        [] => {}
        [last] => {
            if let Some(i) = position(entries, last) {
                entries.remove(i);
            }
        }
        [first, rest @ ..] => match position(entries, first).map(|i| &mut entries[i].1) {
            Some(Node::Object(child)) => remove(child, rest),
            Some(Node::Array(items)) => {
                for item in items {
                    if let Node::Object(child) = item {
                        remove(child, rest);
                    }
                }
            }
            _ => {}
        },
    }
}

fn take<'a>(entries: &mut Entries<'a>, path: &[String]) -> Option<Node<'a>> {
    match path {
        [] => None,
        [last] => position(entries, last).map(|i| entries.remove(i).1),
        [first, rest @ ..] => match position(entries, first).map(|i| &mut entries[i].1) {
            Some(Node::Object(child)) => take(child, rest),
            _ => None,
        },
    }
}

fn put<'a>(entries: &mut Entries<'a>, path: &'a [String], node: Node<'a>) {
    match path {
        [] => {}
        [last] => match position(entries, last) {
            Some(i) => entries[i].1 = node,
            None => entries.push((Cow::Borrowed(last.as_str()), node)),
        },
        [first, rest @ ..] => {
            let i = position(entries, first).unwrap_or_else(|| {
                entries.push((Cow::Borrowed(first.as_str()), Node::Object(Entries::new())));
                entries.len() - 1
            });
            let child = &mut entries[i].1;
            if !matches!(child, Node::Object(_)) {
                *child = Node::Object(Entries::new());
            }
            if let Node::Object(child) = child {
                put(child, rest, node);
            }
        }
    }
}

/// Flattened fields: a later field with an already used name takes its value, at its place.
#[derive(Default)]
struct Flat<'a> {
    entries: Entries<'a>,
    index: HashMap<Cow<'a, str>, usize>,
}

impl<'a> Flat<'a> {
    fn extend(&mut self, prefix: &str, separator: &str, entries: Entries<'a>) {
        for (key, node) in entries {
            let name = if prefix.is_empty() { key } else { Cow::Owned(format!("{prefix}{separator}{key}")) };
            match node {
                Node::Object(child) if !child.is_empty() => self.extend(&name, separator, child),
                other => match self.index.get(&name) {
                    Some(&i) => self.entries[i].1 = other,
                    None => {
                        self.index.insert(name.clone(), self.entries.len());
                        self.entries.push((name, other));
                    }
                },
            }
        }
    }
}
