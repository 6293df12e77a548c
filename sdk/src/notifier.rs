//! The notifier kind: [`events`], helpers for event kinds and filters
//! (always available), and, with the `notifier` feature, the `Notifier`
//! trait and the [`export_notifier!`](crate::export_notifier) macro.

#[cfg(feature = "notifier")]
#[allow(unused_imports)]
use crate::types::*;

#[cfg(feature = "notifier")]
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
/// ```
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
#[cfg(feature = "notifier")]
#[cfg_attr(docsrs, doc(cfg(feature = "notifier")))]
pub trait Notifier {
    /// Deliver one event.
    fn notify(event: Event) -> Result<(), String>;
}

#[cfg(feature = "notifier")]
#[doc(hidden)]
pub use bindings::exports::rollcage::plugin::notifier_api::Guest as __Guest;

/// Export a type implementing [`Notifier`] as this component's notifier
/// (feature `notifier`).
#[cfg(feature = "notifier")]
#[cfg_attr(docsrs, doc(cfg(feature = "notifier")))]
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

/// Helpers shared by notifiers: event kinds by their WIT names, and the
/// `events = [...]` filter operators write in a notifier's config.
///
/// ```
/// use rollcage_sdk::notifier::events;
/// use rollcage_sdk::testing::sample_event;
/// use rollcage_sdk::types::EventKind;
///
/// let only = vec!["rolled-back".to_string(), "failed".to_string()];
/// assert_eq!(events::wanted(Some(&only), &sample_event(EventKind::RolledBack)), Ok(true));
/// assert_eq!(events::wanted(Some(&only), &sample_event(EventKind::Step)), Ok(false));
/// ```
pub mod events {
    use crate::types::{Event, EventKind};

    /// The kebab-case name of an event kind, as in the WIT and in `events = [...]`.
    ///
    /// ```
    /// use rollcage_sdk::{notifier::events::kind_name, types::EventKind};
    /// assert_eq!(kind_name(EventKind::RolledBack), "rolled-back");
    /// ```
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
    ///
    /// ```
    /// use rollcage_sdk::notifier::events::KIND_NAMES;
    /// assert!(KIND_NAMES.contains(&"awaiting-approval"));
    /// ```
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
    ///
    /// ```
    /// use rollcage_sdk::{notifier::events::wanted, testing::sample_event, types::EventKind};
    /// let event = sample_event(EventKind::Succeeded);
    /// assert_eq!(wanted(None, &event), Ok(true));
    /// let typo = vec!["rolled_back".to_string()];
    /// assert!(wanted(Some(&typo), &event).unwrap_err().contains("unknown event `rolled_back`"));
    /// ```
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
