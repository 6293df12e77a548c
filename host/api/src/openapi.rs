//! `/v1/openapi.json`: the OpenAPI 3.1 document of every route, generated
//! from the handlers' annotations and the view types, so it cannot drift
//! from what the code answers.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::*;
use crate::views::*;

#[derive(OpenApi)]
#[openapi(
    info(title = "Rollcage API", description = "Runs, live events, approvals, environments, plugins, audit and metrics of a Rollcage host. Errors are always `{\"error\": {\"code\", \"message\", \"details\"}}`."),
    paths(
        start_run, list_runs, get_run, run_events, approve_run, abort_run, retry_run,
        rollback_run, list_environments, get_environment, list_plugins, list_audit,
        healthz, readyz, metrics
    ),
    components(schemas(
        StartRun, RollbackRun, RunView, RunPage, RunDetail, StageView, StepView,
        AnalysisView, NotificationView, DecisionView, EventView, EnvironmentView,
        ServiceView, SlotView, PluginView, CallView, AuditView, AuditPage, Health,
        ErrorBody, ErrorDetail
    )),
    modifiers(&Bearer)
)]
pub(crate) struct Doc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document.
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(Doc::openapi())
}
