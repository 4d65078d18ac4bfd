//! Engine logs on stderr, opt-in through `MONGO_ELASTIC_SYNC_LOG` (a `tracing` filter), as text
//! or, with `MONGO_ELASTIC_SYNC_LOG_FORMAT=json`, one JSON object per line (for log collectors).

use std::sync::Once;

use tracing_subscriber::EnvFilter;

const LOG_ENV: &str = "MONGO_ELASTIC_SYNC_LOG";
const FORMAT_ENV: &str = "MONGO_ELASTIC_SYNC_LOG_FORMAT";

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let Ok(filter) = EnvFilter::try_from_env(LOG_ENV) else { return };
        let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
        // Another addon in the process may have set a global subscriber already; keep theirs.
        let _ = match std::env::var(FORMAT_ENV).as_deref() {
            Ok("json") => logs.json().flatten_event(true).try_init(),
            _ => logs.try_init(),
        };
    });
}
