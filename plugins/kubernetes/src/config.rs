//! The plugin's `config` table and the pipeline's service definition, each
//! checked with every problem named by its key; object names and label
//! values derived from them.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// How traffic is split between slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Traffic {
    /// The weights of Rollcage's own backendRefs in an HTTPRoute.
    GatewayApi,
    /// A front Service whose selector names one slot (0/100 only).
    ServiceSelector,
    /// A front Service over every slot: traffic follows ready replicas.
    Replicas,
}

/// The plugin's `config` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The API server, `https://host:port`.
    pub api_url: String,
    /// The secret (granted to the plugin) holding the bearer token.
    pub token_secret: String,
    /// The namespace every object lives in.
    pub namespace: String,
    pub traffic: Traffic,
    /// The HTTPRoute whose backendRefs carry the weights (gateway-api).
    #[serde(default)]
    pub http_route: Option<String>,
    /// `progressDeadlineSeconds` of every Deployment (Kubernetes' default).
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline_seconds: u32,
    /// How long a finished Job is kept (`ttlSecondsAfterFinished`).
    #[serde(default = "default_job_ttl")]
    pub job_ttl_seconds: u32,
    /// Time allowed for one request, in milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Attempts per request when the API answers 429 or 5xx.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

fn default_progress_deadline() -> u32 {
    600
}
fn default_job_ttl() -> u32 {
    86400
}
fn default_timeout() -> u64 {
    10_000
}
fn default_attempts() -> u32 {
    6
}

impl Config {
    /// Every problem with the configuration, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.api_url.starts_with("https://") {
            p.push(format!(
                "api_url `{}` must be an https:// URL (the token is never sent in the clear), such as https://10.0.0.1:6443",
                self.api_url
            ));
        }
        if self.token_secret.trim().is_empty() {
            p.push("token_secret is empty: name a secret granted to this plugin".into());
        }
        if let Some(why) = dns_label_problem(&self.namespace) {
            p.push(format!("namespace `{}` {why}", self.namespace));
        }
        match (&self.traffic, &self.http_route) {
            (Traffic::GatewayApi, None) => {
                p.push("traffic = \"gateway-api\" needs http_route, the HTTPRoute's name".into())
            }
            (Traffic::GatewayApi, Some(r)) => {
                if let Some(why) = subdomain_problem(r) {
                    p.push(format!("http_route `{r}` {why}"));
                }
            }
            (_, Some(_)) => p.push("http_route is only for traffic = \"gateway-api\"".into()),
            _ => {}
        }
        if self.progress_deadline_seconds == 0 {
            p.push("progress_deadline_seconds must be above 0".into());
        }
        if self.timeout_ms == 0 {
            p.push("timeout_ms must be above 0".into());
        }
        if !(1..=20).contains(&self.attempts) {
            p.push(format!("attempts = {} is outside 1-20", self.attempts));
        }
        p
    }
}

/// The pipeline's `service` table for Kubernetes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    /// The image, with `{release}` for the version: `registry/api:{release}`.
    pub image: String,
    /// The port the container listens on.
    pub port: u16,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Container resources as Kubernetes writes them:
    /// `{ requests = { cpu = "100m" }, limits = { memory = "256Mi" } }`.
    #[serde(default)]
    pub resources: Option<Value>,
    /// The readiness probe's HTTP path.
    #[serde(default)]
    pub readiness_path: Option<String>,
    /// Extra labels on every object and pod.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The host name injected by the host's configuration (not used).
    #[serde(default)]
    pub name: Option<String>,
}

/// The labels Rollcage sets itself.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const SERVICE_LABEL: &str = "rollcage.dev/service";
pub const SLOT_LABEL: &str = "rollcage.dev/slot";
pub const RELEASE_LABEL: &str = "rollcage.dev/release";
pub const JOB_LABEL: &str = "rollcage.dev/job";
pub const VERSION_ANNOTATION: &str = "rollcage.dev/version";
pub const SLOT_ANNOTATION: &str = "rollcage.dev/slot";

impl ServiceDef {
    /// The service definition of `service` from its JSON, every problem named.
    pub fn parse(service: &str, json: &str) -> Result<ServiceDef, String> {
        ServiceDef::check(service, json).map_err(|problems| {
            let p: Vec<String> = problems
                .into_iter()
                .map(|(field, message)| match field.as_str() {
                    "" => message,
                    _ => format!("{field}: {message}"),
                })
                .collect();
            format!("the service definition of `{service}`: {}", p.join("; "))
        })
    }

    /// The definition, or every problem as (dotted field path, message):
    /// what `validate` hands the host, which points at the field's line.
    /// `service` is the pipeline's name unless the JSON carries `name`
    /// (the host puts it there); with neither, the name is not checked.
    pub fn check(service: &str, json: &str) -> Result<ServiceDef, Vec<(String, String)>> {
        let text = if json.trim().is_empty() { "{}" } else { json };
        let def: ServiceDef =
            serde_json::from_str(text).map_err(|e| vec![serde_problem(service, &e)])?;
        let mut p: Vec<(String, String)> = Vec::new();
        let mut push = |field: String, message: String| p.push((field, message));
        if let Some(why) = image_problem(&def.image) {
            push("image".into(), format!("`{}` {why}", def.image));
        }
        if def.port == 0 {
            push("port".into(), "must be 1-65535".into());
        }
        for (k, v) in &def.labels {
            let field = format!("labels.{k}");
            if k == MANAGED_BY || k.starts_with("rollcage.dev/") {
                push(field.clone(), "Rollcage sets this label itself".into());
            } else if let Some(why) = label_key_problem(k) {
                push(field.clone(), format!("key `{k}` {why}"));
            }
            if let Some(why) = label_value_problem(v) {
                push(field, format!("`{v}` {why}"));
            }
        }
        for k in def.env.keys() {
            if !env_name_ok(k) {
                push(
                    format!("env.{k}"),
                    "is not a variable name: letters, digits, `_`, `-` or `.`, not starting with a digit".into(),
                );
            }
        }
        if let Some(path) = &def.readiness_path
            && !path.starts_with('/')
        {
            push(
                "readiness_path".into(),
                format!("`{path}` must start with `/`"),
            );
        }
        if let Some(resources) = &def.resources {
            for (field, message) in resources_problems(resources) {
                push(format!("resources{field}"), message);
            }
        }
        let name = def.name.as_deref().unwrap_or(service);
        if let Some(why) = (!name.is_empty())
            .then(|| dns_label_problem(name))
            .flatten()
        {
            push(
                "name".into(),
                format!("the service name `{name}` {why}: it names the Deployments and Services"),
            );
        }
        if p.is_empty() { Ok(def) } else { Err(p) }
    }

    /// The image of `version`.
    pub fn image_of(&self, version: &str) -> String {
        self.image.replace("{release}", version)
    }
}

/// A JSON error of the service table as a problem: an unknown or missing
/// field is named (serde says which), its position in the host's JSON is
/// left out (the operator wrote TOML).
fn serde_problem(service: &str, e: &serde_json::Error) -> (String, String) {
    let text = e.to_string();
    let text = match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let quoted = |prefix: &str| {
        text.strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string)
    };
    if let Some(field) = quoted("unknown field `") {
        let expected = text.split_once(", expected").map_or("", |(_, e)| e);
        return (
            field,
            format!("is not a field of a Kubernetes service; expected{expected}"),
        );
    }
    if let Some(field) = quoted("missing field `") {
        return (
            String::new(),
            format!(
                "`{field}` is missing: it needs image = \"registry/{service}:{{release}}\" and port"
            ),
        );
    }
    (String::new(), text)
}

/// Whether `k` can be a container's environment variable name (what the
/// API server accepts: a C identifier, with `-` and `.` allowed).
fn env_name_ok(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Problems of a container's `resources` table, by path below it:
/// only `requests` and `limits`, each a table of quantities.
fn resources_problems(resources: &Value) -> Vec<(String, String)> {
    let Some(table) = resources.as_object() else {
        return vec![(
            String::new(),
            "must be a table: { requests = { cpu = \"100m\" }, limits = { memory = \"256Mi\" } }"
                .into(),
        )];
    };
    let mut p = Vec::new();
    for (key, value) in table {
        if key != "requests" && key != "limits" {
            p.push((format!(".{key}"), "is not `requests` or `limits`".into()));
            continue;
        }
        let Some(amounts) = value.as_object() else {
            p.push((
                format!(".{key}"),
                "must be a table of quantities, such as { cpu = \"100m\", memory = \"128Mi\" }"
                    .into(),
            ));
            continue;
        };
        for (resource, amount) in amounts {
            let ok = match amount {
                Value::String(q) => quantity_ok(q),
                Value::Number(n) => n.as_f64().is_some_and(|f| f >= 0.0),
                _ => false,
            };
            if !ok {
                p.push((
                    format!(".{key}.{resource}"),
                    format!("`{amount}` is not a quantity, such as \"250m\", \"0.5\", \"128Mi\" or \"1G\""),
                ));
            }
        }
    }
    p
}

/// Whether `q` is a Kubernetes quantity: a decimal number with an
/// optional binary (`Ki` … `Ei`) or decimal (`n u m k M G T P E`) suffix,
/// or an exponent (`1e3`).
pub fn quantity_ok(q: &str) -> bool {
    let q = q.strip_prefix(['+', '-']).unwrap_or(q);
    let digits_end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(digits_end);
    let number_ok = !number.is_empty() && number != "." && number.matches('.').count() <= 1;
    let suffix_ok = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
        .is_some_and(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()));
    number_ok && suffix_ok
}

/// A short stable hash, to keep names that had to be changed apart.
pub fn short_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:06x}", h & 0xff_ffff)
}

/// The name of a slot's Deployment and Service: `{service}-{slot}`, or,
/// when the slot's name cannot be part of a Service name (canary slots
/// are named by version: `1.4.0`), its letters and digits joined by `-`
/// and a hash of the real name: `web-1-4-0-a1b2c3`.
pub fn slot_object(service: &str, slot: &str) -> Result<String, String> {
    let name = format!("{service}-{slot}");
    if dns_label_problem(&name).is_none() {
        return Ok(name);
    }
    let mut cleaned: String = slot
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    cleaned = cleaned.trim_matches('-').to_string();
    let budget = 63usize.saturating_sub(service.len() + 8);
    cleaned.truncate(budget);
    let name = format!(
        "{service}-{}{}{}",
        cleaned.trim_end_matches('-'),
        if cleaned.is_empty() { "" } else { "-" },
        short_hash(slot)
    );
    match dns_label_problem(&name) {
        None => Ok(name),
        Some(why) => Err(format!(
            "slot `{slot}` of `{service}` makes the name `{name}`, which {why}"
        )),
    }
}

/// The value of a slot's label (its selector): the slot's name when it is
/// a valid label value, else a valid one with a hash of the name.
pub fn slot_label(slot: &str) -> String {
    if label_value_problem(slot).is_none() {
        return slot.to_string();
    }
    let mut v = release_label(slot);
    v.truncate(55);
    format!(
        "{}-{}",
        v.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()),
        short_hash(slot)
    )
    .trim_start_matches('-')
    .to_string()
}

/// A label value standing for `version` (SemVer's `+` is not allowed in
/// one): other characters become `_`, cut to 63, alphanumeric at both
/// ends. The exact version goes in an annotation.
pub fn release_label(version: &str) -> String {
    let mapped: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Why `s` is not a DNS-1035 label (Service names), if it is not.
pub fn dns_label_problem(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 63 {
        return Some("must be 1-63 characters".into());
    }
    let ok = b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-';
    (!ok).then(|| {
        "is not a valid name: lower-case letters, digits and `-`, starting with a letter and ending with a letter or digit".into()
    })
}

/// Why `s` is not a DNS-1123 subdomain, if it is not.
pub fn subdomain_problem(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        });
    (!ok).then(|| "is not a valid name: lower-case letters, digits, `-` and `.`".into())
}

/// Why `v` is not a valid label value, if it is not.
pub fn label_value_problem(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let ok = b.is_empty()
        || (b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric());
    (!ok).then(|| {
        "is not a valid label value: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit".into()
    })
}

/// Why `k` is not a valid label key, if it is not.
pub fn label_key_problem(k: &str) -> Option<String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let ok = !name.is_empty()
        && label_value_problem(name).is_none()
        && prefix.is_none_or(|p| subdomain_problem(p).is_none());
    (!ok).then(|| "is not a valid label key: `name` or `prefix/name`".into())
}

/// Why `image` is not an image reference, if it is not.
pub fn image_problem(image: &str) -> Option<String> {
    if image.trim().is_empty() {
        return Some("is empty".into());
    }
    if image.contains("://") {
        return Some("must not have a scheme: write registry/name:tag".into());
    }
    let bad = image.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | ':' | '@' | '{' | '}'))
    });
    if let Some(c) = bad {
        return Some(format!("has `{c}`, which an image reference cannot hold"));
    }
    let without = image.replace("{release}", "");
    if without.contains('{') || without.contains('}') {
        return Some("may only use the placeholder {release}".into());
    }
    // The repository part (before a tag or digest) is lower case.
    let repo = image.split('@').next().unwrap_or(image);
    let repo = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repo,
    };
    let path = repo.split_once('/').map_or(repo, |(first, rest)| {
        if first.contains('.') || first.contains(':') || first == "localhost" {
            rest
        } else {
            repo
        }
    });
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Some("has upper-case letters in its repository, which must be lower case".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_labels_are_valid_label_values() {
        assert_eq!(release_label("1.4.0"), "1.4.0");
        assert_eq!(release_label("1.4.0-rc.1+build.7"), "1.4.0-rc.1_build.7");
        assert_eq!(release_label(&"9".repeat(80)).len(), 63);
        for v in ["1.0.0+x", "2.0.0-beta+exp.sha.5114f85", "+1.0.0+"] {
            assert_eq!(label_value_problem(&release_label(v)), None, "{v}");
        }
    }

    #[test]
    fn image_references_are_checked() {
        assert_eq!(
            image_problem("registry.example.com:5000/team/api:{release}"),
            None
        );
        assert_eq!(image_problem("api@sha256:abc"), None);
        assert!(image_problem("https://r/api").is_some());
        assert!(image_problem("team/API:1").is_some());
        assert!(image_problem("api:{version}").is_some());
        assert!(image_problem("api 1").is_some());
        assert!(image_problem("").is_some());
    }

    #[test]
    fn the_service_definition_names_every_problem() {
        let err = ServiceDef::parse(
            "web",
            r#"{"image": "Web:{release}", "port": 0, "labels": {"team": "pay ments", "rollcage.dev/slot": "x"}}"#,
        )
        .unwrap_err();
        assert!(err.contains("image: `Web:{release}`"), "{err}");
        assert!(err.contains("port: must be"), "{err}");
        assert!(err.contains("labels.team: `pay ments`"), "{err}");
        assert!(
            err.contains("labels.rollcage.dev/slot: Rollcage sets"),
            "{err}"
        );
        let err = ServiceDef::parse("web", r#"{"image": "web:1", "port": 80, "replicas": 3}"#)
            .unwrap_err();
        assert!(err.contains("replicas: is not a field"), "{err}");
        let def =
            ServiceDef::parse("web", r#"{"image": "r/web:{release}", "port": 8080}"#).unwrap();
        assert_eq!(def.image_of("1.2.0"), "r/web:1.2.0");
    }

    #[test]
    fn each_problem_names_its_field_for_the_host() {
        let fields = |json: &str| -> Vec<String> {
            ServiceDef::check("web", json)
                .unwrap_err()
                .into_iter()
                .map(|(f, _)| f)
                .collect()
        };
        assert_eq!(
            fields(
                r#"{"name": "Web_1", "image": "a b", "port": 80, "env": {"1X": "y"},
                    "labels": {"team": "-x"}, "readiness_path": "healthz",
                    "resources": {"requests": {"cpu": "lots", "memory": "128Mi"}, "limit": {}}}"#
            ),
            [
                "image",
                "labels.team",
                "env.1X",
                "readiness_path",
                "resources.limit",
                "resources.requests.cpu",
                "name"
            ]
        );
        // serde's complaints: an unknown field is named; a missing one is
        // the whole table's, with what it needs.
        let (field, message) = ServiceDef::check("web", r#"{"image": "w:1", "prot": 80}"#)
            .unwrap_err()
            .remove(0);
        assert_eq!(field, "prot");
        assert!(message.contains("expected"), "{message}");
        assert!(!message.contains("line"), "{message}");
        let (field, message) = ServiceDef::check("web", r#"{"image": "w:1"}"#)
            .unwrap_err()
            .remove(0);
        assert_eq!(field, "");
        assert!(message.starts_with("`port` is missing"), "{message}");
        assert!(ServiceDef::check("", r#"{"image": "w:{release}", "port": 80}"#).is_ok());
    }

    #[test]
    fn quantities_are_kubernetes_quantities() {
        for ok in ["100m", "0.5", "128Mi", "1G", "2", "1e3", ".5", "+1Ki"] {
            assert!(quantity_ok(ok), "{ok}");
        }
        for bad in ["lots", "", "1.2.3", "12 Mi", "1mi", "Mi", "1e", "."] {
            assert!(!quantity_ok(bad), "{bad}");
        }
    }

    #[test]
    fn config_problems_name_their_keys() {
        let c: Config = serde_json::from_value(serde_json::json!({
            "api_url": "http://10.0.0.1:6443", "token_secret": "", "namespace": "Web",
            "traffic": "gateway-api", "attempts": 0
        }))
        .unwrap();
        let p = c.problems();
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(p[0].contains("api_url"));
        assert!(p[1].contains("token_secret"));
        assert!(p[2].contains("namespace `Web`"));
        assert!(p[3].contains("needs http_route"));
        assert!(p[4].contains("attempts"));
        assert_eq!(slot_object("web", "canary").unwrap(), "web-canary");
        let versioned = slot_object("web", "1.4.0").unwrap();
        assert!(versioned.starts_with("web-1-4-0-"), "{versioned}");
        assert_ne!(versioned, slot_object("web", "1-4-0").unwrap());
        assert_eq!(slot_object("web", "1-4-0").unwrap(), "web-1-4-0");
        assert_eq!(
            dns_label_problem(&slot_object("web", &"X.".repeat(60)).unwrap()),
            None
        );
        assert_eq!(slot_label("1.4.0"), "1.4.0");
        assert_eq!(label_value_problem(&slot_label("1.4.0+build")), None);
    }
}
