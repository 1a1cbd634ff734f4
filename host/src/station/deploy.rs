//! Deploy, rollback and undeploy: new versions in, old versions kept, calls switched at the next turn.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{
    Error, LiveObject, QuotaOverrides, Station, VersionSlot, blocking, validate_object_id,
};
use crate::runtime::LogLevel;
use crate::store;

/// What a deploy did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeployOutcome {
    /// Object id.
    pub object_id: String,
    /// The version now current.
    pub version: u32,
    /// sha256 of its bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// True when the bytes equal the current version's: nothing was deployed.
    pub unchanged: bool,
    /// True when the object can serve calls now (compiled and validated).
    pub ready: bool,
    /// Milliseconds spent compiling (0 when loaded from the artifact cache or unchanged).
    pub compile_ms: f64,
}

/// How a deploy places and numbers the object.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeployOptions {
    /// Deploy stateless: no state (writes trap), served by every station that holds the code.
    pub stateless: bool,
    /// Number the new version above this too (the newest version of a stateless object anywhere
    /// in the cluster), so numbering continues across stations.
    pub number_after: u32,
    /// The object's quota overrides from this version on; `None` keeps the current version's.
    pub quota: Option<QuotaOverrides>,
}

impl Station {
    /// Deploys `bytes` as the next version of `id`, after compiling and validating them. Deploying
    /// the bytes of the current version again changes nothing and says so. An object keeps its
    /// mode: deploying a stateful object as stateless (or back) is refused until it is undeployed.
    pub async fn deploy(
        &self,
        id: &str,
        bytes: Vec<u8>,
        deployed_by: &str,
        note: &str,
        options: DeployOptions,
    ) -> Result<DeployOutcome, Error> {
        validate_object_id(id)?;
        let _admin = self.inner.admin.lock(id).await;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let (existing, held_as_replica) = self.held(id);
        if existing.as_ref().map(|o| o.stateless) != Some(options.stateless)
            && (existing.is_some() || (held_as_replica && options.stateless))
        {
            return Err(Error::ModeConflict {
                object: id.to_string(),
                stateless: !options.stateless,
            });
        }
        let ownership = self.inner.ownership.get().filter(|_| !options.stateless);
        // The overrides this version runs under: the deploy's, else the current version's.
        let quota = match (options.quota, &existing) {
            (Some(overrides), _) => overrides.to_string(),
            (None, Some(object)) => object.current().record.quota.clone(),
            (None, None) => String::new(),
        };
        if let Some(object) = &existing {
            let slot = object.current();
            if slot.record.sha256 == sha256 && slot.record.quota == quota {
                // A retry after a deploy whose directory commit failed: commit it now.
                if let Some(ownership) = ownership {
                    let epoch = object.epoch.load(std::sync::atomic::Ordering::Relaxed);
                    ownership
                        .version_set(id, epoch, slot.record.version, &sha256)
                        .await
                        .map_err(|e| Self::ownership_error(id, e))?;
                }
                return Ok(DeployOutcome {
                    object_id: id.to_string(),
                    version: slot.record.version,
                    sha256,
                    size: slot.record.size,
                    unchanged: true,
                    ready: true,
                    compile_ms: 0.0,
                });
            }
        }

        // The first deploy of a stateful object here claims it in the directory first: if another
        // station homes it, the deploy belongs there.
        let claimed_epoch = match (ownership, &existing) {
            (Some(ownership), None) => Some(
                ownership
                    .claim(id)
                    .await
                    .map_err(|e| Self::ownership_error(id, e))?,
            ),
            _ => None,
        };
        let runtime = self.inner.runtime.clone();
        let metrics = self.inner.metrics.clone();
        let store = self.inner.store.clone();
        let (id_owned, by, note_owned) =
            (id.to_string(), deployed_by.to_string(), note.to_string());
        let sha = sha256.clone();
        let (compiled, record) = blocking(move || -> Result<_, Error> {
            let compiled =
                super::timed_compile(&runtime, &metrics, &sha, &bytes).map_err(Error::Component)?;
            store
                .versions()
                .set_stateless(&id_owned, options.stateless)?;
            let record = store.versions().add_after(
                &id_owned,
                &bytes,
                &by,
                &note_owned,
                &quota,
                options.number_after,
            )?;
            Ok((compiled, record))
        })
        .await??;
        let object = self.install_live(id, record.clone(), compiled.clone(), options.stateless);
        if let Some(epoch) = claimed_epoch {
            object
                .epoch
                .store(epoch, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(ownership) = ownership {
            let epoch = object.epoch.load(std::sync::atomic::Ordering::Relaxed);
            ownership
                .version_set(id, epoch, record.version, &record.sha256)
                .await
                .map_err(|e| Self::ownership_error(id, e))?;
        }
        let compile_ms = if compiled.from_cache {
            0.0
        } else {
            compiled.load_ms
        };
        let outcome = DeployOutcome {
            object_id: id.to_string(),
            version: record.version,
            sha256: record.sha256.clone(),
            size: record.size,
            unchanged: false,
            ready: true,
            compile_ms,
        };
        let message = format!(
            "deployed version {} ({} bytes, sha256 {}) by {deployed_by}{}",
            record.version,
            record.size,
            record.sha256,
            if note.is_empty() {
                String::new()
            } else {
                format!(": {note}")
            }
        );
        self.log(id, ("", ""), LogLevel::Info, "deploy", &message);
        tracing::info!(object = id, version = outcome.version, "{message}");
        Ok(outcome)
    }

    /// The live object `id` (if deployed here) and whether a replica of it is held here.
    fn held(&self, id: &str) -> (Option<Arc<LiveObject>>, bool) {
        let existing = self.object(id).ok();
        let held_as_replica = self
            .inner
            .replicas
            .lock()
            .expect("replicas lock")
            .contains_key(id);
        (existing, held_as_replica)
    }

    /// Makes `record` the version calls run (creating the live object if needed) and announces it:
    /// a home claim and replication to the replicas, or for a stateless object its code version.
    fn install_live(
        &self,
        id: &str,
        record: store::VersionRecord,
        compiled: crate::runtime::CompiledObject,
        stateless: bool,
    ) -> Arc<LiveObject> {
        let existing = self.object(id).ok();
        let object = match existing {
            Some(object) => {
                *object.version.lock().expect("version lock") = Arc::new(VersionSlot::new(
                    record,
                    Some(compiled),
                    &self.inner.config.quota,
                ));
                object
            }
            None => {
                let object = Arc::new(LiveObject::new(
                    id,
                    record,
                    Some(compiled),
                    stateless,
                    &self.inner.config.quota,
                ));
                self.inner
                    .objects
                    .lock()
                    .expect("objects lock")
                    .insert(id.to_string(), object.clone());
                // A redeploy after an undeploy that kept the state keeps its alarms too.
                if !stateless {
                    let (station, object) = (self.clone(), object.clone());
                    tokio::spawn(async move { station.schedule_alarms_of(&object).await });
                }
                object
            }
        };
        if let Some(event) = object.code_event() {
            self.announce(event);
        }
        if !stateless && let Some(sink) = self.inner.replication.get() {
            let slot = object.current();
            sink.version_added(
                id,
                object.epoch.load(std::sync::atomic::Ordering::Relaxed),
                &slot.record,
            );
        }
        object
    }

    /// Installs a stateless object's version fetched from another station, keeping its number, and
    /// serves it. Does nothing if this version is already current; refused if `id` keeps state
    /// here ([`Error::ModeConflict`]).
    pub async fn install_stateless(
        &self,
        id: &str,
        record: store::VersionRecord,
        bytes: Vec<u8>,
    ) -> Result<(), Error> {
        validate_object_id(id)?;
        let _admin = self.inner.admin.lock(id).await;
        let (existing, held_as_replica) = self.held(id);
        if existing.as_ref().is_some_and(|o| !o.stateless) || held_as_replica {
            return Err(Error::ModeConflict {
                object: id.to_string(),
                stateless: false,
            });
        }
        if let Some(object) = &existing
            && object.current().record.sha256 == record.sha256
        {
            return Ok(());
        }
        let runtime = self.inner.runtime.clone();
        let metrics = self.inner.metrics.clone();
        let store = self.inner.store.clone();
        let id_owned = id.to_string();
        let installed = record.clone();
        let compiled = blocking(move || -> Result<_, Error> {
            let compiled = super::timed_compile(&runtime, &metrics, &installed.sha256, &bytes)
                .map_err(Error::Component)?;
            store.versions().set_stateless(&id_owned, true)?;
            store.versions().install(&id_owned, &installed, &bytes)?;
            Ok(compiled)
        })
        .await??;
        let message = format!(
            "installed stateless version {} (sha256 {}) from the cluster",
            record.version, record.sha256
        );
        let _ = self.install_live(id, record, compiled, true);
        self.log(id, ("", ""), LogLevel::Info, "deploy", &message);
        tracing::info!(object = id, "{message}");
        Ok(())
    }

    /// The current version and bytes of a stateless object deployed here, for a station fetching
    /// it; [`Error::ObjectNotFound`] if `id` is not a stateless object here.
    pub async fn stateless_code(&self, id: &str) -> Result<(store::VersionRecord, Vec<u8>), Error> {
        let object = self.object(id)?;
        if !object.stateless {
            return Err(Error::ObjectNotFound(id.to_string()));
        }
        let record = object.current().record.clone();
        let store = self.inner.store.clone();
        let (id_owned, version) = (id.to_string(), record.version);
        let bytes = blocking(move || store.versions().read_bytes(&id_owned, version)).await??;
        Ok((record, bytes))
    }

    /// Undeploys a stateless object because the cluster undeployed version `version` of it (a
    /// tombstone). Nothing happens if this station holds a newer version or does not hold it.
    pub async fn remove_stateless(&self, id: &str, version: u32) -> Result<(), Error> {
        match self.stateless(id) {
            Some((held, _)) if held <= version => self.undeploy(id, false).await,
            _ => Ok(()),
        }
    }

    /// Deploys the bytes of an earlier version as a new version.
    pub async fn rollback(
        &self,
        id: &str,
        version: u32,
        deployed_by: &str,
    ) -> Result<DeployOutcome, Error> {
        let _ = self.object(id)?;
        let store = self.inner.store.clone();
        let id_owned = id.to_string();
        let bytes = blocking(move || store.versions().read_bytes(&id_owned, version))
            .await?
            .map_err(|e| match e {
                store::Error::VersionNotFound { .. } => Error::VersionNotFound {
                    object: id.to_string(),
                    version,
                },
                other => Error::Storage(other),
            })?;
        let stateless = self.serves_stateless(id) == Some(true);
        self.deploy(
            id,
            bytes,
            deployed_by,
            &format!("rollback to version {version}"),
            DeployOptions {
                stateless,
                number_after: 0,
                quota: None,
            },
        )
        .await
    }

    /// Stops serving an object. Its versions stay on disk (numbering continues on a redeploy) and
    /// its state and log stay too, unless `purge` removes everything.
    pub async fn undeploy(&self, id: &str, purge: bool) -> Result<(), Error> {
        validate_object_id(id)?;
        let _admin = self.inner.admin.lock(id).await;
        let object = self.object(id)?;
        // A stateful object leaves the directory first: once that is committed no station routes
        // calls here any more.
        if !object.stateless
            && let Some(ownership) = self.inner.ownership.get()
        {
            let epoch = object.epoch.load(std::sync::atomic::Ordering::Relaxed);
            ownership
                .removed(id, epoch)
                .await
                .map_err(|e| Self::ownership_error(id, e))?;
        }
        self.inner.objects.lock().expect("objects lock").remove(id);
        // Let a call in progress finish, then drop the live instance.
        *object.turn.lock().await = None;
        let store = self.inner.store.clone();
        let id_owned = id.to_string();
        blocking(move || -> Result<(), store::Error> {
            store.versions().undeploy(&id_owned, purge)?;
            if purge {
                store.purge_state(&id_owned)?;
                store.logs().purge(&id_owned)?;
            }
            Ok(())
        })
        .await??;
        if object.stateless {
            self.announce(super::ObjectEvent::Code {
                id: id.to_string(),
                version: object.current().record.version,
                sha256: None,
            });
        }
        if !purge {
            self.log(
                id,
                ("", ""),
                LogLevel::Info,
                "undeploy",
                "undeployed; state and versions kept",
            );
        }
        tracing::info!(object = id, purge, "undeployed");
        Ok(())
    }
}
