//! Deploy, rollback and undeploy: new versions in, old versions kept, calls switched at the next turn.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Error, LiveObject, Station, VersionSlot, blocking, validate_object_id};
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

impl Station {
    /// Deploys `bytes` as the next version of `id`, after compiling and validating them. Deploying
    /// the bytes of the current version again changes nothing and says so.
    pub async fn deploy(
        &self,
        id: &str,
        bytes: Vec<u8>,
        deployed_by: &str,
        note: &str,
    ) -> Result<DeployOutcome, Error> {
        validate_object_id(id)?;
        let _admin = self.inner.admin.lock().await;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let existing = self
            .inner
            .objects
            .lock()
            .expect("objects lock")
            .get(id)
            .cloned();
        if let Some(object) = &existing {
            let slot = object.current();
            if slot.record.sha256 == sha256 {
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

        let runtime = self.inner.runtime.clone();
        let store = self.inner.store.clone();
        let (id_owned, by, note_owned) =
            (id.to_string(), deployed_by.to_string(), note.to_string());
        let sha = sha256.clone();
        let (compiled, record) = blocking(move || -> Result<_, Error> {
            let compiled = runtime.compile(&sha, &bytes).map_err(Error::Component)?;
            let record = store.versions().add(&id_owned, &bytes, &by, &note_owned)?;
            Ok((compiled, record))
        })
        .await??;
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
        let object = match existing {
            Some(object) => {
                *object.version.lock().expect("version lock") =
                    Arc::new(VersionSlot::new(record, Some(compiled)));
                object
            }
            None => {
                let object = Arc::new(LiveObject::new(id, record, Some(compiled)));
                self.inner
                    .objects
                    .lock()
                    .expect("objects lock")
                    .insert(id.to_string(), object.clone());
                object
            }
        };
        self.announce(object.homed_event());
        if let Some(sink) = self.inner.replication.get() {
            let slot = object.current();
            sink.version_added(
                id,
                object.epoch.load(std::sync::atomic::Ordering::Relaxed),
                &slot.record,
            );
        }
        self.log(id, "", LogLevel::Info, "deploy", &message);
        tracing::info!(object = id, version = outcome.version, "{message}");
        Ok(outcome)
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
        self.deploy(
            id,
            bytes,
            deployed_by,
            &format!("rollback to version {version}"),
        )
        .await
    }

    /// Stops serving an object. Its versions stay on disk (numbering continues on a redeploy) and
    /// its state and log stay too, unless `purge` removes everything.
    pub async fn undeploy(&self, id: &str, purge: bool) -> Result<(), Error> {
        validate_object_id(id)?;
        let _admin = self.inner.admin.lock().await;
        let object = self
            .inner
            .objects
            .lock()
            .expect("objects lock")
            .remove(id)
            .ok_or_else(|| Error::ObjectNotFound(id.to_string()))?;
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
        self.announce(super::ObjectEvent::Released { id: id.to_string() });
        if !purge {
            self.log(
                id,
                "",
                LogLevel::Info,
                "undeploy",
                "undeployed; state and versions kept",
            );
        }
        tracing::info!(object = id, purge, "undeployed");
        Ok(())
    }
}
