//! In-process micro-benchmarks of the runtime (issue 5), run by `scripts/bench.sh` through
//! `cargo bench -p host --bench runtime --profile release`.
//!
//! - `runtime/instantiate_counter`: a fresh activation (store + instance) of the Rust counter,
//!   dropped again: what a call pays when no live instance is warm.
//! - `runtime/warm_call_counter_post`: one `POST` on a live activation (reads and writes state
//!   through the host imports); target < 20 µs.
//! - `runtime/warm_call_hello_get`: one `GET` on a live hello activation.
//! - `runtime/instantiate_py_counter`, `runtime/warm_call_py_counter_post`: the same for the
//!   Python counter, once `objects/dist/py-counter.wasm` is built; target < 1 ms.
//!
//! Components come from `objects/dist/` (`scripts/build-objects.sh`). State and station services
//! are trivial in-memory stand-ins, so the figures are the runtime's own cost. Run without
//! `RUST_BACKTRACE` (wasmtime captures a backtrace on every store drop when it is set).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures::future::BoxFuture;
use host::runtime::{
    Activation, CallChain, CallContext, CallError, CompiledObject, HostServices, LogLevel,
    ObjectRequest, ObjectResponse, Runtime, RuntimeConfig, StateReader, StateVersion,
};
use sha2::{Digest, Sha256};

/// Committed state held in a map; `history` is not needed by these objects.
#[derive(Default)]
struct MemoryState(Mutex<HashMap<String, String>>);

impl StateReader for MemoryState {
    fn get(&self, key: &str) -> Option<String> {
        self.0.lock().unwrap().get(key).cloned()
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .0
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    fn history(&self, _key: &str, _limit: usize) -> Vec<StateVersion> {
        Vec::new()
    }
}

/// Station services that drop log lines and refuse object-to-object calls.
struct NoServices;

impl HostServices for NoServices {
    fn station_id(&self) -> String {
        "bench".into()
    }

    fn log(&self, _: &str, _: &CallChain, _: LogLevel, _: &str, _: &str) {}

    fn call_object(
        &self,
        target: String,
        _request: ObjectRequest,
        _chain: CallChain,
    ) -> BoxFuture<'static, Result<ObjectResponse, CallError>> {
        Box::pin(async move { Err(CallError::NotFound(target)) })
    }
}

/// A runtime with its artifact cache in a temp dir, and the tokio runtime to drive it.
struct Fixture {
    tokio: tokio::runtime::Runtime,
    runtime: Runtime,
    _cache: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let cache = tempfile::tempdir().expect("a temp dir for the artifact cache");
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: cache.path().to_path_buf(),
            memory_limit_bytes: 64 << 20,
            max_instances: 100,
        })
        .expect("building the runtime");
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("building a tokio runtime");
        Fixture {
            tokio,
            runtime,
            _cache: cache,
        }
    }

    /// Compiles `objects/dist/NAME.wasm`, or `None` if it is not built.
    fn compile(&self, name: &str) -> Option<CompiledObject> {
        let path = dist().join(format!("{name}.wasm"));
        let bytes = std::fs::read(&path).ok()?;
        let sha = hex::encode(Sha256::digest(&bytes));
        Some(
            self.runtime
                .compile(&sha, &bytes)
                .unwrap_or_else(|e| panic!("compiling {}: {e}", path.display())),
        )
    }

    fn activate(&self, compiled: &CompiledObject) -> Activation {
        self.tokio
            .block_on(self.runtime.activate(compiled))
            .expect("instantiating")
    }
}

fn dist() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../objects/dist")
}

fn context(object_id: &str) -> CallContext {
    CallContext {
        object_id: object_id.into(),
        chain: CallChain {
            request_id: "0123456789abcdef".into(),
            objects: vec![object_id.into()],
            deadline: Instant::now() + Duration::from_secs(24 * 3600),
            trace: host::trace::TraceContext::root(),
        },
        state: Arc::new(MemoryState::default()),
        services: Arc::new(NoServices),
        stateless: false,
        read_only: false,
        write_quota_bytes: u64::MAX,
    }
}

fn request(method: &str) -> ObjectRequest {
    ObjectRequest {
        method: method.into(),
        path: "/".into(),
        query: Vec::new(),
        headers: vec![("accept".into(), "*/*".into())],
        body: Vec::new(),
    }
}

/// Times `iters` calls on one live activation (the turn a station keeps warm).
fn warm_calls(
    fixture: &Fixture,
    activation: &mut Activation,
    object_id: &str,
    method: &str,
    iters: u64,
) -> Duration {
    let ctx = context(object_id);
    let req = request(method);
    fixture.tokio.block_on(async {
        let started = Instant::now();
        for _ in 0..iters {
            let outcome = activation
                .call(req.clone(), ctx.clone())
                .await
                .unwrap_or_else(|e| panic!("{method} {object_id} failed: {e:?}"));
            assert!(outcome.response.status < 300, "{method} {object_id}");
            std::hint::black_box(outcome);
        }
        started.elapsed()
    })
}

/// Times `iters` fresh activations, each dropped after creation.
fn instantiations(fixture: &Fixture, compiled: &CompiledObject, iters: u64) -> Duration {
    fixture.tokio.block_on(async {
        let started = Instant::now();
        for _ in 0..iters {
            let activation = fixture
                .runtime
                .activate(compiled)
                .await
                .expect("instantiating");
            drop(std::hint::black_box(activation));
        }
        started.elapsed()
    })
}

fn runtime_benches(c: &mut Criterion) {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        eprintln!(
            "warning: RUST_BACKTRACE is set; wasmtime captures a backtrace on every store drop"
        );
    }
    let fixture = Fixture::new();
    let counter = fixture
        .compile("counter")
        .expect("objects/dist/counter.wasm is missing: run scripts/build-objects.sh");
    let hello = fixture
        .compile("hello")
        .expect("objects/dist/hello.wasm is missing: run scripts/build-objects.sh");

    let mut group = c.benchmark_group("runtime");
    group.bench_function("instantiate_counter", |b| {
        b.iter_custom(|iters| instantiations(&fixture, &counter, iters))
    });
    let mut live = fixture.activate(&counter);
    group.bench_function("warm_call_counter_post", |b| {
        b.iter_custom(|iters| warm_calls(&fixture, &mut live, "counter", "POST", iters))
    });
    let mut live = fixture.activate(&hello);
    group.bench_function("warm_call_hello_get", |b| {
        b.iter_custom(|iters| warm_calls(&fixture, &mut live, "hello", "GET", iters))
    });

    // Python, once the Python SDK's counter is built (compiling it takes seconds).
    match fixture.compile("py-counter") {
        None => eprintln!("skipping the Python benches: objects/dist/py-counter.wasm is not built"),
        Some(py) => {
            group.bench_function("instantiate_py_counter", |b| {
                b.iter_custom(|iters| instantiations(&fixture, &py, iters))
            });
            let mut live = fixture.activate(&py);
            group.bench_function("warm_call_py_counter_post", |b| {
                b.iter_custom(|iters| warm_calls(&fixture, &mut live, "py-counter", "POST", iters))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, runtime_benches);
criterion_main!(benches);
