//! One object version, compiled and validated: the `Component`, its checked imports and its
//! `ObjectPre` (an `InstancePre` with the handler export resolved), shared by all its activations.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::{Error, ObjectPre, Runtime, activation::StoreData, cache, legacy};

/// The export that marks a component of the current world.
const CURRENT_HANDLER: &str = "object-primitive:object/handler@0.2.0";

/// A component's `InstancePre`, with the exports of the world it was built against resolved.
pub(super) enum WorldPre {
    /// `object-primitive:object@0.2.0`: handler and alarm-handler.
    Current(ObjectPre<StoreData>),
    /// `object-primitive:object@0.1.0`: handler only.
    Legacy(legacy::ObjectPre<StoreData>),
}

impl WorldPre {
    /// The world's version, for messages and `?metadata=true`.
    pub(super) fn world(&self) -> &'static str {
        match self {
            WorldPre::Current(_) => "0.2.0",
            WorldPre::Legacy(_) => "0.1.0",
        }
    }
}

/// Interfaces an object may import: the object world's own and the WASI p2 interfaces the host
/// grants. Filesystem and sockets are linked so that componentize-py guests instantiate, but the
/// context grants no directories and no network, so every such call fails inside the guest.
const ALLOWED_IMPORT_PREFIXES: &[&str] = &[
    "object-primitive:object/",
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:io/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
];

/// A compiled, validated object version. Cheap to clone.
#[derive(Clone)]
pub struct CompiledObject {
    pub(super) pre: Arc<WorldPre>,
    /// sha256 of the component bytes, lower-case hex.
    pub sha256: Arc<str>,
    /// Whether the artifact came from the on-disk cache (no compilation happened).
    pub from_cache: bool,
    /// Time spent compiling or loading, in milliseconds.
    pub load_ms: f64,
}

impl CompiledObject {
    /// The version of the object world the component was built against (`0.2.0` or `0.1.0`).
    pub fn world(&self) -> &'static str {
        self.pre.world()
    }
}

/// The already-loaded component with this sha256, if any object still holds it.
pub(super) fn loaded(runtime: &Runtime, sha256: &str, started: Instant) -> Option<CompiledObject> {
    let pre = runtime
        .inner
        .loaded
        .lock()
        .expect("loaded lock")
        .get(sha256)?
        .upgrade()?;
    Some(CompiledObject {
        pre,
        sha256: sha256.into(),
        from_cache: true,
        load_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// Compiles or loads the component and checks it against the object world; a component with the
/// same sha256 that is loaded already is shared instead.
pub(super) fn compile(
    runtime: &Runtime,
    sha256: &str,
    bytes: &[u8],
) -> Result<CompiledObject, Error> {
    let started = Instant::now();
    if let Some(compiled) = loaded(runtime, sha256, started) {
        return Ok(compiled);
    }
    let inner = &runtime.inner;
    let path = cache::artifact_path(&inner.config.cache_dir, sha256, &inner.engine_fingerprint);
    let (component, from_cache) = match cache::load(&inner.engine, &path) {
        Some(component) => (component, true),
        None => {
            check_is_component(bytes)?;
            tracing::info!(sha256, bytes = bytes.len(), "compiling component");
            let component = compile_in_own_pool(&inner.engine, bytes)
                .map_err(|e| Error::InvalidComponent(format!("{e:#}")))?;
            (component, false)
        }
    };
    check_imports(&inner.engine, &component)?;
    let instance_pre = inner
        .linker
        .instantiate_pre(&component)
        .map_err(|e| Error::WorldMismatch(format!("{e:#}")))?;
    let mismatch = |e: wasmtime::Error| Error::WorldMismatch(format!("{e:#}"));
    let current = component
        .component_type()
        .exports(&inner.engine)
        .any(|(name, _)| name == CURRENT_HANDLER);
    let pre = Arc::new(if current {
        WorldPre::Current(ObjectPre::new(instance_pre).map_err(mismatch)?)
    } else {
        WorldPre::Legacy(legacy::ObjectPre::new(instance_pre).map_err(mismatch)?)
    });
    if !from_cache {
        cache::store(&component, &path);
    }
    {
        let mut loaded = inner.loaded.lock().expect("loaded lock");
        if loaded.len() >= 64 && loaded.len().is_power_of_two() {
            loaded.retain(|_, pre| pre.strong_count() > 0);
        }
        loaded.insert(sha256.to_string(), Arc::downgrade(&pre));
    }
    Ok(CompiledObject {
        pre,
        sha256: sha256.into(),
        from_cache,
        load_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// Compiles on a thread pool of its own. wasmtime compiles a component's functions in parallel
/// with rayon; on rayon's one global pool a small component deployed while a large one compiles
/// would wait behind every function of the large one. With a pool each, concurrent compiles share
/// the cores fairly (the pool's threads live only as long as the compile).
fn compile_in_own_pool(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("compile-{i}"))
        .build();
    match pool {
        Ok(pool) => pool.install(|| Component::new(engine, bytes)),
        Err(e) => {
            tracing::warn!("no compile thread pool ({e}); compiling on the shared one");
            Component::new(engine, bytes)
        }
    }
}

/// Rejects bytes that are not a component before handing them to the compiler, with a message a
/// user can act on (a core module is the common mistake).
fn check_is_component(bytes: &[u8]) -> Result<(), Error> {
    if bytes.is_empty() {
        return Err(Error::InvalidComponent("the body is empty".into()));
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(Error::InvalidComponent(
            "the bytes do not start with the wasm magic number `\\0asm`".into(),
        ));
    }
    // Layer field: 0 = core module, 1 = component.
    if bytes[6..8] == [0, 0] {
        return Err(Error::InvalidComponent(
            "this is a core wasm module, not a component: build with --target wasm32-wasip2 \
             (Rust) or componentize-py (Python)"
                .into(),
        ));
    }
    Ok(())
}

/// Refuses any import outside the allowed interfaces, naming the first one found.
fn check_imports(engine: &wasmtime::Engine, component: &Component) -> Result<(), Error> {
    let ty = component.component_type();
    for (name, item) in ty.imports(engine) {
        let allowed = matches!(item.ty, ComponentItem::ComponentInstance(_))
            && ALLOWED_IMPORT_PREFIXES.iter().any(|p| name.starts_with(p));
        if !allowed {
            return Err(Error::UnsupportedImport {
                import: name.to_string(),
            });
        }
    }
    Ok(())
}
