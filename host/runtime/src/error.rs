//! Errors from loading a plugin: each names the plugin id and the component's
//! source (file path or `builtin:<name>`).

use rollcage_core::PluginId;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a WebAssembly component.
    #[error("plugin `{plugin}` ({source_name}): {reason}")]
    NotAComponent {
        plugin: PluginId,
        source_name: String,
        reason: String,
    },
    /// The component does not export the interface of its world.
    #[error(
        "plugin `{plugin}` ({source_name}) does not fit world `{world}`: it does not export `{missing}` (it exports: {exports})"
    )]
    WrongWorld {
        plugin: PluginId,
        source_name: String,
        world: String,
        missing: String,
        exports: String,
    },
    /// The component imports something the host does not provide.
    #[error(
        "plugin `{plugin}` ({source_name}) imports `{import}`, which the host does not provide: {detail}"
    )]
    UnknownImport {
        plugin: PluginId,
        source_name: String,
        import: String,
        detail: String,
    },
    /// A strategy was granted hosts, networks or secrets: strategies are pure.
    #[error(
        "plugin `{plugin}` ({source_name}) is a strategy and strategies are granted nothing: remove its allow_hosts, allow_private, secrets and tls_ca"
    )]
    GrantedStrategy {
        plugin: PluginId,
        source_name: String,
    },
    /// The private certificate authority granted as `tls_ca` could not be
    /// read or is not PEM certificates.
    #[error("plugin `{plugin}` ({source_name}): tls_ca ({ca}): {reason}")]
    TlsCa {
        plugin: PluginId,
        source_name: String,
        ca: String,
        reason: String,
    },
    /// Compiling the component failed.
    #[error("plugin `{plugin}` ({source_name}) could not be compiled: {detail}")]
    Compile {
        plugin: PluginId,
        source_name: String,
        detail: String,
    },
    /// The runtime itself could not be set up.
    #[error("plugin runtime: {0}")]
    Runtime(String),
}
