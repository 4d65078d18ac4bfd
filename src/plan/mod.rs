//! `plan` and `apply` of a definition: what exists (indices and their mappings, checkpoints, the
//! definition applied last) compared with what a sync's config asks for, as steps; `apply`
//! carries them out with the engine's zero-downtime re-copy (a new index, then an atomic alias
//! swap) and records the applied definition.

mod apply;
mod observe;

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use apply::apply;
pub use observe::observe;

use crate::config::{CollectionConfig, SyncConfig};
use crate::sink::elasticsearch::{IndexSetup, IndexState, SettingChange};

/// One thing `apply` would do for one collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Step {
    /// Not synced yet: its index is created (unless it exists) and its documents copied.
    Copy { namespace: String, index: String },
    /// The configured mappings add fields the index does not map: mapped in place.
    MapFields { namespace: String, index: String, fields: Vec<String> },
    /// Dynamic settings differ or the configured alias is missing (and perhaps fields are
    /// unmapped): changed in place (`PUT _settings`, `_aliases`, `PUT _mapping`).
    UpdateIndex { namespace: String, index: String, settings: Vec<SettingChange>, alias: Option<String>, fields: Vec<String> },
    /// Copied again into a new index, then the alias `index` moves to it in one step and the old
    /// index is dropped (readers never see a half-filled index).
    Recopy { namespace: String, index: String, reason: String },
    /// Synced before, no longer defined: its checkpoint is deleted (its index is kept).
    Remove { namespace: String },
    /// Nothing to do.
    Unchanged { namespace: String, index: String },
}

impl Step {
    /// Whether the step drops data or a position (an index replaced, a checkpoint deleted).
    pub fn destructive(&self) -> bool {
        matches!(self, Step::Recopy { .. } | Step::Remove { .. })
    }

    pub fn namespace(&self) -> &str {
        match self {
            Step::Copy { namespace, .. }
            | Step::MapFields { namespace, .. }
            | Step::UpdateIndex { namespace, .. }
            | Step::Recopy { namespace, .. }
            | Step::Remove { namespace }
            | Step::Unchanged { namespace, .. } => namespace,
        }
    }
}

/// The steps for one sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub name: String,
    pub steps: Vec<Step>,
    pub destructive: bool,
}

/// What exists of a sync.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Namespaces with a checkpoint of this sync.
    pub checkpoints: Vec<String>,
    /// Per namespace: the fingerprint of its rules when the definition was last applied.
    pub applied: BTreeMap<String, String>,
    /// Per configured collection's index: how it compares with the configured mappings.
    pub indices: BTreeMap<String, IndexState>,
    /// Per configured collection's existing index: how its settings and aliases compare.
    pub setups: BTreeMap<String, IndexSetup>,
}

/// What decides the documents' content in the index: a change of it needs a re-copy.
pub fn fingerprint(c: &CollectionConfig) -> String {
    let text = format!("{:?}|{:?}|{:?}|{:?}|{:?}", c.fields, c.filter, c.convert, c.pipeline, c.routing);
    Sha256::digest(text.as_bytes()).iter().take(12).fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The steps from what exists to what `config` asks for.
pub fn diff(config: &SyncConfig, observed: &Observed) -> Plan {
    let mut steps: Vec<Step> = config.collections.iter().map(|c| collection_step(c, observed)).collect();
    let defined = |ns: &str| {
        config.collections.iter().any(|c| c.namespace.to_string() == ns)
            || config.discovery.as_ref().is_some_and(|d| d.include.iter().any(|r| r.is_match(ns)) && !d.exclude.iter().any(|r| r.is_match(ns)))
    };
    let mut removed: Vec<&String> = observed.checkpoints.iter().filter(|ns| !defined(ns)).collect();
    removed.sort();
    removed.dedup();
    steps.extend(removed.into_iter().map(|ns| Step::Remove { namespace: ns.clone() }));
    let destructive = steps.iter().any(Step::destructive);
    Plan { name: config.name.clone(), steps, destructive }
}

fn collection_step(c: &CollectionConfig, observed: &Observed) -> Step {
    let (namespace, index) = (c.namespace.to_string(), c.index.clone());
    if !observed.checkpoints.contains(&namespace) {
        return Step::Copy { namespace, index };
    }
    let (conflict, added) = match observed.indices.get(&index) {
        Some(IndexState::Exists { conflict, added }) => (conflict.clone(), added.clone()),
        Some(IndexState::Missing) | None => (None, Vec::new()),
    };
    if let Some(conflict) = conflict {
        return Step::Recopy { namespace, index: index.clone(), reason: format!("mappings: \"{index}\" {conflict}") };
    }
    let setup = observed.setups.get(&index).cloned().unwrap_or_default();
    let fixed: Vec<String> = setup.settings.iter().filter(|s| !s.dynamic).map(SettingChange::describe).collect();
    if !fixed.is_empty() {
        return Step::Recopy { namespace, index, reason: format!("settings: {} (static: only a new index takes them)", fixed.join(", ")) };
    }
    if observed.applied.get(&namespace).is_some_and(|applied| *applied != fingerprint(c)) {
        return Step::Recopy { namespace, index, reason: "field rules, filter, conversion, pipeline or routing changed".into() };
    }
    if matches!(observed.indices.get(&index), Some(IndexState::Missing)) {
        return Step::Recopy { namespace, index: index.clone(), reason: format!("the index \"{index}\" is missing") };
    }
    if !setup.settings.is_empty() || setup.missing_alias.is_some() {
        return Step::UpdateIndex { namespace, index, settings: setup.settings, alias: setup.missing_alias, fields: added };
    }
    if !added.is_empty() {
        return Step::MapFields { namespace, index, fields: added };
    }
    Step::Unchanged { namespace, index }
}

impl Plan {
    /// The plan for people: one line per step, then a summary.
    pub fn render(&self) -> String {
        let mut out = format!("sync \"{}\":\n", self.name);
        for step in &self.steps {
            let line = match step {
                Step::Copy { namespace, index } => format!("  + copy      {namespace} → {index} (new)"),
                Step::MapFields { namespace, index, fields } => format!("  ~ map       {namespace} → {index}: new fields {}", fields.join(", ")),
                Step::UpdateIndex { namespace, index, settings, alias, fields } => {
                    format!("  ~ update    {namespace} → {index}: {}", update_text(settings, alias, fields))
                }
                Step::Recopy { namespace, index, reason } => {
                    format!("  ! re-copy   {namespace} → {index}: {reason}; copied into a new index, then the alias swaps (destructive)")
                }
                Step::Remove { namespace } => format!("  - remove    {namespace}: no longer defined; its checkpoint is deleted, its index kept (destructive)"),
                Step::Unchanged { namespace, index } => format!("    unchanged {namespace} → {index}"),
            };
            out.push_str(&line);
            out.push('\n');
        }
        let count = |f: fn(&Step) -> bool| self.steps.iter().filter(|s| f(s)).count();
        let changes = count(|s| !matches!(s, Step::Unchanged { .. }));
        let destructive = count(Step::destructive);
        let _ = writeln!(out, "{changes} to change, {destructive} destructive");
        out
    }
}

/// `settings index.refresh_interval 1s → 5s; alias "x" added; new fields a, b`.
fn update_text(settings: &[SettingChange], alias: &Option<String>, fields: &[String]) -> String {
    let mut parts = Vec::new();
    if !settings.is_empty() {
        parts.push(format!("settings {}", settings.iter().map(SettingChange::describe).collect::<Vec<_>>().join(", ")));
    }
    if let Some(alias) = alias {
        parts.push(format!("alias \"{alias}\" added"));
    }
    if !fields.is_empty() {
        parts.push(format!("new fields {}", fields.join(", ")));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests;
