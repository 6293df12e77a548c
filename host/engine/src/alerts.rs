//! Alerts from monitoring (Prometheus Alertmanager) acting on runs.
//!
//! A firing alert is mapped to an environment (and maybe a service) by
//! the first matcher it satisfies. Then, in that environment:
//! * a run in progress there (deploying, baking, waiting) is aborted, as
//!   a person's abort would: the stage rolls back and the run ends
//!   `rolled_back`, naming the alert;
//! * otherwise, if the newest run there succeeded less than
//!   `after_promotion` ago, that release is rolled back by a new run of
//!   the previous release, as `rollcage runs rollback` does: a run like
//!   any other, visible, gated and resumable, that names the alert.
//!
//! A run that is itself a rollback is never aborted, and a release is
//! rolled back once: Alertmanager repeats a firing alert until it
//! resolves, and the repeats find the rollback run newest. Resolved
//! alerts change nothing. Whatever happens, the alert is in the audit
//! trail with what it did, or why it did nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use rollcage_store::{NewAudit, RunFilter, RunStatus};
use serde_json::json;

use crate::run::{Engine, EngineError};
use crate::stage::Decision;

/// Where a matcher finds an alert's environment or service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Fixed(String),
    Label(String),
}

/// One matcher: which alerts, and where they act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// `alertname` is one of these (any when empty).
    pub alertnames: Vec<String>,
    /// Labels the alert carries with these values.
    pub labels: BTreeMap<String, String>,
    pub environment: Place,
    /// `None`, or a label the alert lacks: any service there.
    pub service: Option<Place>,
}

/// The configured matchers and the time after a promotion in which a
/// firing alert rolls it back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertRules {
    pub matchers: Vec<Matcher>,
    pub after_promotion: Duration,
}

/// One alert as Alertmanager sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub fingerprint: String,
    pub starts_at: String,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// What an alert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The run in progress in the environment was aborted.
    Aborted { run: String, environment: String },
    /// A new run takes the environment back from the release of `run`.
    RolledBack {
        run: String,
        rollback: String,
        environment: String,
    },
    /// Nothing, for this reason.
    Ignored(String),
}

impl Handled {
    fn detail(&self) -> serde_json::Value {
        match self {
            Handled::Aborted { run, environment } => {
                json!({"outcome": "aborted", "run": run, "environment": environment})
            }
            Handled::RolledBack {
                run,
                rollback,
                environment,
            } => json!({
                "outcome": "rolled_back", "run": run, "rollback_run": rollback, "environment": environment
            }),
            Handled::Ignored(why) => json!({"outcome": "ignored", "reason": why}),
        }
    }

    /// The run it acted on, for the audit line.
    fn run(&self) -> Option<&str> {
        match self {
            Handled::Aborted { run, .. } | Handled::RolledBack { run, .. } => Some(run),
            Handled::Ignored(_) => None,
        }
    }
}

impl AlertRules {
    /// The environment and the service (if the alert names one) of the
    /// first matcher `alert` satisfies.
    pub fn route(&self, alert: &Alert) -> Option<(String, Option<String>)> {
        self.matchers.iter().find_map(|m| {
            if !m.alertnames.is_empty() && !m.alertnames.iter().any(|n| n == alert.name()) {
                return None;
            }
            if m.labels.iter().any(|(k, v)| alert.labels.get(k) != Some(v)) {
                return None;
            }
            let environment = match &m.environment {
                Place::Fixed(e) => e.clone(),
                Place::Label(l) => alert.labels.get(l)?.clone(),
            };
            let service = match &m.service {
                Some(Place::Fixed(s)) => Some(s.clone()),
                Some(Place::Label(l)) => alert.labels.get(l).cloned(),
                None => None,
            };
            Some((environment, service))
        })
    }
}

impl Engine {
    /// Act on `alert` as the module says, received from `by` (a token's
    /// name); the audit trail has it either way. The environments `by` may
    /// act in (all when empty) limit what it does.
    pub async fn alert(
        &self,
        rules: &AlertRules,
        alert: &Alert,
        by: &str,
        may_act_in: &[String],
    ) -> Result<Handled, EngineError> {
        let route = rules.route(alert);
        let handled = match &route {
            _ if alert.status != "firing" => {
                Handled::Ignored(format!("the alert is {}", alert.status))
            }
            None => Handled::Ignored("no [[alerts.matchers]] maps it to an environment".into()),
            Some((env, _)) if self.environment(env).is_none() => {
                Handled::Ignored(format!("environment `{env}` is not configured"))
            }
            Some((env, _)) if !may_act_in.is_empty() && !may_act_in.contains(env) => {
                Handled::Ignored(format!("token `{by}` may not act in environment `{env}`"))
            }
            Some((env, service)) => self.act_on(rules, alert, env, service.as_deref()).await?,
        };
        tracing::info!(alert = alert.name(), fingerprint = %alert.fingerprint, ?handled, "alert received");
        let mut detail = json!({
            "alert": alert.name(),
            "status": alert.status,
            "fingerprint": alert.fingerprint,
            "starts_at": alert.starts_at,
            "labels": alert.labels,
            "matched": route.is_some(),
        });
        if let (Some(d), Some(h)) = (detail.as_object_mut(), handled.detail().as_object()) {
            d.extend(h.clone());
        }
        self.store()
            .record_audit(NewAudit {
                actor: by.to_string(),
                action: "alert".into(),
                run_id: handled.run().map(str::to_string),
                config_hash: self.config_hash().to_string(),
                detail,
            })
            .await?;
        Ok(handled)
    }

    async fn act_on(
        &self,
        rules: &AlertRules,
        alert: &Alert,
        env: &str,
        service: Option<&str>,
    ) -> Result<Handled, EngineError> {
        let ours: Vec<&str> = self
            .pipelines()
            .filter(|p| p.stages.iter().any(|s| s == env))
            .filter(|p| service.is_none_or(|s| p.service == s))
            .map(|p| p.name.as_str())
            .collect();
        if ours.is_empty() {
            return Ok(Handled::Ignored(format!(
                "no pipeline deploys {} in `{env}`",
                service.map_or("anything".to_string(), |s| format!("service `{s}`"))
            )));
        }
        let runs = self
            .store()
            .list_runs(&RunFilter {
                environment: Some(env.to_string()),
                limit: 50,
                ..Default::default()
            })
            .await?;
        let label = format!("alert `{}`", alert.name());
        for run in runs
            .iter()
            .filter(|r| ours.contains(&r.run.pipeline.as_str()))
        {
            let is_rollback = run.run.params.iter().any(|(k, _)| k == "rollback_of");
            if !run.status.is_finished() {
                let (run, log) = self.store().run_with_log(&run.id).await?;
                if crate::position::acting_stage(&run.run.stages, &log) != Some(env) {
                    // Deploying elsewhere before it gets here.
                    continue;
                }
                if is_rollback {
                    return Ok(Handled::Ignored(format!(
                        "run `{}` is rolling `{env}` back already",
                        run.id
                    )));
                }
                return match self.decide(&run.id, Decision::Abort { by: label }).await {
                    Ok(()) => Ok(Handled::Aborted {
                        run: run.id.clone(),
                        environment: env.to_string(),
                    }),
                    // It ended meanwhile.
                    Err(EngineError::Finished(..)) => Ok(Handled::Ignored(format!(
                        "run `{}` ended as the alert came",
                        run.id
                    ))),
                    Err(e) => Err(e),
                };
            }
            if run.status != RunStatus::Succeeded || is_rollback {
                return Ok(Handled::Ignored(format!(
                    "the newest run in `{env}`, `{}` ({}), left nothing to roll back",
                    run.id,
                    if is_rollback {
                        "a rollback"
                    } else {
                        run.status.as_str()
                    }
                )));
            }
            let (_, log) = self.store().run_with_log(&run.id).await?;
            let promoted_ms = log
                .iter()
                .rev()
                .find(|e| e.kind == "stage-finished" && e.stage.as_deref() == Some(env))
                .map_or(run.updated_ms, |e| e.at_ms);
            let ago = Duration::from_millis(crate::unix_ms().saturating_sub(promoted_ms));
            if ago > rules.after_promotion {
                return Ok(Handled::Ignored(format!(
                    "release {} was promoted in `{env}` {} s ago, over [alerts] after_promotion ({} s)",
                    run.run.release,
                    ago.as_secs(),
                    rules.after_promotion.as_secs()
                )));
            }
            let rollback = self.rollback(&run.id, Some(env), &label).await?;
            return Ok(Handled::RolledBack {
                run: run.id.clone(),
                rollback,
                environment: env.to_string(),
            });
        }
        Ok(Handled::Ignored(format!("no run in `{env}` to act on")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str, labels: &[(&str, &str)]) -> Alert {
        let mut all: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.insert("alertname".into(), name.into());
        Alert {
            status: "firing".into(),
            labels: all,
            ..Alert::default()
        }
    }

    #[test]
    fn the_first_matcher_an_alert_satisfies_routes_it() {
        let rules = AlertRules {
            matchers: vec![
                Matcher {
                    alertnames: vec!["HighErrorRate".into(), "SlowResponses".into()],
                    labels: BTreeMap::from([("severity".into(), "critical".into())]),
                    environment: Place::Label("environment".into()),
                    service: Some(Place::Label("service".into())),
                },
                Matcher {
                    alertnames: vec![],
                    labels: BTreeMap::new(),
                    environment: Place::Fixed("production".into()),
                    service: Some(Place::Fixed("web".into())),
                },
            ],
            after_promotion: Duration::ZERO,
        };
        let critical = alert(
            "HighErrorRate",
            &[("severity", "critical"), ("environment", "staging")],
        );
        assert_eq!(rules.route(&critical), Some(("staging".into(), None)));
        // Not critical: the second matcher takes anything to production.
        let warning = alert(
            "SlowResponses",
            &[("severity", "warning"), ("service", "api")],
        );
        assert_eq!(
            rules.route(&warning),
            Some(("production".into(), Some("web".into())))
        );
        // Without the environment label the first does not apply either.
        let unlabelled = alert("HighErrorRate", &[("severity", "critical")]);
        assert_eq!(
            rules.route(&unlabelled),
            Some(("production".into(), Some("web".into())))
        );
        let only_first = AlertRules {
            matchers: rules.matchers[..1].to_vec(),
            ..rules
        };
        assert_eq!(only_first.route(&unlabelled), None);
        assert_eq!(only_first.route(&alert("DiskFull", &[])), None);
    }
}
