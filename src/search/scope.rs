//! The indices a sync manages: those `search()` and the HTTP routes may read by default.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::client::IndexScope;
use crate::config::{Namespace, SyncConfig};
use crate::stats::Stats;

/// `search.indices` when configured; else every listed collection's index and alias, and the
/// index of every collection the sync has worked on (those `namespaces` discovered included).
pub fn sync_scope(config: Arc<SyncConfig>, stats: Arc<Stats>) -> IndexScope {
    if let Some(indices) = config.search.as_ref().and_then(|s| s.indices.clone()) {
        return IndexScope::list(indices);
    }
    IndexScope::Only(Arc::new(move || {
        let mut names: BTreeSet<String> = config.collections.iter().flat_map(|c| std::iter::once(c.index.clone()).chain(c.alias.clone())).collect();
        for ns in stats.snapshot().collections.keys() {
            if let Ok(ns) = Namespace::parse(ns) {
                names.insert(config.index_for(&ns));
            }
        }
        names
    }))
}
