//! An object's live instance over time: warm-up at start, deactivation when idle, and the station's
//! orderly shutdown.

use std::sync::Arc;
use std::time::Duration;

use super::{LiveObject, Station};
use crate::runtime::Activation;

impl Station {
    /// Drops live instances idle for longer than the configured time. Returns how many.
    pub fn deactivate_idle(&self) -> usize {
        self.deactivate_where(|a| a.last_used.elapsed() >= self.inner.config.idle_timeout)
    }

    /// Drops idle live instances matching `pred` (objects in a call are skipped).
    pub(super) fn deactivate_where(&self, pred: impl Fn(&Activation) -> bool) -> usize {
        let objects: Vec<Arc<LiveObject>> = self.live_objects();
        let mut dropped = 0;
        for object in objects {
            if let Ok(mut turn) = object.turn.try_lock()
                && turn.as_ref().is_some_and(&pred)
            {
                *turn = None;
                dropped += 1;
            }
        }
        dropped
    }

    /// Loads every deployed object's compiled component in the background, one at a time (from
    /// the artifact cache after a restart), so first calls after a start do not pay for it.
    pub fn spawn_warm_up(&self) -> tokio::task::JoinHandle<()> {
        let station = self.clone();
        tokio::spawn(async move {
            let objects: Vec<Arc<LiveObject>> = station.live_objects();
            for object in objects {
                let slot = object.current();
                if let Err(e) = station.compiled(&object, &slot).await {
                    tracing::warn!(object = %object.id, "could not load at start-up: {e}");
                }
            }
        })
    }

    /// Runs the idle reaper until the returned task is aborted.
    pub fn spawn_idle_reaper(&self) -> tokio::task::JoinHandle<()> {
        let station = self.clone();
        let every = (self.inner.config.idle_timeout / 4)
            .clamp(Duration::from_millis(250), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let dropped = station.deactivate_idle();
                if dropped > 0 {
                    tracing::debug!(dropped, "deactivated idle objects");
                }
            }
        })
    }

    /// Waits for in-flight calls to finish, then flushes and closes the store.
    pub async fn shutdown(&self) {
        let objects: Vec<Arc<LiveObject>> = self.live_objects();
        for object in objects {
            let mut turn = object.turn.lock().await;
            *turn = None;
        }
        let store = self.inner.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.shutdown()).await;
    }
}
