//! `rollcage-sdk`: write Rollcage plugins in Rust.
//!
//! A plugin is a `cdylib` crate built for `wasm32-wasip2`. It enables the SDK
//! feature of its kind (`strategy`, `health-check`, `notifier`,
//! `environment-provider` or `exposure`), implements the matching trait and exports it with
//! the matching macro. Everything else it needs from the host is here:
//!
//! * [`config`]: its own `config` table from the operator's TOML, deserialized
//!   into the plugin's own serde struct;
//! * [`secret`]: a secret granted to it (`secrets = [...]`);
//! * [`log`]: structured log lines that land in the host's log under its id;
//! * [`http`]: a small blocking HTTP client over `wasi:http`, which reaches
//!   only the hosts the operator granted (`allow_hosts = [...]`).
//!
//! A complete notifier (`Cargo.toml`: `crate-type = ["cdylib"]`, dependency
//! `rollcage-sdk = { features = ["notifier"] }`):
//!
//! ```ignore
//! use rollcage_sdk::{Notifier, types::Event};
//!
//! #[derive(serde::Deserialize)]
//! struct Config { prefix: String }
//!
//! struct Console;
//!
//! impl Notifier for Console {
//!     fn notify(event: Event) -> Result<(), String> {
//!         let config: Config = rollcage_sdk::config().map_err(|e| e.to_string())?;
//!         rollcage_sdk::log::info(&format!("{} {}", config.prefix, event.message));
//!         Ok(())
//!     }
//! }
//!
//! rollcage_sdk::export_notifier!(Console);
//! ```
//!
//! A strategy, a health check, an environment provider and an exposure
//! plugin look the same with [`Strategy`] / [`export_strategy!`],
//! [`HealthCheck`] / [`export_health_check!`], [`EnvironmentProvider`] /
//! [`export_environment_provider!`] and [`Exposure`] / [`export_exposure!`];
//! see each trait.
//!
//! The SDK targets the current contract, `rollcage:plugin@0.2.0` (`wit/`).

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod condition;
pub mod duration;
pub mod http;
pub mod log;
pub mod testing;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "rollcage:plugin/plugin",
        generate_all,
        additional_derives: [PartialEq],
        // These carry resource handles, which cannot be compared.
        additional_derives_ignore: ["stream-error"],
    });
}

/// The contract's shared types (`wit/types.wit`): releases, slots, actions,
/// measurements, events, exposures and the problems `validate` reports.
pub mod types {
    pub use crate::bindings::rollcage::plugin::types::*;
}

use serde::de::DeserializeOwned;

/// An error from the SDK's host helpers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The plugin's `config` table does not fit the plugin's config type.
    Config(String),
    /// The host refused a secret (not granted, or not set).
    Secret(String),
    /// An HTTP request could not be made (a connection refused, a name that
    /// does not resolve, a timeout) or its answer could not be read.
    Http(String),
    /// The host denied an HTTP request: its host is not in the plugin's
    /// `allow_hosts`, or its address is in a denied network. A grant to
    /// fix, not a sign of the target's health: a health check that counts
    /// network failures as unhealthy endpoints should return this one.
    Denied(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Config(m) => write!(f, "invalid plugin config: {m}"),
            Error::Secret(m) => write!(f, "secret: {m}"),
            Error::Http(m) | Error::Denied(m) => write!(f, "http: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}

/// The plugin's `config` table as JSON text.
///
/// ```no_run
/// let raw: serde_json::Value = serde_json::from_str(&rollcage_sdk::config_json()).unwrap();
/// let _prefix = raw.get("prefix").and_then(|p| p.as_str()).unwrap_or("deploys");
/// ```
pub fn config_json() -> String {
    bindings::rollcage::plugin::host::config()
}

/// The plugin's `config` table, deserialized into the plugin's own type.
/// Use `#[serde(deny_unknown_fields)]` on it so that a typo is an error.
///
/// ```no_run
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Config {
///     url: String,
///     #[serde(default)]
///     retries: u32,
/// }
///
/// fn url() -> Result<String, String> {
///     let config: Config = rollcage_sdk::config()?; // `Error` converts to `String`
///     Ok(config.url)
/// }
/// # let _ = url;
/// ```
pub fn config<T: DeserializeOwned>() -> Result<T, Error> {
    serde_json::from_str(&config_json()).map_err(|e| Error::Config(e.to_string()))
}

/// The value of a secret granted to this plugin (`secrets = [...]` in its
/// configuration); an error for one that is not granted or not set.
///
/// ```no_run
/// fn token() -> Result<String, String> {
///     Ok(rollcage_sdk::secret("JIRA_TOKEN")?)
/// }
/// # let _ = token;
/// ```
pub fn secret(name: &str) -> Result<String, Error> {
    bindings::rollcage::plugin::host::secret(name).map_err(Error::Secret)
}

// Always there: its `plan` helpers serve any crate, and show in the docs
// of a project that enables another kind.
pub mod strategy;
#[cfg(feature = "strategy")]
#[cfg_attr(docsrs, doc(cfg(feature = "strategy")))]
pub use strategy::Strategy;

#[cfg(feature = "health-check")]
#[doc(hidden)]
pub mod health_check;
#[cfg(feature = "health-check")]
#[cfg_attr(docsrs, doc(cfg(feature = "health-check")))]
pub use health_check::HealthCheck;

// Always there: its `events` helpers, like `strategy::plan`.
pub mod notifier;
#[cfg(feature = "notifier")]
#[cfg_attr(docsrs, doc(cfg(feature = "notifier")))]
pub use notifier::Notifier;

// Always there: its `percent` helper, like `strategy::plan`.
pub mod exposure;
#[cfg(feature = "exposure")]
#[cfg_attr(docsrs, doc(cfg(feature = "exposure")))]
pub use exposure::Exposure;

#[cfg(feature = "environment-provider")]
#[doc(hidden)]
pub mod environment_provider;
#[cfg(feature = "environment-provider")]
#[cfg_attr(docsrs, doc(cfg(feature = "environment-provider")))]
pub use environment_provider::EnvironmentProvider;

/// The `with` mappings every kind world shares: the kind modules reuse the
/// base world's types instead of generating their own copies. A `pure`
/// world (strategies) imports no `wasi:http`, so it maps only the rollcage
/// interfaces.
macro_rules! kind_world {
    (pure $world:literal, $macro_name:literal, $module:literal) => {
        wit_bindgen::generate!({
            path: "../wit",
            world: $world,
            with: {
                "rollcage:plugin/host@0.2.0": crate::bindings::rollcage::plugin::host,
                "rollcage:plugin/types@0.2.0": crate::bindings::rollcage::plugin::types,
            },
            pub_export_macro: true,
            export_macro_name: $macro_name,
            default_bindings_module: $module,
        });
    };
    ($world:literal, $macro_name:literal, $module:literal) => {
        wit_bindgen::generate!({
            path: "../wit",
            world: $world,
            with: {
                "rollcage:plugin/host@0.2.0": crate::bindings::rollcage::plugin::host,
                "rollcage:plugin/types@0.2.0": crate::bindings::rollcage::plugin::types,
                "wasi:http/types@0.2.12": crate::bindings::wasi::http::types,
                "wasi:http/outgoing-handler@0.2.12": crate::bindings::wasi::http::outgoing_handler,
                "wasi:io/poll@0.2.12": crate::bindings::wasi::io::poll,
                "wasi:io/error@0.2.12": crate::bindings::wasi::io::error,
                "wasi:io/streams@0.2.12": crate::bindings::wasi::io::streams,
                "wasi:clocks/monotonic-clock@0.2.12": crate::bindings::wasi::clocks::monotonic_clock,
            },
            pub_export_macro: true,
            export_macro_name: $macro_name,
            default_bindings_module: $module,
        });
    };
}
pub(crate) use kind_world;
