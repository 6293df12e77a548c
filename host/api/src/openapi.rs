//! `/v1/openapi.json`: the OpenAPI 3.1 document of every route, generated
//! from the handlers' annotations and the view types, so it cannot drift
//! from what the code answers. Each route documents the answers of its
//! own; [`Errors`] adds those that every route of a kind can give (from
//! authentication, limits, body and path parsing), so that the document
//! lists every status a route can answer.

use axum::Json;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, HeaderBuilder, Ref, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi};

use crate::routes::*;
use crate::views::*;

#[derive(OpenApi)]
#[openapi(
    info(title = "Rollcage API", description = "Runs, live events, approvals, environments, plugins, audit and metrics of a Rollcage host. Errors are always `{\"error\": {\"code\", \"message\", \"details\"}}`."),
    paths(
        start_run, list_runs, get_run, run_events, approve_run, abort_run, retry_run,
        rollback_run, list_environments, get_environment, list_plugins, list_audit,
        alertmanager, healthz, readyz, metrics
    ),
    components(schemas(
        StartRun, RollbackRun, RunView, RunPage, RunDetail, StageView, StepView,
        AnalysisView, NotificationView, DecisionView, EventView, EnvironmentView,
        ServiceView, SlotView, PluginView, CallView, AuditView, AuditPage, Health,
        ErrorBody, ErrorDetail, AlertmanagerPayload, AlertmanagerAlert
    )),
    modifiers(&Bearer, &Errors)
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

/// The error answers of every route of a kind.
struct Errors;

impl Modify for Errors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for (path, item) in doc.paths.paths.iter_mut() {
            let streams = path.ends_with("/events");
            for op in [item.get.as_mut(), item.post.as_mut()]
                .into_iter()
                .flatten()
            {
                add_errors(op, streams);
                not_nullable(op);
            }
        }
    }
}

/// An optional query or header parameter is left out, never sent as
/// `null` (a header cannot even say `null`): its schema says so.
fn not_nullable(op: &mut Operation) {
    use utoipa::openapi::schema::{Schema, SchemaType};
    for p in op.parameters.iter_mut().flatten() {
        if let Some(utoipa::openapi::RefOr::T(Schema::Object(o))) = &mut p.schema
            && let SchemaType::Array(types) = &o.schema_type
        {
            let kept: Vec<Type> = types
                .iter()
                .filter(|t| **t != Type::Null)
                .cloned()
                .collect();
            if let [only] = kept.as_slice() {
                o.schema_type = SchemaType::Type(only.clone());
            }
        }
    }
}

fn add_errors(op: &mut Operation, streams: bool) {
    let secured = op.security.is_some();
    let has_body = op.request_body.is_some();
    let params = op.parameters.as_deref().unwrap_or_default();
    let has = |place: ParameterIn| params.iter().any(|p| p.parameter_in == place);
    let (has_path, has_query) = (has(ParameterIn::Path), has(ParameterIn::Query));
    let mut add = |status: &str, description: &str, retry: bool| {
        if op.responses.responses.contains_key(status) {
            return;
        }
        let mut r = ResponseBuilder::new().description(description).content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        );
        if retry {
            r = r.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(utoipa::openapi::ObjectBuilder::new().schema_type(Type::Integer))
                    .description(Some("Seconds to wait"))
                    .build(),
            );
        }
        op.responses.responses.insert(status.into(), r.into());
    };
    if has_path {
        add("400", "A path that cannot be decoded", false);
        add("404", "Not found", false);
    }
    if has_body {
        add("400", "The body is not JSON", false);
        add(
            "413",
            "The body is over `[server.api] body_limit_bytes`",
            false,
        );
        add("415", "The body is not `application/json`", false);
        add(
            "422",
            "The body is not a JSON object of the expected fields",
            false,
        );
        add(
            "408",
            "The body did not arrive within `[server.api] request_timeout`",
            false,
        );
    }
    if has_query {
        add("422", "An unknown query parameter or a bad value", false);
    }
    if secured {
        add("401", "No token, or an unknown one", false);
        add(
            "429",
            "Over the token's rate, too many failed authentications from the address, or (where the route starts runs or streams) over the host's bound on them",
            true,
        );
        if !streams {
            add(
                "503",
                "The answer took longer than `[server.api] request_timeout`",
                false,
            );
        }
        add(
            "500",
            "A failure of the host: the message has an id to find in its log",
            false,
        );
    }
}

/// The OpenAPI document.
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(Doc::openapi())
}
