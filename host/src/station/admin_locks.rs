//! One lock per object id for deploys, rollbacks and undeploys: changes to one object run one at
//! a time, while another object's deploy (a slow compile, say) never waits for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// The admin locks of all objects; an entry exists only while someone holds or awaits it.
#[derive(Default)]
pub(super) struct AdminLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds the admin lock of one object until dropped.
pub(super) struct AdminGuard<'a> {
    locks: &'a AdminLocks,
    id: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl AdminLocks {
    /// Waits for the admin lock of object `id`.
    pub(super) async fn lock(&self, id: &str) -> AdminGuard<'_> {
        let lock = self
            .locks
            .lock()
            .expect("admin locks")
            .entry(id.to_string())
            .or_default()
            .clone();
        AdminGuard {
            locks: self,
            id: id.to_string(),
            guard: Some(lock.lock_owned().await),
        }
    }

    /// How many objects have an admin lock held or awaited.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().expect("admin locks").len()
    }
}

impl Drop for AdminGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.locks.lock().expect("admin locks");
        // Only the map holds it: nobody waits, so the entry goes (the map stays as small as the
        // number of objects being changed right now).
        if locks
            .get(&self.id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_object_waits_for_its_own_lock_only() {
        let locks = Arc::new(AdminLocks::default());
        let a = locks.lock("a").await;
        // Another object's lock is free while `a` is held.
        let b = tokio::time::timeout(Duration::from_secs(5), locks.lock("b"))
            .await
            .expect("b's lock is independent of a's");
        drop(b);
        // A second locker of `a` waits until the first lets go.
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _again = locks.lock("a").await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a second holder of a's lock got in");
        drop(a);
        waiter.await.expect("waiter");
        assert_eq!(locks.len(), 0, "entries outlive their holders");
    }
}
