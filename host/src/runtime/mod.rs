//! The wasm runtime: turns component bytes into live, bounded object instances and runs calls on them.
//!
//! Three lifetimes, named after what they hold:
//! - **process**: one [`Runtime`] with the wasmtime `Engine`, the `Linker` and the epoch ticker;
//! - **object version**: a [`CompiledObject`], the compiled component with its imports checked once
//!   and its `InstancePre`, cached on disk as a `.cwasm` keyed by sha256 and engine configuration;
//! - **activation**: an [`Activation`], one `Store` plus one instance, reused across calls while warm,
//!   replaced after a trap or a timeout.
//!
//! A call runs under an epoch deadline and a memory cap. During a call the object's state writes
//! are buffered; the runtime hands them back in [`CallOutcome`] and never commits anything itself.
//!
//! This module knows nothing of HTTP, TSV files or the cluster: it reaches committed state through
//! [`StateReader`] and the rest of the station through [`HostServices`], both implemented elsewhere.

mod activation;
mod cache;
mod component;
mod host_alarms;
mod host_log;
mod host_runtime;
mod host_state;
mod legacy;
pub use host_alarms::{
    MAX_ALARM_NAME_BYTES, MAX_ALARM_PAYLOAD_BYTES, MAX_EVENT_DATA_BYTES, MAX_TOPIC_BYTES,
    check_topic,
};
pub use host_state::RESERVED_PREFIX;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use activation::Activation;
pub use component::CompiledObject;

use futures::future::BoxFuture;

// The current world, 0.2.0 (`legacy.rs` serves 0.1.0).
wasmtime::component::bindgen!({
    path: "../wit",
    world: "object",
    imports: { default: async | trappable },
    exports: { default: async },
});

use object_primitive::object::types as wit;

/// How often the epoch ticker advances; deadlines are checked at this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Limits and locations the runtime needs; built from the CLI by the caller.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Where compiled artifacts are cached (`data/cache`).
    pub cache_dir: PathBuf,
    /// Linear-memory cap per instance, in bytes. Growing past it traps the call.
    pub memory_limit_bytes: usize,
    /// Upper bound on instances alive at once (sizes the pooling allocator).
    pub max_instances: u32,
}

/// Errors the runtime reports at its boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a valid WebAssembly component.
    #[error("not a valid wasm component: {0}")]
    InvalidComponent(String),
    /// The component imports something this host does not provide.
    #[error(
        "component imports `{import}`, which this host does not provide (objects may import object-primitive:object/{{state,log,runtime,alarms,events}}@0.2.0 (or 0.1.0's state, log and runtime) and wasi:{{cli,clocks,io,random}})"
    )]
    UnsupportedImport {
        /// The import's full name, e.g. `example:foreign/thing@0.1.0`.
        import: String,
    },
    /// The component does not export the object handler, or its imports have the wrong shape.
    #[error("component does not fit the object-primitive:object world (0.2.0, or 0.1.0): {0}")]
    WorldMismatch(String),
    /// Creating an instance failed (for example the instance pool is exhausted).
    #[error("could not instantiate the object: {0}")]
    Instantiate(String),
}

/// Why a call produced no response. Either way nothing of the call is committed.
#[derive(Debug, Clone)]
pub enum CallFailure {
    /// The guest trapped (panic, `unreachable`, out of memory, a host import refused).
    Trapped {
        /// One line saying why, for the caller.
        message: String,
        /// The guest backtrace wasmtime captured, for the log (may be empty).
        backtrace: String,
    },
    /// The call ran past its deadline and was interrupted.
    DeadlineExceeded,
    /// The call wrote more than its write quota; it was stopped there.
    WriteQuotaExceeded {
        /// What it tried to write, and the quota.
        message: String,
    },
}

/// The trap a state write past the call's write quota raises (see [`CallContext`]).
#[derive(Debug, thiserror::Error)]
#[error("the call wrote {written} bytes of state, over its write quota of {limit} bytes")]
pub struct WriteQuotaExceeded {
    /// Bytes the call's writes would hold.
    pub written: u64,
    /// The quota.
    pub limit: u64,
}

/// An HTTP-shaped request handed to an object.
#[derive(Debug, Clone, Default)]
pub struct ObjectRequest {
    /// Upper-case method name.
    pub method: String,
    /// Path after `/objects/{id}`, percent-encoding kept, starting with `/`.
    pub path: String,
    /// Decoded query pairs.
    pub query: Vec<(String, String)>,
    /// Header pairs, lower-case names.
    pub headers: Vec<(String, String)>,
    /// Raw body.
    pub body: Vec<u8>,
}

/// The object's answer, passed through to the client unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectResponse {
    /// HTTP status.
    pub status: u16,
    /// Response header pairs.
    pub headers: Vec<(String, String)>,
    /// Raw body.
    pub body: Vec<u8>,
}

/// One buffered state write, in the order the guest made it (last write per key wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateWrite {
    /// Set a key.
    Set {
        /// Key.
        key: String,
        /// New value.
        value: String,
    },
    /// Delete a key.
    Delete {
        /// Key.
        key: String,
    },
}

/// One committed version of a key, as `state.history` reports it.
#[derive(Debug, Clone)]
pub struct StateVersion {
    /// Commit sequence number.
    pub seq: u64,
    /// Commit time, unix milliseconds.
    pub at_ms: u64,
    /// Value, `None` for a delete.
    pub value: Option<String>,
}

/// Read access to an object's committed state, implemented by the station over the store.
pub trait StateReader: Send + Sync {
    /// Current committed value.
    fn get(&self, key: &str) -> Option<String>;
    /// Committed keys with this prefix, sorted.
    fn keys(&self, prefix: &str) -> Vec<String>;
    /// Committed versions of a key, newest first.
    fn history(&self, key: &str, limit: usize) -> Vec<StateVersion>;
    /// The committed pending alarm `name`, if any.
    fn alarm(&self, _name: &str) -> Option<AlarmEntry> {
        None
    }
    /// The committed pending alarms, soonest first.
    fn alarms(&self) -> Vec<AlarmEntry> {
        Vec::new()
    }
}

/// A pending alarm: what `alarms.set` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmEntry {
    /// Its name, unique per object.
    pub name: String,
    /// When it is due, unix milliseconds.
    pub at_ms: u64,
    /// The bytes handed back to `fire`.
    pub payload: Vec<u8>,
}

/// An event a call published, delivered to subscribers once its batch is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedEvent {
    /// The topic (checked by [`check_topic`]).
    pub topic: String,
    /// The data.
    pub data: String,
}

/// Severity of a log line, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Finest detail.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal events.
    Info,
    /// Something unexpected but handled.
    Warn,
    /// A failure.
    Error,
}

/// Why `call-object` failed, mirroring the WIT `call-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No such object.
    NotFound(String),
    /// The object cannot run now.
    Unavailable(String),
    /// The callee ran out of time.
    Timeout,
    /// The callee trapped.
    Trapped(String),
    /// The target is already on the call chain.
    LoopDetected(String),
    /// The request was refused before it ran.
    Invalid(String),
}

/// Who is calling: carried along a chain of object-to-object calls.
#[derive(Debug, Clone)]
pub struct CallChain {
    /// Request id of the outermost HTTP request, shared by every call on the chain.
    pub request_id: String,
    /// Object ids on the chain, outermost first; the last is the current callee.
    pub objects: Vec<String>,
    /// When the outermost call's time runs out; callees inherit it.
    pub deadline: Instant,
    /// The span of the chain's current call: the parent of the calls it makes.
    pub trace: crate::trace::TraceContext,
}

/// The station services an object reaches through its imports, implemented outside the runtime.
pub trait HostServices: Send + Sync + 'static {
    /// This station's id.
    fn station_id(&self) -> String;
    /// Append a line to an object's log.
    fn log(&self, object_id: &str, chain: &CallChain, level: LogLevel, event: &str, message: &str);
    /// Call another object on behalf of the chain's last object.
    fn call_object(
        &self,
        target: String,
        request: ObjectRequest,
        chain: CallChain,
    ) -> BoxFuture<'static, Result<ObjectResponse, CallError>>;
}

/// Everything one call needs besides the request.
#[derive(Clone)]
pub struct CallContext {
    /// The object being called.
    pub object_id: String,
    /// The chain this call belongs to (its last entry is `object_id`).
    pub chain: CallChain,
    /// The object's committed state.
    pub state: Arc<dyn StateReader>,
    /// Station services (log, calls to other objects).
    pub services: Arc<dyn HostServices>,
    /// The object is deployed stateless: every state write traps.
    pub stateless: bool,
    /// The call is a parallel read (a GET beside others, outside the turn queue): every state
    /// write traps.
    pub read_only: bool,
    /// Most bytes (keys and values) the call may write; past it the call traps with
    /// [`CallFailure::WriteQuotaExceeded`].
    pub write_quota_bytes: u64,
}

/// What a successful call produced.
#[derive(Debug)]
pub struct CallOutcome {
    /// The object's response.
    pub response: ObjectResponse,
    /// Everything it asked to change, to be committed atomically if the status is below 500.
    pub changes: Changes,
}

/// What a call asked to change; nothing of it is committed unless the call succeeds.
#[derive(Debug, Default)]
pub struct Changes {
    /// Buffered state writes, in order (one per key).
    pub writes: Vec<StateWrite>,
    /// Alarms set (`Some`) or cancelled (`None`), one change per name.
    pub alarms: Vec<(String, Option<AlarmEntry>)>,
    /// Events published, in order.
    pub events: Vec<PublishedEvent>,
}

impl Changes {
    /// Whether the call changed nothing.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.alarms.is_empty() && self.events.is_empty()
    }
}

/// What an alarm's `fire` produced (it did not trap).
#[derive(Debug)]
pub struct FireOutcome {
    /// `Ok` if the object handled the alarm, else its message.
    pub result: Result<(), String>,
    /// What it asked to change (committed only with `Ok`).
    pub changes: Changes,
}

/// The process-wide runtime: engine, linker and epoch ticker. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: wasmtime::Engine,
    linker: wasmtime::component::Linker<activation::StoreData>,
    config: RuntimeConfig,
    engine_fingerprint: String,
    /// Compiled components by sha256, shared by every object (and version) with the same bytes:
    /// 10,000 objects deployed from one component hold one copy of its code and types. Weak, so
    /// a component no object uses any more is freed.
    loaded:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<component::WorldPre>>>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Builds the engine (component model, pooling allocator, epoch interruption) and the linker.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Runtime> {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        let max = config.max_instances.max(1);
        pool.total_component_instances(max)
            .total_core_instances(max.saturating_mul(8))
            .total_memories(max.saturating_mul(2))
            .total_tables(max.saturating_mul(4))
            .total_stacks(max)
            .max_memory_size(config.memory_limit_bytes)
            .max_core_instance_size(4 << 20)
            .max_component_instance_size(4 << 20)
            .table_elements(100_000)
            .max_memories_per_module(2)
            .max_tables_per_module(4)
            .max_unused_warm_slots(64);
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&wasm)
            .map_err(|e| anyhow::anyhow!("configuring wasmtime: {e:#}"))?;
        let mut linker = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("adding WASI to the linker: {e:#}"))?;
        Object::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |d| d)
            .map_err(|e| anyhow::anyhow!("adding object imports to the linker: {e:#}"))?;
        legacy::Object::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |d| d)
            .map_err(|e| anyhow::anyhow!("adding 0.1.0 object imports to the linker: {e:#}"))?;
        let engine_fingerprint = cache::engine_fingerprint(&engine);
        std::fs::create_dir_all(&config.cache_dir)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                config,
                engine_fingerprint,
                loaded: std::sync::Mutex::new(std::collections::HashMap::new()),
                _ticker: ticker,
            }),
        })
    }

    /// The configured memory cap per instance, in bytes.
    pub fn memory_limit_bytes(&self) -> usize {
        self.inner.config.memory_limit_bytes
    }

    /// Compiles (or loads from the artifact cache) and validates a component. Blocking and
    /// CPU-heavy: call it from `spawn_blocking`.
    pub fn compile(&self, sha256: &str, bytes: &[u8]) -> Result<CompiledObject, Error> {
        component::compile(self, sha256, bytes)
    }

    /// The compiled component with this sha256 if one is loaded already (shared, no I/O).
    pub fn loaded(&self, sha256: &str) -> Option<CompiledObject> {
        component::loaded(self, sha256, std::time::Instant::now())
    }

    /// Creates a fresh activation (store + instance) of a compiled object.
    pub async fn activate(&self, compiled: &CompiledObject) -> Result<Activation, Error> {
        Activation::new(self, compiled).await
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on its own thread; stops when dropped.
struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: wasmtime::Engine) -> EpochTicker {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl From<wit::Level> for LogLevel {
    fn from(level: wit::Level) -> Self {
        match level {
            wit::Level::Trace => LogLevel::Trace,
            wit::Level::Debug => LogLevel::Debug,
            wit::Level::Info => LogLevel::Info,
            wit::Level::Warn => LogLevel::Warn,
            wit::Level::Error => LogLevel::Error,
        }
    }
}

impl From<ObjectRequest> for wit::Request {
    fn from(r: ObjectRequest) -> Self {
        wit::Request {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<wit::Request> for ObjectRequest {
    fn from(r: wit::Request) -> Self {
        ObjectRequest {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<wit::Response> for ObjectResponse {
    fn from(r: wit::Response) -> Self {
        ObjectResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<ObjectResponse> for wit::Response {
    fn from(r: ObjectResponse) -> Self {
        wit::Response {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<CallError> for wit::CallError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::NotFound(m) => wit::CallError::NotFound(m),
            CallError::Unavailable(m) => wit::CallError::Unavailable(m),
            CallError::Timeout => wit::CallError::Timeout,
            CallError::Trapped(m) => wit::CallError::Trapped(m),
            CallError::LoopDetected(m) => wit::CallError::LoopDetected(m),
            CallError::Invalid(m) => wit::CallError::Invalid(m),
        }
    }
}
