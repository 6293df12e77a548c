//! Rollcage's deployment engine. It sees plugins only through the
//! `rollcage-core` traits, so its tests drive it with plain Rust fakes.
//!
//! * [`analysis`]: health-check analysis with Argo Rollouts' semantics;
//! * [`breaker`]: a circuit breaker per plugin instance;
//! * [`stats`]: per-plugin call counts, errors and latency;
//! * [`preview`]: dry runs, the plan and rollback plan a strategy would follow;
//! * [`stage`]: one environment driven by a strategy, rolled back on failure;
//! * [`position`]: where a run is, read from its log;
//! * [`run`]: a pipeline's stages in order, with their gates, jobs,
//!   notifications and durable log, resumable after a crash.

pub mod analysis;
pub mod breaker;
/// Plain Rust fakes of the plugin traits, for tests of the engine and of
/// what drives it (the API).
#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
pub mod position;
pub mod preview;
pub mod run;
pub mod stage;
pub mod stats;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
