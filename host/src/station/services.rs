//! The station services an object reaches through its imports: its log and calls to other objects.

use std::sync::{Arc, Weak};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Error, Inner, Station};
use crate::runtime::{CallChain, CallError, HostServices, LogLevel, ObjectRequest, ObjectResponse};

/// Calls to objects this station does not serve, implemented by the cluster. `None` means no
/// station of the cluster serves the object.
pub trait RemoteCalls: Send + Sync + 'static {
    /// Calls `target` on the station that homes it.
    fn call(
        &self,
        target: String,
        request: ObjectRequest,
        chain: CallChain,
    ) -> BoxFuture<'static, Option<Result<ObjectResponse, CallError>>>;
}

/// Implements [`HostServices`] for the objects of one station. Holds the station weakly so a
/// live instance never keeps a stopped station alive.
pub(super) struct Services {
    station: Weak<Inner>,
    station_id: String,
}

impl Services {
    pub(super) fn new(station: &Station) -> Services {
        Services {
            station: Arc::downgrade(&station.inner),
            station_id: station.station_id().to_string(),
        }
    }

    fn station(&self) -> Option<Station> {
        self.station.upgrade().map(|inner| Station { inner })
    }
}

impl HostServices for Services {
    fn station_id(&self) -> String {
        self.station_id.clone()
    }

    fn log(&self, object_id: &str, chain: &CallChain, level: LogLevel, event: &str, message: &str) {
        if let Some(station) = self.station() {
            station.log_from_object(object_id, chain, level, event, message);
        }
    }

    fn call_object(
        &self,
        target: String,
        mut request: ObjectRequest,
        chain: CallChain,
    ) -> BoxFuture<'static, Result<ObjectResponse, CallError>> {
        let station = self.station();
        async move {
            let Some(station) = station else {
                return Err(CallError::Unavailable(
                    "the station is shutting down".into(),
                ));
            };
            if request.path.is_empty() {
                request.path = "/".into();
            }
            request.method = request.method.to_ascii_uppercase();
            if !matches!(
                request.method.as_str(),
                "GET" | "POST" | "PUT" | "DELETE" | "PATCH"
            ) {
                return Err(CallError::Invalid(format!(
                    "unsupported method {}",
                    request.method
                )));
            }
            if !station.serves(&target)
                && let Some(remote) = station.inner.remote.get()
                && let Some(result) = remote
                    .call(target.clone(), request.clone(), chain.clone())
                    .await
            {
                return result;
            }
            let request_id = chain.request_id.clone();
            let span = crate::trace::CallSpan::child_of(Some(&chain.trace));
            let retry = (request.clone(), chain.clone());
            match station
                .call(&target, request, request_id, Some(chain), span)
                .await
            {
                Err(Error::Moved { .. }) if station.inner.remote.get().is_some() => {
                    // The object moved while this call waited for its turn: call it at its new home.
                    let remote = station.inner.remote.get().expect("checked above");
                    remote
                        .call(target.clone(), retry.0, retry.1)
                        .await
                        .unwrap_or_else(|| {
                            Err(CallError::Unavailable(format!(
                                "`{target}` moved and its new home is not known yet"
                            )))
                        })
                }
                Ok(result) => Ok(result.response),
                Err(Error::InvalidId(e)) => Err(CallError::Invalid(e.to_string())),
                Err(Error::ObjectNotFound(id)) => {
                    Err(CallError::NotFound(format!("no object `{id}` is deployed")))
                }
                Err(Error::DeadlineExceeded { .. }) => Err(CallError::Timeout),
                Err(Error::Trapped { message, .. }) => Err(CallError::Trapped(message)),
                Err(other) => Err(CallError::Unavailable(other.to_string())),
            }
        }
        .boxed()
    }
}
