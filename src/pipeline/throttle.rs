//! `rateLimit`: caps on the documents and bytes per second a sync hands to its outputs, for the
//! copy and the stream alike, so that a sync sharing a cluster leaves room for the others.
//!
//! Each cap is a token bucket holding at most one second of tokens, full at the start. A batch
//! takes its tokens at once and waits until the bucket has earned them (a batch larger than a
//! second's worth waits for its whole size), so that `t` seconds after the start at most
//! `rate × (t + 1)` have gone out. Batches queue up in the order they asked.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimitConfig;

/// One cap: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    /// Tokens available at `at`; negative while a large batch is being paid for.
    balance: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: f64, now: Instant) -> Self {
        TokenBucket { rate, burst: rate, balance: rate, at: now }
    }

    /// Takes `amount` tokens at `now`; returns how long the caller must wait before it may use
    /// them (zero when the bucket had them).
    pub fn take(&mut self, amount: f64, now: Instant) -> Duration {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.balance = (self.balance + earned).min(self.burst);
        self.at = self.at.max(now);
        let wait = if self.balance >= amount { 0.0 } else { (amount - self.balance) / self.rate };
        self.balance -= amount;
        Duration::from_secs_f64(wait)
    }
}

/// The caps of one sync, shared by its collections.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: Mutex<(Option<TokenBucket>, Option<TokenBucket>)>,
}

impl RateLimiter {
    pub fn new(config: &RateLimitConfig) -> Self {
        let now = Instant::now();
        let bucket = |rate: Option<f64>| rate.map(|r| TokenBucket::new(r, now));
        RateLimiter { buckets: Mutex::new((bucket(config.docs_per_second), bucket(config.bytes_per_second))) }
    }

    /// How long a batch of `docs` documents and `bytes` bytes must wait before it goes.
    pub fn reserve(&self, docs: usize, bytes: usize) -> Duration {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        let (by_docs, by_bytes) = &mut *buckets;
        let docs_wait = by_docs.as_mut().map_or(Duration::ZERO, |b| b.take(docs as f64, now));
        let bytes_wait = by_bytes.as_mut().map_or(Duration::ZERO, |b| b.take(bytes as f64, now));
        docs_wait.max(bytes_wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_lets_a_second_s_worth_through_then_paces_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100.0, start);
        assert_eq!(bucket.take(60.0, start), Duration::ZERO);
        assert_eq!(bucket.take(40.0, start), Duration::ZERO, "the burst is one second's worth");
        assert_eq!(bucket.take(50.0, start), Duration::from_millis(500));
        // The next one waits behind the one already waiting.
        assert_eq!(bucket.take(50.0, start), Duration::from_secs(1));
        // Time pays the debt: 1.5 s after the start, 150 earned against 100 owed.
        assert_eq!(bucket.take(100.0, start + Duration::from_millis(1500)), Duration::from_millis(500));
    }

    #[test]
    fn unused_time_saves_at_most_one_second_and_a_big_batch_waits_for_its_size() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, start);
        assert_eq!(bucket.take(10.0, start), Duration::ZERO);
        // An hour idle saves one second's worth, not an hour's.
        let later = start + Duration::from_secs(3600);
        assert_eq!(bucket.take(30.0, later), Duration::from_secs(2), "20 beyond the 10 saved, at 10/s");
    }

    #[test]
    fn whatever_the_batches_no_more_than_rate_times_elapsed_plus_a_second_goes_out() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(250.0, start);
        let mut now = start;
        let mut sent = 0.0;
        for size in [1.0, 400.0, 3.0, 999.0, 17.0, 250.0, 80.0, 1200.0, 5.0] {
            now += bucket.take(size, now);
            sent += size;
            let allowed = 250.0 * (now - start).as_secs_f64() + 250.0;
            assert!(sent <= allowed + 1e-6, "{sent} sent by {:?}, at most {allowed}", now - start);
        }
    }

    #[test]
    fn the_longer_wait_of_documents_and_bytes_holds_a_batch() {
        let limiter = RateLimiter::new(&RateLimitConfig { docs_per_second: Some(1000.0), bytes_per_second: Some(10_000.0) });
        assert_eq!(limiter.reserve(10, 10_000), Duration::ZERO);
        let wait = limiter.reserve(10, 5_000);
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "bytes hold it: {wait:?}");
        let docs_only = RateLimiter::new(&RateLimitConfig { docs_per_second: Some(10.0), bytes_per_second: None });
        assert_eq!(docs_only.reserve(10, usize::MAX), Duration::ZERO);
        assert!(docs_only.reserve(5, 0) > Duration::from_millis(400));
    }
}
