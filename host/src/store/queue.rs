//! Backpressure from the state writer to commits: the bytes of committed batches not yet written are
//! bounded.
//!
//! Every batch queued for the writer holds a [`WritePermit`] for its size, taken from one budget per store
//! (`StoreConfig::writer_queue_bytes`). The writer releases a batch's permit once the batch's bytes are in
//! the log and its object's file. When the disk is slower than the commits, a commit waits for room
//! ([`WriteQueue::reserve`], async) instead of queueing without bound: the callers slow down to the disk's
//! pace and memory stays bounded.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::Error;
use super::state::{Batch, Write};

/// Bytes a record costs beyond its key and value (its line, seq and hlc).
const RECORD_OVERHEAD: usize = 48;
/// Bytes a batch costs beyond its records (its commit line).
const BATCH_OVERHEAD: usize = 96;

/// The writer's queue budget. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct WriteQueue {
    budget: Arc<Semaphore>,
    /// The budget's size: a batch larger than it waits for the whole budget.
    capacity: u32,
}

/// Room in the writer's queue for one batch, held until the writer has written it.
#[derive(Debug)]
pub struct WritePermit {
    permit: OwnedSemaphorePermit,
}

impl WritePermit {
    /// Bytes of budget held.
    pub fn bytes(&self) -> usize {
        self.permit.num_permits()
    }

    /// Joins `other` into this permit (the writer keeps one per object per round).
    pub(crate) fn merge(&mut self, other: WritePermit) {
        self.permit.merge(other.permit);
    }
}

impl WriteQueue {
    /// A budget of `bytes` (at least 1 MiB, at most 4 GiB).
    pub(crate) fn new(bytes: usize) -> WriteQueue {
        let capacity = bytes.clamp(1 << 20, u32::MAX as usize) as u32;
        WriteQueue {
            budget: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
        }
    }

    /// Waits for room for a batch of `cost` bytes (see [`write_cost`], [`batch_cost`]).
    pub(crate) async fn reserve(&self, cost: usize) -> Result<WritePermit, Error> {
        let n = self.clamp(cost);
        let permit = Arc::clone(&self.budget)
            .acquire_many_owned(n)
            .await
            .map_err(|_| Error::Closed)?;
        Ok(WritePermit { permit })
    }

    /// [`WriteQueue::reserve`] for a synchronous caller: blocks the thread while the queue is full. Never
    /// call it on an async worker (it would stall every task on the worker until the disk catches up).
    pub(crate) fn reserve_blocking(&self, cost: usize) -> Result<WritePermit, Error> {
        if let Ok(permit) = Arc::clone(&self.budget).try_acquire_many_owned(self.clamp(cost)) {
            return Ok(WritePermit { permit });
        }
        futures::executor::block_on(self.reserve(cost))
    }

    /// Bytes of budget free now.
    pub(crate) fn available(&self) -> usize {
        self.budget.available_permits()
    }

    /// The budget's size in bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity as usize
    }

    fn clamp(&self, cost: usize) -> u32 {
        cost.clamp(1, self.capacity as usize) as u32
    }
}

/// What a batch of `writes` costs in the queue.
pub fn write_cost(writes: &[Write]) -> usize {
    BATCH_OVERHEAD
        + writes
            .iter()
            .map(|w| match w {
                Write::Set { key, value } => key.len() + value.len() + RECORD_OVERHEAD,
                Write::Delete { key } => key.len() + RECORD_OVERHEAD,
            })
            .sum::<usize>()
}

/// What a replicated batch costs in the queue.
pub fn batch_cost(batch: &Batch) -> usize {
    BATCH_OVERHEAD
        + batch
            .records
            .iter()
            .map(|r| r.key.len() + r.value.as_ref().map_or(0, |v| v.len()) + RECORD_OVERHEAD)
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_makes_the_next_reservation_wait_until_a_permit_is_released() {
        let queue = WriteQueue::new(1 << 20);
        let big = queue.reserve(1 << 20).await.unwrap();
        assert_eq!(queue.available(), 0);
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.reserve(100).await.unwrap().bytes() }
        });
        // The reservation cannot complete while the budget is taken.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(big);
        assert_eq!(waiting.await.unwrap(), 100);
        assert_eq!(queue.available(), queue.capacity());
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_budget_takes_all_of_it_instead_of_waiting_forever() {
        let queue = WriteQueue::new(1 << 20);
        let permit = queue.reserve(10 << 20).await.unwrap();
        assert_eq!(permit.bytes(), 1 << 20);
    }

    #[test]
    fn costs_grow_with_keys_and_values() {
        let small = write_cost(&[Write::Set {
            key: "k".into(),
            value: "v".into(),
        }]);
        let large = write_cost(&[Write::Set {
            key: "k".into(),
            value: "v".repeat(1000),
        }]);
        assert_eq!(large - small, 999);
    }
}
