//! Compiled components on disk, keyed by the content hash of the `.wasm` and
//! the engine's compatibility hash, so a restart (or a reload of an unchanged
//! file) skips Cranelift.
//!
//! A compiled file is native code that wasmtime maps and runs unchecked, so
//! the cache must not be a door for code: each file ends with a tag of its
//! content made with the [`HostKey`] (a keyed BLAKE3). A file whose tag does
//! not verify, or a key file that others could read or write, means compiling
//! from the `.wasm` again; nothing unverified is deserialized.
//!
//! A verified file that only this user can change (its owner, writable by
//! no one else) on a local filesystem is mapped where it lies, as wasmtime
//! maps a file it is given, instead of read into memory and copied again
//! into code memory: those two copies of a dozen MiB were a third of a
//! start. A mapped file must not change while the host runs, and none does:
//! the cache never writes a file in place (a new one is renamed over it, and
//! the old one lives on while mapped), and no one but this user can. The
//! mapping is of the same open file that verified, so a file renamed into
//! its place meanwhile is never read. It is verified through a mapping of
//! its own as well, not read through a buffer (a kernel copy of every
//! byte): a file cut short under either mapping would stop the process
//! (SIGBUS), not fail a check, hence only files no one else can write. On
//! a network filesystem another node's rename could take the pages from
//! under the mapping: there, and for any other file (or one that cannot be
//! mapped), the verified bytes are copied as before.

use std::fs::{File, Metadata};
use std::hash::{Hash, Hasher};
use std::io::{Read, Seek};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

use super::files::write_atomically;
use super::host_key::{HostKey, TAG_BYTES};
use super::take_turn;

/// How the files are tagged, in their names.
const TAG_SCHEME: &str = "blake3-keyed";
/// A cached file larger than this is not read (a compiled plugin is a few
/// times its `.wasm`, which is at most 256 MiB).
const MAX_COMPILED_BYTES: u64 = 1 << 30;
/// Filesystems whose files stay as they are while mapped unless written
/// here (`statfs` magic numbers): ext2/3/4, XFS, Btrfs, tmpfs, overlayfs,
/// F2FS and ZFS.
const LOCAL_FILESYSTEMS: [u32; 7] = [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0x794C_7630, 0xF2F5_2010, 0x2FC1_2FC1];

pub struct ComponentCache {
    /// The folder and the key its files are signed with.
    store: Option<(PathBuf, HostKey)>,
    engine_key: String,
    /// Held while compiling: plugins loaded side by side compile in turn,
    /// so two compiles' memory (tens of MiB each) is never held at once.
    compiling: Mutex<()>,
}

/// Hex SHA-256 of a plugin's bytes.
pub fn content_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl ComponentCache {
    /// A cache in `DIR/cache/` signed with `key`, the folder's own
    /// (`None`: compile every time).
    pub fn new(engine: &Engine, dir: Option<(&Path, HostKey)>) -> Self {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        // Files tagged another way are other files: never read, never taken for tampered.
        TAG_SCHEME.hash(&mut h);
        let store = dir.map(|(dir, key)| (dir.join("cache"), key));
        ComponentCache { store, engine_key: format!("{:016x}", h.finish()), compiling: Mutex::new(()) }
    }

    /// The compiled component for `bytes` (whose hash is `hash`), and how
    /// long it waited for its turn to compile (another plugin's compile,
    /// not this one's load).
    pub fn component(&self, engine: &Engine, hash: &str, bytes: &[u8]) -> wasmtime::Result<(Component, Duration)> {
        let Some((dir, key)) = &self.store else {
            let (component, waited) = self.compile(|| Component::new(engine, bytes));
            return Ok((component?, waited));
        };
        let name = format!("{hash}-{}.cwasm", self.engine_key);
        let path = dir.join(&name);
        if let Some(c) = self.cached(engine, &path, key, &name) {
            return Ok((c, Duration::ZERO));
        }
        let absent = std::fs::symlink_metadata(&path).is_err();
        let (component, waited) = self.compile(|| {
            // The same bytes in another file may have been compiled meanwhile
            // (a file there that did not verify is not read twice).
            if let Some(c) = absent.then(|| self.cached(engine, &path, key, &name)).flatten() {
                return Ok(c);
            }
            let mut compiled = engine.precompile_component(bytes)?;
            let signed = key.tag(&name, &compiled);
            let len = compiled.len();
            compiled.extend_from_slice(&signed);
            store(&path, &compiled);
            // SAFETY: `compiled` was just produced by this engine.
            unsafe { Component::deserialize(engine, &compiled[..len]) }
        });
        Ok((component?, waited))
    }

    /// The component compiled at `path`, if its tag verifies.
    fn cached(&self, engine: &Engine, path: &Path, key: &HostKey, name: &str) -> Option<Component> {
        let mut file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).ok()?;
        let meta = file.metadata().ok()?;
        let len = meta.len().checked_sub(TAG_BYTES as u64).filter(|&len| meta.is_file() && len <= MAX_COMPILED_BYTES)?;
        if mappable(&file, &meta) {
            let mut tag = [0; TAG_BYTES];
            file.read_exact_at(&mut tag, len).ok()?;
            // Verified where it lies (the page cache's pages, not a copy of
            // them); a file that cannot be mapped is read below.
            if let Some(mapped) = usize::try_from(len).ok().and_then(|len| Mapped::new(&file, len)) {
                if !verifies(key, name, mapped.bytes(), &tag, path) {
                    return None;
                }
                drop(mapped);
                // SAFETY: the tag proves this host wrote the file, from
                // `Engine::precompile_component` of a compatible engine (the
                // tag after it is past all wasmtime reads), and the file stays
                // as it is while mapped (see the module's docs). /proc/self/fd
                // names this open file.
                match unsafe { Component::deserialize_file(engine, Path::new("/proc/self/fd").join(file.as_raw_fd().to_string())) } {
                    Ok(component) => {
                        tracing::debug!("{} mapped", path.display());
                        return Some(component);
                    }
                    // /proc not mounted, say: the file is read instead.
                    Err(e) => tracing::debug!("{} cannot be mapped ({e:#}); reading it", path.display()),
                }
            }
            file.rewind().ok()?;
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut bytes).ok()?;
        let split = bytes.len().checked_sub(TAG_BYTES)?;
        if !verifies(key, name, &bytes[..split], &bytes[split..], path) {
            return None;
        }
        bytes.truncate(split);
        tracing::debug!("{} read", path.display());
        // SAFETY: the tag proves this host wrote these bytes, from
        // `Engine::precompile_component` of a compatible engine.
        unsafe { Component::deserialize(engine, &bytes) }.ok()
    }

    /// `work` (a compile) in its turn, its freed memory given back after;
    /// and how long it waited for the turn.
    fn compile<T>(&self, work: impl FnOnce() -> T) -> (T, Duration) {
        let (_turn, waited) = take_turn(&self.compiling);
        let compiled = work();
        release_freed_memory();
        (compiled, waited)
    }
}

/// Give the heap pages compiling freed back to the system. Cranelift frees
/// tens of MiB per plugin, which glibc keeps otherwise; a first start that
/// compiles a dozen plugins peaked a quarter higher for it.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Whether `file` can be mapped where it lies: only its owner, this user
/// (and root), can change it, and it is on a local filesystem. (This host
/// makes its files with mode 0600, so no other user ever had one open for
/// writing.)
fn mappable(file: &File, meta: &Metadata) -> bool {
    // SAFETY: geteuid has no preconditions.
    let mine = meta.uid() == unsafe { libc::geteuid() } && meta.mode() & 0o022 == 0;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the buffer it is given when it succeeds, and
    // only then is the buffer read.
    let local = unsafe { libc::fstatfs(file.as_raw_fd(), stat.as_mut_ptr()) == 0 && LOCAL_FILESYSTEMS.contains(&(stat.assume_init().f_type as u32)) };
    mine && local
}

/// Whether `given` is the tag of `bytes`; a tag that is not says so.
fn verifies(key: &HostKey, name: &str, bytes: &[u8], given: &[u8], path: &Path) -> bool {
    let verified = key.verify(name, bytes, given);
    if !verified {
        tracing::warn!("{} does not carry this host's tag; compiling the plugin again", path.display());
    }
    verified
}

/// The first bytes of a cached file, mapped read-only (unmapped when
/// dropped) to be verified, as wasmtime then maps it to run.
struct Mapped {
    at: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    /// The first `len` bytes of `file`, which [`mappable`] allows; `None`
    /// for none (mmap takes at least one) or when it cannot be mapped.
    fn new(file: &File, len: usize) -> Option<Self> {
        if len == 0 {
            return None;
        }
        // SAFETY: a new private read-only mapping of an open file, which
        // nothing changes while it is mapped (see the module's docs).
        let at = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        (at != libc::MAP_FAILED).then_some(Mapped { at, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `at` maps `len` readable bytes until `self` is dropped.
        unsafe { std::slice::from_raw_parts(self.at.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: `at` and `len` are the mapping `new` made, unmapped once.
        unsafe { libc::munmap(self.at, self.len) };
    }
}

/// A cache that cannot be written only costs a recompile. Only this user
/// may write it, so that it can be mapped where it lies.
fn store(path: &Path, bytes: &[u8]) {
    if let Err(e) = write_atomically(path, bytes, 0o600) {
        tracing::warn!("cannot cache compiled plugin at {}: {e}", path.display());
    }
}
