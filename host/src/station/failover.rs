//! Failover on the station's side: promoting a replica copy to home when the directory names this
//! station, and demoting a home the directory replaced.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Error, LiveObject, Station, blocking};
use crate::store::{self, Placement};

impl Station {
    /// Makes this station the home of a replicated object at `epoch` (failover).
    pub async fn promote(&self, id: &str, epoch: u64) -> Result<(), Error> {
        let Some(replica) = self
            .inner
            .replicas
            .lock()
            .expect("replicas lock")
            .remove(id)
        else {
            return Err(Error::ObjectNotFound(id.to_string()));
        };
        let store = self.inner.store.clone();
        let station_id = self.station_id().to_string();
        let id_owned = id.to_string();
        let current = blocking(move || -> Result<_, store::Error> {
            store
                .versions()
                .set_placement(&id_owned, &Placement::home(epoch, station_id))?;
            store.versions().current(&id_owned)
        })
        .await??;
        let Some(current) = current else {
            return Err(Error::ObjectNotFound(id.to_string()));
        };
        self.inner.moved.lock().expect("moved lock").remove(id);
        let object = Arc::new(LiveObject::new(
            id,
            current,
            None,
            false,
            &self.inner.config.quota,
        ));
        object.epoch.store(epoch, Ordering::Relaxed);
        let _ = object.state.set(replica.state);
        self.inner
            .objects
            .lock()
            .expect("objects lock")
            .insert(id.to_string(), object.clone());
        // Its alarms fire here now (they came with its state).
        self.schedule_alarms_of(&object).await;
        tracing::info!(object = id, epoch, "promoted to home");
        Ok(())
    }

    /// Stops homing `id` because the directory names `new_home` its home at `epoch` (a station
    /// that returns after a failover, or lost a concurrent claim). Its copy becomes a replica that
    /// needs a snapshot: whatever it wrote that the new home does not have was never acknowledged
    /// under the directory's rules, and is replaced by the new home's history.
    pub async fn demote(
        &self,
        id: &str,
        new_home: &str,
        address: &str,
        epoch: u64,
    ) -> Result<(), Error> {
        let paused = self.pause(id).await?;
        self.hand_off(paused, new_home, address, epoch).await?;
        tracing::warn!(
            object = id,
            new_home,
            epoch,
            "demoted: the directory names another home; this copy will be replaced by its history"
        );
        Ok(())
    }
}
