//! Structured logging to the host: lines land in the host's log under the
//! plugin's id, at the given level, with key/value fields.

use crate::bindings::rollcage::plugin::host::{self, Level};

/// Log `message` at `level` with key/value `fields`.
///
/// ```no_run
/// use rollcage_sdk::log::{LogLevel, log};
/// log(LogLevel::Warn, "slow answer", &[("endpoint", "10.0.0.7:8080"), ("ms", "1200")]);
/// ```
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    host::log(level, message, &fields);
}

/// Log at debug level.
///
/// ```no_run
/// rollcage_sdk::log::debug("checked 3 endpoints");
/// ```
pub fn debug(message: &str) {
    log(Level::Debug, message, &[]);
}

/// Log at info level.
///
/// ```no_run
/// rollcage_sdk::log::info("checked 3 endpoints");
/// ```
pub fn info(message: &str) {
    log(Level::Info, message, &[]);
}

/// Log at warn level.
///
/// ```no_run
/// rollcage_sdk::log::warn("checked 3 endpoints");
/// ```
pub fn warn(message: &str) {
    log(Level::Warn, message, &[]);
}

/// Log at error level.
///
/// ```no_run
/// rollcage_sdk::log::error("checked 3 endpoints");
/// ```
pub fn error(message: &str) {
    log(Level::Error, message, &[]);
}

/// A log line's level: `Debug`, `Info`, `Warn` or `Error`.
///
/// ```no_run
/// rollcage_sdk::log::log(rollcage_sdk::log::LogLevel::Info, "ready", &[]);
/// ```
pub use crate::bindings::rollcage::plugin::host::Level as LogLevel;
