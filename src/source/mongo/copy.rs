//! The initial copy: scans of one collection in `_id` order, split into ranges read in parallel,
//! each resumable after any `_id`.

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document, RawDocumentBuf};
use mongodb::options::Hint;
use mongodb::{ClientSession, Collection, SessionCursor};

use crate::checkpoint::CopyRange;

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

fn earlier_type_codes(value: &Bson) -> Vec<i32> {
    let rank = type_rank(value);
    SORT_RANKS.iter().take(rank).flat_map(|codes| codes.iter().copied()).collect()
}

/// `_id < upper`, plus every `_id` of a type that sorts before `upper`'s.
fn before_filter(upper: &Bson) -> Document {
    let earlier = earlier_type_codes(upper);
    if earlier.is_empty() {
        doc! {"_id": {"$lt": upper.clone()}}
    } else {
        doc! {"$or": [{"_id": {"$lt": upper.clone()}}, {"_id": {"$type": earlier}}]}
    }
}

/// The documents of a range still to read: after its acknowledged `_id` (else from its lower
/// bound), below its upper bound, in BSON order across types.
pub fn range_filter(range: &CopyRange) -> Document {
    if range.single_type {
        let mut bounds = Document::new();
        match (&range.last_id, &range.lower) {
            (Some(last), _) => bounds.insert("$gt", last.clone()),
            (None, Some(lower)) => bounds.insert("$gte", lower.clone()),
            (None, None) => None,
        };
        if let Some(upper) = &range.upper {
            bounds.insert("$lt", upper.clone());
        }
        return if bounds.is_empty() {
            Document::new()
        } else {
            doc! {"_id": bounds}
        };
    }
    let from = match (&range.last_id, &range.lower) {
        (Some(last), _) => after_filter(Some(last)),
        (None, Some(lower)) => {
            let later = later_type_codes(lower);
            if later.is_empty() {
                doc! {"_id": {"$gte": lower.clone()}}
            } else {
                doc! {"$or": [{"_id": {"$gte": lower.clone()}}, {"_id": {"$type": later}}]}
            }
        }
        (None, None) => Document::new(),
    };
    match (&range.upper, from.is_empty()) {
        (None, _) => from,
        (Some(upper), true) => before_filter(upper),
        (Some(upper), false) => doc! {"$and": [from, before_filter(upper)]},
    }
}

/// Splits a collection into up to `parts` ranges at quantiles of a sorted sample of its `_id`s.
/// Bounds must share one BSON type (ranges compare within a type); otherwise one range.
/// `extremes` (the smallest and largest `_id`) tell whether every `_id` has that type.
pub fn plan_ranges(sorted_sample: &[Bson], parts: usize, extremes: Option<(&Bson, &Bson)>) -> Vec<CopyRange> {
    let single_type = |rank: usize| extremes.is_some_and(|(min, max)| type_rank(min) == rank && type_rank(max) == rank);
    let whole = vec![CopyRange { single_type: extremes.is_some_and(|(min, max)| type_rank(min) == type_rank(max)), ..Default::default() }];
    if parts < 2 || sorted_sample.len() < parts {
        return whole;
    }
    let first_rank = type_rank(&sorted_sample[0]);
    if sorted_sample.iter().any(|id| type_rank(id) != first_rank || matches!(id, Bson::Document(_))) {
        return whole;
    }
    let single_type = single_type(first_rank);
    let mut bounds: Vec<Bson> = (1..parts).map(|i| sorted_sample[i * sorted_sample.len() / parts].clone()).collect();
    bounds.dedup();
    let mut ranges = Vec::with_capacity(bounds.len() + 1);
    let mut lower = None;
    for bound in bounds {
        ranges.push(CopyRange { lower, upper: Some(bound.clone()), single_type, ..Default::default() });
        lower = Some(bound);
    }
    ranges.push(CopyRange { lower, single_type, ..Default::default() });
    ranges
}

/// The smallest and the largest `_id`, if the collection has documents.
pub async fn id_extremes(collection: &Collection<Document>) -> mongodb::error::Result<Option<(Bson, Bson)>> {
    let edge = |direction: i32| async move {
        let found = collection.find_one(Document::new()).sort(doc! {"_id": direction}).projection(doc! {"_id": 1}).await?;
        Ok::<_, mongodb::error::Error>(found.and_then(|mut d| d.remove("_id")))
    };
    Ok(match (edge(1).await?, edge(-1).await?) {
        (Some(min), Some(max)) => Some((min, max)),
        _ => None,
    })
}

/// A random sample of `_id`s, sorted.
pub async fn sample_ids(collection: &Collection<Document>, size: usize) -> mongodb::error::Result<Vec<Bson>> {
    let pipeline = [doc! {"$sample": {"size": size as i64}}, doc! {"$project": {"_id": 1}}, doc! {"$sort": {"_id": 1}}];
    let docs: Vec<Document> = collection.aggregate(pipeline).await?.try_collect().await?;
    Ok(docs.into_iter().filter_map(|mut d| d.remove("_id")).collect())
}

/// A cursor over the range, restricted to the documents matching `filter` when there is one.
/// `query` and the collection's `filter` together: the two merged into one document when no
/// top-level key is in both (the form a server plans best: SecantusDB scanned the whole
/// collection for `{$and: [{_id: {$in: …}}, filter]}` but read only the listed documents for
/// `{_id: {$in: …}, …filter}`, 20 against 1,570 ms for 100 of 5,000), else `$and`.
pub fn and_filter(query: Document, filter: Option<&Document>) -> Document {
    let Some(filter) = filter.filter(|f| !f.is_empty()) else { return query };
    if query.is_empty() {
        return filter.clone();
    }
    if filter.keys().any(|k| query.contains_key(k)) {
        return doc! {"$and": [query, filter.clone()]};
    }
    let mut merged = query;
    merged.extend(filter.clone());
    merged
}

pub async fn open(
    collection: &Collection<RawDocumentBuf>,
    range: &CopyRange,
    filter: Option<&Document>,
    batch_size: u32,
    session: &mut ClientSession,
) -> mongodb::error::Result<SessionCursor<RawDocumentBuf>> {
    let query = and_filter(range_filter(range), filter);
    let whole = query.is_empty();
    let find = collection.find(query).sort(doc! {"_id": 1}).batch_size(batch_size).session(session);
    // The whole collection in `_id` order is an `_id` index walk, the plan MongoDB picks anyway;
    // named, a server that would otherwise fetch document by document may read it in one pass
    // (SecantusDB: 0.8–0.9× the server CPU of the unhinted sort, as cheap as an unsorted scan).
    // Bounded or filtered scans are left to the planner (an `_id` range, or the filter's index).
    if whole {
        find.hint(Hint::Keys(doc! {"_id": 1})).await
    } else {
        find.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::oid::ObjectId;

    /// A filter joins a query as more keys of the same document, so that the `_id` condition
    /// stays one the server can plan on; keys in both (or operators used by both) keep `$and`.
    #[test]
    fn a_filter_joins_the_query_in_one_document_unless_keys_clash() {
        let ids = doc! {"_id": {"$in": [1, 2]}};
        assert_eq!(and_filter(ids.clone(), None), ids);
        assert_eq!(and_filter(ids.clone(), Some(&doc! {})), ids);
        assert_eq!(and_filter(ids.clone(), Some(&doc! {"kind": "a", "$or": [{"x": 1}]})), doc! {"_id": {"$in": [1, 2]}, "kind": "a", "$or": [{"x": 1}]});
        assert_eq!(and_filter(ids.clone(), Some(&doc! {"_id": {"$gt": 0}})), doc! {"$and": [{"_id": {"$in": [1, 2]}}, {"_id": {"$gt": 0}}]});
        assert_eq!(and_filter(doc! {}, Some(&doc! {"kind": "a"})), doc! {"kind": "a"});
        let resumed = after_filter(Some(&Bson::Int32(5)));
        assert_eq!(and_filter(resumed.clone(), Some(&doc! {"$or": [{"x": 1}]})), doc! {"$and": [resumed, {"$or": [{"x": 1}]}]});
    }

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
    fn ranges_split_at_sample_quantiles_and_cover_everything() {
        let sample: Vec<Bson> = (0..100).map(Bson::Int32).collect();
        let ranges = plan_ranges(&sample, 4, None);
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges[0].lower, None);
        assert_eq!(ranges[0].upper, Some(Bson::Int32(25)));
        assert_eq!(ranges[1].lower, Some(Bson::Int32(25)));
        assert_eq!(ranges[3].upper, None);
        // The first range also takes ids of types sorting before numbers; the last, those after.
        let first = range_filter(&ranges[0]);
        assert!(first.get_array("$or").is_ok(), "{first}");
        let last = range_filter(&ranges[3]);
        assert!(format!("{last}").contains("$type"), "{last}");
    }

    #[test]
    fn mixed_or_tiny_samples_give_one_range() {
        assert_eq!(plan_ranges(&[Bson::Int32(1), Bson::String("a".into()), Bson::Int32(3)], 2, None), vec![CopyRange::default()]);
        assert_eq!(plan_ranges(&[Bson::Int32(1)], 4, None), vec![CopyRange::default()]);
        assert_eq!(range_filter(&CopyRange::default()), Document::new());
    }

    #[test]
    fn a_resumed_range_starts_after_its_last_id() {
        let r = CopyRange { lower: Some(Bson::Int32(10)), upper: Some(Bson::Int32(20)), last_id: Some(Bson::Int32(15)), ..Default::default() };
        let f = range_filter(&r);
        let text = format!("{f}");
        assert!(text.contains("$gt") && text.contains("15") && text.contains("$lt") && text.contains("20") && !text.contains("$gte"), "{text}");
    }

    #[test]
    fn single_typed_collections_get_plain_bounds() {
        let sample: Vec<Bson> = (0..100).map(Bson::Int32).collect();
        let (min, max) = (Bson::Int32(0), Bson::Int64(1 << 40));
        let ranges = plan_ranges(&sample, 2, Some((&min, &max)));
        assert!(ranges.iter().all(|r| r.single_type), "Int32 and Int64 sort as one type");
        assert_eq!(range_filter(&ranges[0]), doc! {"_id": {"$lt": 50}});
        assert_eq!(range_filter(&ranges[1]), doc! {"_id": {"$gte": 50}});
        let resumed = CopyRange { last_id: Some(Bson::Int32(60)), ..ranges[1].clone() };
        assert_eq!(range_filter(&resumed), doc! {"_id": {"$gt": 60}});
        let mixed = plan_ranges(&sample, 2, Some((&min, &Bson::String("z".into()))));
        assert!(mixed.iter().all(|r| !r.single_type));
    }

    #[test]
    fn max_key_has_nothing_after_it() {
        assert_eq!(after_filter(Some(&Bson::MaxKey)), doc! {"_id": {"$gt": Bson::MaxKey}});
        let oid = ObjectId::new();
        let f = after_filter(Some(&Bson::ObjectId(oid)));
        assert_eq!(f.get_array("$or").unwrap().len(), 2);
    }
}
