//! `[alerts]`: which alerts Prometheus Alertmanager sends to
//! `POST /v1/hooks/alertmanager` act on which environment and service.
//!
//! ```toml
//! [alerts]
//! after_promotion = "30m"        # a firing alert this long after a promotion rolls it back
//!
//! [[alerts.matchers]]
//! alertnames = ["HighErrorRate", "SlowResponses"]   # any alert when empty
//! labels = { severity = "critical" }                # every one must be equal
//! environment_label = "environment"                 # default; or environment = "production"
//! service_label = "service"                         # or service = "web"; any service when absent
//! ```
//!
//! The first matcher an alert satisfies decides; an alert no matcher
//! maps to a configured environment is ignored (and audited as such).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

use crate::error::ConfigError;
use crate::source::Source;

/// Where a matcher finds an alert's environment or service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Always this one.
    Fixed(String),
    /// The value of this label of the alert.
    Label(String),
}

/// One `[[alerts.matchers]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertMatcher {
    /// The alert's `alertname` is one of these (any when empty).
    pub alertnames: Vec<String>,
    /// Labels the alert must carry with these values.
    pub labels: BTreeMap<String, String>,
    pub environment: Place,
    /// The service of the pipelines it concerns; `None` (the default), or
    /// a label the alert lacks: every pipeline deploying there.
    pub service: Option<Place>,
}

/// A validated `[alerts]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlertsConfig {
    /// How long after a promotion a firing alert rolls the promoted
    /// release back (0, the default: only runs in progress are stopped).
    pub after_promotion: Duration,
    pub matchers: Vec<AlertMatcher>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    #[serde(default)]
    after_promotion: Option<Spanned<String>>,
    #[serde(default)]
    matchers: Vec<Spanned<RawMatcher>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatcher {
    #[serde(default)]
    alertnames: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    environment: Option<Spanned<String>>,
    #[serde(default)]
    environment_label: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    service_label: Option<String>,
}

pub(crate) fn parse(
    src: &Source<'_>,
    value: &Spanned<DeValue<'_>>,
    environments: &[String],
    errors: &mut Vec<ConfigError>,
) -> AlertsConfig {
    let Some(raw) = crate::deserialize_entry::<RawAlerts>(src, "[alerts]", value, errors) else {
        return AlertsConfig::default();
    };
    let after_promotion = match &raw.after_promotion {
        None => Duration::ZERO,
        Some(s) => rollcage_core::duration::parse(s.get_ref()).unwrap_or_else(|e| {
            errors.push(src.error(s.span(), format!("[alerts]: after_promotion: {e}"), None));
            Duration::ZERO
        }),
    };
    let mut matchers = Vec::new();
    for (i, m) in raw.matchers.iter().enumerate() {
        let what = format!("[[alerts.matchers]] #{}", i + 1);
        let span = m.span();
        let m = m.get_ref();
        let environment = match (&m.environment, &m.environment_label) {
            (Some(_), Some(_)) => {
                errors.push(src.error(
                    span.clone(),
                    format!("{what}: give `environment` or `environment_label`, not both"),
                    None,
                ));
                continue;
            }
            (Some(e), None) => {
                if !environments.contains(e.get_ref()) {
                    errors.push(src.error(
                        e.span(),
                        format!("{what}: unknown environment `{}`", e.get_ref()),
                        Some(format!("environments: {}", environments.join(", "))),
                    ));
                }
                Place::Fixed(e.get_ref().clone())
            }
            (None, label) => Place::Label(label.clone().unwrap_or_else(|| "environment".into())),
        };
        let service = match (&m.service, &m.service_label) {
            (Some(_), Some(_)) => {
                errors.push(src.error(
                    span.clone(),
                    format!("{what}: give `service` or `service_label`, not both"),
                    None,
                ));
                continue;
            }
            (Some(s), None) => Some(Place::Fixed(s.clone())),
            (None, label) => label.clone().map(Place::Label),
        };
        matchers.push(AlertMatcher {
            alertnames: m.alertnames.clone(),
            labels: m.labels.clone(),
            environment,
            service,
        });
    }
    AlertsConfig {
        after_promotion,
        matchers,
    }
}
