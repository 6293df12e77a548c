//! What callers ask for: service definitions, slot specs, weights and jobs
//! as the admin API receives them (and `state.json` records them), their
//! validation, and the `{placeholder}` substitution of commands and
//! environments. Validation messages name the offending field, because they
//! go back to whoever wrote the configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The most replicas one slot may ask for; a guard against a typo starting
/// thousands of processes on a developer's machine.
pub const MAX_REPLICAS: u32 = 64;

/// How long a job may run when its request names no timeout.
pub const DEFAULT_JOB_TIMEOUT_MS: u64 = 60_000;

/// How a service's instances are started and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    /// Program and arguments; placeholders are filled in per instance.
    pub command: Vec<String>,
    /// Added to the host's environment; values take placeholders.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory of instances and jobs (the host's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<PathBuf>,
    /// Readiness is a 2xx answer to `GET` on this path.
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// A request header whose value pins a client to one slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_header: Option<String>,
}

fn default_health_path() -> String {
    "/healthz".to_owned()
}

/// A command names a program and carries no NUL (which `exec` cannot).
fn check_command(command: &[String]) -> Result<(), String> {
    match command.first() {
        None => return Err("command: must name a program".into()),
        Some(p) if p.trim().is_empty() => return Err("command[0]: must name a program".into()),
        Some(_) => {}
    }
    if let Some(i) = command.iter().position(|a| a.contains('\0')) {
        return Err(format!("command[{i}]: must not contain a NUL character"));
    }
    Ok(())
}

impl ServiceDef {
    pub fn validate(&self) -> Result<(), String> {
        check_command(&self.command)?;
        check_env(&self.env)?;
        if let Some(dir) = &self.workdir
            && !dir.is_dir()
        {
            return Err(format!("workdir: `{}` is not a directory", dir.display()));
        }
        if !self.health_path.starts_with('/') || self.health_path.parse::<http::Uri>().is_err() {
            return Err(format!(
                "health_path: `{}` must be a path starting with `/`",
                self.health_path
            ));
        }
        if let Some(h) = &self.sticky_header
            && http::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            return Err(format!("sticky_header: `{h}` is not a valid header name"));
        }
        Ok(())
    }
}

/// The desired state of one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotSpec {
    pub release: String,
    pub replicas: u32,
}

impl SlotSpec {
    pub fn validate(&self) -> Result<(), String> {
        if self.release.trim().is_empty() {
            return Err("release: must not be empty".into());
        }
        if self.release.len() > 128 || self.release.chars().any(char::is_control) {
            return Err("release: must be at most 128 printable characters".into());
        }
        if self.replicas > MAX_REPLICAS {
            return Err(format!(
                "replicas: at most {MAX_REPLICAS}, not {}",
                self.replicas
            ));
        }
        Ok(())
    }
}

/// One slot's share of a service's traffic, in percent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightEntry {
    pub slot: String,
    pub weight: u32,
}

/// The body of `PUT .../weights`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsSpec {
    pub weights: Vec<WeightEntry>,
}

/// Check weights against the slots that exist: each names an existing slot
/// once, and together they make 100.
pub fn check_weights(
    weights: &[WeightEntry],
    slot_exists: impl Fn(&str) -> bool,
) -> Result<(), String> {
    if weights.is_empty() {
        return Err("weights: must name at least one slot".into());
    }
    for (i, w) in weights.iter().enumerate() {
        if !slot_exists(&w.slot) {
            return Err(format!("weights[{i}].slot: there is no slot `{}`", w.slot));
        }
        if weights[..i].iter().any(|other| other.slot == w.slot) {
            return Err(format!("weights[{i}].slot: `{}` is listed twice", w.slot));
        }
        if w.weight > 100 {
            return Err(format!(
                "weights[{i}].weight: at most 100, not {}",
                w.weight
            ));
        }
    }
    let sum: u32 = weights.iter().map(|w| w.weight).sum();
    if sum != 100 {
        return Err(format!("weights: sum to {sum}, not 100"));
    }
    Ok(())
}

/// A command run to completion beside a service (a migration, say).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub release: Option<String>,
}

/// A job's command and environment with placeholders filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedJob {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout_ms: u64,
}

impl JobSpec {
    pub fn prepare(&self, service: &str) -> Result<PreparedJob, String> {
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return Err("name: must be 1 to 128 characters".into());
        }
        check_command(&self.command)?;
        check_env(&self.env)?;
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_JOB_TIMEOUT_MS);
        if !(1..=3_600_000).contains(&timeout_ms) {
            return Err(format!(
                "timeout_ms: between 1 and 3600000, not {timeout_ms}"
            ));
        }
        let vars = Vars {
            service,
            release: self.release.as_deref(),
            slot: None,
            instance: None,
            port: None,
        };
        let explain = |field: String, name: &str| {
            if name == "release" {
                format!("{field}: uses `{{release}}`, so the job needs a `release`")
            } else {
                format!("{field}: `{{{name}}}` belongs to a slot's instances, not to a job")
            }
        };
        let command = self
            .command
            .iter()
            .enumerate()
            .map(|(i, a)| substitute(a, &vars).map_err(|n| explain(format!("command[{i}]"), n)))
            .collect::<Result<_, _>>()?;
        let env = self
            .env
            .iter()
            .map(|(k, v)| {
                let v = substitute(v, &vars).map_err(|n| explain(format!("env.{k}"), n))?;
                Ok((k.clone(), v))
            })
            .collect::<Result<_, String>>()?;
        Ok(PreparedJob {
            command,
            env,
            timeout_ms,
        })
    }
}

fn check_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(format!("env: `{k}` is not a valid variable name"));
        }
        if v.contains('\0') {
            return Err(format!("env.{k}: must not contain a NUL character"));
        }
    }
    Ok(())
}

/// Service, slot and job names end up in file names (logs) and URLs, so
/// they are kept to a portable alphabet.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{kind} name `{name}`: use 1 to 63 letters, digits, `-`, `_` or `.`, not starting with `.`"
        ))
    }
}

/// The values placeholders stand for; `None` where the context has none
/// (a job has no port).
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    pub service: &'a str,
    pub release: Option<&'a str>,
    pub slot: Option<&'a str>,
    pub instance: Option<usize>,
    pub port: Option<u16>,
}

/// Fill in `{port}`, `{release}`, `{slot}`, `{instance}` and `{service}` in
/// one pass, so a value that itself contains braces is never expanded again.
/// Other braces are left alone (commands may carry JSON). The error is the
/// name of a placeholder the context has no value for.
pub fn substitute(template: &str, vars: &Vars<'_>) -> Result<String, &'static str> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let found = ["port", "release", "slot", "instance", "service"]
            .into_iter()
            .find(|name| after.starts_with(name) && after[name.len()..].starts_with('}'));
        match found {
            Some(name) => {
                let value = match name {
                    "port" => vars.port.map(|p| p.to_string()),
                    "release" => vars.release.map(str::to_owned),
                    "slot" => vars.slot.map(str::to_owned),
                    "instance" => vars.instance.map(|i| i.to_string()),
                    _ => Some(vars.service.to_owned()),
                };
                out.push_str(&value.ok_or(name)?);
                rest = &after[name.len() + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vars<'static> {
        Vars {
            service: "api",
            release: Some("1.2.0"),
            slot: Some("canary"),
            instance: Some(1),
            port: Some(4000),
        }
    }

    #[test]
    fn substitutes_every_placeholder_once() {
        assert_eq!(
            substitute("{service}-{slot}-{instance}@{release}:{port}", &all()).unwrap(),
            "api-canary-1@1.2.0:4000"
        );
        let tricky = Vars {
            release: Some("{port}"),
            ..all()
        };
        assert_eq!(substitute("v={release}", &tricky).unwrap(), "v={port}");
        assert_eq!(
            substitute(r#"{"a":1} {portx} {"#, &all()).unwrap(),
            r#"{"a":1} {portx} {"#
        );
        let job = Vars {
            port: None,
            ..all()
        };
        assert_eq!(substitute("--port={port}", &job), Err("port"));
    }

    #[test]
    fn service_definitions_default_and_refuse_unknown_fields() {
        let def: ServiceDef = serde_json::from_str(r#"{"command":["srv","{port}"]}"#).unwrap();
        assert_eq!(def.health_path, "/healthz");
        assert!(def.validate().is_ok());
        let err = serde_json::from_str::<ServiceDef>(r#"{"command":["x"],"helth":"/"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `helth`"), "{err}");
        let bad = |json: &str| {
            serde_json::from_str::<ServiceDef>(json)
                .unwrap()
                .validate()
                .unwrap_err()
        };
        assert_eq!(bad(r#"{"command":[]}"#), "command: must name a program");
        assert!(bad(r#"{"command":["x"],"health_path":"healthz"}"#).starts_with("health_path:"));
        assert!(bad(r#"{"command":["x"],"sticky_header":"a b"}"#).starts_with("sticky_header:"));
        assert!(bad(r#"{"command":["x"],"workdir":"/nonexistent/dir"}"#).starts_with("workdir:"));
        assert!(bad(r#"{"command":["x"],"env":{"A=B":"1"}}"#).starts_with("env:"));
    }

    #[test]
    fn slot_specs_are_bounded() {
        let spec = |release: &str, replicas| SlotSpec {
            release: release.into(),
            replicas,
        };
        assert!(spec("1.0.0", 0).validate().is_ok());
        assert!(spec(" ", 1).validate().unwrap_err().starts_with("release:"));
        assert!(
            spec("1", 65)
                .validate()
                .unwrap_err()
                .starts_with("replicas:")
        );
    }

    #[test]
    fn weights_name_existing_slots_once_and_sum_to_100() {
        let w = |pairs: &[(&str, u32)]| {
            pairs
                .iter()
                .map(|(s, w)| WeightEntry {
                    slot: (*s).into(),
                    weight: *w,
                })
                .collect::<Vec<_>>()
        };
        let exists = |s: &str| s == "stable" || s == "canary";
        assert!(check_weights(&w(&[("stable", 90), ("canary", 10)]), exists).is_ok());
        assert!(check_weights(&w(&[("stable", 100), ("canary", 0)]), exists).is_ok());
        assert_eq!(
            check_weights(&w(&[("stable", 90)]), exists).unwrap_err(),
            "weights: sum to 90, not 100"
        );
        assert_eq!(
            check_weights(&w(&[("stable", 50), ("blue", 50)]), exists).unwrap_err(),
            "weights[1].slot: there is no slot `blue`"
        );
        assert!(check_weights(&w(&[("stable", 50), ("stable", 50)]), exists).is_err());
        assert!(check_weights(&[], exists).is_err());
    }

    #[test]
    fn jobs_fill_in_what_they_have_and_name_what_they_lack() {
        let job: JobSpec = serde_json::from_str(
            r#"{"name":"migrate","command":["mig","--to","{release}"],"env":{"S":"{service}"},"release":"2.0"}"#,
        )
        .unwrap();
        let prepared = job.prepare("api").unwrap();
        assert_eq!(prepared.command, ["mig", "--to", "2.0"]);
        assert_eq!(prepared.env["S"], "api");
        assert_eq!(prepared.timeout_ms, DEFAULT_JOB_TIMEOUT_MS);
        let no_release = JobSpec {
            release: None,
            ..job.clone()
        };
        assert_eq!(
            no_release.prepare("api").unwrap_err(),
            "command[2]: uses `{release}`, so the job needs a `release`"
        );
        let port = JobSpec {
            command: vec!["x".into(), "{port}".into()],
            ..job
        };
        assert!(
            port.prepare("api")
                .unwrap_err()
                .starts_with("command[1]: `{port}`")
        );
    }

    #[test]
    fn names_stay_portable() {
        assert!(check_name("service", "staging-api_2.v1").is_ok());
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(64)] {
            assert!(check_name("slot", bad).is_err(), "{bad}");
        }
    }
}
