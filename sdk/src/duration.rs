//! Durations as operators write them: `500ms`, `30s`, `5m`, `1h`, `1h30m`;
//! the same parser the host uses for its own configuration.

pub use rollcage_core::duration::parse;
