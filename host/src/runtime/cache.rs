//! Compiled components on disk, keyed by the content hash of the `.wasm` and
//! the engine's compatibility hash, so a restart (or a reload of an unchanged
//! file) skips Cranelift.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

pub struct ComponentCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

/// Hex SHA-256 of a plugin's bytes.
pub fn content_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl ComponentCache {
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        ComponentCache { dir, engine_key: format!("{:016x}", h.finish()) }
    }

    fn path(&self, hash: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{hash}-{}.cwasm", self.engine_key)))
    }

    /// The compiled component for `bytes` (whose hash is `hash`).
    pub fn component(&self, engine: &Engine, hash: &str, bytes: &[u8]) -> wasmtime::Result<Component> {
        let Some(path) = self.path(hash) else {
            return Component::new(engine, bytes);
        };
        if path.exists() {
            // SAFETY: files in the cache directory are written only by `store`
            // below, from `Engine::precompile_component` of a compatible engine.
            if let Ok(c) = unsafe { Component::deserialize_file(engine, &path) } {
                return Ok(c);
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        store(&path, &compiled);
        // SAFETY: `compiled` was just produced by this engine.
        unsafe { Component::deserialize(engine, &compiled) }
    }
}

/// A cache that cannot be written only costs a recompile.
fn store(path: &Path, bytes: &[u8]) {
    if let Err(e) = write_atomically(path, bytes) {
        tracing::warn!("cannot cache compiled plugin at {}: {e}", path.display());
    }
}

/// Write `path` through a temporary file beside it and a rename, so a
/// reader (another host, the status reader, the plugin watcher) never sees
/// half a file. The temporary name does not end in `.wasm`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let written = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&tmp, bytes)).and_then(|_| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
