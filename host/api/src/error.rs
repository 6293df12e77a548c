//! One error model for every route: `{"error": {"code", "message",
//! "details"}}` with the matching status. Bad input is a 4xx naming what
//! was wrong; an internal failure is a 500 whose body says only that, with
//! an id to find the full message in the host's log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rollcage_engine::run::EngineError;
use rollcage_store::StoreError;
use serde_json::{Value, json};

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable (`unknown_pipeline`, `forbidden`...).
    pub code: &'static str,
    /// For people: what was wrong and, where it helps, what is allowed.
    pub message: String,
    pub details: Option<Value>,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds.max(1));
        self
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// A failure of the host itself. The cause goes to the log with an id;
    /// the client gets the id only.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        let mut id = [0u8; 6];
        let _ = getrandom::fill(&mut id);
        let id = hex::encode(id);
        tracing::error!(error_id = %id, "internal error: {cause}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error (id {id}); the host's log has the cause"),
        )
    }
}

/// Longest value (an id, a name, a path) an error message quotes whole.
pub(crate) const ECHO_CHARS: usize = 64;
/// Longest message and detail string an error answer carries: whatever
/// path a client's input took into one, it comes back short.
const MESSAGE_CHARS: usize = 512;
const DETAIL_CHARS: usize = 128;

/// `s` cut to `max` characters, saying how long it was.
pub(crate) fn clip_to(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((at, _)) => format!("{}… ({} bytes)", &s[..at], s.len()),
    }
}

/// A value from the request, as an error message quotes it.
pub(crate) fn clip(s: &str) -> String {
    clip_to(s, ECHO_CHARS)
}

fn clip_details(v: &mut Value) {
    match v {
        Value::String(s) => *s = clip_to(s, DETAIL_CHARS),
        Value::Array(items) => items.iter_mut().for_each(clip_details),
        Value::Object(map) => map.values_mut().for_each(clip_details),
        _ => {}
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error =
            json!({"code": self.code, "message": clip_to(&self.message, MESSAGE_CHARS)});
        if let Some(mut d) = self.details {
            clip_details(&mut d);
            error["details"] = d;
        }
        let mut r = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSuchRun(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "no_such_run",
                format!("no run `{}`", clip(&id)),
            ),
            // Host names and schema versions are the operator's business,
            // not the client's.
            StoreError::Database(_) | StoreError::Fenced { .. } | StoreError::TooNew { .. } => {
                ApiError::internal(e)
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = match &e {
            // Names that come from the request, quoted short.
            EngineError::UnknownPipeline(p) => format!("unknown pipeline `{}`", clip(p)),
            EngineError::InvalidRelease(r) => format!(
                "invalid release `{}`: use SemVer, MAJOR.MINOR.PATCH such as 1.4.0 (or 1.4.0-rc.1)",
                clip(r)
            ),
            EngineError::UnknownStage { pipeline, stage } => {
                format!("pipeline `{pipeline}` has no stage `{}`", clip(stage))
            }
            EngineError::DuplicateStage(s) => {
                format!("stage `{}` is listed twice in `stages`", clip(s))
            }
            EngineError::NotInRun { run, environment } => format!(
                "run `{run}` did not go through environment `{}`",
                clip(environment)
            ),
            e => e.to_string(),
        };
        match e {
            EngineError::UnknownPipeline(_) => ApiError::unprocessable("unknown_pipeline", message),
            EngineError::InvalidRelease(_) => ApiError::unprocessable("invalid_release", message),
            EngineError::UnknownStage { .. } => ApiError::unprocessable("unknown_stage", message),
            EngineError::NotInRun { .. } => ApiError::unprocessable("unknown_stage", message),
            EngineError::NoStages | EngineError::DuplicateStage(_) => {
                ApiError::unprocessable("invalid_stages", message)
            }
            EngineError::NotWaiting(_) => {
                ApiError::new(StatusCode::CONFLICT, "not_waiting", message)
            }
            EngineError::Finished(..) => ApiError::new(StatusCode::CONFLICT, "finished", message),
            EngineError::NotFinished(..) => {
                ApiError::new(StatusCode::CONFLICT, "not_finished", message)
            }
            EngineError::NothingToRetry(_) => {
                ApiError::new(StatusCode::CONFLICT, "succeeded", message)
            }
            EngineError::NoPreviousRelease { .. } => {
                ApiError::new(StatusCode::CONFLICT, "no_previous_release", message)
            }
            EngineError::SameApprover { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "same_approver", message)
            }
            EngineError::HeldElsewhere { .. } | EngineError::LeaseRunningOut { .. } => {
                ApiError::internal(e)
            }
            EngineError::Store(s) => s.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn errors_have_one_shape_and_internal_causes_stay_in_the_log() {
        let r = ApiError::from(StoreError::Database("disk I/O error at /var/db".into()))
            .into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "internal");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(!message.contains("/var/db"), "{message}");
        assert!(message.starts_with("internal error (id "), "{message}");

        let r = ApiError::from(EngineError::UnknownPipeline("ap".into()))
            .with_details(json!({"pipelines": ["api"]}))
            .into_response();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"error": {"code": "unknown_pipeline", "message": "unknown pipeline `ap`", "details": {"pipelines": ["api"]}}})
        );
    }
}
