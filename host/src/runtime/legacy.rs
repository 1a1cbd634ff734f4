//! The `object-primitive:object@0.1.0` world, still served: components built against it run
//! unchanged. Its interfaces are 0.2.0's without `alarms`, `events` and `alarm-handler`, and its
//! `types` are identical, so the bindings share 0.2.0's Rust types and every import delegates to
//! the 0.2.0 implementation.

use super::activation::StoreData;
use super::object_primitive::object as current;
use super::wit;

wasmtime::component::bindgen!({
    path: "../wit/v0.1.0",
    world: "object",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "object-primitive:object/types@0.1.0": crate::runtime::object_primitive::object::types,
    },
});

impl object_primitive::object::state::Host for StoreData {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        current::state::Host::get(self, key).await
    }

    async fn set(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        current::state::Host::set(self, key, value).await
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<bool> {
        current::state::Host::delete(self, key).await
    }

    async fn keys(&mut self, prefix: String) -> wasmtime::Result<Vec<String>> {
        current::state::Host::keys(self, prefix).await
    }

    async fn increment(&mut self, key: String, delta: i64) -> wasmtime::Result<i64> {
        current::state::Host::increment(self, key, delta).await
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<String>,
        new: Option<String>,
    ) -> wasmtime::Result<bool> {
        current::state::Host::compare_and_swap(self, key, expected, new).await
    }

    async fn history(&mut self, key: String, limit: u32) -> wasmtime::Result<Vec<wit::Version>> {
        current::state::Host::history(self, key, limit).await
    }
}

impl object_primitive::object::log::Host for StoreData {
    async fn log(&mut self, level: wit::Level, message: String) -> wasmtime::Result<()> {
        current::log::Host::log(self, level, message).await
    }
}

impl object_primitive::object::runtime::Host for StoreData {
    async fn object_id(&mut self) -> wasmtime::Result<String> {
        current::runtime::Host::object_id(self).await
    }

    async fn station_id(&mut self) -> wasmtime::Result<String> {
        current::runtime::Host::station_id(self).await
    }

    async fn now_ms(&mut self) -> wasmtime::Result<u64> {
        current::runtime::Host::now_ms(self).await
    }

    async fn call_object(
        &mut self,
        id: String,
        req: wit::Request,
    ) -> wasmtime::Result<Result<wit::Response, wit::CallError>> {
        current::runtime::Host::call_object(self, id, req).await
    }
}
