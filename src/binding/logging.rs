//! Engine logs on stderr, opt-in through `MONGO_ELASTIC_SYNC_LOG` (a `tracing` filter).

use std::sync::Once;

use tracing_subscriber::EnvFilter;

const LOG_ENV: &str = "MONGO_ELASTIC_SYNC_LOG";

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let Ok(filter) = EnvFilter::try_from_env(LOG_ENV) else { return };
        // Another addon in the process may have set a global subscriber already; keep theirs.
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    });
}
