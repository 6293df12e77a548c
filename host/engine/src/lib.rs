//! Rollcage's deployment engine. It sees plugins only through the
//! `rollcage-core` traits, so its tests drive it with plain Rust fakes.
//!
//! * [`analysis`]: health-check analysis with Argo Rollouts' semantics;
//! * [`breaker`]: a circuit breaker per plugin instance;
//! * [`preview`]: dry runs, the plan and rollback plan a strategy would follow;
//! * [`stage`]: one environment driven by a strategy, rolled back on failure;
//! * [`run`]: a pipeline's stages in order, with their gates, jobs,
//!   notifications and durable log, resumable after a crash.

pub mod analysis;
pub mod breaker;
#[cfg(test)]
mod fakes;
pub mod preview;
pub mod run;
pub mod stage;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
