//! Compiled-component cache: compiling an 18 MB Python component takes
//! seconds, loading its compiled form takes milliseconds.
//!
//! Entries are keyed by the SHA-256 of the component's bytes and by the
//! engine's compatibility hash (wasmtime version, target, compiler settings),
//! so a cache written by another build is never loaded. Files are written to a
//! temporary name and renamed, so a crash leaves no half-written entry. An
//! in-memory map also shares one compiled component between the plugin
//! instances configured from the same file.
//!
//! A compiled entry is native code that the host maps and runs, so it is
//! loaded only if it carries this host's integrity tag: an HMAC-SHA256 of
//! its bytes under a random key made on first use and kept beside the
//! entries (`.key`, readable by the owner only, as the folder and every
//! entry are). An entry written by anything else, or changed since, fails
//! the check and is compiled again from the component.
//!
//! The check reads the entry through a map of the file, and the verified
//! file is then mapped by wasmtime (`deserialize_file`), not copied: the
//! code pages come from the page cache as they are used. Between the two
//! maps only someone who may write the owner-only folder could swap the
//! file, and they could read the key as well, so this is no weaker than
//! checking a copy.
//!
//! A caller that already knows the digest of the bytes (a component pinned
//! by digest and verified when it was downloaded) hands them over as
//! [`Wasm::verified`], and the lookup skips hashing them: about 10 ms for
//! an 18 MB component.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use rollcage_core::files::{Access, write_atomically};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Counters of what the cache did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Components compiled from wasm.
    pub compiled: u64,
    /// Components loaded from the disk cache.
    pub disk_hits: u64,
    /// Components reused from memory.
    pub memory_hits: u64,
}

/// The cache. With no directory it only shares compiled components in memory.
pub struct ComponentCache {
    dir: Option<PathBuf>,
    /// The integrity key, read or made on first use of the directory.
    key: Mutex<Option<[u8; 32]>>,
    memory: Mutex<HashMap<String, Component>>,
    compiled: AtomicU64,
    disk_hits: AtomicU64,
    memory_hits: AtomicU64,
    rejected: AtomicU64,
}

impl ComponentCache {
    /// A cache writing to `dir` (created when missing), or memory only.
    pub fn new(dir: Option<PathBuf>) -> Self {
        ComponentCache {
            dir,
            key: Mutex::new(None),
            memory: Mutex::new(HashMap::new()),
            compiled: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            memory_hits: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// The default directory: `$XDG_CACHE_HOME/rollcage/components`, else
    /// `~/.cache/rollcage/components`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(base.join("rollcage").join("components"))
    }

    /// The directory, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Entries that failed their integrity check and were compiled again.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// What the cache has done so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
        }
    }

    /// The compiled component for `wasm`, from memory, disk, or compiled now.
    pub fn get(&self, engine: &Engine, wasm: Wasm<'_>) -> wasmtime::Result<Component> {
        let key = key(engine, wasm);
        let bytes = wasm.bytes;
        if let Some(c) = self.memory.lock().unwrap().get(&key) {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(c.clone());
        }
        let component = self.load_or_compile(engine, bytes, &key)?;
        self.memory.lock().unwrap().insert(key, component.clone());
        Ok(component)
    }

    fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        key: &str,
    ) -> wasmtime::Result<Component> {
        let path = self.dir.as_ref().map(|d| d.join(format!("{key}.cwasm")));
        let mac_key = match &self.dir {
            Some(dir) => match self.mac_key(dir) {
                Ok(k) => Some(k),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "compiled-component cache unusable: no integrity key");
                    None
                }
            },
            None => None,
        };
        if let (Some(path), Some(mac_key)) = (&path, &mac_key)
            && path.is_file()
        {
            match verify_file(mac_key, path) {
                // SAFETY: the file carries this host's integrity tag, so it
                // was written by `Engine::precompile_component` of an engine
                // with the same compatibility hash (it is in the key) on
                // this host, and not changed since (see the module's docs
                // for the moment between the check and the map). The tag
                // after the ELF image is not read by wasmtime, which finds
                // its sections through the ELF headers.
                Ok(true) => match unsafe { Component::deserialize_file(engine, path) } {
                    Ok(c) => {
                        self.disk_hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(c);
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable compiled component");
                    }
                },
                Ok(false) => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(path = %path.display(), "compiled component failed its integrity check (not written by this host, or changed since); compiling it again");
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable compiled component");
                }
            }
        }
        let serialized = engine.precompile_component(bytes)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if let (Some(path), Some(mac_key)) = (&path, &mac_key)
            && let Err(e) = write_atomically(path, &tag(mac_key, &serialized), Access::OwnerOnly)
        {
            tracing::warn!(path = %path.display(), error = %e, "could not write the compiled-component cache");
        }
        // SAFETY: `serialized` was produced just now by this engine.
        unsafe { Component::deserialize(engine, &serialized) }
    }

    /// Whether the entry file at `path` carries this cache's integrity tag:
    /// the check every disk hit makes before mapping the entry (the
    /// benchmark times it alone).
    pub fn verify_entry(&self, path: &Path) -> std::io::Result<bool> {
        let dir = self
            .dir
            .as_deref()
            .ok_or_else(|| std::io::Error::other("a memory-only cache has no entries"))?;
        verify_file(&self.mac_key(dir)?, path)
    }

    /// The integrity key of `dir`: read, or made (owner-only) on first use.
    fn mac_key(&self, dir: &Path) -> std::io::Result<[u8; 32]> {
        let mut guard = self.key.lock().unwrap();
        if let Some(k) = *guard {
            return Ok(k);
        }
        create_private_dir(dir)?;
        let path = dir.join(".key");
        let key = match std::fs::read(&path) {
            Ok(bytes) => bytes.try_into().map_err(|_| {
                std::io::Error::other(format!("{} is not a 32-byte key", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
                write_atomically(&path, &key, Access::OwnerOnly)?;
                // Another process may have made its key first: use the one
                // that won the rename.
                std::fs::read(&path)?
                    .try_into()
                    .map_err(|_| std::io::Error::other("the integrity key changed size"))?
            }
            Err(e) => return Err(e),
        };
        *guard = Some(key);
        Ok(key)
    }
}

type HmacSha256 = Hmac<Sha256>;
const TAG_LEN: usize = 32;

/// `serialized` followed by its tag.
fn tag(key: &[u8; 32], serialized: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    mac.update(serialized);
    let mut out = Vec::with_capacity(serialized.len() + TAG_LEN);
    out.extend_from_slice(serialized);
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

/// The serialized bytes of a tagged entry, if its tag is this host's.
fn untag<'a>(key: &[u8; 32], tagged: &'a [u8]) -> Option<&'a [u8]> {
    let split = tagged.len().checked_sub(TAG_LEN)?;
    let (serialized, tag) = tagged.split_at(split);
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    mac.update(serialized);
    mac.verify_slice(tag).ok().map(|()| serialized)
}

/// Whether the entry at `path` carries this host's tag, read through a
/// map of the file (a read would copy tens of megabytes first).
fn verify_file(key: &[u8; 32], path: &Path) -> std::io::Result<bool> {
    let file = std::fs::File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).map_err(std::io::Error::other)?;
    if len < TAG_LEN {
        return Ok(false);
    }
    let map = ReadMap::of(&file, len)?;
    Ok(untag(key, map.bytes()).is_some())
}

/// A read-only private map of a whole file, unmapped on drop.
struct ReadMap {
    ptr: *mut libc::c_void,
    len: usize,
}

impl ReadMap {
    fn of(file: &std::fs::File, len: usize) -> std::io::Result<ReadMap> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh read-only mapping of an open file, of its length
        // (not zero: the caller checked it holds a tag).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(ReadMap { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `self` is dropped.
        // Entries are replaced by rename, never written in place, so the
        // bytes do not change under the borrow.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for ReadMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `of`, unmapped once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Create `dir` (and its parents) readable by the owner only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A component's bytes, and their SHA-256 when the caller has checked it
/// already: a component pinned by digest whose bytes were verified when
/// they were stored. The cache then keys them without hashing again.
#[derive(Clone, Copy)]
pub struct Wasm<'a> {
    bytes: &'a [u8],
    sha256: Option<&'a rollcage_core::Digest>,
}

impl<'a> Wasm<'a> {
    /// Bytes whose digest the cache works out itself.
    pub fn new(bytes: &'a [u8]) -> Self {
        Wasm {
            bytes,
            sha256: None,
        }
    }

    /// Bytes the caller vouches have SHA-256 `digest`: it checked them
    /// when it stored them (the download cache, a lock file's pin). The
    /// digest is the cache's key and is not checked again, so it must be
    /// the bytes' own: another component's digest would load that
    /// component's compiled code in their place.
    pub fn verified(bytes: &'a [u8], digest: &'a rollcage_core::Digest) -> Self {
        Wasm {
            bytes,
            sha256: Some(digest),
        }
    }

    /// The bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl std::fmt::Debug for Wasm<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The size and digest, not megabytes of bytes.
        f.debug_struct("Wasm")
            .field("len", &self.bytes.len())
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl<'a> From<&'a [u8]> for Wasm<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Wasm::new(bytes)
    }
}

impl<'a> From<&'a Vec<u8>> for Wasm<'a> {
    fn from(bytes: &'a Vec<u8>) -> Self {
        Wasm::new(bytes)
    }
}

fn key(engine: &Engine, wasm: Wasm<'_>) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let digest = match wasm.sha256 {
        Some(d) => d.hex().to_string(),
        None => hex::encode(Sha256::digest(wasm.bytes)),
    };
    format!("{digest}-{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_checked_against_the_key_and_the_bytes() {
        let key = [7u8; 32];
        let tagged = tag(&key, b"native code");
        assert_eq!(untag(&key, &tagged), Some(&b"native code"[..]));
        assert_eq!(untag(&[8u8; 32], &tagged), None);
        let mut changed = tagged.clone();
        changed[0] ^= 1;
        assert_eq!(untag(&key, &changed), None);
        assert_eq!(untag(&key, b"short"), None);
    }

    #[test]
    fn an_entry_file_is_checked_through_its_map() {
        let key = [7u8; 32];
        let tagged = tag(&key, b"native code");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entry.cwasm");
        std::fs::write(&path, &tagged).unwrap();
        assert!(verify_file(&key, &path).unwrap());
        assert!(!verify_file(&[8u8; 32], &path).unwrap());
        // A changed byte of the code or of the tag, a cut file: each fails.
        for at in [0, tagged.len() - 1] {
            let mut changed = tagged.clone();
            changed[at] ^= 1;
            std::fs::write(&path, &changed).unwrap();
            assert!(!verify_file(&key, &path).unwrap(), "byte {at}");
        }
        std::fs::write(&path, &tagged[..TAG_LEN - 1]).unwrap();
        assert!(!verify_file(&key, &path).unwrap());
        std::fs::write(&path, b"").unwrap();
        assert!(!verify_file(&key, &path).unwrap());
    }

    #[test]
    fn a_verified_digest_keys_the_bytes_without_hashing_them() {
        let engine = Engine::default();
        let bytes = b"component bytes".to_vec();
        let hashed = key(&engine, Wasm::new(&bytes));
        assert!(hashed.starts_with(&hex::encode(Sha256::digest(&bytes))));
        // The caller's digest is the key, and the bytes are not hashed:
        // which is why only a digest the caller verified may be given.
        let vouched: rollcage_core::Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let pinned = key(&engine, Wasm::verified(&bytes, &vouched));
        assert!(pinned.starts_with(&"ab".repeat(32)), "{pinned}");
        assert_eq!(
            pinned.split_once('-').unwrap().1,
            hashed.split_once('-').unwrap().1
        );
    }

    #[test]
    fn the_key_and_entries_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("components");
        let cache = ComponentCache::new(Some(cache_dir.clone()));
        let key = cache.mac_key(&cache_dir).unwrap();
        // The same key on the next use, and for a new cache on the folder.
        assert_eq!(cache.mac_key(&cache_dir).unwrap(), key);
        let again = ComponentCache::new(Some(cache_dir.clone()));
        assert_eq!(again.mac_key(&cache_dir).unwrap(), key);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache_dir), 0o700);
        assert_eq!(mode(&cache_dir.join(".key")), 0o600);
    }
}
