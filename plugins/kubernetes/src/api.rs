//! A client of the Kubernetes API over `wasi:http`: bearer token, JSON,
//! 429 and 5xx retried inside the call (honouring `Retry-After`), and
//! errors read from the API's `Status` objects. A 401 or 403 names the
//! verb, resource and namespace, and the RBAC rule to add.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use rollcage_sdk::http::{Request, Response, redact};
use serde_json::Value;

use crate::config::Config;

/// What a request does, for messages and RBAC rules.
#[derive(Debug, Clone, Copy)]
pub struct Op<'a> {
    /// RBAC verb: get, list, create, update, patch, delete.
    pub verb: &'a str,
    /// API group ("" for the core group).
    pub group: &'a str,
    /// Resource plural, with a subresource: `pods/log`.
    pub resource: &'a str,
    /// Object name, when one.
    pub name: &'a str,
}

/// An answer the caller did not want, with what the API said.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    /// The `Status` reason: NotFound, AlreadyExists, Conflict, Invalid...
    pub reason: String,
    pub message: String,
}

pub struct Kube {
    pub config: Config,
    token: String,
}

/// The longest a `Retry-After` is waited for inside one call.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

impl Kube {
    pub fn new(config: Config) -> Result<Kube, String> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(format!("kubernetes provider: {}", problems.join("; ")));
        }
        let token = rollcage_sdk::secret(&config.token_secret)
            .map_err(|e| format!("kubernetes provider: token_secret: {e}"))?;
        Ok(Kube {
            config,
            token: token.trim().to_string(),
        })
    }

    pub fn ns(&self) -> &str {
        &self.config.namespace
    }

    /// `/api/v1/namespaces/{ns}/{resource}` or `/apis/{group}/v1/...`.
    pub fn path(&self, group: &str, resource: &str, name: Option<&str>) -> String {
        let base = if group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{group}/v1")
        };
        let mut p = format!("{base}/namespaces/{}/{resource}", self.ns());
        if let Some(n) = name {
            p.push('/');
            p.push_str(n);
        }
        p
    }

    /// Send one request; 429 and 5xx (and a connection that failed) are
    /// tried again, after `Retry-After` when the API gave one, until
    /// `attempts` are used. Returns the last answer, whatever its status.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Response, String> {
        let url = format!("{}{path}", self.config.api_url.trim_end_matches('/'));
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = Request::new(method, &url)
                .header("authorization", &format!("Bearer {}", self.token))
                .header("accept", "application/json")
                .header("user-agent", "rollcage")
                .timeout(timeout);
            if let Some(body) = body {
                request = request
                    .header("content-type", content_type.unwrap_or("application/json"))
                    .body(serde_json::to_vec(body).map_err(|e| e.to_string())?);
            }
            let last = attempt >= self.config.attempts || started.elapsed() > timeout * 3;
            match request.send() {
                Ok(r) if (r.status == 429 || r.status >= 500) && !last => {
                    let wait = r
                        .header("retry-after")
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .map(Duration::from_secs)
                        .unwrap_or(backoff)
                        .min(MAX_RETRY_AFTER);
                    rollcage_sdk::log::log(
                        rollcage_sdk::log::LogLevel::Warn,
                        &format!(
                            "{method} {path} answered {}; trying again in {} ms",
                            r.status,
                            wait.as_millis()
                        ),
                        &[],
                    );
                    std::thread::sleep(wait);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Ok(r) => return Ok(r),
                Err(e) if !last => {
                    rollcage_sdk::log::log(
                        rollcage_sdk::log::LogLevel::Warn,
                        &redact(
                            &format!("{method} {path} failed: {e}; trying again"),
                            &self.token,
                        ),
                        &[],
                    );
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    return Err(redact(
                        &format!(
                            "the Kubernetes API at {} could not be reached for {method} {path}: {e}",
                            self.config.api_url
                        ),
                        &self.token,
                    ));
                }
            }
        }
    }

    /// Send and insist on a 2xx answer; anything else is an [`ApiError`]
    /// (its message made by [`Kube::explain`]).
    pub fn call(
        &self,
        op: Op<'_>,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Result<Value, ApiError>, String> {
        let r = self.send(method, path, content_type, body)?;
        if r.is_success() {
            let v = if r.body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&r.body)
                    .map_err(|e| format!("{method} {path}: the answer is not JSON: {e}"))?
            };
            return Ok(Ok(v));
        }
        Ok(Err(self.api_error(op, method, path, &r)))
    }

    /// Like [`Kube::call`], every error made a message.
    pub fn must(
        &self,
        op: Op<'_>,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        self.call(op, method, path, content_type, body)?
            .map_err(|e| e.message)
    }

    fn api_error(&self, op: Op<'_>, method: &str, path: &str, r: &Response) -> ApiError {
        let status: Option<Status> = serde_json::from_slice(&r.body).ok();
        let reason = status
            .as_ref()
            .and_then(|s| s.reason.clone())
            .unwrap_or_default();
        let said = status
            .as_ref()
            .and_then(|s| s.message.clone())
            .unwrap_or_else(|| r.text().chars().take(300).collect());
        let message = match r.status {
            401 => format!(
                "the Kubernetes API refused the token (401 Unauthorized) for {} {} in namespace `{}`: check the secret `{}` holds a valid token (kubectl create token ...)",
                op.verb,
                op.resource,
                self.ns(),
                self.config.token_secret
            ),
            403 => format!(
                "the token may not {} {} in namespace `{}` (403 Forbidden: {said}); add this rule to the Role bound to it: {}",
                op.verb,
                op.resource,
                self.ns(),
                rbac_rule(op.group, op.resource, op.verb)
            ),
            code => format!("{method} {path} answered {code} {reason}: {said}"),
        };
        ApiError {
            status: r.status,
            reason,
            message: redact(&message, &self.token),
        }
    }
}

/// An RBAC rule as a Role lists it.
pub fn rbac_rule(group: &str, resource: &str, verb: &str) -> String {
    format!("{{apiGroups: [\"{group}\"], resources: [\"{resource}\"], verbs: [\"{verb}\"]}}")
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
