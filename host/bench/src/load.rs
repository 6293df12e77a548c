//! Item 3: loading a component, compiled cold versus taken from the
//! compiled-component cache (`ComponentCache`, on disk), for a Rust builtin,
//! the Python example and the JavaScript example.
//!
//! A *cold* load is `Runtime::load` on an empty cache directory: compile
//! with Cranelift, write the `.cwasm`, deserialize, check the world, build
//! the `InstancePre`. A *cache hit* is `Runtime::load` in a new runtime (its
//! in-memory map empty) on the directory the cold load filled, as a host
//! restart sees it. Runtimes are built outside the timed region. The hit is
//! then split into its parts, timed alone: hashing the component's bytes
//! (the cache key), checking the entry's integrity tag, and
//! `Component::deserialize_file` of the `.cwasm`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rollcage_core::PluginKind;
use rollcage_runtime::{Grants, Limits, MapSecrets, PluginSpec, Runtime, RuntimeOptions};
use sha2::Digest;

use crate::report::{Section, TargetRow};
use crate::stats::{Summary, fmt_bytes, fmt_ratio, fmt_secs, verdict_at_most};
use crate::table::Table;

/// The target for a cache hit of the Python component.
const PYTHON_HIT_TARGET: f64 = 20e-3;

struct Subject {
    label: &'static str,
    language: &'static str,
    kind: PluginKind,
    /// The bytes, or why there are none.
    wasm: Result<Vec<u8>, String>,
}

fn example(dir: &str, file: &str) -> Result<Vec<u8>, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root
        .join("examples/plugins")
        .join(dir)
        .join("target")
        .join(file);
    // Read once: the example may be rebuilt while the benchmark runs.
    std::fs::read(&path).map_err(|_| format!("not built (run examples/plugins/{dir}/build.sh)"))
}

fn subjects() -> Vec<Subject> {
    vec![
        Subject {
            label: "builtin:canary",
            language: "Rust",
            kind: PluginKind::Strategy,
            wasm: rollcage_builtins::get("canary")
                .map(|b| b.wasm.to_vec())
                .ok_or_else(|| "builtin:canary is missing".to_string()),
        },
        Subject {
            label: "exponential-ramp",
            language: "Python (componentize-py)",
            kind: PluginKind::Strategy,
            wasm: example("exponential-ramp", "exponential-ramp.wasm"),
        },
        Subject {
            label: "json-status-check",
            language: "JavaScript (componentize-js)",
            kind: PluginKind::HealthCheck,
            wasm: example("json-status-check", "json-status-check.wasm"),
        },
    ]
}

fn runtime(dir: &Path) -> Result<Runtime, String> {
    Runtime::new(RuntimeOptions {
        cache_dir: Some(dir.to_path_buf()),
        pooling: true,
        secrets: Arc::new(MapSecrets(BTreeMap::new())),
    })
    .map_err(|e| e.to_string())
}

fn spec(kind: PluginKind) -> PluginSpec {
    PluginSpec {
        id: "subject".parse().expect("a plugin id"),
        kind,
        source_name: "bench".into(),
        grants: Grants::default(),
        limits: Limits::default(),
        config_json: "{}".into(),
    }
}

/// Seconds `f` takes.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed().as_secs_f64())
}

struct Measured {
    cold: Summary,
    hit: Summary,
    memory_hit: Summary,
    pinned_hit: Summary,
    hash: Summary,
    integrity: Summary,
    deserialize: Summary,
    cwasm_size: u64,
}

fn measure(
    label: &str,
    kind: PluginKind,
    wasm: &[u8],
    work: &Path,
    cold_n: usize,
    hit_n: usize,
) -> Result<Measured, String> {
    let mut cold = Vec::new();
    let mut cache_dir = None;
    for i in 0..cold_n {
        let dir = work.join(format!("load-{}-{i}", label.replace(':', "-")));
        let rt = runtime(&dir)?;
        let (loaded, secs) = timed(|| rt.load(spec(kind), wasm));
        loaded.map_err(|e| e.to_string())?;
        cold.push(secs);
        cache_dir = Some(dir);
    }
    let dir = cache_dir.ok_or("no cold load")?;
    let mut hit = Vec::new();
    let mut memory_hit = Vec::new();
    for _ in 0..hit_n {
        let rt = runtime(&dir)?;
        let (loaded, secs) = timed(|| rt.load(spec(kind), wasm));
        loaded.map_err(|e| e.to_string())?;
        hit.push(secs);
        // The same component again in the same runtime: the in-memory map.
        let (loaded, secs) = timed(|| rt.load(spec(kind), wasm));
        loaded.map_err(|e| e.to_string())?;
        memory_hit.push(secs);
        if rt.cache().stats().disk_hits != 1 {
            return Err(format!("expected a disk hit, got {:?}", rt.cache().stats()));
        }
    }
    // A component pinned by a verified digest (`rollcage.lock`): the
    // caller gives the digest, and the hit skips hashing the bytes.
    let digest = rollcage_core::Digest::from_bytes(&sha2::Sha256::digest(wasm).into());
    let mut pinned_hit = Vec::new();
    for _ in 0..hit_n {
        let rt = runtime(&dir)?;
        let (loaded, secs) =
            timed(|| rt.load(spec(kind), rollcage_runtime::Wasm::verified(wasm, &digest)));
        loaded.map_err(|e| e.to_string())?;
        pinned_hit.push(secs);
        if rt.cache().stats().disk_hits != 1 {
            return Err(format!(
                "expected a pinned disk hit, got {:?}",
                rt.cache().stats()
            ));
        }
    }
    let cwasm = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .ok_or("no .cwasm in the cache directory")?;
    let cwasm_size = std::fs::metadata(&cwasm).map(|m| m.len()).unwrap_or(0);
    let mut hash = Vec::new();
    let mut integrity = Vec::new();
    let mut deserialize = Vec::new();
    let rt = runtime(&dir)?;
    for _ in 0..hit_n {
        let (digest, secs) = timed(|| sha2::Sha256::digest(wasm));
        std::hint::black_box(digest);
        hash.push(secs);
        let (verified, secs) = timed(|| rt.cache().verify_entry(&cwasm));
        if !verified.map_err(|e| e.to_string())? {
            return Err(format!(
                "{}: its integrity tag did not verify",
                cwasm.display()
            ));
        }
        integrity.push(secs);
        // SAFETY: the file was written by `precompile_component` of an
        // engine built with the same configuration, moments ago.
        let (component, secs) = timed(|| unsafe {
            wasmtime::component::Component::deserialize_file(rt.engine(), &cwasm)
        });
        component.map_err(|e| e.to_string())?;
        deserialize.push(secs);
    }
    let sum = |v: &[f64]| Summary::of(v).ok_or("no samples".to_string());
    Ok(Measured {
        cold: sum(&cold)?,
        hit: sum(&hit)?,
        memory_hit: sum(&memory_hit)?,
        pinned_hit: sum(&pinned_hit)?,
        hash: sum(&hash)?,
        integrity: sum(&integrity)?,
        deserialize: sum(&deserialize)?,
        cwasm_size,
    })
}

/// Item 3.
pub async fn run(quick: bool, work: &Path) -> Section {
    let mut section = Section::new(3, "Component load: cold compile vs compiled-cache hit");
    let (hit_n, small_cold_n, big_cold_n) = if quick { (3, 2, 1) } else { (15, 5, 2) };
    section.method = format!(
        "`Runtime::load` (pooling allocator) of each component. *Cold*: an empty cache directory, so \
         the component is compiled by Cranelift (both cores), written to the cache and deserialized; \
         {small_cold_n} samples for the Rust component, {big_cold_n} for each of the large ones (each \
         takes seconds). *Cache hit*: a new runtime (empty in-memory map) on the directory a cold load \
         filled, as after a host restart; {hit_n} samples. *Memory hit*: the same bytes loaded again \
         in that runtime. *Pinned hit*: a cache hit of a component whose digest the caller already \
         knows (locked and verified when downloaded), so its bytes are not hashed again. The hit's parts were timed alone: SHA-256 of the component's bytes (the \
         cache key), the entry's integrity check (HMAC-SHA256 of the whole `.cwasm`, read through a map) and \
         `Component::deserialize_file` of the `.cwasm` (an `mmap` and relocation). \
         Cells are median / max for cold loads, median / p99 otherwise."
    );
    let mut table = Table::new(
        "Component load",
        &[
            "component",
            "language",
            "size (.wasm / .cwasm)",
            "cold compile",
            "cache hit",
            "cold ÷ hit",
            "memory hit",
            "pinned hit",
            "hit: SHA-256 key",
            "hit: integrity check",
            "hit: deserialize",
        ],
    );
    let subjects = subjects();
    let mut python_hit = None;
    for s in &subjects {
        let wasm = match &s.wasm {
            Ok(w) => w,
            Err(e) => {
                table.row(vec![s.label.into(), s.language.into(), e.clone()]);
                continue;
            }
        };
        println!("  {} ({})...", s.label, fmt_bytes(wasm.len() as u64));
        let cold_n = if wasm.len() > 1_000_000 {
            big_cold_n
        } else {
            small_cold_n
        };
        // Compiling is blocking work of seconds: off the executor.
        let m = {
            let (wasm, work, label, kind) = (wasm.clone(), work.to_path_buf(), s.label, s.kind);
            tokio::task::spawn_blocking(move || measure(label, kind, &wasm, &work, cold_n, hit_n))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
        };
        match m {
            Ok(m) => {
                if s.language.starts_with("Python") {
                    python_hit = Some(m.hit);
                    section.notes.push(format!(
                        "Of the Python component's cache hit ({}), hashing its {} for the cache key takes {} \
                         ({:.0}%), checking the {} entry's integrity tag {} and deserializing it {}. The key is computed before either cache is \
                         consulted, so a memory hit pays for it too ({}); a component pinned by a known digest \
                         skips it ({}).",
                        fmt_secs(m.hit.median),
                        fmt_bytes(wasm.len() as u64),
                        fmt_secs(m.hash.median),
                        100.0 * m.hash.median / m.hit.median,
                        fmt_bytes(m.cwasm_size),
                        fmt_secs(m.integrity.median),
                        fmt_secs(m.deserialize.median),
                        fmt_secs(m.memory_hit.median),
                        fmt_secs(m.pinned_hit.median),
                    ));
                }
                let mm = |x: &Summary| format!("{} / {}", fmt_secs(x.median), fmt_secs(x.p99));
                table.row(vec![
                    s.label.into(),
                    s.language.into(),
                    format!(
                        "{} / {}",
                        fmt_bytes(wasm.len() as u64),
                        fmt_bytes(m.cwasm_size)
                    ),
                    format!("{} / {}", fmt_secs(m.cold.median), fmt_secs(m.cold.max)),
                    mm(&m.hit),
                    fmt_ratio(m.cold.median / m.hit.median),
                    mm(&m.memory_hit),
                    mm(&m.pinned_hit),
                    fmt_secs(m.hash.median),
                    fmt_secs(m.integrity.median),
                    fmt_secs(m.deserialize.median),
                ]);
            }
            Err(e) => table.row(vec![
                s.label.into(),
                s.language.into(),
                format!("failed: {e}"),
            ]),
        }
    }
    section.tables.push(table);
    match python_hit {
        Some(hit) => {
            let verdict = verdict_at_most(hit.median, PYTHON_HIT_TARGET, fmt_secs);
            section.targets.push(TargetRow {
                target: "cache hit of the 18 MB Python component ≤ 20 ms".into(),
                measured: format!("median {}", fmt_secs(hit.median)),
                why: if verdict.met {
                    String::new()
                } else {
                    "see the breakdown in item 3: the hit hashes all the component's bytes for its key, checks the integrity tag over every byte of the compiled entry, then maps and relocates the compiled code.".into()
                },
                verdict,
            });
        }
        None => section.notes.push(
            "The Python component was not measured (see the table), so its target has no verdict."
                .into(),
        ),
    }
    section
}
