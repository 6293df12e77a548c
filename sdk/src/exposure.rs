//! The exposure kind: [`percent`], helpers for the share of users a flag
//! reaches (always available), and, with the `exposure` feature, the
//! `Exposure` trait and the [`export_exposure!`](crate::export_exposure)
//! macro.
//!
//! An exposure plugin moves a feature flag's exposure in a flag service
//! (Unleash, flagd...) when a strategy asks for it (`expose = 10` steps of
//! the canary). Every call states the desired exposure, so the host may
//! repeat the call that was in flight when it crashed; and on a rollback the
//! host sets each flag it changed back to the exposure it read
//! (`get_exposure`) before the run's first change.

#[cfg(feature = "exposure")]
#[allow(unused_imports)]
use crate::types::*;

#[cfg(feature = "exposure")]
#[doc(hidden)]
pub mod bindings {
    crate::kind_world!(
        "rollcage:plugin/exposure",
        "__export_exposure_world",
        "rollcage_sdk::exposure::bindings"
    );
}

/// An exposure plugin: sets and reads a feature flag's exposure in one
/// environment of a flag service.
///
/// ```
/// use rollcage_sdk::{Exposure, types::{ExposureStatus, Problem}};
///
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Config { url: String }
///
/// struct Flags;
///
/// impl Exposure for Flags {
///     fn validate(params: String) -> Result<(), Vec<Problem>> {
///         let config: Config = serde_json::from_str(&params).map_err(|e| {
///             vec![Problem { field: String::new(), message: e.to_string() }]
///         })?;
///         if !config.url.starts_with("http") {
///             return Err(vec![Problem {
///                 field: "url".into(),
///                 message: format!("`{}` is not an http(s) URL", config.url),
///             }]);
///         }
///         Ok(())
///     }
///     fn set_exposure(flag: String, environment: String, percent: u32) -> Result<(), String> {
///         rollcage_sdk::exposure::percent(percent)?;
///         rollcage_sdk::log::info(&format!("{flag} in {environment}: {percent}%"));
///         Ok(())
///     }
///     fn get_exposure(_flag: String, _environment: String) -> Result<ExposureStatus, String> {
///         Ok(ExposureStatus { percent: 0, enabled: false, revision: String::new() })
///     }
/// }
///
/// rollcage_sdk::export_exposure!(Flags);
///
/// // Natively, in a test:
/// assert!(Flags::validate(r#"{"url": "http://127.0.0.1:4242"}"#.into()).is_ok());
/// let problems = Flags::validate(r#"{"url": "unleash"}"#.into()).unwrap_err();
/// assert_eq!(problems[0].field, "url");
/// assert!(Flags::set_exposure("checkout-v2".into(), "production".into(), 101).is_err());
/// ```
#[cfg(feature = "exposure")]
#[cfg_attr(docsrs, doc(cfg(feature = "exposure")))]
pub trait Exposure {
    /// Check the plugin's configuration (the JSON [`config_json`](crate::config_json)
    /// returns) before any run uses it: every problem found, each naming its
    /// field. The default finds nothing.
    fn validate(params: String) -> Result<(), Vec<Problem>> {
        let _ = params;
        Ok(())
    }
    /// Expose `flag` in `environment` (the Rollcage environment name) to
    /// `percent` (0-100) of users.
    fn set_exposure(flag: String, environment: String, percent: u32) -> Result<(), String>;
    /// The flag's exposure in `environment` as the flag service reports it
    /// (`percent` 0 and `enabled` false when the flag is off or absent).
    fn get_exposure(flag: String, environment: String) -> Result<ExposureStatus, String>;
}

#[cfg(feature = "exposure")]
#[doc(hidden)]
pub use bindings::exports::rollcage::plugin::exposure_api::Guest as __Guest;

/// Export a type implementing [`Exposure`] as this component's exposure
/// plugin (feature `exposure`).
#[cfg(feature = "exposure")]
#[cfg_attr(docsrs, doc(cfg(feature = "exposure")))]
#[macro_export]
macro_rules! export_exposure {
    ($t:ident) => {
        impl $crate::exposure::__Guest for $t {
            fn validate(params: String) -> Result<(), Vec<$crate::types::Problem>> {
                <$t as $crate::Exposure>::validate(params)
            }
            fn set_exposure(flag: String, environment: String, percent: u32) -> Result<(), String> {
                <$t as $crate::Exposure>::set_exposure(flag, environment, percent)
            }
            fn get_exposure(flag: String, environment: String) -> Result<$crate::types::ExposureStatus, String> {
                <$t as $crate::Exposure>::get_exposure(flag, environment)
            }
        }
        $crate::exposure::bindings::__export_exposure_world!($t with_types_in $crate::exposure::bindings);
    };
}

/// `percent` if it is a share of users (0-100), else an error that says so.
///
/// ```
/// use rollcage_sdk::exposure::percent;
/// assert_eq!(percent(10), Ok(10));
/// assert_eq!(percent(101).unwrap_err(), "exposure 101% is outside 0-100");
/// ```
pub fn percent(percent: u32) -> Result<u32, String> {
    if percent <= 100 {
        Ok(percent)
    } else {
        Err(format!("exposure {percent}% is outside 0-100"))
    }
}
