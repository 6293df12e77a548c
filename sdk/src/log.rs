//! Structured logging to the host: lines land in the host's log under the
//! plugin's id, at the given level, with key/value fields.

use crate::bindings::rollcage::plugin::host::{self, Level};

/// Log `message` at `level` with key/value `fields`.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    host::log(level, message, &fields);
}

/// Log at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message, &[]);
}

/// Log at info level.
pub fn info(message: &str) {
    log(Level::Info, message, &[]);
}

/// Log at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message, &[]);
}

/// Log at error level.
pub fn error(message: &str) {
    log(Level::Error, message, &[]);
}

pub use crate::bindings::rollcage::plugin::host::Level as LogLevel;
