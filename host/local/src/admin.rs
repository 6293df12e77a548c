//! The admin API the `local` environment provider drives: JSON over HTTP on
//! loopback, every `/v1` route behind the runtime's bearer token (it starts
//! processes), errors as `{"error":{"code","message"}}` whose message names
//! the offending field and never carries internal detail.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::ServiceError;
use crate::services::{Core, ServiceStatus, SlotStatus, Stats};
use crate::spec::{JobSpec, ServiceDef, SlotSpec, WeightsSpec, check_name};
use crate::window::SPAN_SECONDS;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::UnknownService(_)
            | ServiceError::UnknownSlot { .. }
            | ServiceError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            ServiceError::Invalid(_) => Self::bad_request(message),
            ServiceError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
            ServiceError::Io(e) => {
                tracing::error!(error = %e, "admin request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the local runtime could not complete the request; the host's log has the cause",
                )
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

#[derive(Clone)]
struct Admin {
    core: Arc<Core>,
    token: Arc<str>,
}

pub fn app(core: Arc<Core>, token: &str) -> Router {
    let admin = Admin {
        core,
        token: token.into(),
    };
    let v1 = Router::new()
        .route(
            "/v1/services/{name}",
            put(put_service).get(get_service).delete(delete_service),
        )
        .route(
            "/v1/services/{name}/slots/{slot}",
            put(put_slot).delete(delete_slot),
        )
        .route("/v1/services/{name}/slots/{slot}/logs", get(get_logs))
        .route("/v1/services/{name}/weights", put(put_weights))
        .route("/v1/services/{name}/jobs", post(post_job))
        .route("/v1/services/{name}/stats", get(get_stats))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(admin.clone(), require_token))
        .with_state(admin);
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .merge(v1)
}

async fn require_token(State(admin): State<Admin>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if same(token.as_bytes(), admin.token.as_bytes()) => next.run(request).await,
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <token>` with this runtime's token",
        )
        .into_response(),
    }
}

/// Compare without stopping at the first difference, so the time taken
/// does not tell how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parse a JSON body; the error names the field (`replicas: invalid type:
/// ...`) or says what is wrong with the body as a whole.
fn parse<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if path != "." => {
                ApiError::bad_request(format!("{path}: {inner}"))
            }
            serde_json::error::Category::Data => {
                ApiError::bad_request(format!("request body: {inner}"))
            }
            _ => ApiError::bad_request(format!("request body is not valid JSON: {inner}")),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
    Ok(value)
}

/// Query parameters, refusing names the route does not know (a misspelt
/// `windw=30` must not silently mean the default).
fn query(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    known: &[&str],
) -> ApiResult<HashMap<String, String>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
    if let Some(unknown) = q.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "query parameter `{unknown}` is not known here; use {}",
            known.join(", ")
        )));
    }
    Ok(q)
}

fn number(
    q: &HashMap<String, String>,
    key: &str,
    default: u64,
    range: RangeInclusive<u64>,
) -> ApiResult<u64> {
    let Some(raw) = q.get(key) else {
        return Ok(default);
    };
    raw.parse()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "query parameter `{key}`: a whole number from {} to {}, not `{raw}`",
                range.start(),
                range.end()
            ))
        })
}

fn checked(kind: &str, name: &str) -> ApiResult<()> {
    check_name(kind, name).map_err(ApiError::bad_request)
}

async fn put_service(
    State(a): State<Admin>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let def: ServiceDef = parse(&body)?;
    let front = a.core.put_service(&name, def, None)?;
    Ok(Json(json!({ "name": name, "front": front.to_string() })))
}

async fn get_service(
    State(a): State<Admin>,
    Path(name): Path<String>,
) -> ApiResult<Json<ServiceStatus>> {
    checked("service", &name)?;
    Ok(Json(a.core.service_status(&name)?))
}

async fn delete_service(
    State(a): State<Admin>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    checked("service", &name)?;
    let removed = a.core.delete_service(&name).await;
    Ok(Json(json!({ "name": name, "removed": removed })))
}

async fn put_slot(
    State(a): State<Admin>,
    Path((name, slot)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<SlotStatus>> {
    let spec: SlotSpec = parse(&body)?;
    Ok(Json(a.core.put_slot(&name, &slot, spec).await?))
}

async fn delete_slot(
    State(a): State<Admin>,
    Path((name, slot)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let removed = a.core.delete_slot(&name, &slot).await?;
    Ok(Json(
        json!({ "service": name, "slot": slot, "removed": removed }),
    ))
}

async fn put_weights(
    State(a): State<Admin>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let spec: WeightsSpec = parse(&body)?;
    let weights = a.core.put_weights(&name, spec.weights)?;
    Ok(Json(json!({ "weights": weights })))
}

async fn post_job(
    State(a): State<Admin>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let spec: JobSpec = parse(&body)?;
    let outcome = a.core.run_job(&name, spec).await?;
    Ok(Json(json!(outcome)))
}

async fn get_stats(
    State(a): State<Admin>,
    Path(name): Path<String>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<Stats>> {
    let q = query(q, &["slot", "window"])?;
    let slot = q
        .get("slot")
        .ok_or_else(|| ApiError::bad_request("query parameter `slot` is required"))?;
    let window = number(&q, "window", 60, 1..=SPAN_SECONDS)?;
    Ok(Json(a.core.stats(&name, slot, window)?))
}

async fn get_logs(
    State(a): State<Admin>,
    Path((name, slot)): Path<(String, String)>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    checked("service", &name)?;
    checked("slot", &slot)?;
    let q = query(q, &["instance", "tail"])?;
    let instance = number(&q, "instance", 0, 0..=u64::from(crate::spec::MAX_REPLICAS))?;
    let tail = number(&q, "tail", 200, 0..=10_000)?;
    let text = a
        .core
        .log_tail(&name, &slot, instance as usize, tail as usize)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut request = http::Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn routes_need_the_token_but_healthz_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(Core::new(dir.path().to_owned()), "secret");
        let (status, body) = call(&app, "GET", "/v1/services/api", None, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "unauthorized");
        let (status, _) = call(&app, "GET", "/v1/services/api", Some("secreT"), "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = call(&app, "GET", "/nowhere", None, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = call(&app, "GET", "/healthz", None, "").await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("ok"))
        );
        let (status, body) = call(&app, "GET", "/v1/services/api", Some("secret"), "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["message"], "service `api` does not exist");
    }

    #[tokio::test]
    async fn bad_input_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(Core::new(dir.path().to_owned()), "t");
        let t = Some("t");
        let cases = [
            (
                "PUT",
                "/v1/services/api",
                r#"{"command":["x"],"helth_path":"/"}"#,
                "helth_path",
            ),
            (
                "PUT",
                "/v1/services/api",
                r#"{"command":"x"}"#,
                "command: invalid type",
            ),
            (
                "PUT",
                "/v1/services/api",
                "{",
                "request body is not valid JSON",
            ),
            ("PUT", "/v1/services/api", "1", "request body: invalid type"),
            (
                "PUT",
                "/v1/services/a%2Fb",
                r#"{"command":["x"]}"#,
                "service name `a/b`",
            ),
            (
                "PUT",
                "/v1/services/api",
                r#"{"command":[]}"#,
                "command: must name a program",
            ),
        ];
        for (method, uri, body, expected) in cases {
            let (status, reply) = call(&app, method, uri, t, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri} {body}: {reply}");
            let message = reply["error"]["message"].as_str().unwrap();
            assert!(message.contains(expected), "{message} lacks {expected}");
        }
        let (status, reply) = call(
            &app,
            "PUT",
            "/v1/services/api/slots/s",
            t,
            r#"{"release":"1","replicas":-1}"#,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("replicas:")
        );
        let (status, _) = call(&app, "DELETE", "/v1/services/api/weights", t, "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn token_comparison() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
