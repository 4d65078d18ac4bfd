//! A change stream read ahead of its consumer: a queue bounded in items and in bytes, filled by
//! a reader task, so that reading goes on while the consumer waits for a write, and memory
//! stays bounded even with 16 MB events.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::StreamItem;

/// How much a feed may hold before its reader waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedLimits {
    pub items: usize,
    /// Bytes of changes waiting; one change larger than this still passes, alone.
    pub bytes: usize,
}

impl Default for FeedLimits {
    fn default() -> Self {
        FeedLimits { items: 1024, bytes: 32 * 1024 * 1024 }
    }
}

type Queued = (StreamItem, Option<OwnedSemaphorePermit>);

/// The reader's end of a feed.
pub struct FeedSender {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
}

impl FeedSender {
    /// Queues an item, waiting while the feed is full (by count or bytes). `false` once the
    /// consumer is gone.
    pub async fn send(&self, item: StreamItem) -> bool {
        let size = match &item {
            StreamItem::Change(change) => change.size.clamp(1, self.max_bytes),
            _ => 0,
        };
        let permit = if size > 0 {
            match self.bytes.clone().acquire_many_owned(size as u32).await {
                Ok(permit) => Some(permit),
                Err(_) => return false,
            }
        } else {
            None
        };
        self.tx.send((item, permit)).await.is_ok()
    }

    /// The consumer is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// An item can be queued without waiting (by count; an item without a size needs no more).
    pub fn has_room(&self) -> bool {
        self.tx.capacity() > 0
    }
}

/// The consumer's end: items in stream order. Dropping it stops the reader.
pub struct ChangeFeed {
    items: mpsc::Receiver<Queued>,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
    task: tokio::task::JoinHandle<()>,
}

impl ChangeFeed {
    /// Starts `reader`, which fills the feed through the sender it is given.
    pub fn spawn<F, Fut>(limits: FeedLimits, reader: F) -> Self
    where
        F: FnOnce(FeedSender) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let max_bytes = limits.bytes.clamp(1, u32::MAX as usize);
        let (tx, items) = mpsc::channel(limits.items.max(1));
        let bytes = Arc::new(Semaphore::new(max_bytes));
        let task = tokio::spawn(reader(FeedSender { tx, bytes: bytes.clone(), max_bytes }));
        ChangeFeed { items, bytes, max_bytes, task }
    }

    /// Nothing read is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes of the changes waiting.
    pub fn buffered_bytes(&self) -> usize {
        self.max_bytes - self.bytes.available_permits()
    }

    /// The next item; `None` once the reader ended (stopped, or after its last item).
    pub async fn next(&mut self) -> Option<StreamItem> {
        self.items.recv().await.map(|(item, _permit)| item)
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Change, ChangeKind};

    fn change(size: usize) -> StreamItem {
        StreamItem::Change(Box::new(Change { token: None, cluster_time: None, kind: ChangeKind::Other, size }))
    }

    /// Issue 13, item 14: a read-ahead of 1024 events of up to 16 MB each could hold 16 GB.
    #[tokio::test]
    async fn the_read_ahead_is_bounded_in_bytes() {
        const MB: usize = 1024 * 1024;
        let limits = FeedLimits { items: 1024, bytes: 32 * MB };
        let (sent_tx, mut sent) = mpsc::unbounded_channel();
        let mut feed = ChangeFeed::spawn(limits, |tx| async move {
            for i in 0..10 {
                if !tx.send(change(16 * MB)).await {
                    return;
                }
                let _ = sent_tx.send(i);
            }
        });
        // The reader fills what the bound allows, then waits for the consumer.
        let mut queued = 0;
        while let Ok(Some(_)) = tokio::time::timeout(std::time::Duration::from_millis(200), sent.recv()).await {
            queued += 1;
        }
        assert_eq!(queued, 2, "two 16 MB events fill a 32 MB read-ahead");
        assert!(feed.buffered_bytes() <= limits.bytes);
        // Each one consumed lets one more in.
        assert!(matches!(feed.next().await, Some(StreamItem::Change(_))));
        assert_eq!(sent.recv().await, Some(2));
        assert!(feed.buffered_bytes() <= limits.bytes);
    }

    #[tokio::test]
    async fn a_change_larger_than_the_bound_still_passes_alone() {
        let mut feed = ChangeFeed::spawn(FeedLimits { items: 4, bytes: 10 }, |tx| async move {
            tx.send(change(1000)).await;
            tx.send(StreamItem::Idle(None)).await;
        });
        assert!(matches!(feed.next().await, Some(StreamItem::Change(_))));
        assert!(matches!(feed.next().await, Some(StreamItem::Idle(None))));
        assert!(feed.next().await.is_none(), "the feed ends with its reader");
    }
}
