//! Rollcage's deployment engine. It sees plugins only through the
//! `rollcage-core` traits, so its tests drive it with plain Rust fakes.
//!
//! * [`analysis`]: health-check analysis with Argo Rollouts' semantics;
//! * [`alerts`]: firing alerts abort or roll back the runs they concern;
//! * [`bake`]: the promoted release watched before its stage ends;
//! * [`breaker`]: a circuit breaker per plugin instance;
//! * [`stats`]: per-plugin call counts, errors and latency;
//! * [`preview`]: dry runs, the plan and rollback plan a strategy would follow;
//! * [`stage`]: one environment driven by a strategy, rolled back on failure;
//! * [`position`]: where a run is, read from its log;
//! * [`run`]: a pipeline's stages in order, with their notifications and
//!   durable log, resumable after a crash on this host or another;
//! * `gates`: a stage's gates (lock, window, approval, prepare, jobs,
//!   strategy), each small and resumable;
//! * `lease`: the leases under which this host drives runs;
//! * [`scheduler`]: a host's share of the runs, claimed up to its
//!   capacity as they are queued or their host goes away.

pub mod alerts;
pub mod analysis;
pub mod bake;
pub mod breaker;
/// Plain Rust fakes of the plugin traits, for tests of the engine and of
/// what drives it (the API).
#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
mod gates;
mod lease;
pub mod position;
pub mod preview;
pub mod run;
pub mod scheduler;
pub mod stage;
pub mod stats;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
