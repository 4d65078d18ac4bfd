//! `/healthz` and `/readyz` verdicts over a snapshot.

use std::time::Duration;

use super::snapshot::{CollectionPhase, StatusSnapshot};
use crate::event::SyncState;

/// Alive and not failed.
pub fn healthy(s: &StatusSnapshot) -> bool {
    s.state != SyncState::Failed
}

/// Ready: streaming, or copying with progress, and no collection lagging more than `max_lag`
/// (or copying without progress for that long). The reasons it is not, otherwise.
pub fn readiness(s: &StatusSnapshot, max_lag: Duration) -> Result<(), Vec<String>> {
    if !matches!(s.state, SyncState::Copying | SyncState::Streaming) {
        return Err(vec![format!("the sync is {}", s.state.as_str())]);
    }
    let max_ms = max_lag.as_millis() as u64;
    let mut reasons = Vec::new();
    for (ns, c) in &s.collections {
        match c.phase {
            CollectionPhase::Streaming => {
                if let Some(lag) = c.lag_ms.filter(|&lag| lag > max_ms) {
                    reasons.push(format!("{ns}: {} s behind its change stream (readyMaxLagMs: {max_ms})", lag / 1000));
                }
            }
            CollectionPhase::Copying => {
                // Since its last batch, or since the sync began copying.
                let progress_at = c.last_batch_at.unwrap_or(0).max(s.state_since);
                let still = s.now.saturating_sub(progress_at);
                if still > max_ms {
                    reasons.push(format!("{ns}: no copy progress for {} s (readyMaxLagMs: {max_ms})", still / 1000));
                }
            }
            _ => {}
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}
