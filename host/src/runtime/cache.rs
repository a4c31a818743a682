//! Compiled components on disk, keyed by the content hash of the `.wasm` and
//! the engine's compatibility hash, so a restart (or a reload of an unchanged
//! file) skips Cranelift.
//!
//! A compiled file is native code that wasmtime maps and runs unchecked, so
//! the cache must not be a door for code: each file ends with an HMAC-SHA256
//! of its content made with a key only this host's user can read
//! (`DATA_DIR/cache.key`, mode 0600, made on first use). A file whose tag
//! does not verify, or a key file that others could read or write, means
//! compiling from the `.wasm` again; nothing unverified is deserialized.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Bytes of the tag at the end of every cached file.
const TAG_BYTES: usize = 32;

pub struct ComponentCache {
    /// The folder and the key its files are signed with.
    store: Option<(PathBuf, [u8; 32])>,
    engine_key: String,
}

/// Hex SHA-256 of a plugin's bytes.
pub fn content_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache's key at `path`, made if missing; `Err` says why it cannot be trusted.
fn cache_key(path: &Path) -> Result<[u8; 32], String> {
    let shown = path.display();
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            std::fs::File::open("/dev/urandom").and_then(|mut r| r.read_exact(&mut key)).map_err(|e| format!("reading /dev/urandom: {e}"))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            }
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| format!("creating {shown}: {e}"))?;
            f.write_all(&key).map_err(|e| format!("writing {shown}: {e}"))?;
            return Ok(key);
        }
        Err(e) => return Err(format!("{shown}: {e}")),
    };
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != me || meta.permissions().mode() & 0o077 != 0 {
        return Err(format!("{shown} must be a regular file of this user with mode 0600"));
    }
    let mut key = [0u8; 32];
    file.read_exact(&mut key).map_err(|e| format!("{shown}: {e}"))?;
    Ok(key)
}

fn tag(key: &[u8; 32], context: &str, compiled: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(context.as_bytes());
    mac.update(compiled);
    mac
}

impl ComponentCache {
    /// A cache in `DATA_DIR/cache/` signed with `DATA_DIR/cache.key`
    /// (`None`: compile every time).
    pub fn new(engine: &Engine, data_dir: Option<&Path>) -> Self {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let store = data_dir.and_then(|data| match cache_key(&data.join("cache.key")) {
            Ok(key) => Some((data.join("cache"), key)),
            Err(reason) => {
                tracing::warn!("compiled plugins are not cached: {reason}");
                None
            }
        });
        ComponentCache { store, engine_key: format!("{:016x}", h.finish()) }
    }

    /// The compiled component for `bytes` (whose hash is `hash`).
    pub fn component(&self, engine: &Engine, hash: &str, bytes: &[u8]) -> wasmtime::Result<Component> {
        let Some((dir, key)) = &self.store else {
            return Component::new(engine, bytes);
        };
        let name = format!("{hash}-{}.cwasm", self.engine_key);
        let path = dir.join(&name);
        if let Some(compiled) = self.verified(&path, key, &name) {
            // SAFETY: the tag proves this host wrote these bytes, from
            // `Engine::precompile_component` of a compatible engine.
            if let Ok(c) = unsafe { Component::deserialize(engine, &compiled) } {
                return Ok(c);
            }
        }
        let mut compiled = engine.precompile_component(bytes)?;
        let signed = tag(key, &name, &compiled).finalize().into_bytes();
        let len = compiled.len();
        compiled.extend_from_slice(&signed);
        store(&path, &compiled);
        // SAFETY: `compiled` was just produced by this engine.
        unsafe { Component::deserialize(engine, &compiled[..len]) }
    }

    /// The cached bytes at `path` if its tag verifies.
    fn verified(&self, path: &Path, key: &[u8; 32], name: &str) -> Option<Vec<u8>> {
        let mut file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).ok()?;
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok()?;
        let split = bytes.len().checked_sub(TAG_BYTES)?;
        let (compiled, given) = bytes.split_at(split);
        if tag(key, name, compiled).verify_slice(given).is_err() {
            tracing::warn!("{} does not carry this host's tag; compiling the plugin again", path.display());
            return None;
        }
        bytes.truncate(split);
        Some(bytes)
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
