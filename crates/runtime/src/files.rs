//! Files other processes may read or write at the same time: another
//! host sharing the folder, the status reader, the plugin watcher.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// A name for a file written beside `name` before it takes its place, that
/// no other process picks: not even one of the same pid (containers sharing
/// a folder are each pid 1).
pub fn temporary_name(name: &str) -> String {
    static MADE: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 8];
    // Should /dev/urandom fail, the pid and the count still part this process's names.
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut r| r.read_exact(&mut random));
    format!(".{name}.tmp{}-{:016x}-{}", std::process::id(), u64::from_le_bytes(random), MADE.fetch_add(1, Ordering::Relaxed))
}

/// Write `path` through a temporary file beside it and a rename, so a
/// reader (another host, the status reader, the plugin watcher) never sees
/// half a file. The temporary name does not end in `.wasm`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(temporary_name(&name));
    let written = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&tmp, bytes)).and_then(|_| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
