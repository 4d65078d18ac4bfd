//! A table as the sync sees it: its columns with their mappings, its primary key, the SQL that
//! reads it in key order, and its rows as documents whose `_id` comes from the key.
//!
//! The `_id` of a one-column key is the key's value (a number, a string…); of a composite key,
//! one string: each key column's text with `\` and `:` escaped by a `\`, joined by `:`
//! (`(7, 'a:b')` → `7:a\:b`).

use mongodb::bson::{Bson, Document};
use tokio_postgres::Client;

use super::connect::pg_error;
use super::types::PgType;
use crate::config::Namespace;
use crate::error::{ErrorCode, SyncError, SyncResult};

#[derive(Debug, Clone, PartialEq)]
pub struct TableColumn {
    pub name: String,
    pub ty: PgType,
    /// The SQL name of its type, to cast key parameters to.
    pub type_sql: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub ns: Namespace,
    pub columns: Vec<TableColumn>,
    /// Indexes into `columns` of the primary key's columns, in key order.
    pub key: Vec<usize>,
}

const CATALOG: &str = "SELECT a.attname::text, bt.oid::int8, COALESCE(be.oid, 0)::int8, format_type(a.atttypid, NULL), \
     array_position(i.indkey::int2[], a.attnum)::int4 \
     FROM pg_attribute a \
     JOIN pg_type t ON t.oid = a.atttypid \
     JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
     LEFT JOIN pg_type be ON be.oid = bt.typelem AND bt.typcategory = 'A' \
     LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary \
     WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

/// `"name"`, quoted for SQL.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Table {
    /// Reads the table's columns and key from the catalog.
    pub async fn describe(client: &Client, ns: &Namespace) -> SyncResult<Table> {
        let name = format!("{}.{}", quote(&ns.db), quote(&ns.coll));
        let rows = client.query(CATALOG, &[&name]).await.map_err(|e| {
            let mut err = pg_error(&format!("cannot read the columns of table {ns}"), &e);
            if e.as_db_error().is_some_and(|d| d.code().code() == "42P01") {
                err.code = ErrorCode::Config;
            }
            err
        })?;
        let mut columns = Vec::with_capacity(rows.len());
        let mut key: Vec<(i32, usize)> = Vec::new();
        for row in rows {
            let (oid, element): (i64, i64) = (row.get(1), row.get(2));
            let element = (element != 0).then(|| PgType::of_oid(element as u32, None));
            if let Some(position) = row.get::<_, Option<i32>>(4) {
                key.push((position, columns.len()));
            }
            columns.push(TableColumn { name: row.get(0), ty: PgType::of_oid(oid as u32, element), type_sql: row.get(3) });
        }
        key.sort();
        if key.is_empty() {
            return Err(SyncError::config(format!("table {ns} has no primary key: its rows need one to become documents with an _id")));
        }
        Ok(Table { ns: ns.clone(), columns, key: key.into_iter().map(|(_, i)| i).collect() })
    }

    pub fn sql_name(&self) -> String {
        format!("{}.{}", quote(&self.ns.db), quote(&self.ns.coll))
    }

    /// Every column as text, in column order. The outputs are renamed (`c0`, `c1`…): an
    /// `ORDER BY "id"` would otherwise sort by the text output named `id`, not by the key.
    pub fn select_list(&self) -> String {
        self.columns.iter().enumerate().map(|(i, c)| format!("{}::text AS c{i}", quote(&c.name))).collect::<Vec<_>>().join(", ")
    }

    /// The key columns as a row, e.g. `("a", "b")`.
    pub fn key_row(&self) -> String {
        format!("({})", self.key.iter().map(|&i| quote(&self.columns[i].name)).collect::<Vec<_>>().join(", "))
    }

    /// Parameters `$first…` cast to the key's types, as a row.
    pub fn key_params(&self, first: usize) -> String {
        let params: Vec<String> = self.key.iter().enumerate().map(|(n, &i)| format!("${}::text::{}", first + n, self.columns[i].type_sql)).collect();
        format!("({})", params.join(", "))
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// A row (texts in column order) as a document: `_id` from the key, then every column.
    pub fn document(&self, values: &[Option<String>]) -> SyncResult<Document> {
        let mut doc = Document::new();
        doc.insert("_id", self.id_of(&self.key.iter().map(|&i| values.get(i).cloned().flatten()).collect::<Vec<_>>())?);
        for (column, value) in self.columns.iter().zip(values) {
            let value = match value {
                None => Bson::Null,
                Some(text) => {
                    column.ty.to_bson(text).map_err(|e| SyncError::new(ErrorCode::Postgres, format!("table {}, column {}: {e}", self.ns, column.name)))?
                }
            };
            doc.insert(column.name.clone(), value);
        }
        Ok(doc)
    }

    /// The `_id` of the key's texts (in key order).
    pub fn id_of(&self, key: &[Option<String>]) -> SyncResult<Bson> {
        let missing = || SyncError::new(ErrorCode::Postgres, format!("a row of {} has a NULL or missing primary key column", self.ns));
        if let [single] = key {
            let column = &self.columns[self.key[0]];
            let text = single.as_deref().ok_or_else(missing)?;
            return column.ty.to_bson(text).map_err(|e| SyncError::new(ErrorCode::Postgres, format!("table {}, key {}: {e}", self.ns, column.name)));
        }
        let parts =
            key.iter().map(|k| k.as_deref().map(|t| t.replace('\\', "\\\\").replace(':', "\\:")).ok_or_else(missing)).collect::<SyncResult<Vec<_>>>()?;
        Ok(Bson::String(parts.join(":")))
    }

    /// The key's texts (in key order) of an `_id` made by `id_of`.
    pub fn key_of(&self, id: &Bson) -> SyncResult<Vec<String>> {
        if self.key.len() == 1 {
            return key_text(id).map(|t| vec![t]).ok_or_else(|| SyncError::new(ErrorCode::Internal, format!("{id} is not a key of {}", self.ns)));
        }
        let Bson::String(text) = id else { return Err(SyncError::new(ErrorCode::Internal, format!("{id} is not a composite key of {}", self.ns))) };
        let (mut parts, mut part, mut chars) = (Vec::new(), String::new(), text.chars());
        while let Some(c) = chars.next() {
            match c {
                '\\' => part.extend(chars.next()),
                ':' => parts.push(std::mem::take(&mut part)),
                c => part.push(c),
            }
        }
        parts.push(part);
        if parts.len() != self.key.len() {
            return Err(SyncError::new(ErrorCode::Internal, format!("\"{text}\" is not a composite key of {}", self.ns)));
        }
        Ok(parts)
    }
}

/// The text PostgreSQL reads back as the key value an `_id` came from.
fn key_text(id: &Bson) -> Option<String> {
    Some(match id {
        Bson::String(s) => s.clone(),
        Bson::Int32(n) => n.to_string(),
        Bson::Int64(n) => n.to_string(),
        Bson::Decimal128(d) => d.to_string(),
        Bson::Double(f) => f.to_string(),
        Bson::Boolean(b) => b.to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(key: Vec<usize>) -> Table {
        let column = |name: &str, ty: PgType, type_sql: &str| TableColumn { name: name.into(), ty, type_sql: type_sql.into() };
        Table {
            ns: Namespace::parse("public.orders").unwrap(),
            columns: vec![column("id", PgType::Int32, "integer"), column("code", PgType::Text, "text"), column("total", PgType::Numeric, "numeric")],
            key,
        }
    }

    #[test]
    fn a_single_key_is_the_id_itself() {
        let t = table(vec![0]);
        let doc = t.document(&[Some("7".into()), Some("a".into()), None]).unwrap();
        assert_eq!(doc.get("_id"), Some(&Bson::Int32(7)));
        assert_eq!(doc.get("id"), Some(&Bson::Int32(7)));
        assert_eq!(doc.get("total"), Some(&Bson::Null));
        assert_eq!(t.key_of(&Bson::Int32(7)).unwrap(), vec!["7".to_string()]);
        assert_eq!(t.key_params(2), "($2::text::integer)");
    }

    #[test]
    fn a_composite_key_joins_escaped_parts_and_splits_back() {
        let t = table(vec![0, 1]);
        let id = t.id_of(&[Some("7".into()), Some("a:b\\c".into())]).unwrap();
        assert_eq!(id, Bson::String("7:a\\:b\\\\c".into()));
        assert_eq!(t.key_of(&id).unwrap(), vec!["7".to_string(), "a:b\\c".to_string()]);
        assert_eq!(t.key_row(), "(\"id\", \"code\")");
        assert!(t.id_of(&[Some("7".into()), None]).is_err(), "a NULL key part");
        assert!(t.key_of(&Bson::String("1:2:3".into())).is_err());
    }

    #[test]
    fn names_are_quoted() {
        assert_eq!(quote("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(table(vec![0]).select_list(), "\"id\"::text AS c0, \"code\"::text AS c1, \"total\"::text AS c2");
    }
}
