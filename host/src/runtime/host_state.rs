//! The `state` import: reads see committed state overlaid with the call's own writes; writes are
//! buffered in the activation until the call ends, then handed back for an atomic commit.

use super::activation::StoreData;
use super::object_primitive::object::state::Host;
use super::wit;

/// Longest key accepted, in bytes; a longer one traps the call with a clear message.
pub const MAX_KEY_BYTES: usize = 4096;
/// Largest value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 16 << 20;

/// Keys starting with this belong to the host (idempotent answers, alarms, events); an object
/// cannot write them (and never reads them: the station hides them).
pub use crate::store::RESERVED_PREFIX;

fn check_key(key: &str) -> wasmtime::Result<()> {
    if key.starts_with(RESERVED_PREFIX) {
        wasmtime::bail!(
            "state key {key:?} starts with {RESERVED_PREFIX:?}, which the host reserves"
        );
    }
    if key.len() > MAX_KEY_BYTES {
        wasmtime::bail!(
            "state key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        );
    }
    Ok(())
}

fn check_value(key: &str, value: &str) -> wasmtime::Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        wasmtime::bail!(
            "state value for key {key:?} is {} bytes; the limit is {MAX_VALUE_BYTES}",
            value.len()
        );
    }
    Ok(())
}

impl StoreData {
    /// The value the call currently sees for `key`.
    fn read(&mut self, key: &str) -> wasmtime::Result<Option<String>> {
        let call = self.active()?;
        if let Some(pending) = call.overlay.get(key) {
            return Ok(pending.clone());
        }
        Ok(call.ctx.state.get(key))
    }
}

impl StoreData {
    /// Traps a write by an object deployed stateless (it has no state to write to) or by a
    /// parallel read. `operation` names the import for the message.
    pub(super) fn check_writable(&mut self, operation: &str) -> wasmtime::Result<()> {
        let call = self.active()?;
        if call.ctx.stateless {
            wasmtime::bail!(
                "{operation}: object `{}` is deployed stateless, so it cannot write state \
                 (deploy it without --stateless to give it durable state)",
                call.ctx.object_id
            );
        }
        if call.ctx.read_only {
            wasmtime::bail!(
                "{operation}: this GET of `{}` ran as a parallel read (the object is deployed \
                 with parallel reads: readers run side by side and cannot write state); write in \
                 POST, PUT, DELETE or PATCH, or deploy without --parallel-reads",
                call.ctx.object_id
            );
        }
        Ok(())
    }
}

impl wit::Host for StoreData {}

impl Host for StoreData {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.read(&key)
    }

    async fn set(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        self.check_writable("state.set")?;
        check_key(&key)?;
        check_value(&key, &value)?;
        self.active()?.record_write(key, Some(value))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<bool> {
        self.check_writable("state.delete")?;
        let existed = self.read(&key)?.is_some();
        if existed {
            self.active()?.record_write(key, None)?;
        }
        Ok(existed)
    }

    async fn keys(&mut self, prefix: String) -> wasmtime::Result<Vec<String>> {
        let call = self.active()?;
        let mut keys: std::collections::BTreeSet<String> =
            call.ctx.state.keys(&prefix).into_iter().collect();
        for (key, value) in call.overlay.range(prefix.clone()..) {
            if !key.starts_with(&prefix) {
                break;
            }
            if value.is_some() {
                keys.insert(key.clone());
            } else {
                keys.remove(key);
            }
        }
        Ok(keys.into_iter().collect())
    }

    async fn increment(&mut self, key: String, delta: i64) -> wasmtime::Result<i64> {
        self.check_writable("state.increment")?;
        check_key(&key)?;
        let current = match self.read(&key)? {
            None => 0,
            Some(text) => text.trim().parse::<i64>().map_err(|_| {
                wasmtime::Error::msg(format!(
                    "state.increment: the value of key {key:?} is not an integer: {text:?}"
                ))
            })?,
        };
        let next = current.checked_add(delta).ok_or_else(|| {
            wasmtime::Error::msg(format!(
                "state.increment: key {key:?} overflowed ({current} + {delta})"
            ))
        })?;
        self.active()?.record_write(key, Some(next.to_string()))?;
        Ok(next)
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<String>,
        new: Option<String>,
    ) -> wasmtime::Result<bool> {
        self.check_writable("state.compare-and-swap")?;
        check_key(&key)?;
        if let Some(value) = &new {
            check_value(&key, value)?;
        }
        if self.read(&key)? != expected {
            return Ok(false);
        }
        self.active()?.record_write(key, new)?;
        Ok(true)
    }

    async fn history(&mut self, key: String, limit: u32) -> wasmtime::Result<Vec<wit::Version>> {
        let call = self.active()?;
        Ok(call
            .ctx
            .state
            .history(&key, limit as usize)
            .into_iter()
            .map(|v| wit::Version {
                seq: v.seq,
                at_ms: v.at_ms,
                value: v.value,
            })
            .collect())
    }
}
