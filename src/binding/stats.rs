//! `sync.stats()` as a plain JS object.

use napi_derive::napi;

use crate::stats::StatsSnapshot;

#[napi(object)]
pub struct SyncStats {
    /// Documents read by the initial copy and acknowledged.
    pub copied: i64,
    /// Change events read from the stream and acknowledged.
    pub streamed: i64,
    pub indexed: i64,
    pub deleted: i64,
    /// Stale writes Elasticsearch refused because it held a newer version (expected after replays).
    pub conflicts: i64,
    pub dead_letters: i64,
    pub retries: i64,
    pub batches: i64,
    /// Values changed to fit JSON (NaN/Infinity dropped, out-of-range dates as numbers); see `warning` events.
    pub values_altered: i64,
    #[napi(ts_type = "'idle' | 'starting' | 'copying' | 'streaming' | 'stopping' | 'stopped' | 'failed'")]
    pub state: String,
}

impl From<StatsSnapshot> for SyncStats {
    fn from(s: StatsSnapshot) -> Self {
        let n = |v: u64| v as i64;
        SyncStats {
            copied: n(s.copied),
            streamed: n(s.streamed),
            indexed: n(s.indexed),
            deleted: n(s.deleted),
            conflicts: n(s.conflicts),
            dead_letters: n(s.dead_letters),
            retries: n(s.retries),
            batches: n(s.batches),
            values_altered: n(s.values_altered),
            state: s.state.as_str().to_string(),
        }
    }
}
