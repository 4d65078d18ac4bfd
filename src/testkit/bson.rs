//! Property-test strategies for BSON values, shared by the checkpoint and change-event properties.

use mongodb::bson::{oid::ObjectId, spec::BinarySubtype, Binary, Bson, DateTime, Timestamp};
use proptest::prelude::*;

/// Whether doubles may be NaN: a value that must round-trip by `==` cannot hold one.
#[derive(Clone, Copy)]
pub enum Nan {
    Allowed,
    Excluded,
}

/// Every scalar BSON type the engine meets, nested up to three levels in arrays and documents.
pub fn arb_bson(nan: Nan) -> impl Strategy<Value = Bson> {
    let double = any::<f64>().prop_filter("not NaN", move |f| matches!(nan, Nan::Allowed) || !f.is_nan());
    let leaf = prop_oneof![
        Just(Bson::Null),
        any::<bool>().prop_map(Bson::Boolean),
        any::<i32>().prop_map(Bson::Int32),
        any::<i64>().prop_map(Bson::Int64),
        double.prop_map(Bson::Double),
        ".{0,8}".prop_map(Bson::String),
        any::<[u8; 12]>().prop_map(|b| Bson::ObjectId(ObjectId::from_bytes(b))),
        (any::<u32>(), any::<u32>()).prop_map(|(time, increment)| Bson::Timestamp(Timestamp { time, increment })),
        any::<i64>().prop_map(|ms| Bson::DateTime(DateTime::from_millis(ms))),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(|bytes| Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes })),
        Just(Bson::MinKey),
        Just(Bson::MaxKey),
        Just(Bson::Undefined),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Bson::Array),
            prop::collection::vec(("[a-zA-Z_]{1,6}", inner), 0..3).prop_map(|kv| Bson::Document(kv.into_iter().collect())),
        ]
    })
}
