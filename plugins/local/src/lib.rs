//! `builtin:local`: drives Rollcage's embedded local runtime (a process
//! supervisor with a weighted router in front) through its loopback admin
//! API, exactly as a Kubernetes provider drives a cluster's API.
//!
//! The runtime knows a service as `{environment}-{service}`, so the staging
//! and production of one service are separate services with separate fronts.
//! Every call states desired state (`PUT`), so repeating one is harmless.
//! Error messages carry the HTTP status and the runtime's message, never the
//! token.

use std::time::Duration;

use rollcage_sdk::EnvironmentProvider;
use rollcage_sdk::http::{Request, Response, encode, redact};
use rollcage_sdk::types::{
    EnvironmentStatus, Job, JobResult, Problem, RouteWeight, SlotSpec, SlotStatus, Target,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The plugin's `config` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The runtime's admin API, for example `http://127.0.0.1:43121`.
    pub admin_url: String,
    /// The admin API's bearer token (the host fills it from a secret).
    pub token: String,
    /// Time allowed per call (default 10000). A job gets its own timeout on top.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_timeout() -> u64 {
    10_000
}

impl Config {
    /// Problems with the configuration itself.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.admin_url.starts_with("http://") || self.admin_url.starts_with("https://")) {
            problems.push(format!(
                "admin_url `{}` must be an http:// URL, such as http://127.0.0.1:43121",
                self.admin_url
            ));
        }
        if self.token.trim().is_empty() {
            problems.push(
                "token is empty: fill it from a secret, token = \"${secret:NAME}\", and grant NAME"
                    .into(),
            );
        }
        if self.timeout_ms == 0 {
            problems.push("timeout_ms must be above 0".into());
        }
        problems
    }
}

/// The runtime's name for the target's service: `{environment}-{service}`.
pub fn service_name(target: &Target) -> String {
    format!("{}-{}", target.environment, target.service)
}

/// `/v1/services/{service}`.
pub fn service_path(service: &str) -> String {
    format!("/v1/services/{}", encode(service))
}

/// `/v1/services/{service}/slots/{slot}`.
pub fn slot_path(service: &str, slot: &str) -> String {
    format!("{}/slots/{}", service_path(service), encode(slot))
}

/// `/v1/services/{service}/weights`.
pub fn weights_path(service: &str) -> String {
    format!("{}/weights", service_path(service))
}

/// `/v1/services/{service}/jobs`.
pub fn jobs_path(service: &str) -> String {
    format!("{}/jobs", service_path(service))
}

/// The full URL of an admin API path.
pub fn url(admin_url: &str, path: &str) -> String {
    format!("{}{path}", admin_url.trim_end_matches('/'))
}

/// The service definition to `PUT`: the pipeline's `service` table, once
/// it is known to have a command. Its `name` is the host's (the service is
/// named in the path), so it is not passed on.
pub fn service_definition(target: &Target) -> Result<Value, String> {
    let spec = target.service_spec.trim();
    let spec: Value = if spec.is_empty() {
        json!({})
    } else {
        serde_json::from_str(spec).map_err(|e| {
            format!(
                "the service definition of `{}` is not JSON: {e}",
                target.service
            )
        })?
    };
    let mut spec = spec;
    let Some(map) = spec.as_object_mut() else {
        return Err(format!(
            "the service definition of `{}` must be a table, not {spec}",
            target.service
        ));
    };
    map.remove("name");
    if !map.contains_key("command") {
        return Err(format!(
            "the local runtime needs a command to start `{}`: give its pipeline \
             `service = {{ command = [\"./{}\", \"--port\", \"{{port}}\"] }}` \
             (`{{port}}`, `{{release}}`, `{{slot}}`, `{{instance}}` and `{{service}}` are filled in per instance)",
            target.service, target.service
        ));
    }
    Ok(spec)
}

/// The fields of the local runtime's service definition.
const SERVICE_FIELDS: [&str; 5] = ["command", "env", "workdir", "health_path", "sticky_header"];

/// Every problem of a service definition the runtime would refuse, as
/// (dotted field path, message), before a run hands it over: `config
/// check` points at each field's line. The runtime checks again (what
/// only it can, such as whether `workdir` exists).
pub fn service_problems(spec: &Value) -> Vec<(String, String)> {
    let mut p = Vec::new();
    let Some(map) = spec.as_object() else {
        return vec![(String::new(), format!("must be a table, not {spec}"))];
    };
    for key in map.keys() {
        if key != "name" && !SERVICE_FIELDS.contains(&key.as_str()) {
            p.push((
                key.clone(),
                format!(
                    "is not a field of a local service; expected one of {}",
                    SERVICE_FIELDS.join(", ")
                ),
            ));
        }
    }
    match map.get("command") {
        None => p.push((
            String::new(),
            "`command` is missing: the local runtime needs one to start the service, \
             such as command = [\"./api\", \"--port\", \"{port}\"]"
                .into(),
        )),
        Some(Value::Array(args)) if args.is_empty() => {
            p.push(("command".into(), "must name a program".into()));
        }
        Some(Value::Array(args)) => {
            for (i, a) in args.iter().enumerate() {
                match a.as_str() {
                    Some(a) if i == 0 && a.trim().is_empty() => {
                        p.push(("command[0]".into(), "must name a program".into()));
                    }
                    Some(a) if a.contains('\0') => {
                        p.push((
                            format!("command[{i}]"),
                            "must not contain a NUL character".into(),
                        ));
                    }
                    Some(_) => {}
                    None => p.push((
                        format!("command[{i}]"),
                        format!("must be a string, not {a}"),
                    )),
                }
            }
        }
        Some(other) => p.push((
            "command".into(),
            format!("must be a list of strings, not {other}"),
        )),
    }
    match map.get("env") {
        None => {}
        Some(Value::Object(env)) => {
            for (k, v) in env {
                if k.is_empty() || k.contains(['=', '\0']) {
                    p.push((format!("env.{k}"), "is not a valid variable name".into()));
                } else if !v.is_string() {
                    p.push((format!("env.{k}"), format!("must be a string, not {v}")));
                }
            }
        }
        Some(other) => p.push((
            "env".into(),
            format!("must be a table of strings, not {other}"),
        )),
    }
    for key in ["workdir", "sticky_header"] {
        if let Some(v) = map.get(key).filter(|v| !v.is_string()) {
            p.push((key.into(), format!("must be a string, not {v}")));
        }
    }
    if let Some(h) = map.get("sticky_header").and_then(Value::as_str)
        && (h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)))
    {
        p.push((
            "sticky_header".into(),
            format!("`{h}` is not a valid header name"),
        ));
    }
    match map.get("health_path") {
        None => {}
        Some(Value::String(path)) if path.starts_with('/') => {}
        Some(v) => p.push((
            "health_path".into(),
            format!("{v} must be a path starting with `/`"),
        )),
    }
    p
}

/// The body of `PUT .../slots/{slot}`.
pub fn slot_body(spec: &SlotSpec) -> Value {
    json!({ "release": spec.release.version, "replicas": spec.replicas })
}

/// The body of `PUT .../weights`.
pub fn weights_body(weights: &[RouteWeight]) -> Value {
    let weights: Vec<Value> = weights
        .iter()
        .map(|w| json!({ "slot": w.slot, "weight": w.weight }))
        .collect();
    json!({ "weights": weights })
}

/// The job environment variable that names the release a job runs.
pub const RELEASE_VAR: &str = "ROLLCAGE_RELEASE";

/// The body of `POST .../jobs`; `release` comes from the job's
/// `ROLLCAGE_RELEASE` variable and is left out without it.
pub fn job_body(job: &Job) -> Value {
    let env: Map<String, Value> = job
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut body = json!({
        "name": job.name,
        "command": job.command,
        "env": env,
        "timeout_ms": job.timeout_ms,
    });
    if let Some((_, release)) = job.env.iter().rev().find(|(k, _)| k == RELEASE_VAR) {
        body["release"] = Value::String(release.clone());
    }
    body
}

#[derive(Deserialize)]
struct ServiceJson {
    #[serde(default)]
    slots: Vec<SlotJson>,
    #[serde(default)]
    weights: Vec<WeightJson>,
}

#[derive(Deserialize)]
struct SlotJson {
    name: String,
    #[serde(default)]
    release: Option<String>,
    #[serde(default)]
    desired: u32,
    #[serde(default)]
    ready: u32,
    #[serde(default)]
    endpoints: Vec<String>,
}

#[derive(Deserialize)]
struct WeightJson {
    slot: String,
    weight: u32,
}

/// Map the body of `GET /v1/services/{name}` to an environment status.
pub fn parse_status(body: &[u8]) -> Result<EnvironmentStatus, String> {
    let service: ServiceJson = serde_json::from_slice(body)
        .map_err(|e| format!("the local runtime's service status is not what was expected: {e}"))?;
    Ok(EnvironmentStatus {
        slots: service
            .slots
            .into_iter()
            .map(|s| SlotStatus {
                name: s.name,
                release: s.release.unwrap_or_default(),
                desired: s.desired,
                ready: s.ready,
                endpoints: s.endpoints,
            })
            .collect(),
        weights: service
            .weights
            .into_iter()
            .map(|w| RouteWeight {
                slot: w.slot,
                weight: w.weight,
            })
            .collect(),
    })
}

#[derive(Deserialize)]
struct JobResultJson {
    exit_code: i32,
    #[serde(default)]
    output: String,
}

/// Map the body of `POST .../jobs` to a job result.
pub fn parse_job_result(body: &[u8]) -> Result<JobResult, String> {
    let result: JobResultJson = serde_json::from_slice(body)
        .map_err(|e| format!("the local runtime's job result is not what was expected: {e}"))?;
    Ok(JobResult {
        exit_code: result.exit_code,
        output: result.output,
    })
}

/// The message for a refused call: the HTTP status and the runtime's error
/// (`{"error":{"code","message"}}`), or the start of the body when it is not
/// that shape.
pub fn error_text(method: &str, path: &str, status: u16, body: &[u8]) -> String {
    let reason = rollcage_sdk::http::error_reason(body);
    format!("the local runtime answered {status} to {method} {path}: {reason}")
}

/// A client of the admin API.
struct Admin {
    config: Config,
}

impl Admin {
    fn new() -> Result<Admin, String> {
        let config: Config = rollcage_sdk::config()?;
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(format!("local provider: {}", problems.join("; ")));
        }
        Ok(Admin { config })
    }

    /// Send a call and return the response, whatever its status.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Response, String> {
        let mut request = Request::new(method, &url(&self.config.admin_url, path))
            .header("authorization", &format!("Bearer {}", self.config.token))
            .header("accept", "application/json")
            .timeout(timeout);
        if let Some(body) = body {
            request = request.json(body).map_err(|e| e.to_string())?;
        }
        request.send().map_err(|e| {
            redact(
                &format!("the local runtime could not be reached for {method} {path}: {e}"),
                &self.config.token,
            )
        })
    }

    /// Send a call that must succeed.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Response, String> {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let response = self.send(method, path, body, timeout)?;
        self.check(method, path, response)
    }

    fn check(&self, method: &str, path: &str, response: Response) -> Result<Response, String> {
        if response.is_success() {
            Ok(response)
        } else {
            Err(redact(
                &error_text(method, path, response.status, &response.body),
                &self.config.token,
            ))
        }
    }
}

/// The provider.
pub struct Local;

impl EnvironmentProvider for Local {
    fn validate(service_spec: String) -> Result<(), Vec<Problem>> {
        let spec: Value = match service_spec.trim() {
            "" => json!({}),
            text => serde_json::from_str(text).map_err(|e| {
                vec![Problem {
                    field: String::new(),
                    message: format!("is not JSON: {e}"),
                }]
            })?,
        };
        let found = service_problems(&spec);
        if found.is_empty() {
            return Ok(());
        }
        Err(found
            .into_iter()
            .map(|(field, message)| Problem { field, message })
            .collect())
    }

    fn prepare(target: Target) -> Result<(), String> {
        let definition = service_definition(&target)?;
        let admin = Admin::new()?;
        let name = service_name(&target);
        let response = admin.call("PUT", &service_path(&name), Some(&definition))?;
        let front = serde_json::from_slice::<Value>(&response.body)
            .ok()
            .and_then(|v| v.get("front").and_then(Value::as_str).map(String::from));
        if let Some(front) = front {
            rollcage_sdk::log::log(
                rollcage_sdk::log::LogLevel::Info,
                &format!("service `{name}` answers on {front}"),
                &[("service", &name), ("front", &front)],
            );
        }
        Ok(())
    }

    fn apply_slot(target: Target, spec: SlotSpec) -> Result<(), String> {
        let admin = Admin::new()?;
        let name = service_name(&target);
        admin.call(
            "PUT",
            &slot_path(&name, &spec.name),
            Some(&slot_body(&spec)),
        )?;
        Ok(())
    }

    fn route(target: Target, weights: Vec<RouteWeight>) -> Result<(), String> {
        let admin = Admin::new()?;
        let name = service_name(&target);
        admin.call("PUT", &weights_path(&name), Some(&weights_body(&weights)))?;
        Ok(())
    }

    fn status(target: Target) -> Result<EnvironmentStatus, String> {
        let admin = Admin::new()?;
        let path = service_path(&service_name(&target));
        let timeout = Duration::from_millis(admin.config.timeout_ms);
        let response = admin.send("GET", &path, None, timeout)?;
        // A service the runtime does not know yet has nothing running.
        if response.status == 404 {
            return Ok(EnvironmentStatus {
                slots: vec![],
                weights: vec![],
            });
        }
        let response = admin.check("GET", &path, response)?;
        parse_status(&response.body)
    }

    fn remove_slot(target: Target, slot: String) -> Result<(), String> {
        let admin = Admin::new()?;
        let name = service_name(&target);
        admin.call("DELETE", &slot_path(&name, &slot), None)?;
        Ok(())
    }

    fn run_job(target: Target, job: Job) -> Result<JobResult, String> {
        let admin = Admin::new()?;
        let path = jobs_path(&service_name(&target));
        // The answer comes when the job ends: wait for the job's own time too.
        let timeout = Duration::from_millis(admin.config.timeout_ms.saturating_add(job.timeout_ms));
        let response = admin.send("POST", &path, Some(&job_body(&job)), timeout)?;
        let response = admin.check("POST", &path, response)?;
        parse_job_result(&response.body)
    }
}

rollcage_sdk::export_environment_provider!(Local);

#[cfg(test)]
mod tests {
    use super::*;
    use rollcage_sdk::types::Release;

    fn target(spec: &str) -> Target {
        Target {
            environment: "staging".into(),
            service: "api".into(),
            service_spec: spec.into(),
        }
    }

    #[test]
    fn service_problems_name_their_fields() {
        let fields = |spec: Value| -> Vec<String> {
            service_problems(&spec)
                .into_iter()
                .map(|(f, _)| f)
                .collect()
        };
        assert!(fields(json!({"name": "api", "command": ["./api", "{port}"]})).is_empty());
        assert_eq!(
            fields(json!({
                "command": ["", 3], "env": {"A=B": "x", "N": 1},
                "health_path": "healthz", "sticky_header": "x y", "port": 80
            })),
            [
                "port",
                "command[0]",
                "command[1]",
                "env.A=B",
                "env.N",
                "sticky_header",
                "health_path"
            ]
        );
        let missing = service_problems(&json!({"env": {}}));
        assert_eq!(missing.len(), 1);
        assert!(missing[0].1.contains("`command` is missing"), "{missing:?}");
        assert_eq!(fields(json!({"command": "./api"})), ["command"]);
    }

    #[test]
    fn config_defaults_and_refuses_unknown_keys() {
        let c: Config = serde_json::from_value(
            json!({"admin_url": "http://127.0.0.1:43121", "token": "s3cret"}),
        )
        .unwrap();
        assert_eq!(c.timeout_ms, 10_000);
        assert!(c.problems().is_empty());
        let typo = serde_json::from_value::<Config>(
            json!({"admin_url": "http://127.0.0.1:1", "token": "t", "timeout": 5}),
        );
        assert!(
            typo.unwrap_err()
                .to_string()
                .contains("unknown field `timeout`")
        );
        let bad: Config = serde_json::from_value(
            json!({"admin_url": "127.0.0.1:1", "token": " ", "timeout_ms": 0}),
        )
        .unwrap();
        let problems = bad.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("admin_url `127.0.0.1:1`"));
        assert!(problems[1].contains("token is empty"));
    }

    #[test]
    fn urls_are_built_per_environment_and_encoded() {
        let name = service_name(&target("{}"));
        assert_eq!(name, "staging-api");
        assert_eq!(service_path(&name), "/v1/services/staging-api");
        assert_eq!(
            slot_path(&name, "canary"),
            "/v1/services/staging-api/slots/canary"
        );
        assert_eq!(weights_path(&name), "/v1/services/staging-api/weights");
        assert_eq!(jobs_path(&name), "/v1/services/staging-api/jobs");
        assert_eq!(slot_path("a b", "x/y"), "/v1/services/a%20b/slots/x%2Fy");
        assert_eq!(
            url("http://127.0.0.1:43121/", "/v1/services/x"),
            "http://127.0.0.1:43121/v1/services/x"
        );
        assert_eq!(
            url("http://127.0.0.1:43121", "/v1/services/x"),
            "http://127.0.0.1:43121/v1/services/x"
        );
    }

    #[test]
    fn the_service_definition_passes_through_and_needs_a_command() {
        let spec = r#"{"name":"api","command":["./api","--port","{port}"],"env":{"A":"1"},"health_path":"/healthz"}"#;
        assert_eq!(
            service_definition(&target(spec)).unwrap(),
            json!({"command": ["./api", "--port", "{port}"], "env": {"A": "1"}, "health_path": "/healthz"})
        );
        for empty in ["", "{}", r#"{"name":"api"}"#] {
            let e = service_definition(&target(empty)).unwrap_err();
            assert!(e.contains("needs a command to start `api`"), "{e}");
            assert!(
                e.contains(r#"service = { command = ["./api", "--port", "{port}"] }"#),
                "{e}"
            );
        }
        assert!(
            service_definition(&target("[1]"))
                .unwrap_err()
                .contains("must be a table")
        );
        assert!(
            service_definition(&target("{"))
                .unwrap_err()
                .contains("not JSON")
        );
    }

    #[test]
    fn bodies_follow_the_admin_api() {
        let spec = SlotSpec {
            name: "canary".into(),
            release: Release {
                version: "1.2.0".into(),
                notes: None,
                params: vec![],
            },
            replicas: 2,
        };
        assert_eq!(slot_body(&spec), json!({"release": "1.2.0", "replicas": 2}));
        let weights = [
            RouteWeight {
                slot: "stable".into(),
                weight: 90,
            },
            RouteWeight {
                slot: "canary".into(),
                weight: 10,
            },
        ];
        assert_eq!(
            weights_body(&weights),
            json!({"weights": [{"slot": "stable", "weight": 90}, {"slot": "canary", "weight": 10}]})
        );
        let mut job = Job {
            name: "migrate".into(),
            command: vec!["./api".into(), "migrate".into()],
            env: vec![("DB".into(), "x".into())],
            timeout_ms: 60_000,
        };
        assert_eq!(
            job_body(&job),
            json!({"name": "migrate", "command": ["./api", "migrate"], "env": {"DB": "x"}, "timeout_ms": 60000})
        );
        job.env.push((RELEASE_VAR.into(), "1.2.0".into()));
        let body = job_body(&job);
        assert_eq!(body["release"], "1.2.0");
        assert_eq!(body["env"]["ROLLCAGE_RELEASE"], "1.2.0");
    }

    #[test]
    fn status_maps_slots_and_weights() {
        let body = json!({
            "name": "staging-api",
            "front": "127.0.0.1:40001",
            "slots": [
                {"name": "stable", "release": "1.1.0", "desired": 2, "ready": 2,
                 "endpoints": ["127.0.0.1:40010", "127.0.0.1:40011"], "restarts": 0},
                {"name": "canary", "release": "1.2.0", "desired": 1, "ready": 0,
                 "endpoints": [], "restarts": 3}
            ],
            "weights": [{"slot": "stable", "weight": 100}]
        });
        let status = parse_status(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            status,
            EnvironmentStatus {
                slots: vec![
                    SlotStatus {
                        name: "stable".into(),
                        release: "1.1.0".into(),
                        desired: 2,
                        ready: 2,
                        endpoints: vec!["127.0.0.1:40010".into(), "127.0.0.1:40011".into()],
                    },
                    SlotStatus {
                        name: "canary".into(),
                        release: "1.2.0".into(),
                        desired: 1,
                        ready: 0,
                        endpoints: vec![],
                    },
                ],
                weights: vec![RouteWeight {
                    slot: "stable".into(),
                    weight: 100,
                }],
            }
        );
        let empty = parse_status(br#"{"name":"x","front":"127.0.0.1:1"}"#).unwrap();
        assert!(empty.slots.is_empty() && empty.weights.is_empty());
        assert!(
            parse_status(b"<html>")
                .unwrap_err()
                .contains("not what was expected")
        );
    }

    #[test]
    fn job_results_map() {
        assert_eq!(
            parse_job_result(br#"{"exit_code": 3, "output": "no table"}"#).unwrap(),
            JobResult {
                exit_code: 3,
                output: "no table".into()
            }
        );
        assert!(parse_job_result(b"{}").is_err());
    }

    #[test]
    fn errors_carry_status_and_message_but_not_the_token() {
        let body =
            br#"{"error":{"code":"invalid_weights","message":"weights sum to 90, not 100"}}"#;
        assert_eq!(
            error_text("PUT", "/v1/services/staging-api/weights", 400, body),
            "the local runtime answered 400 to PUT /v1/services/staging-api/weights: weights sum to 90, not 100 (invalid_weights)"
        );
        assert_eq!(
            error_text("GET", "/v1/services/x", 401, b""),
            "the local runtime answered 401 to GET /v1/services/x: no error message"
        );
        assert_eq!(
            error_text("GET", "/v1/services/x", 502, b"bad gateway\n"),
            "the local runtime answered 502 to GET /v1/services/x: bad gateway"
        );
        assert_eq!(
            redact("header Bearer s3cret refused", "s3cret"),
            "header Bearer <redacted> refused"
        );
        assert_eq!(redact("nothing", ""), "nothing");
    }
}
