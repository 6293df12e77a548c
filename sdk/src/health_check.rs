//! The health-check kind: [`HealthCheck`] and [`export_health_check!`](crate::export_health_check).

#[allow(unused_imports)]
use crate::types::*;

#[doc(hidden)]
pub mod bindings {
    crate::kind_world!(
        "rollcage:plugin/health-check",
        "__export_health_check_world",
        "rollcage_sdk::health_check::bindings"
    );
}

/// A health check: one call, one measurement. Return `Err` only when no
/// measurement could be taken (the metrics server is down): an error is not a
/// failure, and the host counts the two apart.
///
/// ```
/// use rollcage_sdk::{HealthCheck, types::{CheckTarget, Measurement, Verdict}};
///
/// struct AlwaysHealthy;
///
/// impl HealthCheck for AlwaysHealthy {
///     fn check(target: CheckTarget) -> Result<Measurement, String> {
///         Ok(Measurement { verdict: Verdict::Pass, value: None, detail: format!("{} is fine", target.slot) })
///     }
/// }
///
/// rollcage_sdk::export_health_check!(AlwaysHealthy);
///
/// // Natively, in a test:
/// let target = CheckTarget {
///     environment: "staging".into(),
///     slot: "1.4.0".into(),
///     release: "1.4.0".into(),
///     endpoints: vec!["127.0.0.1:8080".into()],
///     exposure: None,
/// };
/// assert!(matches!(AlwaysHealthy::check(target), Ok(Measurement { verdict: Verdict::Pass, .. })));
/// ```
pub trait HealthCheck {
    /// Take one measurement of `target`.
    fn check(target: CheckTarget) -> Result<Measurement, String>;
}

#[doc(hidden)]
pub use bindings::exports::rollcage::plugin::health_check_api::Guest as __Guest;

/// Export a type implementing [`HealthCheck`] as this component's health-check.
#[macro_export]
macro_rules! export_health_check {
    ($t:ident) => {
        impl $crate::health_check::__Guest for $t {
            fn check(target: $crate::types::CheckTarget) -> Result<$crate::types::Measurement, String> {
                <$t as $crate::HealthCheck>::check(target)
            }
        }
        $crate::health_check::bindings::__export_health_check_world!($t with_types_in $crate::health_check::bindings);
    };
}
