//! `GET /v1/audit`: who started, approved or aborted what, when, with which
//! configuration.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use rollcage_store::AuditFilter;

use super::Params;
use crate::AppState;
use crate::error::{ApiError, clip};
use crate::views::{AuditPage, AuditView};

/// The audit trail, newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("bearer" = [])),
    params(
        ("actor" = Option<String>, Query, description = "Only this token or user"),
        ("run" = Option<String>, Query, description = "Only this run"),
        ("since" = Option<String>, Query, pattern = r"^(?:[0-9]{0,19}|(?:[0-9]{1,9}(?:ms|s|m|h))+)$", description = "Milliseconds since the epoch, or a duration ago (24h)"),
        ("cursor" = Option<String>, Query, pattern = r"^[0-9]{0,19}$", description = "`next_cursor` of the previous page"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 500, description = "1 to 500 (default 50)")),
    responses((status = 200, body = AuditPage),
              (status = 422, description = "Bad query", body = crate::views::ErrorBody)))]
pub(crate) async fn list_audit(
    State(state): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Json<AuditPage>, ApiError> {
    let p = Params::new(q.as_deref(), &["actor", "run", "since", "cursor", "limit"])?;
    let limit = p.limit()?;
    let before = match p.get("cursor") {
        None => None,
        Some(c) => Some(c.parse::<u64>().map_err(|_| {
            ApiError::unprocessable(
                "invalid_query",
                format!("cursor = `{}`: not a cursor this API gave", clip(&c)),
            )
        })?),
    };
    let entries = state
        .engine
        .store()
        .audit(&AuditFilter {
            actor: p.get("actor"),
            run_id: p.get("run"),
            since_ms: p.since_ms()?,
            before,
            limit,
        })
        .await?;
    let next_cursor = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(AuditPage {
        entries: entries
            .into_iter()
            .map(|e| AuditView {
                id: e.id,
                at_ms: e.at_ms,
                actor: e.entry.actor,
                action: e.entry.action,
                run_id: e.entry.run_id,
                config_hash: e.entry.config_hash,
                detail: e.entry.detail,
            })
            .collect(),
        next_cursor,
    }))
}
