//! Rollcage's deployment engine. It sees plugins only through the
//! `rollcage-core` traits, so its tests drive it with plain Rust fakes.
//!
//! * [`analysis`]: health-check analysis with Argo Rollouts' semantics;
//! * [`stage`]: one environment driven by a strategy, rolled back on failure.

pub mod analysis;
#[cfg(test)]
mod fakes;
pub mod stage;
