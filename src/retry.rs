//! Exponential backoff with jitter for transient failures, shared by the source (MongoDB) and
//! every sink.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::config::RetryConfig;
use crate::event::{EventBus, SyncEvent};
use crate::stats::Stats;

/// Counts and announces retry number `attempt`, then waits its backoff delay. Returns `false`
/// if the sync was stopped during the wait.
pub async fn wait_before_retry(config: &RetryConfig, attempt: u32, cause: String, stats: &Stats, events: &EventBus, cancel: &CancellationToken) -> bool {
    let delay = backoff_delay(config, attempt);
    stats.record_retry();
    events.emit(SyncEvent::Retry { attempt, delay_ms: delay.as_millis() as u64, cause });
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = cancel.cancelled() => false,
    }
}

/// The delay before retry number `attempt` (1-based): doubling from the initial delay,
/// capped, then scaled by a random factor in [0.5, 1) so that many writers do not retry in step.
pub fn backoff_delay(config: &RetryConfig, attempt: u32) -> Duration {
    let exp = config.initial_delay.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(config.max_delay);
    capped.mul_f64(rand::rng().random_range(0.5..1.0))
}

/// Whether another attempt is allowed after `attempt` failed ones.
pub fn may_retry(config: &RetryConfig, attempt: u32) -> bool {
    config.max_attempts.is_none_or(|max| attempt < max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let c = RetryConfig { max_attempts: Some(3), initial_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
        let d1 = backoff_delay(&c, 1);
        assert!(d1 >= Duration::from_millis(50) && d1 < Duration::from_millis(100));
        let d3 = backoff_delay(&c, 3);
        assert!(d3 >= Duration::from_millis(200) && d3 < Duration::from_millis(400));
        assert!(backoff_delay(&c, 40) < Duration::from_secs(1));
        assert!(may_retry(&c, 2) && !may_retry(&c, 3));
        assert!(may_retry(&RetryConfig { max_attempts: None, ..c }, 1000));
    }
}
