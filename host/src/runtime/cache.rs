//! The on-disk cache of compiled components: `{cache_dir}/{sha256}-{engine}.cwasm`.
//!
//! The key includes a fingerprint of the engine's compilation settings and wasmtime version, so an
//! upgraded or reconfigured host never loads an incompatible artifact. The cache is safe to delete.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;

/// A short, stable fingerprint of everything that makes an artifact loadable by this engine.
pub(super) fn engine_fingerprint(engine: &wasmtime::Engine) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Where the artifact for these bytes lives.
pub(super) fn artifact_path(cache_dir: &Path, sha256: &str, fingerprint: &str) -> PathBuf {
    cache_dir.join(format!("{sha256}-{fingerprint}.cwasm"))
}

/// Loads a cached artifact, or `None` if there is none or it no longer loads.
pub(super) fn load(engine: &wasmtime::Engine, path: &Path) -> Option<Component> {
    if !path.exists() {
        return None;
    }
    // SAFETY: the file was written by `store` below from `Component::serialize` of this same engine
    // configuration (the fingerprint is part of the name), in a directory the station owns.
    match unsafe { Component::deserialize_file(engine, path) } {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(path = %path.display(), "ignoring unusable cached artifact: {e:#}");
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

/// Writes an artifact through a temp file and rename, so a reader never sees a partial file.
/// Failures are logged, not returned: the cache is an optimisation.
pub(super) fn store(component: &Component, path: &Path) {
    let bytes = match component.serialize() {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!("could not serialize compiled component: {e:#}");
            return;
        }
    };
    // Two objects deployed from the same bytes may compile side by side: each writes its own
    // temp file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let result = std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(path = %path.display(), "could not cache compiled component: {e}");
    }
}
