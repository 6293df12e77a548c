//! Rollcage's core vocabulary: the domain types that travel between the
//! engine and plugins, the five plugin traits, and their error type.
//!
//! Nothing here knows of WebAssembly. The plugin runtime implements the traits
//! with wasm components; tests and benchmarks implement them with plain Rust
//! fakes. The types mirror `wit/types.wit` one to one.

pub mod duration;
// The host's file writes; plugins (wasm32) have no such files.
#[cfg(unix)]
pub mod files;
pub mod grants;
pub mod limits;
pub mod plugin;
pub mod redact;
pub mod source;
pub mod threshold;
pub mod types;
pub mod version;
pub mod window;

pub use grants::{
    Grants, HostPattern, HostPatternError, IpNet, Reach, TlsCa, canonical_ip, classify_ip,
};
pub use limits::{LIMITS, LimitSpec, Limits};
pub use plugin::{
    EnvironmentProvider, ExposureControl, HealthCheck, Notifier, Plugin, PluginError, PluginId,
    PluginIdError, PluginKind, Strategy, WIT_CURRENT, WIT_SERVED,
};
pub use redact::Redactor;
pub use source::{Digest, OciReference, SourceError};
pub use threshold::Threshold;
pub use types::*;
pub use version::Version;
pub use window::Window;
