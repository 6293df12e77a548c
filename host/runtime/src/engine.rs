//! The [`Runtime`]: one wasmtime `Engine`, its epoch ticker, the linker every
//! plugin is instantiated against, and the compiled-component cache.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Linker, Resource, WasmStr};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, StoreContextMut,
};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::ResolveAddressStream;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode as NetErrorCode, Network};

use crate::cache::ComponentCache;
use crate::error::LoadError;
use crate::net::NetShared;
use crate::secrets::{EnvSecrets, SecretSource};
use crate::state::CallState;
use rollcage_core::limits::{INSTANCES_MAX, MEMORIES_MAX, MEMORY_MB_MAX, TABLES_MAX};

/// How often the epoch advances: the granularity of time limits, and how
/// often a running plugin yields to the async executor.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How instance memory is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocatorKind {
    /// Pre-reserved slots: fast instantiation, needs address space.
    Pooling,
    /// Allocate per instance.
    OnDemand,
}

impl std::fmt::Display for AllocatorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AllocatorKind::Pooling => "pooling",
            AllocatorKind::OnDemand => "on-demand",
        })
    }
}

/// Settings of the runtime.
pub struct RuntimeOptions {
    /// Where compiled components are cached; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Try the pooling allocator first (default true).
    pub pooling: bool,
    /// Where granted secrets are read from.
    pub secrets: Arc<dyn SecretSource>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            cache_dir: ComponentCache::default_dir(),
            pooling: true,
            secrets: Arc::new(EnvSecrets),
        }
    }
}

/// The plugin runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub engine: Engine,
    pub linker: Linker<CallState>,
    pub net: Arc<NetShared>,
    pub cache: ComponentCache,
    pub allocator: AllocatorKind,
    pub secrets: Arc<dyn SecretSource>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config
}

/// Sized for a host running a few hundred plugin calls at once; each slot
/// reserves address space, which is why this can fail and fall back.
fn pooling_config() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(512)
        .total_core_instances(4096)
        .total_memories(1024)
        .total_tables(4096)
        .total_stacks(512)
        // What a plugin's limits may ask for at most (`rollcage_core::limits`);
        // its own limits are enforced below these by the store's limiter.
        .max_core_instances_per_component(INSTANCES_MAX as u32)
        .max_memories_per_component(MEMORIES_MAX as u32)
        .max_tables_per_component(TABLES_MAX as u32)
        .max_memory_size((MEMORY_MB_MAX << 20) as usize)
        // Every call instantiates afresh and drops its instance. Resetting
        // a freed slot with `madvise` unmaps its pages (a TLB flush across
        // the process's threads) and the next call faults them back in;
        // zeroing the pages a call touched with `memset` (found with the
        // kernel's PAGEMAP_SCAN where it has one) keeps them, and batching
        // what is still decommitted flushes once for many drops.
        .linear_memory_keep_resident(LINEAR_MEMORY_KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto)
        .decommit_batch_size(DECOMMIT_BATCH);
    pool
}

/// A Rust plugin's memory starts at about 1 MiB and a call touches a few
/// pages of it; an interpreter's (Python, JavaScript) is larger and is
/// partly given back with `madvise` above this.
const LINEAR_MEMORY_KEEP_RESIDENT: usize = 2 << 20;
const TABLE_KEEP_RESIDENT: usize = 64 << 10;
const DECOMMIT_BATCH: usize = 32;

impl Runtime {
    /// Build the engine (pooling allocator if the address space allows it),
    /// start the epoch ticker, and link the host interfaces.
    pub fn new(options: RuntimeOptions) -> Result<Runtime, LoadError> {
        let (engine, allocator) = build_engine(options.pooling)?;
        tracing::info!(allocator = %allocator, "plugin runtime started");
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("rollcage-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| LoadError::Runtime(format!("cannot start the epoch ticker: {e}")))?;
        }
        let linker = build_linker(&engine).map_err(|e| LoadError::Runtime(e.to_string()))?;
        let net = NetShared::new().map_err(LoadError::Runtime)?;
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                net: Arc::new(net),
                cache: ComponentCache::new(options.cache_dir),
                allocator,
                secrets: options.secrets,
                ticker_stop,
            }),
        })
    }

    /// Which allocator the engine uses.
    pub fn allocator(&self) -> AllocatorKind {
        self.inner.allocator
    }

    /// The compiled-component cache.
    pub fn cache(&self) -> &ComponentCache {
        &self.inner.cache
    }

    /// Where granted secrets are read from.
    pub fn secrets(&self) -> Arc<dyn SecretSource> {
        self.inner.secrets.clone()
    }

    /// The wasmtime engine (for inspection and benchmarks).
    pub fn engine(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }
}

fn build_engine(pooling: bool) -> Result<(Engine, AllocatorKind), LoadError> {
    if pooling {
        let mut config = base_config();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config()));
        match Engine::new(&config) {
            Ok(engine) => return Ok((engine, AllocatorKind::Pooling)),
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable, allocating on demand")
            }
        }
    }
    let engine = Engine::new(&base_config()).map_err(|e| LoadError::Runtime(e.to_string()))?;
    Ok((engine, AllocatorKind::OnDemand))
}

/// Everything a plugin may import: the host interface, WASI (with nothing
/// granted: no directories, no environment, no sockets, no stdin) and
/// `wasi:http` (filtered per plugin in [`crate::net`]).
///
/// The strategy world imports no `wasi:http`, but `wasi:http` stays linked
/// for strategies too: components built against the first strategy world
/// (which included it) must keep loading, and JavaScript's runtime imports
/// it whatever the world. A strategy is never granted a host, so every
/// request it might make is denied and recorded.
fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<CallState>> {
    let mut linker = Linker::<CallState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    crate::hostapi::link(&mut linker)?;

    // Reading files or environment variables is linked (language runtimes
    // import them whether they use them or not) but grants nothing. Opening
    // a file is recorded as a denial that names the capability. The
    // environment is empty rather than denied: runtimes such as CPython's
    // read it at every start, so a denial would turn each of their errors
    // into one; a failing call that read it says that plugins see none.
    linker.allow_shadowing(true);
    linker
        .instance("wasi:filesystem/preopens@0.2.12")?
        .func_wrap(
            "get-directories",
            |mut store: StoreContextMut<'_, CallState>, (): ()| {
                store.data_mut().deny(
                    "filesystem",
                    "file access (plugins are granted no directories)".into(),
                );
                let none: Vec<(Resource<wasmtime_wasi::filesystem::Descriptor>, String)> =
                    Vec::new();
                Ok((none,))
            },
        )?;
    linker.instance("wasi:cli/environment@0.2.12")?.func_wrap(
        "get-environment",
        |mut store: StoreContextMut<'_, CallState>, (): ()| {
            store.data_mut().read_environment = true;
            Ok((Vec::<(String, String)>::new(),))
        },
    )?;
    // Name lookups are refused (a plugin reaches hosts through HTTP, where
    // the host resolves and checks the name); recorded as a denial, so that
    // the failure names the capability rather than a resolver error.
    linker
        .instance("wasi:sockets/ip-name-lookup@0.2.12")?
        .func_wrap(
            "resolve-addresses",
            |mut store: StoreContextMut<'_, CallState>, (_network, name): (Resource<Network>, WasmStr)| {
                let name = crate::text::clip(&name.to_str(&store)?, 256).into_owned();
                store.data_mut().deny(
                    "sockets",
                    format!("a name lookup of `{name}`; plugins get no sockets, use HTTP with allow_hosts"),
                );
                Ok((Err::<Resource<ResolveAddressStream>, _>(NetErrorCode::AccessDenied),))
            },
        )?;
    // The grant is checked when a request is handed over (see `net`).
    crate::net::link_outgoing_handler(&mut linker)?;
    linker.allow_shadowing(false);
    Ok(linker)
}
