//! What the station announces to the cluster: changes of the stateless code it holds, for gossip.

use super::Station;

/// A change in the stateless code this station holds, for the cluster to gossip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectEvent {
    /// This station holds (`sha256` set) or has undeployed (`None`) version `version` of a
    /// stateless object's code. Stateless objects have no home: every station holding the newest
    /// code serves them, and stations fetch code they lack from one that holds it.
    Code {
        /// Object id.
        id: String,
        /// Version number.
        version: u32,
        /// sha256 of the code, or `None` for an undeploy (a tombstone).
        sha256: Option<String>,
    },
}

impl Station {
    /// Subscribes to changes of the stateless code held here; the receiver first gets a `Code`
    /// event for every stateless object held now. There is one subscriber: a new one replaces the
    /// previous one.
    pub fn subscribe(&self) -> tokio::sync::mpsc::UnboundedReceiver<ObjectEvent> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut events = self.inner.events.lock().expect("events lock");
        for object in self.inner.objects.lock().expect("objects lock").values() {
            if let Some(event) = object.code_event() {
                let _ = tx.send(event);
            }
        }
        *events = Some(tx);
        rx
    }

    pub(super) fn announce(&self, event: ObjectEvent) {
        if let Some(tx) = self.inner.events.lock().expect("events lock").as_ref() {
            let _ = tx.send(event);
        }
    }
}
