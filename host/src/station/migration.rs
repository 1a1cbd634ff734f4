//! The station's side of a live migration: pausing an object, exporting what moves with it (versions,
//! state, log), the pre-copy that ships most of it before the pause, the hand-off, and installing a
//! migrated object on the target. The protocol lives in `coordinator/migration.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::replica::ReplicaObject;
use super::{Error, LiveObject, Station, blocking};
use crate::store::{self, LogRecord, Placement, Snapshot, VersionRecord};

/// Everything that moves with an object in a migration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectExport {
    /// Object id.
    pub object_id: String,
    /// Placement epoch on the old home; the new home takes `epoch + 1`.
    pub epoch: u64,
    /// Every version, oldest first, with its bytes.
    pub versions: Vec<(VersionRecord, Vec<u8>)>,
    /// The state.
    pub snapshot: Snapshot,
    /// The log, oldest first: the lines after the first `logs_from`, which the target already
    /// has from the pre-copy.
    pub logs: Vec<LogRecord>,
    /// How many of the log's first lines the target already has (0: `logs` is the whole log).
    pub logs_from: usize,
}

/// What a migration copies to the target before pausing the object: every version and the log so
/// far. Only what changed after it travels during the pause.
pub struct Precopy {
    /// Every version, oldest first, with its bytes.
    pub versions: Vec<(VersionRecord, Vec<u8>)>,
    /// The log so far, oldest first.
    pub logs: Vec<LogRecord>,
}

/// What the target of a migration holds from the pre-copy, so the export during the pause can leave
/// it out.
#[derive(Debug, Default)]
pub struct Copied {
    /// Version numbers the target has.
    pub versions: std::collections::HashSet<u32>,
    /// Number of log lines the target has, and the last of them (to check the log was not rotated
    /// in between).
    pub logs: usize,
    /// The last pre-copied log line.
    pub last_log: Option<LogRecord>,
}

impl Copied {
    /// What the target holds after receiving `precopy`.
    pub fn of(precopy: &Precopy) -> Copied {
        Copied {
            versions: precopy.versions.iter().map(|(r, _)| r.version).collect(),
            logs: precopy.logs.len(),
            last_log: precopy.logs.last().cloned(),
        }
    }
}

/// A guard holding an object's turn: no call runs on it until the guard is dropped or the
/// object is handed off.
pub struct Paused {
    object: Arc<LiveObject>,
    guard: tokio::sync::OwnedMutexGuard<Option<crate::runtime::Activation>>,
    /// When the pause began.
    pub since: Instant,
}

impl Station {
    /// Takes the object's turn and keeps it: calls queue until the guard is dropped or handed off.
    pub async fn pause(&self, id: &str) -> Result<Paused, Error> {
        let object = self.object(id)?;
        let guard = object.turn.clone().lock_owned().await;
        Ok(Paused {
            object,
            guard,
            since: Instant::now(),
        })
    }

    /// Everything that moves with a paused object.
    pub async fn export(
        &self,
        paused: &mut Paused,
        copied: &Copied,
    ) -> Result<ObjectExport, Error> {
        let object = &paused.object;
        let state = self.state_of(object).await?;
        // Calls before the pause may still be waiting for their batch to be durable.
        state.commit(Vec::new())?.durable().await?;
        let store = self.inner.store.clone();
        let id = object.id.clone();
        let skip = copied.versions.clone();
        let (versions, mut logs) = blocking(move || -> Result<_, store::Error> {
            let mut versions = Vec::new();
            for record in store.versions().list(&id)? {
                if !skip.contains(&record.version) {
                    let bytes = store.versions().read_bytes(&id, record.version)?;
                    versions.push((record, bytes));
                }
            }
            Ok((versions, store.logs().export(&id)?))
        })
        .await??;
        // Ship only the lines after the pre-copied ones, unless the log rotated in between.
        let n = copied.logs;
        let logs_from =
            if n > 0 && logs.len() >= n && copied.last_log.as_ref() == Some(&logs[n - 1]) {
                logs.drain(..n);
                n
            } else {
                0
            };
        Ok(ObjectExport {
            object_id: object.id.clone(),
            epoch: object.epoch.load(Ordering::Relaxed),
            versions,
            snapshot: state.export_snapshot(),
            logs,
            logs_from,
        })
    }

    /// Reads what a migration copies before pausing: every version and the log so far (the object
    /// keeps serving).
    pub async fn precopy(&self, id: &str) -> Result<Precopy, Error> {
        let object = self.object(id)?;
        let versions = self.version_bytes(&object.id).await?;
        let store = self.inner.store.clone();
        let id = object.id.clone();
        let logs = blocking(move || store.logs().export(&id)).await??;
        Ok(Precopy { versions, logs })
    }

    /// Receives a migration's pre-copy: stores the versions (as a replica would) and replaces this
    /// station's log of the object with the copied one. Refused for an object homed here.
    pub async fn install_precopy(&self, id: &str, precopy: Precopy) -> Result<(), Error> {
        super::validate_object_id(id)?;
        if self.serves(id) {
            return Err(Error::HomedHere(id.to_string()));
        }
        let store = self.inner.store.clone();
        let id = id.to_string();
        blocking(move || -> Result<(), store::Error> {
            for (record, bytes) in &precopy.versions {
                store.versions().install(&id, record, bytes)?;
            }
            store.logs().purge(&id)?;
            store.logs().import(&id, &precopy.logs)
        })
        .await??;
        Ok(())
    }

    /// Completes a hand-off: the object now lives at `address` (epoch `epoch`). Calls queued on
    /// the turn, and later ones, are answered with [`Error::Moved`] and forwarded there.
    pub async fn hand_off(
        &self,
        mut paused: Paused,
        new_home: &str,
        address: &str,
        epoch: u64,
    ) -> Result<(), Error> {
        let id = paused.object.id.clone();
        *paused.object.moved_to.lock().expect("moved lock") = Some(address.to_string());
        self.inner
            .moved
            .lock()
            .expect("moved lock")
            .insert(id.clone(), address.to_string());
        self.inner.objects.lock().expect("objects lock").remove(&id);
        *paused.guard = None;
        drop(paused);
        let store = self.inner.store.clone();
        let placement = Placement::replica_of(new_home, epoch);
        let id_owned = id.clone();
        let state = blocking(move || -> Result<_, store::Error> {
            store.versions().set_placement(&id_owned, &placement)?;
            Ok((store.state(&id_owned)?, placement))
        })
        .await??;
        self.inner.replicas.lock().expect("replicas lock").insert(
            id.clone(),
            ReplicaObject {
                state: state.0,
                placement: state.1,
                needs_snapshot: true,
            },
        );
        Ok(())
    }

    /// Installs a migrated object and serves it as its home at `epoch`.
    pub async fn install_migrated(&self, export: ObjectExport, epoch: u64) -> Result<(), Error> {
        let id = export.object_id.clone();
        super::validate_object_id(&id)?;
        let store = self.inner.store.clone();
        let station_id = self.station_id().to_string();
        let snapshot = export.snapshot;
        let versions = export.versions;
        let logs = export.logs;
        let logs_from = export.logs_from;
        let id_owned = id.clone();
        let (state, current) = blocking(move || -> Result<_, store::Error> {
            for (record, bytes) in &versions {
                store.versions().install(&id_owned, record, bytes)?;
            }
            let state = store.state(&id_owned)?;
            state.install_snapshot(&snapshot)?;
            if logs_from == 0 {
                // The whole log came now: drop any older copy of it.
                store.logs().purge(&id_owned)?;
            }
            store.logs().import(&id_owned, &logs)?;
            store
                .versions()
                .set_placement(&id_owned, &Placement::home(epoch, station_id))?;
            let current = store.versions().current(&id_owned)?;
            Ok((state, current))
        })
        .await??;
        let Some(current) = current else {
            return Err(Error::ObjectNotFound(id));
        };
        self.inner
            .replicas
            .lock()
            .expect("replicas lock")
            .remove(&id);
        self.inner.moved.lock().expect("moved lock").remove(&id);
        let object = Arc::new(LiveObject::new(
            &id,
            current,
            None,
            false,
            &self.inner.config.quota,
        ));
        object.epoch.store(epoch, Ordering::Relaxed);
        let _ = object.state.set(state);
        self.inner
            .objects
            .lock()
            .expect("objects lock")
            .insert(id, object.clone());
        // Its alarms fire here now (they came with its state).
        self.schedule_alarms_of(&object).await;
        Ok(())
    }
}

impl Paused {
    /// The paused object's id.
    pub fn object_id(&self) -> &str {
        &self.object.id
    }
}
