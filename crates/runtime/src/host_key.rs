//! The host's secret: `DATA_DIR/cache.key`, 32 random bytes only this
//! host's user can read (mode 0600, made on first use).
//!
//! It tags compiled plugins (see `cache`; a `--plugin-cache` folder has a
//! key of its own, made and checked the same way) with a keyed BLAKE3, which
//! reads the dozen MiB of them at each start nearly three times as fast as
//! HMAC-SHA256 did, and seeds each plugin's
//! hash maps (`wasi:random/insecure-seed`). Seeding from the key, not afresh per
//! start, makes a detector repeat itself: the same records replayed through
//! the same host give the same findings (a quantile sketch's compactions
//! follow its seed), while no one outside can predict the seed to craft
//! colliding keys. Secure randomness (`wasi:random/random`) stays random.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::files::temporary_name;

/// Bytes of a tag made by [`HostKey::tag`].
pub const TAG_BYTES: usize = blake3::OUT_LEN;
/// The purpose the key that tags files is derived for (BLAKE3's key
/// derivation): it is not the key itself, which the seeds' HMAC takes.
const TAG_KEY_CONTEXT: &str = "clean-host 2026-12-07 compiled plugin tags";

#[derive(Clone)]
pub struct HostKey([u8; 32]);

impl HostKey {
    /// The key in `dir` (a data dir, or a folder of compiled plugins), made
    /// if missing; `Err` says why it cannot be trusted.
    pub fn in_dir(dir: &Path) -> Result<Self, String> {
        let path = dir.join("cache.key");
        let shown = path.display();
        let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path);
        let mut file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Written whole beside it, then linked into place: a crash
                // leaves no empty key, and of two hosts starting at once on
                // one folder, the second reads the first one's key.
                let key = Self::random()?;
                std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
                let tmp = dir.join(temporary_name("cache.key"));
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .and_then(|mut f| f.write_all(&key.0).and_then(|_| f.sync_all()))
                    .and_then(|_| std::fs::hard_link(&tmp, &path));
                let _ = std::fs::remove_file(&tmp);
                return match written {
                    Ok(()) => Ok(key),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::in_dir(dir),
                    Err(e) => Err(format!("creating {shown}: {e}")),
                };
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
        Ok(HostKey(key))
    }

    /// A key for this process only (no data dir, or one that cannot be trusted).
    pub fn random() -> Result<Self, String> {
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom").and_then(|mut r| r.read_exact(&mut key)).map_err(|e| format!("reading /dev/urandom: {e}"))?;
        Ok(HostKey(key))
    }

    /// A keyed hash of what is stored under `context`, to be fed its bytes.
    fn tagging(&self, context: &str) -> blake3::Hasher {
        let mut hasher = blake3::Hasher::new_keyed(&blake3::derive_key(TAG_KEY_CONTEXT, &self.0));
        hasher.update(context.as_bytes()).update(&[0]);
        hasher
    }

    /// The tag of `bytes` stored under `context`.
    pub fn tag(&self, context: &str, bytes: &[u8]) -> [u8; TAG_BYTES] {
        *self.tagging(context).update(bytes).finalize().as_bytes()
    }

    /// Whether `given` is the tag of `bytes` stored under `context`
    /// (compared in constant time).
    pub fn verify(&self, context: &str, bytes: &[u8], given: &[u8]) -> bool {
        let tag = self.tagging(context).update(bytes).finalize();
        given.len() == TAG_BYTES && tag == *given
    }

    /// The hash-map seed of the plugin named `plugin`.
    pub fn seed(&self, plugin: &str) -> u128 {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"insecure-seed\0");
        mac.update(plugin.as_bytes());
        let tag = mac.finalize().into_bytes();
        u128::from_le_bytes(tag[..16].try_into().expect("a SHA-256 tag has 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_private_and_seeds_repeat() {
        let dir = std::env::temp_dir().join(format!("host-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let key = HostKey::in_dir(&dir).unwrap();
        let mode = std::fs::metadata(dir.join("cache.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = HostKey::in_dir(&dir).unwrap();
        assert_eq!(key.seed("drift"), again.seed("drift"));
        assert_ne!(key.seed("drift"), key.seed("outliers"));
        assert_ne!(key.seed("drift"), HostKey::random().unwrap().seed("drift"));
        let tag = key.tag("a", b"compiled");
        let verify = |context: &str, bytes: &[u8], tag: &[u8]| again.verify(context, bytes, tag);
        assert!(verify("a", b"compiled", &tag) && !verify("b", b"compiled", &tag) && !verify("a", b"compiles", &tag));
        assert!(!verify("a", b"compiled", &tag[1..]) && !verify("a", b"compiled", &[tag.as_slice(), &[0]].concat()));

        std::fs::set_permissions(dir.join("cache.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = HostKey::in_dir(&dir).err().expect("a key others can read is refused");
        assert!(refused.contains("mode 0600"), "{refused}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
