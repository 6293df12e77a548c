//! Hooks other systems call: `POST /v1/hooks/alertmanager`, Prometheus
//! Alertmanager's webhook receiver (payload version 4). Each alert acts as
//! `[alerts]` says ([`rollcage_engine::alerts`]): a firing one aborts the
//! run in progress in its environment, or rolls back a release promoted
//! shortly before; every alert, acted on or not, is in the audit trail.
//! Only tokens of role `alerts` (and admins) may call it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use rollcage_engine::alerts::{Alert, Handled};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Permission, Principal};
use crate::error::{ApiError, clip};
use crate::json::ApiJson;
use crate::views::ErrorBody;

/// Alertmanager's webhook payload (the fields Rollcage reads; the others
/// are accepted and ignored).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerPayload {
    /// Always `"4"` for the current format.
    pub version: String,
    #[serde(default)]
    pub alerts: Vec<AlertmanagerAlert>,
}

/// One alert of the payload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerAlert {
    /// `firing` or `resolved`.
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: String,
    #[serde(default)]
    pub fingerprint: String,
}

/// Take a group of alerts from Prometheus Alertmanager.
#[utoipa::path(post, path = "/v1/hooks/alertmanager", tag = "hooks", security(("bearer" = [])),
    request_body = AlertmanagerPayload,
    responses(
        (status = 200, description = "What each alert did: `aborted`, `rolled_back` or `ignored` (with the reason)"),
        (status = 403, description = "The token's role is not alerts or admin", body = ErrorBody),
        (status = 422, description = "Not Alertmanager's payload version 4", body = ErrorBody)))]
pub(crate) async fn alertmanager(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<AlertmanagerPayload>,
) -> Result<Response, ApiError> {
    who.require(Permission::Alert, &[])?;
    if body.version != "4" {
        return Err(ApiError::unprocessable(
            "unsupported_version",
            format!(
                "Alertmanager payload version `{}`: only version \"4\" is understood",
                clip(&body.version)
            ),
        ));
    }
    let rules = state.alert_rules();
    let mut answers = Vec::new();
    let mut started = false;
    for a in body.alerts {
        let alert = Alert {
            status: a.status,
            labels: a.labels,
            annotations: a.annotations,
            fingerprint: a.fingerprint,
            starts_at: a.starts_at,
        };
        let handled = state
            .engine
            .alert(&rules, &alert, &who.name, &who.environments)
            .await?;
        started |= matches!(handled, Handled::RolledBack { .. });
        answers.push(match handled {
            Handled::Aborted { run, environment } => json!({
                "alert": alert.name(), "fingerprint": alert.fingerprint,
                "outcome": "aborted", "run": run, "environment": environment,
            }),
            Handled::RolledBack {
                run,
                rollback,
                environment,
            } => json!({
                "alert": alert.name(), "fingerprint": alert.fingerprint,
                "outcome": "rolled_back", "run": run, "rollback_run": rollback, "environment": environment,
            }),
            Handled::Ignored(reason) => json!({
                "alert": alert.name(), "fingerprint": alert.fingerprint,
                "outcome": "ignored", "reason": reason,
            }),
        });
    }
    if started {
        state.queued();
    }
    Ok(Json(json!({"alerts": answers})).into_response())
}
