//! Files other processes may read or write at the same time: another
//! host sharing the folder, the status reader, the plugin watcher.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How old a temporary file must be to be taken for one a process killed
/// mid-write left behind: no write of another host takes this long.
const LEFT_BEHIND_AFTER: Duration = Duration::from_secs(3600);

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

/// Whether `file` is named by [`temporary_name`].
fn is_temporary(file: &str) -> bool {
    let Some((_, tail)) = file.strip_prefix('.').and_then(|f| f.rsplit_once(".tmp")) else { return false };
    let parts: Vec<&str> = tail.split('-').collect();
    let digits = |p: &str, hex: bool| !p.is_empty() && p.chars().all(|c| if hex { c.is_ascii_hexdigit() } else { c.is_ascii_digit() });
    matches!(parts[..], [pid, random, count] if digits(pid, false) && random.len() == 16 && digits(random, true) && digits(count, false))
}

/// Remove the temporary files in `dir` that processes killed mid-write
/// left there (regular files over [`LEFT_BEHIND_AFTER`] old, never a link);
/// returns how many. Their names are each process's own, so none is ever
/// written over; a compiled plugin's is tens of MiB.
pub fn sweep_left_behind(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let left_behind = entries.flatten().filter(|e| is_temporary(&e.file_name().to_string_lossy())).filter(|e| {
        // The entry itself: a link is not followed.
        let old = |m: std::fs::Metadata| m.modified().ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age >= LEFT_BEHIND_AFTER);
        e.metadata().is_ok_and(|m| m.is_file() && old(m))
    });
    left_behind.filter(|e| std::fs::remove_file(e.path()).is_ok()).count()
}

/// Write `path` through a temporary file beside it and a rename, so a
/// reader (another host, the status reader, the plugin watcher) never sees
/// half a file. The temporary name does not end in `.wasm`. The file is
/// made with `mode` (less the umask).
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(temporary_name(&name));
    std::fs::create_dir_all(dir)?;
    // Made here, so only this write's own temporary file is ever removed.
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    let written = file.write_all(bytes).and_then(|_| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn only_old_temporary_files_are_swept() {
        let dir = std::env::temp_dir().join(format!("sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let made = |name: &str, age: Duration| {
            let file = std::fs::File::create(dir.join(name)).unwrap();
            file.set_modified(SystemTime::now() - age).unwrap();
        };
        let hour = LEFT_BEHIND_AFTER;
        let (old, young) = (temporary_name("a.cwasm"), temporary_name("a.cwasm"));
        made(&old, hour * 2);
        made(&young, hour / 2);
        made("a.cwasm", hour * 2);
        made(".a.cwasm.tmp12-notrandom-3", hour * 2);
        let named_tmp = temporary_name("x.tmp1-0000000000000000-1");
        made(&named_tmp, hour * 2);
        // A link named as one, to an old file elsewhere: neither is removed.
        made("target", hour * 2);
        let link = temporary_name("b.cwasm");
        std::os::unix::fs::symlink(dir.join("target"), dir.join(&link)).unwrap();
        assert_eq!(sweep_left_behind(&dir), 2);
        let mut left: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        let mut expected = vec![young, "a.cwasm".into(), ".a.cwasm.tmp12-notrandom-3".into(), "target".into(), link];
        expected.sort();
        assert_eq!(left, expected);
        assert_eq!(sweep_left_behind(&dir.join("missing")), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
