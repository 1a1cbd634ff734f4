//! Who may serve and write an object: the station asks the cluster's directory through the
//! [`Ownership`] trait it declares here, so it knows nothing of Raft or peers.
//!
//! Without an ownership (unit tests of the station alone) every object deployed here is served
//! here, as on a station that is its own cluster.

use futures::future::BoxFuture;

/// Where a stateful object is homed when it is not here.
#[derive(Debug, Clone)]
pub struct Elsewhere {
    /// The home station's id.
    pub station: String,
    /// Its HTTP base URL.
    pub address: String,
}

/// Why the directory could not answer or refused.
#[derive(Debug, Clone)]
pub enum OwnershipError {
    /// Another station homes the object.
    Elsewhere(Elsewhere),
    /// The object is served in the other mode (stateless vs stateful).
    ModeConflict,
    /// The directory cannot commit now (no leader reachable): retry.
    Unavailable(String),
}

/// The cluster's side of ownership, implemented by the coordinator over the directory.
pub trait Ownership: Send + Sync + 'static {
    /// Before the first version of a stateful object is installed here: makes this station its
    /// home in the directory, or says where it is homed. Returns the epoch.
    fn claim(&self, id: &str) -> BoxFuture<'static, Result<u64, OwnershipError>>;
    /// A version became current on this home: commits it to the directory (the deploy is
    /// acknowledged only after this).
    fn version_set(
        &self,
        id: &str,
        epoch: u64,
        version: u32,
        sha256: &str,
    ) -> BoxFuture<'static, Result<(), OwnershipError>>;
    /// The object was undeployed on its home: removes its directory entry.
    fn removed(&self, id: &str, epoch: u64) -> BoxFuture<'static, Result<(), OwnershipError>>;
    /// Whether this station may run calls of `id` (and commit their writes) at `epoch` now: it is
    /// the home in the directory at that epoch and holds a valid lease. `Err` says why not.
    fn check_writer(&self, id: &str, epoch: u64) -> Result<(), String>;
    /// Waits (at most `timeout`) until [`Ownership::check_writer`] would pass: this station's
    /// copy of the directory catching up with a move it was told of, or a lease renewal.
    fn wait_writer(
        &self,
        id: &str,
        epoch: u64,
        timeout: std::time::Duration,
    ) -> BoxFuture<'static, Result<(), String>>;
}
