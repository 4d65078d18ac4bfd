//! Checkpoints kept in memory, in their stored form: for tests and for embedding the engine
//! where a restart need not resume.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use mongodb::bson::Document;

use super::{fenced_off, stored_term, CheckpointStore, CollectionCheckpoint};
use crate::config::Namespace;
use crate::error::SyncResult;

#[derive(Default)]
pub struct MemoryCheckpointStore {
    saved: Mutex<HashMap<Namespace, Document>>,
    saves: Mutex<Vec<(Namespace, CollectionCheckpoint)>>,
    busy: AtomicBool,
}

impl MemoryCheckpointStore {
    /// The saved checkpoint of `ns`, if any.
    pub fn get(&self, ns: &Namespace) -> Option<CollectionCheckpoint> {
        let doc = self.saved.lock().expect("store lock").get(ns).cloned()?;
        CollectionCheckpoint::from_document(ns, doc).ok()
    }

    /// Stores a document as it is, e.g. one in an earlier format.
    pub fn put_document(&self, ns: &Namespace, doc: Document) {
        self.saved.lock().expect("store lock").insert(ns.clone(), doc);
    }

    /// Reports itself busy (see [`CheckpointStore::busy`]) or not; saves still go through.
    pub fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::SeqCst);
    }

    /// Every save so far, in order.
    pub fn history(&self) -> Vec<(Namespace, CollectionCheckpoint)> {
        self.saves.lock().expect("store lock").clone()
    }
}

#[async_trait]
impl CheckpointStore for MemoryCheckpointStore {
    async fn load(&self, ns: &Namespace) -> SyncResult<CollectionCheckpoint> {
        let doc = self.saved.lock().expect("store lock").get(ns).cloned();
        doc.map_or_else(|| Ok(CollectionCheckpoint::default()), |d| CollectionCheckpoint::from_document(ns, d))
    }

    async fn save(&self, ns: &Namespace, checkpoint: &CollectionCheckpoint) -> SyncResult<()> {
        self.save_at(ns, checkpoint, None)
    }

    async fn load_fenced(&self, ns: &Namespace, term: u64) -> SyncResult<CollectionCheckpoint> {
        let mut saved = self.saved.lock().expect("store lock");
        let doc = saved.entry(ns.clone()).or_default();
        if stored_term(ns, doc)? > term {
            return Err(fenced_off(ns, term));
        }
        doc.insert("term", term as i64);
        CollectionCheckpoint::from_document(ns, doc.clone())
    }

    async fn save_fenced(&self, ns: &Namespace, checkpoint: &CollectionCheckpoint, term: u64) -> SyncResult<()> {
        self.save_at(ns, checkpoint, Some(term))
    }

    fn busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }
}

impl MemoryCheckpointStore {
    fn save_at(&self, ns: &Namespace, checkpoint: &CollectionCheckpoint, term: Option<u64>) -> SyncResult<()> {
        let mut doc = checkpoint.to_document()?;
        let mut saved = self.saved.lock().expect("store lock");
        if let Some(term) = term {
            if saved.get(ns).map(|d| stored_term(ns, d)).transpose()?.unwrap_or(0) > term {
                return Err(fenced_off(ns, term));
            }
            doc.insert("term", term as i64);
        }
        saved.insert(ns.clone(), doc);
        self.saves.lock().expect("store lock").push((ns.clone(), checkpoint.clone()));
        Ok(())
    }
}
