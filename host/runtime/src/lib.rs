//! Rollcage's plugin runtime: everything that touches wasmtime.
//!
//! * [`Runtime`] owns the one wasmtime `Engine` (component model, epoch
//!   interruption with a ticker thread, the pooling allocator when the address
//!   space allows it), the [`ComponentCache`] of compiled components, and the
//!   linker that offers plugins the host interface and WASI with nothing
//!   granted by default.
//! * [`Runtime::load`] checks a component against its world and returns a
//!   [`LoadedPlugin`]: one `InstancePre`, and a fresh `Store` per call with the
//!   plugin's memory and time limits and its capability grants.
//! * [`LoadedPlugin`] hands out the five traits of `rollcage-core`, so the
//!   rest of the host never sees wasmtime.
//! * Every call is bounded by the plugin's [`Limits`]: memories and tables
//!   together (`limiter`), host resources, HTTP requests and bodies (`net`),
//!   log lines (`hostapi`) and returned text ([`text`]).

mod bindings;
mod cache;
mod convert;
mod engine;
mod error;
mod hostapi;
mod inspect;
mod limiter;
mod net;
mod plugin;
mod secrets;
mod state;
pub mod text;

pub use cache::{CacheStats, ComponentCache, Wasm};
pub use engine::{AllocatorKind, Runtime, RuntimeOptions};
pub use error::LoadError;
pub use inspect::{ComponentInfo, inspect_component};
pub use plugin::{Limits, LoadedPlugin, PluginSpec};
pub use rollcage_core::grants::{Grants, HostPattern, HostPatternError, IpNet, TlsCa};
pub use secrets::{EnvSecrets, MapSecrets, SecretSource};

/// The WIT package version this runtime is built against; components built
/// against an older served version (`rollcage_core::WIT_SERVED`) still load.
pub const WIT_VERSION: &str = "rollcage:plugin@0.2.0";
