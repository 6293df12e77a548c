//! Compiled-component cache: compiling an 18 MB Python component takes
//! seconds, loading its compiled form takes milliseconds.
//!
//! Entries are keyed by the SHA-256 of the component's bytes and by the
//! engine's compatibility hash (wasmtime version, target, compiler settings),
//! so a cache written by another build is never loaded. Files are written to a
//! temporary name and renamed, so a crash leaves no half-written entry. An
//! in-memory map also shares one compiled component between the plugin
//! instances configured from the same file.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

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
    memory: Mutex<HashMap<String, Component>>,
    compiled: AtomicU64,
    disk_hits: AtomicU64,
    memory_hits: AtomicU64,
}

impl ComponentCache {
    /// A cache writing to `dir` (created when missing), or memory only.
    pub fn new(dir: Option<PathBuf>) -> Self {
        ComponentCache {
            dir,
            memory: Mutex::new(HashMap::new()),
            compiled: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            memory_hits: AtomicU64::new(0),
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

    /// What the cache has done so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
        }
    }

    /// The compiled component for `bytes`, from memory, disk, or compiled now.
    pub fn get(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        let key = key(engine, bytes);
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
        if let Some(path) = &path
            && path.is_file()
        {
            // SAFETY: the file was written by `Engine::precompile_component`
            // of an engine with the same compatibility hash (it is in the
            // key), into the operator's own cache directory.
            match unsafe { Component::deserialize_file(engine, path) } {
                Ok(c) => {
                    self.disk_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(c);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable compiled component");
                }
            }
        }
        let serialized = engine.precompile_component(bytes)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if let Some(path) = &path
            && let Err(e) = write_atomically(path, &serialized)
        {
            tracing::warn!(path = %path.display(), error = %e, "could not write the compiled-component cache");
        }
        // SAFETY: `serialized` was produced just now by this engine.
        unsafe { Component::deserialize(engine, &serialized) }
    }
}

fn key(engine: &Engine, bytes: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let digest = Sha256::digest(bytes);
    format!("{}-{:016x}", hex::encode(digest), hasher.finish())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache entries live in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
