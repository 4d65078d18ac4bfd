//! The field names of a derived `Deserialize` struct, read from serde itself (what it hands
//! `deserialize_struct`), so that lists of option names are never kept by hand beside the types.

use serde::de::value::Error;
use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::forward_to_deserialize_any;

/// A deserializer with no data: it records the fields a struct asks for, then fails.
struct Fields(Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for &mut Fields {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(self, _name: &'static str, fields: &'static [&'static str], _visitor: V) -> Result<V::Value, Error> {
        self.0 = Some(fields);
        Err(de::Error::custom("fields read"))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// The (renamed) field names of struct `T`; empty for a type that is not a struct.
pub fn struct_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields = Fields(None);
    let _ = T::deserialize(&mut fields);
    fields.0.unwrap_or(&[])
}

/// Every top-level option of `new MongoElasticSync(options)`, as serde names them.
pub fn top_level_options() -> &'static [&'static str] {
    struct_fields::<super::options::SyncOptions>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_fields_are_read_from_serde() {
        let top = top_level_options();
        for name in ["name", "mongo", "postgres", "tables", "elasticsearch", "batch", "rateLimit", "instances", "configStore", "privateKeyFile"] {
            assert!(top.contains(&name), "{name} missing from {top:?}");
        }
        assert!(!top.contains(&"rate_limit"), "camelCase names, as the options are written");
        assert!(struct_fields::<u32>().is_empty());
    }
}
