//! A definition is stored only with its secrets sealed: a secret field (see
//! [`crate::secrets::SECRET_FIELDS`]) holds an `enc:age:…` value, or (for `uri`/`url`) a URL
//! without a password in it.

use crate::error::{SyncError, SyncResult};
use crate::secrets::{is_sealed, PREFIX, SECRET_FIELDS};

/// `ERR_CONFIG` naming the first secret field (its path from `at`) that holds a plain secret.
pub fn check_sealed(value: &serde_json::Value, at: &str) -> SyncResult<()> {
    check_at(value, at, None)
}

fn check_at(value: &serde_json::Value, at: &str, field: Option<&str>) -> SyncResult<()> {
    match value {
        serde_json::Value::String(text) if field.is_some_and(|f| SECRET_FIELDS.contains(&f)) && !is_sealed(text) => {
            let url = matches!(field, Some("uri" | "url"));
            if (url && has_password(text)) || (!url && !text.is_empty()) {
                return Err(SyncError::config(format!(
                    "{at}: holds a secret in plain text; seal it (`mongo-elastic-sync encrypt`, {PREFIX}…) to store the definition"
                )));
            }
            Ok(())
        }
        serde_json::Value::Array(items) => items.iter().enumerate().try_for_each(|(i, item)| check_at(item, &format!("{at}[{i}]"), None)),
        serde_json::Value::Object(map) => map.iter().try_for_each(|(k, v)| check_at(v, &format!("{at}.{k}"), Some(k))),
        _ => Ok(()),
    }
}

/// Whether a URL (or a comma list of them) carries a password or token in its user info, or a
/// password option in its query.
fn has_password(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let user_info = text.split("://").skip(1).any(|rest| rest.split(['/', '?']).next().is_some_and(|authority| authority.contains('@')));
    user_info || lower.contains("password=") || lower.contains("token=")
}
