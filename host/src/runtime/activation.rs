//! An activation: one wasmtime `Store` and one instance of an object version, reused across calls
//! while it is warm. Each call gets a fresh deadline and an empty write buffer; a trap or a timeout
//! poisons the activation and the owner replaces it.

use std::collections::BTreeMap;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::component::WorldPre;
use super::host_log::OutputPipe;
use super::{
    AlarmEntry, CallContext, CallFailure, CallOutcome, Changes, CompiledObject, Error, FireOutcome,
    LogLevel, Object, ObjectRequest, PublishedEvent, Runtime, StateWrite, legacy, wit,
};

/// Longest time a component's start-up code may run when it is instantiated.
const INSTANTIATE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// The data every store carries: WASI context, limits and the current call.
pub struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    stdout: OutputPipe,
    stderr: OutputPipe,
    /// Set while a call runs.
    pub(super) call: Option<ActiveCall>,
    /// When the running call (or the instantiation) must stop; the epoch callback checks it.
    deadline: Instant,
}

/// The state of the call in progress.
pub(super) struct ActiveCall {
    pub(super) ctx: CallContext,
    /// Writes so far: key → `Some(value)` or `None` (deleted). Reads consult this first.
    pub(super) overlay: BTreeMap<String, Option<String>>,
    /// Write order, for the batch handed back (one entry per key, last write wins).
    pub(super) order: Vec<String>,
    /// Alarms set (`Some`) or cancelled (`None`) so far, by name.
    pub(super) alarms: BTreeMap<String, Option<AlarmEntry>>,
    /// Events published so far, in order.
    pub(super) events: Vec<PublishedEvent>,
    /// Bytes the call's changes hold (state keys and values, alarms, events), checked against
    /// the write quota.
    written_bytes: u64,
    /// Set by the epoch callback when it interrupts the call.
    deadline_hit: bool,
}

impl ActiveCall {
    fn new(ctx: CallContext) -> ActiveCall {
        ActiveCall {
            ctx,
            overlay: BTreeMap::new(),
            order: Vec::new(),
            alarms: BTreeMap::new(),
            events: Vec::new(),
            written_bytes: 0,
            deadline_hit: false,
        }
    }

    /// Counts `bytes` more of alarms or events against the write quota; traps past it.
    pub(super) fn charge(&mut self, bytes: u64) -> wasmtime::Result<()> {
        let written = self.written_bytes + bytes;
        if written > self.ctx.write_quota_bytes {
            return Err(wasmtime::Error::new(super::WriteQuotaExceeded {
                written,
                limit: self.ctx.write_quota_bytes,
            }));
        }
        self.written_bytes = written;
        Ok(())
    }

    /// Everything the call asked to change, in order.
    fn into_changes(self) -> Changes {
        let mut overlay = self.overlay;
        let writes = self
            .order
            .into_iter()
            .map(|key| match overlay.remove(&key).flatten() {
                Some(value) => StateWrite::Set { key, value },
                None => StateWrite::Delete { key },
            })
            .collect();
        Changes {
            writes,
            alarms: self.alarms.into_iter().collect(),
            events: self.events,
        }
    }

    /// Records a write of the call in progress; traps with [`super::WriteQuotaExceeded`] when the
    /// call's writes would exceed its write quota (the write is not recorded).
    pub(super) fn record_write(
        &mut self,
        key: String,
        value: Option<String>,
    ) -> wasmtime::Result<()> {
        let size =
            |value: &Option<String>| (key.len() + value.as_ref().map_or(0, String::len)) as u64;
        let replaced = self.overlay.get(&key).map_or(0, &size);
        let written = self.written_bytes - replaced + size(&value);
        if written > self.ctx.write_quota_bytes {
            return Err(wasmtime::Error::new(super::WriteQuotaExceeded {
                written,
                limit: self.ctx.write_quota_bytes,
            }));
        }
        self.written_bytes = written;
        if !self.overlay.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.overlay.insert(key, value);
        Ok(())
    }
}

impl StoreData {
    /// The call in progress. Imports are only reachable from inside a call, so this is always set
    /// when they run; if not, the import traps rather than act outside a call.
    pub(super) fn active(&mut self) -> wasmtime::Result<&mut ActiveCall> {
        self.call
            .as_mut()
            .ok_or_else(|| wasmtime::Error::msg("object import used outside of a call"))
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The instance's exports, by the world its component was built against.
enum Bindings {
    Current(Object),
    Legacy(legacy::Object),
}

/// A live instance of one object version.
pub struct Activation {
    store: Store<StoreData>,
    bindings: Bindings,
    /// sha256 of the version this activation runs.
    pub sha256: std::sync::Arc<str>,
    /// When this activation last finished a call.
    pub last_used: Instant,
    /// Calls served by this activation.
    pub calls: u64,
}

impl Activation {
    pub(super) async fn new(
        runtime: &Runtime,
        compiled: &CompiledObject,
    ) -> Result<Activation, Error> {
        let stdout = OutputPipe::default();
        let stderr = OutputPipe::default();
        // No preopened directories, no network, no environment, no arguments: the sandbox.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(runtime.inner.config.memory_limit_bytes)
            .trap_on_grow_failure(true)
            .build();
        let data = StoreData {
            wasi,
            table: ResourceTable::new(),
            limits,
            stdout,
            stderr,
            call: None,
            // Instantiation runs guest start code: bound it too.
            deadline: Instant::now() + INSTANTIATE_DEADLINE,
        };
        let mut store = Store::new(&runtime.inner.engine, data);
        store.limiter(|d| &mut d.limits);
        // At every epoch tick: stop past the deadline, else yield to the executor, so a busy guest
        // never holds a worker thread for longer than a tick. Set once; each call sets its deadline.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            let data = ctx.data_mut();
            if Instant::now() >= data.deadline {
                if let Some(call) = data.call.as_mut() {
                    call.deadline_hit = true;
                }
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Yield(1))
        });
        let failed = |e: wasmtime::Error| Error::Instantiate(format!("{e:#}"));
        let bindings = match &*compiled.pre {
            WorldPre::Current(pre) => {
                Bindings::Current(pre.instantiate_async(&mut store).await.map_err(failed)?)
            }
            WorldPre::Legacy(pre) => {
                Bindings::Legacy(pre.instantiate_async(&mut store).await.map_err(failed)?)
            }
        };
        Ok(Activation {
            store,
            bindings,
            sha256: compiled.sha256.clone(),
            last_used: Instant::now(),
            calls: 0,
        })
    }

    /// Runs one handler call. On success returns the response and the buffered writes; on a trap
    /// or timeout returns the failure, and the activation must not be used again.
    pub async fn call(
        &mut self,
        request: ObjectRequest,
        ctx: CallContext,
    ) -> Result<CallOutcome, CallFailure> {
        self.begin(ctx);
        #[derive(Clone, Copy)]
        enum Handler {
            Get,
            Post,
            Put,
            Delete,
            Patch,
        }
        let method = match request.method.as_str() {
            "GET" => Ok(Handler::Get),
            "POST" => Ok(Handler::Post),
            "PUT" => Ok(Handler::Put),
            "DELETE" => Ok(Handler::Delete),
            "PATCH" => Ok(Handler::Patch),
            other => Err(wasmtime::Error::msg(format!("unsupported method {other}"))),
        };
        let req: wit::Request = request.into();
        let result = match (&self.bindings, method) {
            (_, Err(e)) => Err(e),
            (Bindings::Current(bindings), Ok(method)) => {
                let handler = bindings.object_primitive_object_handler();
                match method {
                    Handler::Get => handler.call_get(&mut self.store, &req).await,
                    Handler::Post => handler.call_post(&mut self.store, &req).await,
                    Handler::Put => handler.call_put(&mut self.store, &req).await,
                    Handler::Delete => handler.call_delete(&mut self.store, &req).await,
                    Handler::Patch => handler.call_patch(&mut self.store, &req).await,
                }
            }
            (Bindings::Legacy(bindings), Ok(method)) => {
                let handler = bindings.object_primitive_object_handler();
                match method {
                    Handler::Get => handler.call_get(&mut self.store, &req).await,
                    Handler::Post => handler.call_post(&mut self.store, &req).await,
                    Handler::Put => handler.call_put(&mut self.store, &req).await,
                    Handler::Delete => handler.call_delete(&mut self.store, &req).await,
                    Handler::Patch => handler.call_patch(&mut self.store, &req).await,
                }
            }
        };
        let (result, changes) = self.end(result)?;
        Ok(CallOutcome {
            response: result.into(),
            changes,
        })
    }

    /// Runs the object's `alarm-handler.fire` for the alarm `name`. A component built against
    /// 0.1.0 has no alarm handler: that is a failure of the call, as a trap is.
    pub async fn fire(
        &mut self,
        name: &str,
        payload: &[u8],
        scheduled_ms: u64,
        ctx: CallContext,
    ) -> Result<FireOutcome, CallFailure> {
        if matches!(self.bindings, Bindings::Legacy(_)) {
            return Err(CallFailure::Trapped {
                message: "this version was built against object-primitive:object@0.1.0, which \
                          has no alarm-handler: it cannot handle alarms"
                    .into(),
                backtrace: String::new(),
            });
        }
        self.begin(ctx);
        let Bindings::Current(bindings) = &self.bindings else {
            unreachable!("checked above");
        };
        let handler = bindings.object_primitive_object_alarm_handler();
        let result = handler
            .call_fire(&mut self.store, name, payload, scheduled_ms)
            .await;
        let (result, changes) = self.end(result)?;
        Ok(FireOutcome { result, changes })
    }

    /// Starts a call: its deadline and an empty buffer of changes.
    fn begin(&mut self, ctx: CallContext) {
        let data = self.store.data_mut();
        data.deadline = ctx.chain.deadline;
        data.call = Some(ActiveCall::new(ctx));
        self.store.set_epoch_deadline(1);
    }

    /// Ends a call: sends what it printed to the log and hands back its result with its changes,
    /// or the failure (after which the activation must not be used again).
    fn end<R>(&mut self, result: wasmtime::Result<R>) -> Result<(R, Changes), CallFailure> {
        let data = self.store.data_mut();
        let call = data
            .call
            .take()
            .expect("the call context is set for the whole call");
        for (pipe, event, level) in [
            (&data.stdout, "stdout", LogLevel::Info),
            (&data.stderr, "stderr", LogLevel::Warn),
        ] {
            for line in pipe.take_lines() {
                call.ctx
                    .services
                    .log(&call.ctx.object_id, &call.ctx.chain, level, event, &line);
            }
        }
        self.last_used = Instant::now();
        self.calls += 1;
        match result {
            Ok(result) => Ok((result, call.into_changes())),
            Err(_) if call.deadline_hit => Err(CallFailure::DeadlineExceeded),
            Err(e) => Err(describe_trap(&e)),
        }
    }
}

/// Why a call trapped, in one line, and the guest backtrace wasmtime attached (if any).
fn describe_trap(error: &wasmtime::Error) -> CallFailure {
    if let Some(over) = error.downcast_ref::<super::WriteQuotaExceeded>() {
        return CallFailure::WriteQuotaExceeded {
            message: over.to_string(),
        };
    }
    let message = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        // A host import refused (e.g. a state key too long): the root cause says why.
        None => error.root_cause().to_string(),
    };
    let backtrace = error
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| bt.to_string())
        .unwrap_or_default();
    CallFailure::Trapped { message, backtrace }
}
