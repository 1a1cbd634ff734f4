//! The `runtime` import: identity, time, and calls to other objects along a call chain.

use std::time::{SystemTime, UNIX_EPOCH};

use super::activation::StoreData;
use super::object_primitive::object::runtime::Host;
use super::{CallError, wit};

impl Host for StoreData {
    async fn object_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.active()?.ctx.object_id.clone())
    }

    async fn station_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.active()?.ctx.services.station_id())
    }

    async fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0))
    }

    async fn call_object(
        &mut self,
        id: String,
        req: wit::Request,
    ) -> wasmtime::Result<Result<wit::Response, wit::CallError>> {
        let call = self.active()?;
        let chain = call.ctx.chain.clone();
        if chain.objects.iter().any(|o| o == &id) {
            let path = chain.objects.join(" -> ");
            return Ok(Err(CallError::LoopDetected(format!(
                "calling {id} from the chain {path} would re-enter {id}"
            ))
            .into()));
        }
        let services = call.ctx.services.clone();
        let result = services.call_object(id, req.into(), chain).await;
        Ok(result.map(Into::into).map_err(Into::into))
    }
}
