//! Durable storage of the directory's Raft group in one redb database (`data/cluster/raft.redb`):
//! the log, the vote, the committed id and the latest snapshot. redb commits a write
//! transaction with an fsync before returning, so what openraft is told is written survives a
//! crash or power loss; the project keeps no second write-ahead log of its own for it.
//!
//! The state machine ([`StateMachine`]) lives in memory, restored from the snapshot at start;
//! openraft re-applies the committed entries after it. Every change is published on a
//! `tokio::sync::watch` channel so the station can follow the directory without polling.

// openraft's error types (fixed by its traits) are large; its own examples allow this too.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{RwLock, watch};

use super::state::DirectoryState;
use super::{NodeId, StationNode, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const PURGED_KEY: &str = "last_purged";
const SNAPSHOT_KEY: &str = "snapshot";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// Opens (or creates) the database under `dir`.
pub fn open_db(dir: &Path) -> anyhow::Result<Arc<Database>> {
    std::fs::create_dir_all(dir)?;
    let db = Database::create(dir.join("raft.redb"))?;
    let txn = db.begin_write()?;
    txn.open_table(LOG)?;
    txn.open_table(META)?;
    txn.commit()?;
    Ok(Arc::new(db))
}

fn io_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::write_logs(&e).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::read_logs(&e).into()
}

/// Runs blocking database work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StorageResult<T> + Send + 'static,
) -> StorageResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::from(StorageIOError::<NodeId>::write_logs(&e)))?
}

fn get_meta<T: for<'de> Deserialize<'de>>(db: &Database, key: &str) -> StorageResult<Option<T>> {
    let txn = db.begin_read().map_err(read_err)?;
    let table = txn.open_table(META).map_err(read_err)?;
    match table.get(key).map_err(read_err)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(read_err),
    }
}

fn put_meta<T: Serialize>(db: &Database, key: &str, value: &T) -> StorageResult<()> {
    let bytes = serde_json::to_vec(value).map_err(io_err)?;
    let txn = db.begin_write().map_err(io_err)?;
    {
        let mut table = txn.open_table(META).map_err(io_err)?;
        table.insert(key, bytes.as_slice()).map_err(io_err)?;
    }
    txn.commit().map_err(io_err)
}

/// The Raft log, vote and committed id.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// The log store in `db`.
    pub fn new(db: Arc<Database>) -> LogStore {
        LogStore { db }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let db = self.db.clone();
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        blocking(move || {
            let txn = db.begin_read().map_err(read_err)?;
            let table = txn.open_table(LOG).map_err(read_err)?;
            let mut out = Vec::new();
            for item in table.range::<u64>(range).map_err(read_err)? {
                let (_, value) = item.map_err(read_err)?;
                out.push(serde_json::from_slice(value.value()).map_err(read_err)?);
            }
            Ok(out)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let db = self.db.clone();
        blocking(move || {
            let last_purged: Option<LogId<NodeId>> = get_meta(&db, PURGED_KEY)?;
            let txn = db.begin_read().map_err(read_err)?;
            let table = txn.open_table(LOG).map_err(read_err)?;
            let last = match table.last().map_err(read_err)? {
                Some((_, value)) => {
                    let entry: Entry<TypeConfig> =
                        serde_json::from_slice(value.value()).map_err(read_err)?;
                    Some(entry.log_id)
                }
                None => last_purged,
            };
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let db = self.db.clone();
        let vote = *vote;
        blocking(move || put_meta(&db, VOTE_KEY, &vote)).await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        let db = self.db.clone();
        blocking(move || get_meta(&db, VOTE_KEY)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        let db = self.db.clone();
        blocking(move || put_meta(&db, COMMITTED_KEY, &committed)).await
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        let db = self.db.clone();
        blocking(move || Ok(get_meta::<Option<LogId<NodeId>>>(&db, COMMITTED_KEY)?.flatten())).await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|e| Ok((e.log_id.index, serde_json::to_vec(&e).map_err(io_err)?)))
            .collect::<StorageResult<Vec<(u64, Vec<u8>)>>>()?;
        let db = self.db.clone();
        let result = blocking(move || {
            let txn = db.begin_write().map_err(io_err)?;
            {
                let mut table = txn.open_table(LOG).map_err(io_err)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice()).map_err(io_err)?;
                }
            }
            txn.commit().map_err(io_err)
        })
        .await;
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write().map_err(io_err)?;
            {
                let mut table = txn.open_table(LOG).map_err(io_err)?;
                table
                    .retain_in(log_id.index.., |_, _| false)
                    .map_err(io_err)?;
            }
            txn.commit().map_err(io_err)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let db = self.db.clone();
        blocking(move || {
            let bytes = serde_json::to_vec(&log_id).map_err(io_err)?;
            let txn = db.begin_write().map_err(io_err)?;
            {
                let mut meta = txn.open_table(META).map_err(io_err)?;
                meta.insert(PURGED_KEY, bytes.as_slice()).map_err(io_err)?;
                let mut table = txn.open_table(LOG).map_err(io_err)?;
                table
                    .retain_in(..=log_id.index, |_, _| false)
                    .map_err(io_err)?;
            }
            txn.commit().map_err(io_err)
        })
        .await
    }
}

/// What the state machine holds: the directory and where it is in the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    /// The last log entry applied.
    pub last_applied: Option<LogId<NodeId>>,
    /// The membership (voters, learners and their addresses) as of `last_applied`.
    pub membership: StoredMembership<NodeId, StationNode>,
    /// The directory.
    pub directory: DirectoryState,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, StationNode>,
    data: Vec<u8>,
}

/// The directory's state machine. Cheap to clone.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    applied: Arc<RwLock<Applied>>,
    published: Arc<watch::Sender<Arc<Applied>>>,
}

impl StateMachine {
    /// The state machine in `db`, restored from its latest snapshot.
    pub fn open(db: Arc<Database>) -> anyhow::Result<StateMachine> {
        let applied = match get_meta::<StoredSnapshot>(&db, SNAPSHOT_KEY)
            .map_err(|e| anyhow::anyhow!("reading the directory snapshot: {e}"))?
        {
            Some(snapshot) => Applied {
                last_applied: snapshot.meta.last_log_id,
                membership: snapshot.meta.last_membership.clone(),
                directory: serde_json::from_slice(&snapshot.data)?,
            },
            None => Applied::default(),
        };
        let (published, _) = watch::channel(Arc::new(applied.clone()));
        Ok(StateMachine {
            db,
            applied: Arc::new(RwLock::new(applied)),
            published: Arc::new(published),
        })
    }

    /// Follows every change of the directory.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Applied>> {
        self.published.subscribe()
    }

    /// The directory as applied here now.
    pub fn current(&self) -> Arc<Applied> {
        self.published.borrow().clone()
    }

    fn publish(&self, applied: &Applied) {
        self.published.send_replace(Arc::new(applied.clone()));
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let applied = self.applied.read().await.clone();
        let data = serde_json::to_vec(&applied.directory).map_err(io_err)?;
        let snapshot_id = match applied.last_applied {
            Some(last) => format!("{}-{}", last.leader_id, last.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let db = self.db.clone();
        blocking(move || put_meta(&db, SNAPSHOT_KEY, &stored)).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, StationNode>)> {
        let applied = self.applied.read().await;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<super::state::Outcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.applied.write().await;
        let mut outcomes = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => outcomes.push(Default::default()),
                EntryPayload::Normal(command) => {
                    outcomes.push(applied.directory.apply(&command));
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    outcomes.push(Default::default());
                }
            }
        }
        self.publish(&applied);
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, StationNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let directory: DirectoryState = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let db = self.db.clone();
        blocking(move || put_meta(&db, SNAPSHOT_KEY, &stored)).await?;
        let mut applied = self.applied.write().await;
        *applied = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            directory,
        };
        self.publish(&applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let db = self.db.clone();
        let stored = blocking(move || get_meta::<StoredSnapshot>(&db, SNAPSHOT_KEY)).await?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
