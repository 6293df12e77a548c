//! The notifier kind: [`Notifier`] and [`export_notifier!`](crate::export_notifier).

#[allow(unused_imports)]
use crate::types::*;

#[doc(hidden)]
pub mod bindings {
    crate::kind_world!(
        "rollcage:plugin/notifier",
        "__export_notifier_world",
        "rollcage_sdk::notifier::bindings"
    );
}

/// A notifier. Errors are logged and retried by the host with backoff; they
/// never fail a deployment.
///
/// ```ignore
/// use rollcage_sdk::{Notifier, types::Event};
///
/// struct Shout;
///
/// impl Notifier for Shout {
///     fn notify(event: Event) -> Result<(), String> {
///         rollcage_sdk::log::info(&event.message.to_uppercase());
///         Ok(())
///     }
/// }
///
/// rollcage_sdk::export_notifier!(Shout);
/// ```
pub trait Notifier {
    /// Deliver one event.
    fn notify(event: Event) -> Result<(), String>;
}

#[doc(hidden)]
pub use bindings::exports::rollcage::plugin::notifier_api::Guest as __Guest;

/// Export a type implementing [`Notifier`] as this component's notifier.
#[macro_export]
macro_rules! export_notifier {
    ($t:ident) => {
        impl $crate::notifier::__Guest for $t {
            fn notify(event: $crate::types::Event) -> Result<(), String> {
                <$t as $crate::Notifier>::notify(event)
            }
        }
        $crate::notifier::bindings::__export_notifier_world!($t with_types_in $crate::notifier::bindings);
    };
}

/// Helpers shared by notifiers.
pub mod events {
    use crate::types::{Event, EventKind};

    /// The kebab-case name of an event kind, as in the WIT and in `events = [...]`.
    pub fn kind_name(kind: EventKind) -> &'static str {
        match kind {
            EventKind::RunStarted => "run-started",
            EventKind::StageStarted => "stage-started",
            EventKind::AwaitingApproval => "awaiting-approval",
            EventKind::Step => "step",
            EventKind::AnalysisFailed => "analysis-failed",
            EventKind::RolledBack => "rolled-back",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
        }
    }

    /// Every kind name, for validating `events = [...]`.
    pub const KIND_NAMES: [&str; 8] = [
        "run-started",
        "stage-started",
        "awaiting-approval",
        "step",
        "analysis-failed",
        "rolled-back",
        "succeeded",
        "failed",
    ];

    /// Whether an `events = [...]` filter (all events when `None`) lets
    /// `event` through; an unknown name in the filter is an error.
    pub fn wanted(filter: Option<&[String]>, event: &Event) -> Result<bool, String> {
        let Some(filter) = filter else {
            return Ok(true);
        };
        if let Some(bad) = filter.iter().find(|n| !KIND_NAMES.contains(&n.as_str())) {
            return Err(format!(
                "events: unknown event `{bad}`; expected some of {}",
                KIND_NAMES.join(", ")
            ));
        }
        Ok(filter.iter().any(|n| n == kind_name(event.kind)))
    }
}
