//! Retrying transient failures: one policy and one loop, for every output and for MongoDB.
//!
//! The operation says what became of each attempt ([`Attempt`]: done, a transient failure,
//! partly done, or a permanent failure; each caller's classification is its retry logic, as
//! Vector's `RetryLogic` is). [`RetryPolicy::run`] is the loop around it: it waits an
//! exponential backoff with jitter between attempts, announces every retry (`retry` event,
//! `retries` count), gives up after `retry.maxAttempts` attempts in a row without progress, and
//! starts counting afresh after an attempt that made progress. A sync stopped while the loop
//! waits ends it with [`Flow::Stopped`]: stopping is a way to end, not a failure.
//!
//! ```ignore
//! let policy = RetryPolicy::new(&config.retry, &stats, &events, &cancel);
//! let flow = policy.run("bulk write", || async { match send().await {
//!     Ok(reply) if reply.ok() => Attempt::Done(reply),
//!     Ok(reply) if reply.transient() => Attempt::Retry(reply.describe()),
//!     Ok(reply) => Attempt::Fail(MyError::Refused(reply.describe())),
//!     Err(e) => Attempt::Retry(e.to_string()),
//! }}).await?;
//! let Flow::Done(reply) = flow else { return Ok(Flow::Stopped) };
//! ```

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::config::RetryConfig;
use crate::event::{EventBus, SyncEvent};
use crate::stats::Stats;

/// What became of one attempt: the retry logic's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt<T, E> {
    /// Finished; the loop returns the value.
    Done(T),
    /// A transient failure that got nothing done: try again after the backoff. The text says
    /// why (it goes into the `retry` event and, once attempts run out, the error).
    Retry(String),
    /// Part of the work was done and the rest failed transiently: the rest goes again (the
    /// operation keeps track of what is left). Progress resets the attempt counter and the
    /// backoff, so a long run of partial successes never uses up `retry.maxAttempts`.
    Partial(String),
    /// A permanent failure: the loop returns it as it is.
    Fail(E),
    /// The operation saw the sync stop (e.g. while it waited for the server): the loop ends
    /// with [`Flow::Stopped`].
    Stopped,
}

/// How a retried operation (or anything that can be stopped) ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Flow<T> {
    Done(T),
    /// The sync was stopped before the work was done; nothing after it should count it as done.
    Stopped,
}

impl<T> Flow<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Flow<U> {
        match self {
            Flow::Done(value) => Flow::Done(f(value)),
            Flow::Stopped => Flow::Stopped,
        }
    }

    pub fn is_stopped(&self) -> bool {
        matches!(self, Flow::Stopped)
    }
}

impl<T> Flow<Flow<T>> {
    /// An operation that can itself end stopped, run in a loop that can: stopped if either was.
    pub fn flatten(self) -> Flow<T> {
        match self {
            Flow::Done(inner) => inner,
            Flow::Stopped => Flow::Stopped,
        }
    }
}

/// The value of a [`Flow::Done`]; on [`Flow::Stopped`], returns `Ok(Flow::Stopped)` from the
/// enclosing function (stopping passes up like an error, without being one).
macro_rules! proceed {
    ($flow:expr) => {
        match $flow {
            $crate::retry::Flow::Done(value) => value,
            $crate::retry::Flow::Stopped => return Ok($crate::retry::Flow::Stopped),
        }
    };
}
pub(crate) use proceed;

/// The transient failures went on past `retry.maxAttempts`. Callers turn it into their own
/// error (`From<GaveUp>`), which decides the error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} failed after {attempts} attempts: {cause}")]
pub struct GaveUp {
    pub what: String,
    pub attempts: u32,
    /// Why the last attempt failed.
    pub cause: String,
}

/// Work that can be attempted again: a closure `|| async { … }` returning an [`Attempt`], or a
/// type of its own when the work keeps state between attempts (what is left of a batch, a
/// position reached). Its future must be `Send`: the loop runs inside spawned tasks.
pub trait Retryable {
    type Output;
    type Error;
    fn attempt(&mut self) -> impl Future<Output = Attempt<Self::Output, Self::Error>> + Send;
}

impl<F, Fut, T, E> Retryable for F
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T, E>> + Send,
{
    type Output = T;
    type Error = E;
    fn attempt(&mut self) -> impl Future<Output = Attempt<T, E>> + Send {
        self()
    }
}

/// The retry settings of a sync with what a retry touches: the `retry` events and count, and
/// the stop signal that ends a wait. Cheap to make where needed (it borrows).
#[derive(Clone, Copy)]
pub struct RetryPolicy<'a> {
    config: &'a RetryConfig,
    stats: &'a Stats,
    events: &'a EventBus,
    cancel: &'a CancellationToken,
}

impl<'a> RetryPolicy<'a> {
    pub fn new(config: &'a RetryConfig, stats: &'a Stats, events: &'a EventBus, cancel: &'a CancellationToken) -> Self {
        RetryPolicy { config, stats, events, cancel }
    }

    /// Runs `operation` until it is done or fails for good; `what` names the work in `retry`
    /// events and in the [`GaveUp`] error. The first attempt always runs, even when the sync is
    /// already stopping (a stop still writes what was read); only a wait for a retry is cut
    /// short by a stop.
    pub async fn run<Op>(self, what: &str, mut operation: Op) -> Result<Flow<Op::Output>, Op::Error>
    where
        Op: Retryable,
        Op::Error: From<GaveUp>,
    {
        let mut failures = 0;
        loop {
            let cause = match operation.attempt().await {
                Attempt::Done(value) => return Ok(Flow::Done(value)),
                Attempt::Fail(error) => return Err(error),
                Attempt::Stopped => return Ok(Flow::Stopped),
                Attempt::Retry(cause) => {
                    failures += 1;
                    cause
                }
                Attempt::Partial(cause) => {
                    failures = 1;
                    cause
                }
            };
            if !may_retry(self.config, failures) {
                return Err(GaveUp { what: what.to_string(), attempts: failures, cause }.into());
            }
            if !self.wait(failures, format!("{what}: {cause}")).await {
                return Ok(Flow::Stopped);
            }
        }
    }

    /// Counts and announces retry number `attempt`, then waits its backoff delay. Returns
    /// `false` if the sync was stopped during the wait.
    async fn wait(&self, attempt: u32, cause: String) -> bool {
        let delay = backoff_delay(self.config, attempt);
        self.stats.record_retry();
        self.events.emit(SyncEvent::Retry { attempt, delay_ms: delay.as_millis() as u64, cause });
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.cancel.cancelled() => false,
        }
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
fn may_retry(config: &RetryConfig, attempt: u32) -> bool {
    config.max_attempts.is_none_or(|max| attempt < max)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

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

    #[derive(Debug, PartialEq)]
    enum TestError {
        Permanent(&'static str),
        GaveUp(GaveUp),
    }

    impl From<GaveUp> for TestError {
        fn from(e: GaveUp) -> Self {
            TestError::GaveUp(e)
        }
    }

    /// A policy with tiny delays, and the `retry` events it emits.
    struct Harness {
        config: RetryConfig,
        stats: Stats,
        events: EventBus,
        cancel: CancellationToken,
        seen: Arc<Mutex<Vec<(u32, String)>>>,
    }

    impl Harness {
        fn new(max_attempts: Option<u32>) -> Self {
            let config = RetryConfig { max_attempts, initial_delay: Duration::from_millis(1), max_delay: Duration::from_millis(2) };
            let events = EventBus::default();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let sink = seen.clone();
            events.subscribe(move |e| {
                if let SyncEvent::Retry { attempt, cause, .. } = e {
                    sink.lock().unwrap().push((*attempt, cause.clone()));
                }
            });
            Harness { config, stats: Stats::default(), events, cancel: CancellationToken::new(), seen }
        }

        fn policy(&self) -> RetryPolicy<'_> {
            RetryPolicy::new(&self.config, &self.stats, &self.events, &self.cancel)
        }

        fn attempts(&self) -> Vec<u32> {
            self.seen.lock().unwrap().iter().map(|(n, _)| *n).collect()
        }
    }

    /// Plays a script of verdicts, one per attempt.
    fn script(verdicts: Vec<Attempt<&'static str, TestError>>) -> impl Retryable<Output = &'static str, Error = TestError> {
        let mut verdicts = verdicts.into_iter();
        move || {
            let verdict = verdicts.next().expect("the loop stopped calling when told");
            async move { verdict }
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_done_and_announced() {
        let h = Harness::new(None);
        let verdicts = vec![Attempt::Retry("busy".into()), Attempt::Retry("busy again".into()), Attempt::Done("ok")];
        assert_eq!(h.policy().run("bulk write", script(verdicts)).await, Ok(Flow::Done("ok")));
        assert_eq!(h.attempts(), vec![1, 2]);
        assert_eq!(h.seen.lock().unwrap()[1].1, "bulk write: busy again");
        assert_eq!(h.stats.snapshot().retries, 2);
    }

    #[tokio::test]
    async fn a_permanent_failure_ends_the_loop_at_once() {
        let h = Harness::new(None);
        let verdicts = vec![Attempt::Retry("busy".into()), Attempt::Fail(TestError::Permanent("mapping")), Attempt::Done("never")];
        assert_eq!(h.policy().run("bulk write", script(verdicts)).await, Err(TestError::Permanent("mapping")));
        assert_eq!(h.attempts(), vec![1]);
    }

    #[tokio::test]
    async fn max_attempts_ends_a_run_of_failures_with_the_last_cause() {
        let h = Harness::new(Some(3));
        let verdicts = vec![Attempt::Retry("a".into()), Attempt::Retry("b".into()), Attempt::Retry("c".into()), Attempt::Done("never")];
        let err = h.policy().run("reindex", script(verdicts)).await.unwrap_err();
        assert_eq!(err, TestError::GaveUp(GaveUp { what: "reindex".into(), attempts: 3, cause: "c".into() }));
        assert_eq!(err_text(&err), "reindex failed after 3 attempts: c");
        assert_eq!(h.attempts(), vec![1, 2], "two retries after three attempts");
    }

    fn err_text(e: &TestError) -> String {
        match e {
            TestError::GaveUp(g) => g.to_string(),
            TestError::Permanent(p) => p.to_string(),
        }
    }

    #[tokio::test]
    async fn progress_resets_the_attempt_counter() {
        // Three attempts allowed: failures in a row would give up at the third, but each partial
        // success starts the count again, so the work gets through.
        let h = Harness::new(Some(3));
        let verdicts = vec![
            Attempt::Retry("x".into()),
            Attempt::Retry("x".into()),
            Attempt::Partial("half written".into()),
            Attempt::Retry("x".into()),
            Attempt::Partial("more written".into()),
            Attempt::Retry("x".into()),
            Attempt::Done("all written"),
        ];
        assert_eq!(h.policy().run("bulk write", script(verdicts)).await, Ok(Flow::Done("all written")));
        assert_eq!(h.attempts(), vec![1, 2, 1, 2, 1, 2]);
    }

    #[tokio::test]
    async fn a_stop_during_a_wait_is_a_flow_not_an_error() {
        let mut h = Harness::new(None);
        h.config.initial_delay = Duration::from_secs(60);
        h.config.max_delay = Duration::from_secs(60);
        let calls = Mutex::new(0);
        let cancel = h.cancel.clone();
        let run = h.policy().run("bulk write", || async {
            *calls.lock().unwrap() += 1;
            cancel.cancel();
            Attempt::<(), TestError>::Retry("unreachable".into())
        });
        let ended = tokio::time::timeout(Duration::from_secs(5), run).await.expect("the stop ends the 60 s wait");
        assert_eq!(ended, Ok(Flow::Stopped));
        assert_eq!(*calls.lock().unwrap(), 1, "no attempt after the stop");
    }

    #[tokio::test]
    async fn an_operation_can_end_the_loop_stopped() {
        let h = Harness::new(None);
        let verdicts = vec![Attempt::Retry("busy".into()), Attempt::Stopped, Attempt::Done("never")];
        assert_eq!(h.policy().run("task", script(verdicts)).await, Ok(Flow::Stopped));
        assert_eq!(h.attempts(), vec![1]);
    }

    #[tokio::test]
    async fn the_first_attempt_runs_even_when_already_stopping() {
        let h = Harness::new(None);
        h.cancel.cancel();
        let verdicts = vec![Attempt::Done("flushed")];
        assert_eq!(h.policy().run("last batch", script(verdicts)).await, Ok(Flow::Done("flushed")));
        let failing = vec![Attempt::Retry("down".into()), Attempt::Done("never")];
        assert_eq!(h.policy().run("last batch", script(failing)).await, Ok(Flow::Stopped));
    }

    /// Gets two items through per attempt, keeping what is left.
    struct TwoAtATime<'a> {
        left: &'a mut Vec<u32>,
        done: &'a mut Vec<u32>,
    }

    impl Retryable for TwoAtATime<'_> {
        type Output = usize;
        type Error = TestError;
        async fn attempt(&mut self) -> Attempt<usize, TestError> {
            let n = 2.min(self.left.len());
            self.done.extend(self.left.drain(..n));
            if self.left.is_empty() {
                Attempt::Done(self.done.len())
            } else {
                Attempt::Partial(format!("{} left", self.left.len()))
            }
        }
    }

    #[tokio::test]
    async fn an_operation_keeps_its_state_across_attempts() {
        let h = Harness::new(Some(2));
        let (mut left, mut done) = (vec![1, 2, 3, 4, 5], Vec::new());
        let flow = h.policy().run("items", TwoAtATime { left: &mut left, done: &mut done }).await;
        assert_eq!(flow, Ok(Flow::Done(5)));
        assert_eq!((left, done), (vec![], vec![1, 2, 3, 4, 5]));
        assert_eq!(h.attempts(), vec![1, 1], "each partial attempt starts the count again");
        assert_eq!(Flow::Done(Flow::<u8>::Stopped).flatten(), Flow::Stopped);
        assert_eq!(Flow::Done(Flow::Done(1)).flatten().map(|n| n + 1), Flow::Done(2));
    }
}
