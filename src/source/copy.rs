//! The initial copy: a scan of one collection in `_id` order, resumable after any `_id`.

use mongodb::bson::{doc, Bson, Document};
use mongodb::{Collection, Cursor};

/// Finds the documents after `after` in `_id` order. `$gt` alone compares within one BSON
/// type only, so documents whose `_id` is of a type that sorts later are added explicitly:
/// a resumed copy of a collection with mixed `_id` types misses nothing.
pub fn after_filter(after: Option<&Bson>) -> Document {
    let Some(after) = after else { return Document::new() };
    let later: Vec<i32> = later_type_codes(after);
    if later.is_empty() {
        doc! {"_id": {"$gt": after.clone()}}
    } else {
        doc! {"$or": [{"_id": {"$gt": after.clone()}}, {"_id": {"$type": later}}]}
    }
}

/// Canonical BSON sort order of the types an `_id` can have, as `$type` codes per rank.
const SORT_RANKS: &[&[i32]] = &[
    &[-1],            // MinKey
    &[10, 6],         // null, undefined
    &[1, 16, 18, 19], // double, int, long, decimal
    &[2, 14],         // string, symbol
    &[3],             // object
    &[5],             // binData
    &[7],             // objectId
    &[8],             // bool
    &[9],             // date
    &[17],            // timestamp
    &[11],            // regex
    &[127],           // MaxKey
];

fn type_rank(value: &Bson) -> usize {
    // MinKey is 0xFF, which `$type` spells -1.
    let code = value.element_type() as u8 as i8 as i32;
    SORT_RANKS.iter().position(|codes| codes.contains(&code)).unwrap_or(SORT_RANKS.len())
}

fn later_type_codes(value: &Bson) -> Vec<i32> {
    let rank = type_rank(value);
    SORT_RANKS.iter().skip(rank + 1).flat_map(|codes| codes.iter().copied()).collect()
}

pub async fn open(collection: &Collection<Document>, after: Option<&Bson>, batch_size: u32) -> mongodb::error::Result<Cursor<Document>> {
    collection.find(after_filter(after)).sort(doc! {"_id": 1}).batch_size(batch_size).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::oid::ObjectId;

    #[test]
    fn a_fresh_copy_reads_everything() {
        assert_eq!(after_filter(None), Document::new());
    }

    #[test]
    fn numbers_resume_with_all_later_types() {
        let f = after_filter(Some(&Bson::Int32(5)));
        let types = f.get_array("$or").unwrap()[1].as_document().unwrap().get_document("_id").unwrap().get_array("$type").unwrap().clone();
        assert!(types.contains(&Bson::Int32(2)), "strings sort after numbers");
        assert!(types.contains(&Bson::Int32(7)), "ObjectIds sort after numbers");
        assert!(!types.contains(&Bson::Int32(16)), "same type is covered by $gt");
    }

    #[test]
    fn max_key_has_nothing_after_it() {
        assert_eq!(after_filter(Some(&Bson::MaxKey)), doc! {"_id": {"$gt": Bson::MaxKey}});
        let oid = ObjectId::new();
        let f = after_filter(Some(&Bson::ObjectId(oid)));
        assert_eq!(f.get_array("$or").unwrap().len(), 2);
    }
}
