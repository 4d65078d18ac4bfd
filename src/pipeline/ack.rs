//! Ordered acknowledgement (the shape of Vector's ordered finalizer): work is started in read
//! order, any number of pieces may be in flight up to a limit, and their results come back in
//! the order they were started, so a checkpoint taken from each result never gets ahead of an
//! earlier piece still in flight. The copy runs `batch.concurrency` commits at once through one;
//! the stream runs one at a time (its writes must apply in order) through another.

use std::future::Future;

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};

use crate::error::SyncError;

/// Pieces of work yielding `Result<T, E>`.
pub struct InOrder<'a, T, E = SyncError> {
    pending: FuturesOrdered<BoxFuture<'a, Result<T, E>>>,
    limit: usize,
}

impl<'a, T, E> InOrder<'a, T, E> {
    /// At most `limit` (at least one) in flight.
    pub fn new(limit: usize) -> Self {
        InOrder { pending: FuturesOrdered::new(), limit: limit.max(1) }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn has_room(&self) -> bool {
        self.pending.len() < self.limit
    }

    /// Starts `work` after everything started before it.
    pub fn push(&mut self, work: impl Future<Output = Result<T, E>> + Send + 'a) {
        self.pending.push_back(Box::pin(work));
    }

    /// The result of the oldest piece, once it and every earlier one finished; `None` when
    /// nothing is in flight. Cancel-safe: a result is never lost to a `select!`.
    pub async fn next(&mut self) -> Option<Result<T, E>> {
        self.pending.next().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn results_come_back_in_the_order_work_started() {
        let mut acks = InOrder::<_, SyncError>::new(3);
        for (i, delay) in [(1, 30), (2, 1), (3, 10)] {
            assert!(acks.has_room());
            acks.push(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Ok(i)
            });
        }
        assert!(!acks.has_room(), "the limit is reached");
        let mut order = vec![];
        while let Some(done) = acks.next().await {
            order.push(done.unwrap());
        }
        assert_eq!(order, vec![1, 2, 3], "the fast second one waits for the slow first one");
        assert!(acks.is_empty());
    }

    #[tokio::test]
    async fn a_failure_is_reported_in_its_place() {
        let mut acks = InOrder::<_, SyncError>::new(2);
        acks.push(async { Ok(1) });
        acks.push(async { Err(SyncError::new(crate::error::ErrorCode::Internal, "boom")) });
        assert_eq!(acks.next().await.unwrap().unwrap(), 1);
        assert!(acks.next().await.unwrap().is_err());
    }
}
