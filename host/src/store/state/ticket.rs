//! What a write returns: the [`CommitTicket`] that resolves once its batch is durable, and the [`Durable`]
//! progress the writer thread publishes for each object.

use std::sync::Arc;

use tokio::sync::watch;

use super::types::Batch;
use crate::store::error::Error;

/// Resolves once a committed batch is durable. Returned by
/// [`ObjectState::commit`](super::ObjectState::commit) and the other writes.
#[derive(Debug)]
pub struct CommitTicket {
    /// The seq of the committed batch (for an empty batch, the applied seq it waits for).
    pub seq: u64,
    /// The install generation it was issued in: a snapshot installed since means its batch was made durable
    /// before the install replaced the file.
    generation: u64,
    batch: Option<Arc<Batch>>,
    rx: watch::Receiver<Durable>,
}

impl CommitTicket {
    /// A ticket for `seq` (carrying its `batch`) that watches the object's durable progress through `rx`, in
    /// the install generation `rx` is at now.
    pub(super) fn new(
        seq: u64,
        batch: Option<Arc<Batch>>,
        rx: watch::Receiver<Durable>,
    ) -> CommitTicket {
        let generation = rx.borrow().generation;
        CommitTicket {
            seq,
            generation,
            batch,
            rx,
        }
    }

    /// Waits until every batch of this object up to `seq` is on disk as the store's durability asks
    /// (written and fdatasynced for [`crate::store::Durability::Fsync`], written for
    /// [`crate::store::Durability::None`]).
    ///
    /// Returns [`Error::Failed`] if the object's writer failed before that, and [`Error::Closed`] if the store
    /// went away first.
    pub async fn durable(mut self) -> Result<(), Error> {
        let (seq, generation) = (self.seq, self.generation);
        match self
            .rx
            .wait_for(|d| d.covers(seq, generation) || d.failed.is_some())
            .await
        {
            Ok(d) if d.covers(seq, generation) => Ok(()),
            Ok(d) => Err(Error::Failed(d.failed.clone().unwrap_or_default())),
            Err(_) => Err(Error::Closed),
        }
    }

    /// True if the batch is already durable (never blocks).
    pub fn is_durable(&self) -> bool {
        self.rx.borrow().covers(self.seq, self.generation)
    }

    /// The batch this commit wrote, as it is shipped to replicas (`None` for an empty read-barrier commit).
    pub fn batch(&self) -> Option<Arc<Batch>> {
        self.batch.clone()
    }
}

/// What the writer has made durable for one object.
#[derive(Debug, Clone, Default)]
pub(super) struct Durable {
    /// Every batch up to this seq is durable.
    pub(super) seq: u64,
    /// Why the object failed, once it did.
    pub(super) failed: Option<String>,
    /// Bumped by each installed snapshot (which may move `seq` back).
    pub(super) generation: u64,
}

impl Durable {
    /// True if a ticket for `seq` issued in `generation` is resolved: its batch is durable, or a snapshot
    /// installed since replaced the file after writing it.
    fn covers(&self, seq: u64, generation: u64) -> bool {
        self.generation != generation || self.seq >= seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;

    fn ticket(seq: u64, tx: &watch::Sender<Durable>) -> CommitTicket {
        CommitTicket::new(seq, None, tx.subscribe())
    }

    #[tokio::test]
    async fn a_ticket_resolves_once_its_seq_is_durable_and_not_before() {
        let (tx, _) = watch::channel(Durable::default());
        let t = ticket(2, &tx);
        assert!(!t.is_durable());
        tx.send_modify(|d| d.seq = 1);
        let waiting = tokio::spawn(t.durable());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "resolved at seq 1 for seq 2");
        tx.send_modify(|d| d.seq = 2);
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_failed_object_fails_its_pending_tickets_with_the_reason() {
        let (tx, _) = watch::channel(Durable::default());
        let t = ticket(1, &tx);
        tx.send_modify(|d| d.failed = Some("writing state.tsv: EIO".into()));
        match t.durable().await {
            Err(Error::Failed(why)) => assert!(why.contains("EIO"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_installed_snapshot_resolves_tickets_of_the_history_it_replaced() {
        let (tx, _) = watch::channel(Durable::default());
        let t = ticket(5, &tx);
        // The install moves the durable seq back, in a new generation: the batch was written first.
        tx.send_modify(|d| {
            d.generation += 1;
            d.seq = 3;
        });
        assert!(t.is_durable());
        assert!(t.durable().now_or_never().unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_ticket_whose_store_went_away_reports_closed() {
        let (tx, _) = watch::channel(Durable::default());
        let t = ticket(1, &tx);
        drop(tx);
        assert!(matches!(t.durable().await, Err(Error::Closed)));
    }
}
