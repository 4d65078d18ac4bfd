//! The order of `start()` and `stop()` calls as the caller made them. A binding runs each call
//! as its own future on the engine's threads, so `start(); stop()` may reach the engine in either
//! order; numbered when called, a stop ends every start called before it, whichever arrives first.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// A `start()` call, numbered in call order (see [`Calls::start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "a start call must be run: a stop called after it waits for it"]
pub struct StartCall(u64);

/// A `stop()` call: it ends the starts called before it, and no later one.
#[derive(Debug, Clone, Copy)]
pub struct StopCall {
    covers: u64,
}

impl StopCall {
    /// Whether `start` was called before this stop.
    pub fn covers(self, start: StartCall) -> bool {
        start.0 <= self.covers
    }
}

pub(super) struct Calls {
    starts: AtomicU64,
    /// The last start called before a stop: those up to it are ended as they arrive.
    stopped_upto: AtomicU64,
    /// The highest start that has registered its run or been refused.
    settled: watch::Sender<u64>,
}

impl Default for Calls {
    fn default() -> Self {
        Calls { starts: AtomicU64::new(0), stopped_upto: AtomicU64::new(0), settled: watch::Sender::new(0) }
    }
}

impl Calls {
    /// Numbers a `start()` call; to be made when the caller calls, before anything awaits.
    pub fn start(&self) -> StartCall {
        StartCall(self.starts.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Numbers a `stop()` call; to be made when the caller calls, before anything awaits.
    pub fn stop(&self) -> StopCall {
        let covers = self.starts.load(Ordering::SeqCst);
        self.stopped_upto.fetch_max(covers, Ordering::SeqCst);
        StopCall { covers }
    }

    /// Whether a stop was called after `start`: its run is to end as soon as it is registered.
    pub fn stopped(&self, start: StartCall) -> bool {
        start.0 <= self.stopped_upto.load(Ordering::SeqCst)
    }

    /// `start` has registered its run, was refused, or will not run: stops waiting for it go on.
    pub fn settle(&self, start: StartCall) {
        self.settled.send_modify(|settled| *settled = (*settled).max(start.0));
    }

    /// Settles `start` when dropped: once its run is registered or refused, or if its future is
    /// dropped before (a stop called after it would otherwise wait forever).
    pub fn settling(&self, start: StartCall) -> Settling<'_> {
        Settling { calls: self, start }
    }

    /// Waits until the last start called before `stop` has registered its run or been refused.
    /// (An earlier start still on its way finds that run, or its end: it is refused, or covered
    /// by this stop, registered stopping.)
    pub async fn settled_before(&self, stop: StopCall) {
        let mut settled = self.settled.subscribe();
        // The sender lives in `self`, borrowed for as long as this waits: it cannot close.
        let _ = settled.wait_for(|settled| *settled >= stop.covers).await;
    }
}

/// See [`Calls::settling`].
pub struct Settling<'a> {
    calls: &'a Calls,
    start: StartCall,
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        self.calls.settle(self.start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_covers_the_starts_called_before_it_only() {
        let calls = Calls::default();
        let first = calls.start();
        let stop = calls.stop();
        let second = calls.start();
        assert!(stop.covers(first) && calls.stopped(first));
        assert!(!stop.covers(second) && !calls.stopped(second));
    }

    #[tokio::test]
    async fn a_stop_waits_for_the_starts_before_it_to_settle() {
        let calls = Calls::default();
        let (first, second) = (calls.start(), calls.start());
        let stop = calls.stop();
        calls.settle(first);
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), calls.settled_before(stop)).await;
        assert!(waiting.is_err(), "the second start has not settled");
        calls.settle(second);
        calls.settled_before(stop).await;
        calls.settled_before(Calls::default().stop()).await;
    }

    #[tokio::test]
    async fn a_start_whose_future_is_dropped_does_not_hold_up_a_stop() {
        let calls = Calls::default();
        let start = calls.start();
        let stop = calls.stop();
        let pending = async {
            let _settling = calls.settling(start);
            std::future::pending::<()>().await;
        };
        assert!(tokio::time::timeout(std::time::Duration::from_millis(20), pending).await.is_err(), "dropped while pending");
        calls.settled_before(stop).await;
    }
}
