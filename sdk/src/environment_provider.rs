//! The environment-provider kind: [`EnvironmentProvider`] and [`export_environment_provider!`](crate::export_environment_provider).

#[allow(unused_imports)]
use crate::types::*;

#[doc(hidden)]
pub mod bindings {
    crate::kind_world!(
        "rollcage:plugin/environment-provider",
        "__export_environment_provider_world",
        "rollcage_sdk::environment_provider::bindings"
    );
}

/// An environment provider: drives a platform to a desired state. Every
/// method states what should be, not what should change, so the host may
/// repeat the call that was in flight when it crashed.
///
/// ```
/// use rollcage_sdk::{EnvironmentProvider, types::*};
///
/// struct Nowhere;
///
/// impl EnvironmentProvider for Nowhere {
///     fn apply_slot(_t: Target, _s: SlotSpec) -> Result<(), String> { Ok(()) }
///     fn route(_t: Target, _w: Vec<RouteWeight>) -> Result<(), String> { Ok(()) }
///     fn status(_t: Target) -> Result<EnvironmentStatus, String> {
///         Ok(EnvironmentStatus { slots: vec![], weights: vec![] })
///     }
///     fn remove_slot(_t: Target, _slot: String) -> Result<(), String> { Ok(()) }
/// }
///
/// rollcage_sdk::export_environment_provider!(Nowhere);
///
/// // Natively, in a test:
/// assert!(Nowhere::validate(r#"{"image": "web:1"}"#.into()).is_ok());
/// let target = Target { environment: "staging".into(), service: "web".into(), service_spec: "{}".into() };
/// assert!(Nowhere::status(target.clone()).unwrap().slots.is_empty());
/// assert!(Nowhere::run_job(target, Job {
///     name: "migrate".into(), command: vec![], env: vec![], timeout_ms: 1000,
/// }).unwrap_err().contains("cannot run jobs"));
/// ```
pub trait EnvironmentProvider {
    /// Check a service's provider-specific spec (the JSON `target.service_spec`
    /// carries) before any run uses it: every problem found, each naming its
    /// field as a dotted path (`image`, `labels.app`), so that `rollcage config
    /// check` can point at the line of the operator's TOML. The default finds
    /// nothing.
    fn validate(service_spec: String) -> Result<(), Vec<Problem>> {
        let _ = service_spec;
        Ok(())
    }
    /// Make the environment ready to receive slots. The default does nothing.
    fn prepare(target: Target) -> Result<(), String> {
        let _ = target;
        Ok(())
    }
    /// Create or update a slot to `spec`.
    fn apply_slot(target: Target, spec: SlotSpec) -> Result<(), String>;
    /// Set the traffic split.
    fn route(target: Target, weights: Vec<RouteWeight>) -> Result<(), String>;
    /// Report slots, readiness and the traffic split.
    fn status(target: Target) -> Result<EnvironmentStatus, String>;
    /// Remove a slot; removing a missing slot succeeds.
    fn remove_slot(target: Target, slot: String) -> Result<(), String>;
    /// Run a one-off command to completion. The default refuses: not every
    /// platform can run jobs.
    fn run_job(target: Target, job: Job) -> Result<JobResult, String> {
        let _ = target;
        Err(format!(
            "this provider cannot run jobs (job `{}`)",
            job.name
        ))
    }
}

#[doc(hidden)]
pub use bindings::exports::rollcage::plugin::provider_api::Guest as __Guest;

/// Export a type implementing [`EnvironmentProvider`] as this component's environment-provider.
#[macro_export]
macro_rules! export_environment_provider {
    ($t:ident) => {
        impl $crate::environment_provider::__Guest for $t {
            fn validate(service_spec: String) -> Result<(), Vec<$crate::types::Problem>> {
                <$t as $crate::EnvironmentProvider>::validate(service_spec)
            }
            fn prepare(target: $crate::types::Target) -> Result<(), String> {
                <$t as $crate::EnvironmentProvider>::prepare(target)
            }
            fn apply_slot(target: $crate::types::Target, spec: $crate::types::SlotSpec) -> Result<(), String> {
                <$t as $crate::EnvironmentProvider>::apply_slot(target, spec)
            }
            fn route(target: $crate::types::Target, weights: Vec<$crate::types::RouteWeight>) -> Result<(), String> {
                <$t as $crate::EnvironmentProvider>::route(target, weights)
            }
            fn status(target: $crate::types::Target) -> Result<$crate::types::EnvironmentStatus, String> {
                <$t as $crate::EnvironmentProvider>::status(target)
            }
            fn remove_slot(target: $crate::types::Target, slot: String) -> Result<(), String> {
                <$t as $crate::EnvironmentProvider>::remove_slot(target, slot)
            }
            fn run_job(target: $crate::types::Target, job: $crate::types::Job) -> Result<$crate::types::JobResult, String> {
                <$t as $crate::EnvironmentProvider>::run_job(target, job)
            }
        }
        $crate::environment_provider::bindings::__export_environment_provider_world!($t with_types_in $crate::environment_provider::bindings);
    };
}
