//! Rollcage's deployment engine. It sees plugins only through the
//! `rollcage-core` traits, so its tests drive it with plain Rust fakes.
//!
//! * [`analysis`]: health-check analysis with Argo Rollouts' semantics;
//! * [`breaker`]: a circuit breaker per plugin instance;
//! * [`stage`]: one environment driven by a strategy, rolled back on failure;
//! * [`run`]: a pipeline's stages in order, with their gates, jobs,
//!   notifications and durable log, resumable after a crash.

pub mod analysis;
pub mod breaker;
#[cfg(test)]
mod fakes;
pub mod run;
pub mod stage;
