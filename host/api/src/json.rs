//! The JSON body extractor: a body that is not JSON, has an unknown field,
//! a missing one or a wrong type is a 4xx whose message names the field,
//! never a 500 or a bare "unprocessable".

use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A request body parsed as `T`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(not_json());
        }
        let bytes = body(req, state).await?;
        parse_object(&bytes).map(ApiJson)
    }
}

/// A request body parsed as `T`, or `T::default()` when there is none
/// (for actions whose body is optional).
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = is_json(&req);
        let bytes = body(req, state).await?;
        if bytes.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        if !is_json {
            return Err(not_json());
        }
        // `null` is no body, as the document says.
        if bytes.trim_ascii() == b"null" {
            return Ok(OptionalJson(T::default()));
        }
        parse_object(&bytes).map(OptionalJson)
    }
}

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

fn not_json() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "the body must be JSON, with `Content-Type: application/json`",
    )
}

/// The body, within the configured limit. Once it is read, the request's
/// [`BodyRead`] says so (a timeout before that is the client's, 408).
async fn body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let read = req.extensions().get::<BodyRead>().cloned();
    let bytes = Bytes::from_request(req, state).await;
    if let Some(read) = read {
        read.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    bytes.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the body is larger than this host accepts ([server.api] body_limit_bytes)",
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.body_text())
        }
    })
}

/// Set by the body extractors once the request's body has arrived.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyRead(pub(crate) std::sync::Arc<std::sync::atomic::AtomicBool>);

/// `bytes`, which must be a JSON object, as `T`. serde would also take an
/// array as a struct's fields by position: that is refused.
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        return Err(ApiError::unprocessable(
            "invalid_body",
            "the body must be a JSON object",
        ));
    }
    parse(bytes)
}

/// `bytes` as `T`, with an error that names the field and position.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de);
    // Trailing characters after the document.
    if let (Ok(_), Err(e)) = (&value, de.end()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {e}"),
        ));
    }
    value.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let position = format!("line {} column {}", inner.line(), inner.column());
        if inner.is_syntax() || inner.is_eof() {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {inner}"),
            )
        } else {
            // serde's message ends with its own position; keep the field.
            let message = inner.to_string();
            let message = message
                .strip_suffix(&format!(" at {position}"))
                .unwrap_or(&message);
            // An unknown field's path ends with the field, which the
            // message names already: point at the object holding it.
            let path = if message.starts_with("unknown field") {
                path.rsplit_once('.')
                    .map(|(p, _)| p.to_string())
                    .unwrap_or(".".into())
            } else {
                path
            };
            let message = if path == "." {
                message.to_string()
            } else {
                format!("`{path}`: {message}")
            };
            ApiError::unprocessable("invalid_body", message)
                .with_details(serde_json::json!({"field": path}))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Start {
        pipeline: String,
        stages: Option<Vec<String>>,
    }

    #[test]
    fn bad_bodies_name_what_is_wrong() {
        let e = parse::<Start>(b"{\"pipeline\": ").unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "malformed_json")
        );
        let e = parse::<Start>(br#"{"pipeline": "api", "stage": ["x"]}"#).unwrap_err();
        assert_eq!(e.code, "invalid_body");
        assert!(
            e.message.starts_with("unknown field `stage`, expected"),
            "{}",
            e.message
        );
        let e = parse::<Start>(br#"{"pipeline": "api", "stages": "x"}"#).unwrap_err();
        assert_eq!(
            e.message,
            "`stages`: invalid type: string \"x\", expected a sequence"
        );
        let e = parse::<Start>(br#"{}"#).unwrap_err();
        assert_eq!(e.message, "missing field `pipeline`");
        let e = parse::<Start>(br#"{"pipeline": "api"} x"#).unwrap_err();
        assert_eq!(e.code, "malformed_json");
        // The fields by position: valid for serde, not for this API.
        assert!(parse::<Start>(br#"["api", null]"#).is_ok());
        let e = parse_object::<Start>(br#" ["api", null]"#).unwrap_err();
        assert_eq!(
            (e.status, e.code, e.message.as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "the body must be a JSON object"
            )
        );
        assert_eq!(
            parse_object::<Start>(b"[").unwrap_err().code,
            "malformed_json"
        );
        assert!(parse_object::<Start>(br#" {"pipeline": "api"}"#).is_ok());
        assert!(parse::<Start>(br#"{"pipeline": "api"}"#).is_ok());
    }
}
