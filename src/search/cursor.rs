//! Opaque cursors: the state of a cursor-paged search (query, sort, position, point in time),
//! signed with HMAC-SHA256 and stamped with an expiry. `base64url(state) "." base64url(mac)`.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::{SearchError, SearchResult};
use crate::config::Secret;

/// Longest cursor accepted (a point-in-time id and sort values fit well within).
pub const MAX_CURSOR_LEN: usize = 16 * 1024;

/// Where a cursor-paged search is: everything needed for its next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CursorState {
    pub index: String,
    /// The server query (already validated and built).
    pub query: Value,
    /// The sort clauses, tiebreaker included.
    pub sort: Vec<Value>,
    /// `search_after`: the sort values of the last document returned.
    pub after: Vec<Value>,
    /// The point in time the pages read, where the server has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    pub size: u64,
    /// The number of the page this cursor leads to (the first is 1).
    pub page: u64,
    /// Milliseconds since the Unix epoch after which the cursor is refused.
    pub expires_ms: u64,
}

/// Signs and checks cursors with one key: the configured secret (so that several processes
/// accept each other's cursors), else a random key of this process.
#[derive(Clone)]
pub struct CursorSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for CursorSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorSigner(***)")
    }
}

fn process_key() -> [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    *KEY.get_or_init(rand::random)
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl CursorSigner {
    pub fn new(secret: Option<&Secret>) -> Self {
        let key = secret.map_or_else(process_key, |s| Sha256::digest(s.expose().as_bytes()).into());
        CursorSigner { key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    pub fn sign(&self, state: &CursorState) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(state).expect("cursor state serializes"));
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// The state of a cursor this signer issued and that has not expired at `now_ms`.
    pub fn open(&self, cursor: &str, now_ms: u64) -> SearchResult<CursorState> {
        if cursor.len() > MAX_CURSOR_LEN {
            return Err(SearchError::input(format!("cursor: longer than {MAX_CURSOR_LEN} characters")));
        }
        let (payload, tag) = cursor.split_once('.').ok_or(SearchError::TamperedCursor)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| SearchError::TamperedCursor)?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag).map_err(|_| SearchError::TamperedCursor)?;
        let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| SearchError::TamperedCursor)?;
        let state: CursorState = serde_json::from_slice(&bytes).map_err(|_| SearchError::TamperedCursor)?;
        if now_ms > state.expires_ms {
            return Err(SearchError::ExpiredCursor((now_ms - state.expires_ms) / 1000));
        }
        Ok(state)
    }
}

/// The expiry of a cursor issued now with time to live `ttl`.
pub fn expiry(ttl: Duration) -> u64 {
    now_ms().saturating_add(ttl.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn state(expires_ms: u64) -> CursorState {
        CursorState {
            index: "people".into(),
            query: json!({ "match_all": {} }),
            sort: vec![json!({ "n": "asc" }), json!({ "_shard_doc": "asc" })],
            after: vec![json!(9_007_199_254_740_993_i64), json!(17)],
            pit: Some("pit-id".into()),
            fields: Some(vec!["n".into()]),
            exclude: vec![],
            size: 10,
            page: 2,
            expires_ms,
        }
    }

    #[test]
    fn a_signed_cursor_opens_to_its_state_with_int64_exact() {
        let signer = CursorSigner::new(None);
        let cursor = signer.sign(&state(2_000));
        assert_eq!(signer.open(&cursor, 1_000).unwrap(), state(2_000));
        assert!(!cursor.contains('+') && !cursor.contains('/') && !cursor.contains('='), "URL-safe: {cursor}");
    }

    #[test]
    fn altered_payload_or_tag_or_other_key_is_refused() {
        let signer = CursorSigner::new(None);
        let cursor = signer.sign(&state(2_000));
        let (payload, tag) = cursor.split_once('.').unwrap();
        let mut forged = state(2_000);
        forged.index = "secrets".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(signer.open(&format!("{forged_payload}.{tag}"), 1_000), Err(SearchError::TamperedCursor));
        let mut bad_tag = tag.to_string().into_bytes();
        bad_tag[0] = if bad_tag[0] == b'A' { b'B' } else { b'A' };
        assert_eq!(signer.open(&format!("{payload}.{}", String::from_utf8(bad_tag).unwrap()), 1_000), Err(SearchError::TamperedCursor));
        assert_eq!(signer.open(payload, 1_000), Err(SearchError::TamperedCursor));
        assert_eq!(signer.open("", 1_000), Err(SearchError::TamperedCursor));
        let other = CursorSigner::new(Some(&Secret::new("another key of this deployment")));
        assert_eq!(other.open(&cursor, 1_000), Err(SearchError::TamperedCursor));
        assert!(matches!(signer.open(&"a".repeat(MAX_CURSOR_LEN + 1), 1_000), Err(SearchError::Input(_))));
    }

    #[test]
    fn a_configured_secret_is_shared_and_expiry_is_enforced() {
        let secret = Secret::new("a shared secret of several processes");
        let (a, b) = (CursorSigner::new(Some(&secret)), CursorSigner::new(Some(&secret)));
        let cursor = a.sign(&state(2_000));
        assert_eq!(b.open(&cursor, 2_000).unwrap().page, 2);
        assert_eq!(b.open(&cursor, 7_500), Err(SearchError::ExpiredCursor(5)));
    }
}
