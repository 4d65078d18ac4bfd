//! Engine logs on stderr, opt-in through `MONGO_ELASTIC_SYNC_LOG` (a `tracing` filter), as text
//! or, with `MONGO_ELASTIC_SYNC_LOG_FORMAT=json`, one JSON object per line (for log collectors);
//! and to the `logger` of each sync that has one (see `log_forward`).

use std::sync::Once;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

const LOG_ENV: &str = "MONGO_ELASTIC_SYNC_LOG";
const FORMAT_ENV: &str = "MONGO_ELASTIC_SYNC_LOG_FORMAT";

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let stderr = EnvFilter::try_from_env(LOG_ENV).ok().map(|filter| {
            let text = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
            match std::env::var(FORMAT_ENV).as_deref() {
                Ok("json") => text.json().flatten_event(true).with_filter(filter).boxed(),
                _ => text.with_filter(filter).boxed(),
            }
        });
        // Another addon in the process may have set a global subscriber already; keep theirs.
        let _ = tracing_subscriber::registry().with(stderr).with(super::log_forward::layer()).try_init();
    });
}
