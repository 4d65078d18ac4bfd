//! Documents a change stream could not find when it read their changes: an update's document
//! gone by the time it was looked up. Usually a delete follows; when a rename follows instead,
//! the documents now live under the new name, and their last changes are read from there.

use std::collections::HashMap;

use mongodb::bson::Bson;

use crate::transform::describe_id;

/// At most this many ids (and bytes of them) are kept; past that, a rename copies the whole
/// renamed collection instead.
const MAX_IDS: usize = 100_000;
const MAX_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Default)]
pub(super) struct MissedLookups {
    ids: HashMap<String, Bson>,
    bytes: usize,
    overflowed: bool,
}

impl MissedLookups {
    pub fn add(&mut self, id: &Bson) {
        if self.overflowed {
            return;
        }
        let key = describe_id(id);
        if !self.ids.contains_key(&key) {
            self.bytes += key.len();
            self.ids.insert(key, id.clone());
        }
        if self.ids.len() > MAX_IDS || self.bytes > MAX_BYTES {
            *self = MissedLookups { overflowed: true, ..Default::default() };
        }
    }

    /// The document was deleted: its delete event explained the miss.
    pub fn remove(&mut self, id: &Bson) {
        if let Some(gone) = self.ids.remove(&describe_id(id)) {
            self.bytes -= describe_id(&gone).len();
        }
    }

    pub fn ids(&self) -> impl Iterator<Item = &Bson> {
        self.ids.values()
    }

    /// More were missed than are kept.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletes_explain_misses_and_too_many_overflow() {
        let mut missed = MissedLookups::default();
        missed.add(&Bson::Int32(1));
        missed.add(&Bson::Int32(2));
        missed.remove(&Bson::Int32(1));
        assert_eq!(missed.ids().collect::<Vec<_>>(), vec![&Bson::Int32(2)]);
        for i in 0..=MAX_IDS as i64 {
            missed.add(&Bson::Int64(i));
        }
        assert!(missed.overflowed() && missed.ids().next().is_none());
        assert!(std::mem::take(&mut missed).overflowed() && !missed.overflowed(), "taken, the list starts empty");
    }
}
