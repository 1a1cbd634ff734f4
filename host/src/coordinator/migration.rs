//! Live migration (`POST /cluster/migrate`): pause the object's turn, ship every version, the
//! state and the log to the target, let it install them and claim the object at epoch + 1, then
//! hand off. Calls that arrived during the move wait on the turn and are then forwarded to the
//! new home; no acknowledged write is lost or applied twice because nothing runs while paused.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Coordinator;
use super::wire::base64_bytes;
use crate::station::{Copied, ObjectExport, Precopy};
use crate::store::{LogRecord, Snapshot, VersionRecord};

/// What a migration did, as the API reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrationReport {
    /// Object id.
    pub object_id: String,
    /// The old home.
    pub from: String,
    /// The new home.
    pub to: String,
    /// The new placement epoch.
    pub epoch: u64,
    /// How long calls to the object were held, in milliseconds.
    pub pause_ms: f64,
    /// Bytes shipped to the new home.
    pub bytes: usize,
    /// Keys in the state moved.
    pub keys: usize,
    /// Versions moved.
    pub versions: usize,
}

/// One version on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireVersion {
    /// Its metadata.
    pub record: VersionRecord,
    /// Its bytes.
    #[serde(with = "base64_bytes")]
    pub bytes: Vec<u8>,
}

/// Body of `POST /cluster/internal/migrate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigratePayload {
    /// Object id.
    pub object_id: String,
    /// The epoch the new home takes.
    pub epoch: u64,
    /// Every version.
    pub versions: Vec<WireVersion>,
    /// The state.
    pub snapshot: Snapshot,
    /// The log lines after the first `logs_from` (which the target has from the pre-copy).
    pub logs: Vec<LogRecord>,
    /// How many log lines the target already has (0: `logs` is the whole log).
    #[serde(default)]
    pub logs_from: usize,
}

/// Body of `POST /cluster/internal/objects/{id}/precopy`: what a migration copies before the pause.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrecopyPayload {
    /// Every version.
    pub versions: Vec<WireVersion>,
    /// The log so far.
    pub logs: Vec<LogRecord>,
}

impl PrecopyPayload {
    /// The wire form of a pre-copy.
    pub fn new(precopy: Precopy) -> PrecopyPayload {
        PrecopyPayload {
            versions: precopy
                .versions
                .into_iter()
                .map(|(record, bytes)| WireVersion { record, bytes })
                .collect(),
            logs: precopy.logs,
        }
    }

    /// Back into a pre-copy.
    pub fn into_precopy(self) -> Precopy {
        Precopy {
            versions: self
                .versions
                .into_iter()
                .map(|v| (v.record, v.bytes))
                .collect(),
            logs: self.logs,
        }
    }
}

impl MigratePayload {
    /// The payload for an export, to be installed at `epoch`.
    pub fn new(export: ObjectExport, epoch: u64) -> MigratePayload {
        MigratePayload {
            object_id: export.object_id,
            epoch,
            versions: export
                .versions
                .into_iter()
                .map(|(record, bytes)| WireVersion { record, bytes })
                .collect(),
            snapshot: export.snapshot,
            logs: export.logs,
            logs_from: export.logs_from,
        }
    }

    /// Back into an export.
    pub fn into_export(self) -> ObjectExport {
        ObjectExport {
            object_id: self.object_id,
            epoch: self.epoch.saturating_sub(1),
            versions: self
                .versions
                .into_iter()
                .map(|v| (v.record, v.bytes))
                .collect(),
            snapshot: self.snapshot,
            logs: self.logs,
            logs_from: self.logs_from,
        }
    }
}

/// Why a migration did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// No live station with that id.
    #[error("no live station `{0}`")]
    UnknownStation(String),
    /// The object is already homed there.
    #[error("`{0}` is already homed on {1}")]
    AlreadyThere(String, String),
    /// The object is stateless: it has no home to move.
    #[error(
        "`{0}` is stateless: every station holding its code serves it, so there is no home to move"
    )]
    Stateless(String),
    /// The object is not homed here.
    #[error(transparent)]
    Station(#[from] crate::station::Error),
    /// The target refused or could not be reached; the object stays here and serves again.
    #[error("the target station did not take the object (it stays here): {0}")]
    Transfer(String),
}

impl Coordinator {
    /// Moves `object` (homed here) to `target` (a station id).
    pub async fn migrate(
        &self,
        object: &str,
        target: &str,
    ) -> Result<MigrationReport, MigrationError> {
        let me = self.cluster.station_id().to_string();
        if target == me {
            return Err(MigrationError::AlreadyThere(object.to_string(), me));
        }
        let view = self.cluster.view();
        let member = view
            .member(target)
            .filter(|m| m.is_live())
            .ok_or_else(|| MigrationError::UnknownStation(target.to_string()))?;
        let address = member.address.clone();
        if self.station.serves_stateless(object) == Some(true) {
            return Err(MigrationError::Stateless(object.to_string()));
        }
        let moved = self.move_home(object, target, &address).await;
        let metrics = self.station.move_metrics();
        match &moved {
            Ok(report) => metrics.migrated(Some(Duration::from_secs_f64(report.pause_ms / 1000.0))),
            // An object that is not homed here was not moved (nothing was paused).
            Err(MigrationError::Station(crate::station::Error::ObjectNotFound(_))) => {}
            Err(_) => metrics.migrated(None),
        }
        moved
    }

    /// The migration proper, once `target` is known to be another live station at `address`.
    async fn move_home(
        &self,
        object: &str,
        target: &str,
        address: &str,
    ) -> Result<MigrationReport, MigrationError> {
        let me = self.cluster.station_id().to_string();
        // Copy the versions and the log while the object still serves; during the pause only the
        // state and what changed since travel.
        let precopy = self.station.precopy(object).await?;
        let copied = Copied::of(&precopy);
        let path = format!("/cluster/internal/objects/{object}/precopy");
        let precopy_bytes = self
            .send(address, &path, &PrecopyPayload::new(precopy))
            .await?;
        let mut paused = self.station.pause(object).await?;
        let export = self.station.export(&mut paused, &copied).await?;
        let exported_ms = paused.since.elapsed().as_secs_f64() * 1000.0;
        let epoch = export.epoch + 1;
        let keys = export.snapshot.keys.len();
        let versions = copied.versions.len() + export.versions.len();
        let payload = MigratePayload::new(export, epoch);
        let paused_bytes = self
            .send(address, "/cluster/internal/migrate", &payload)
            .await?;
        let bytes = precopy_bytes + paused_bytes;
        let since = paused.since;
        let sent_ms = since.elapsed().as_secs_f64() * 1000.0;
        // The target holds everything: the directory makes it the home at epoch + 1. Until that
        // is committed it refuses calls; if it cannot be, the object stays here (the pause ends
        // when `paused` is dropped) and the target's copy steps down.
        self.commit_move(object, epoch - 1, target).await?;
        self.station
            .hand_off(paused, target, address, epoch)
            .await?;
        let pause_ms = since.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            object,
            to = target,
            epoch,
            pause_ms,
            exported_ms,
            sent_ms,
            precopy_bytes,
            paused_bytes,
            "migrated"
        );
        Ok(MigrationReport {
            object_id: object.to_string(),
            from: me,
            to: target.to_string(),
            epoch,
            pause_ms,
            bytes,
            keys,
            versions,
        })
    }

    /// POSTs a migration message to the target; returns the bytes sent.
    /// Commits the move of `object` from this station (at `epoch`) to `target` in the directory.
    async fn commit_move(
        &self,
        object: &str,
        epoch: u64,
        target: &str,
    ) -> Result<(), MigrationError> {
        use crate::cluster::directory::Command;
        let me = self.cluster.station_id();
        let entry = self
            .cluster
            .directory()
            .lookup(object)
            .filter(|e| e.home == me && e.epoch == epoch)
            .ok_or_else(|| {
                MigrationError::Transfer("the directory no longer names this station home".into())
            })?;
        let (replicas, in_sync) = entry.after_move(target);
        let outcome = self
            .cluster
            .directory()
            .propose(Command::Move {
                object: object.to_string(),
                epoch,
                to: target.to_string(),
                replicas,
                in_sync,
            })
            .await
            .map_err(|e| MigrationError::Transfer(e.to_string()))?;
        match outcome.refused {
            None => Ok(()),
            Some(why) => Err(MigrationError::Transfer(format!(
                "the directory refused the move ({why:?})"
            ))),
        }
    }

    async fn send<T: Serialize>(
        &self,
        address: &str,
        path: &str,
        message: &T,
    ) -> Result<usize, MigrationError> {
        let body =
            serde_json::to_vec(message).map_err(|e| MigrationError::Transfer(e.to_string()))?;
        let bytes = body.len();
        let mut request = self
            .cluster
            .http()
            .post(format!("{address}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .timeout(Duration::from_secs(120));
        if let Some(secret) = self.cluster.secret() {
            request = request.header(crate::cluster::forward::SECRET_HEADER, secret);
        }
        let response = request
            .send()
            .await
            .map_err(|e| MigrationError::Transfer(e.to_string()))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(MigrationError::Transfer(format!("{status}: {text}")));
        }
        Ok(bytes)
    }

    /// Receives a migration's pre-copy (versions and log, before the object pauses).
    pub async fn receive_precopy(
        &self,
        id: &str,
        payload: PrecopyPayload,
    ) -> Result<(), crate::station::Error> {
        self.station
            .install_precopy(id, payload.into_precopy())
            .await
    }

    /// Installs an object migrating to this station; the station announces it and the claim
    /// loop gossips the new epoch.
    pub async fn receive(&self, payload: MigratePayload) -> Result<(), crate::station::Error> {
        let epoch = payload.epoch;
        self.station
            .install_migrated(payload.into_export(), epoch)
            .await
    }
}
