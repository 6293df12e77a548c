//! Durations as operators write them: `500ms`, `30s`, `5m`, `1h`, `1h30m`;
//! the same parser the host uses for its own configuration.

/// A duration as operators write it.
///
/// ```
/// use rollcage_sdk::duration::parse;
/// assert_eq!(parse("1h30m"), Ok(std::time::Duration::from_secs(5400)));
/// assert!(parse("soon").is_err());
/// ```
pub use rollcage_core::duration::parse;
