use super::*;
use std::collections::BTreeMap;

fn cx() -> Context {
    Context {
        builtins: vec![
            KnownBuiltin {
                name: "console",
                kind: PluginKind::Notifier,
            },
            KnownBuiltin {
                name: "rolling",
                kind: PluginKind::Strategy,
            },
            KnownBuiltin {
                name: "canary",
                kind: PluginKind::Strategy,
            },
            KnownBuiltin {
                name: "prometheus",
                kind: PluginKind::HealthCheck,
            },
            KnownBuiltin {
                name: "local",
                kind: PluginKind::EnvironmentProvider,
            },
        ],
        vars: Some(BTreeMap::from([(
            "DB_HOST".to_string(),
            "db.internal".to_string(),
        )])),
    }
}

#[test]
fn a_full_plugin_section_is_read() {
    let text = r##"
[server]
listen = "127.0.0.1:9000"

[plugins.console]
component = "builtin:console"
allow_hosts = ["hooks.slack.com", "127.0.0.1:9090"]
secrets = ["SLACK_WEBHOOK_URL"]
limits = { memory_mb = 32, timeout_ms = 5000 }
config = { channel = "#deploys", retries = 3 }
"##;
    let c = Config::parse(Path::new("rollcage.toml"), text, &cx()).unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:9000");
    assert_eq!(c.server.database, "sqlite://rollcage.db");
    let p = &c.plugins[&"console".parse::<PluginId>().unwrap()];
    assert_eq!(p.component, ComponentRef::Builtin("console".into()));
    assert_eq!(p.kind, Some(PluginKind::Notifier));
    assert_eq!(p.allow_hosts.len(), 2);
    assert_eq!(p.secrets, ["SLACK_WEBHOOK_URL"]);
    assert_eq!(p.limits.memory_mb, 32);
    assert_eq!(
        p.config,
        serde_json::json!({"channel": "#deploys", "retries": 3})
    );
}

#[test]
fn line_and_column_count_characters() {
    let src = Source::new(Path::new("x.toml"), "a = 1\nbé = 2\n");
    assert_eq!(src.line_col(0), (1, 1));
    assert_eq!(src.line_col(6), (2, 1));
    assert_eq!(src.line_col(9), (2, 3));
}

#[test]
fn a_whole_configuration_with_an_included_environment_is_read() {
    let dir = std::env::temp_dir().join(format!("rollcage-config-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("environments")).unwrap();
    std::fs::write(
        dir.join("environments/staging.toml"),
        r#"
[environments.staging]
provider = "local"
strategy = { plugin = "rolling", max_surge = 1 }
replicas = 1
"#,
    )
    .unwrap();
    let text = r##"
include = ["environments/staging.toml"]

[server]
log = { level = "debug", format = "json" }

[plugins.prom]
component = "builtin:prometheus"
allow_hosts = ["127.0.0.1:9090"]
secrets = ["PROM_TOKEN"]
config = { url = "http://127.0.0.1:9090", token = "${secret:PROM_TOKEN}" }

[checks.error-rate]
plugin = "prom"
config = { query = 'sum(rate(errors{slot="{slot}"}[1m]))', pass_if = "< 0.05" }

[environments.production]
provider = "local"
strategy = { plugin = "canary", steps = [10, 50, 100] }
analysis = { checks = ["error-rate"], interval = "30s", count = 3, failure_limit = 1 }
approval = "manual"
require_different_approver = true
window = "Mon-Thu 02:00-05:00 UTC"
notify = ["console"]
replicas = 3
progress_deadline = "5m"
jobs = { pre = [{ name = "migrate", command = ["./migrate", "--to", "latest"], timeout = "2m" }] }
bake = { duration = "10m", interval = "1m" }

[pipelines.api]
stages = ["staging", "production"]
service = { command = ["./api", "--port", "{port}"], env = { DATABASE = "postgres://${DB_HOST}/api" } }
notify = ["console"]
"##;
    let c = Config::parse(&dir.join("rollcage.toml"), text, &cx()).unwrap();
    assert_eq!(c.server.log.format, "json");
    let check = &c.checks[&"error-rate".parse::<PluginId>().unwrap()];
    // The check's config goes over its plugin's; secrets stay references.
    assert_eq!(check.config["url"], "http://127.0.0.1:9090");
    assert_eq!(check.config["pass_if"], "< 0.05");
    assert_eq!(check.config["token"], "${secret:PROM_TOKEN}");
    let prod = &c.environments["production"];
    assert_eq!(prod.strategy, PluginRef::Builtin("canary".into()));
    assert_eq!(
        prod.strategy_params,
        serde_json::json!({"steps": [10, 50, 100]})
    );
    assert_eq!(prod.analysis.count, 3);
    assert_eq!(prod.analysis.interval, std::time::Duration::from_secs(30));
    assert_eq!(prod.approval, Approval::Manual);
    assert!(prod.window.is_some());
    assert_eq!(
        prod.pre_jobs[0].timeout,
        std::time::Duration::from_secs(120)
    );
    // A bake watches with the analysis's checks unless it names its own.
    let bake = prod.bake.as_ref().unwrap();
    assert_eq!(bake.duration, std::time::Duration::from_secs(600));
    assert_eq!(bake.interval, std::time::Duration::from_secs(60));
    assert!(bake.checks.is_empty() && bake.failure_limit.is_none());
    assert_eq!(c.environments["staging"].replicas, 1);
    assert!(c.environments["staging"].bake.is_none());
    assert_eq!(c.pipelines["api"].stages, ["staging", "production"]);
    assert_eq!(
        c.pipelines["api"].service["env"]["DATABASE"],
        "postgres://db.internal/api"
    );
    assert_eq!(c.pipelines["api"].service["name"], "api");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_api_limits_have_defaults_and_can_be_set() {
    let base = r#"
[environments.staging]
provider = "local"
strategy = { plugin = "rolling" }
"#;
    let c = Config::parse(Path::new("r.toml"), base, &cx()).unwrap();
    assert_eq!(c.server.api, ApiConfig::default());
    assert_eq!(
        c.server.api.header_read_timeout,
        std::time::Duration::from_secs(10)
    );
    assert_eq!(c.server.api.connections_per_address.get(), 32);
    assert_eq!(c.server.api.auth_failures_per_minute.get(), 10);
    assert_eq!(
        (
            c.server.api.max_runs.get(),
            c.server.api.max_runs_per_pipeline.get()
        ),
        (200, 20)
    );
    assert_eq!(c.server.api.streams_per_token.get(), 8);
    let text = format!(
        r#"
[server.api]
header_read_timeout = "2s"
connections_per_address = 4
auth_failures_per_minute = 3
max_runs = 50
max_runs_per_pipeline = 5
streams_per_token = 2
{base}"#
    );
    let api = Config::parse(Path::new("r.toml"), &text, &cx())
        .unwrap()
        .server
        .api;
    assert_eq!(api.header_read_timeout, std::time::Duration::from_secs(2));
    assert_eq!(
        (
            api.connections_per_address.get(),
            api.auth_failures_per_minute.get(),
            api.max_runs.get(),
            api.max_runs_per_pipeline.get(),
            api.streams_per_token.get()
        ),
        (4, 3, 50, 5, 2)
    );
}

#[test]
fn tls_ca_is_a_pem_file_beside_the_configuration_or_a_secret() {
    let dir = std::env::temp_dir().join(format!("rollcage-tls-ca-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::write(
        dir.join("certs/ca.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("certs/key.pem"),
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let text = r#"
[plugins.console]
component = "builtin:console"
tls_ca = "certs/ca.pem"

[plugins.other]
component = "builtin:console"
tls_ca = { secret = "CLUSTER_CA" }
"#;
    let file = dir.join("rollcage.toml");
    let c = Config::parse(&file, text, &cx()).unwrap();
    let ca = |id: &str| c.plugins[&id.parse::<PluginId>().unwrap()].tls_ca.clone();
    assert_eq!(
        ca("console"),
        Some(rollcage_core::TlsCa::File(dir.join("certs/ca.pem")))
    );
    assert_eq!(
        ca("other"),
        Some(rollcage_core::TlsCa::Secret("CLUSTER_CA".into()))
    );

    // A private key given by mistake is named as such and never quoted.
    let text = text.replace("certs/ca.pem", "certs/key.pem");
    let err = Config::parse(&file, &text, &cx()).unwrap_err().to_string();
    assert!(
        err.contains("holds a private key, not a certificate"),
        "{err}"
    );
    assert!(err.contains("rollcage.toml:4:10"), "{err}");
    assert!(!err.contains("c2VjcmV0"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn alerts_map_to_environments_by_label_or_by_name() {
    let text = r##"
[server]
local_metrics = "127.0.0.1:9464"

[environments.production]
provider = "local"
strategy = { plugin = "canary" }

[alerts]
after_promotion = "30m"

[[alerts.matchers]]
alertnames = ["HighErrorRate", "SlowResponses"]
labels = { severity = "critical" }

[[alerts.matchers]]
environment = "production"
service_label = "job"
"##;
    let c = Config::parse(Path::new("rollcage.toml"), text, &cx()).unwrap();
    assert_eq!(
        c.server.local_metrics,
        Some("127.0.0.1:9464".parse().unwrap())
    );
    assert_eq!(
        c.alerts.after_promotion,
        std::time::Duration::from_secs(1800)
    );
    let [by_label, by_name] = c.alerts.matchers.as_slice() else {
        panic!("{:?}", c.alerts.matchers)
    };
    assert_eq!(by_label.alertnames, ["HighErrorRate", "SlowResponses"]);
    assert_eq!(by_label.labels["severity"], "critical");
    // The environment from the `environment` label, any service: the defaults.
    assert_eq!(by_label.environment, Place::Label("environment".into()));
    assert_eq!(by_label.service, None);
    assert_eq!(by_name.environment, Place::Fixed("production".into()));
    assert_eq!(by_name.service, Some(Place::Label("job".into())));
    // Without [alerts], no alert acts on anything.
    let c = Config::parse(Path::new("rollcage.toml"), "", &cx()).unwrap();
    assert_eq!(c.alerts, AlertsConfig::default());
}

#[test]
fn uses_of_a_file_of_undeclared_kind_are_kept_for_the_loader() {
    let dir = std::env::temp_dir().join(format!("rollcage-uses-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mine.wasm"), b"\0asm").unwrap();
    let text = r#"[plugins.mine]
component = "mine.wasm"

[plugins.declared]
component = "mine.wasm"
kind = "strategy"

[checks.up]
plugin = "mine"

[environments.production]
provider = "local"
strategy = { plugin = "mine" }
notify = ["mine", "console"]

[environments.staging]
provider = "local"
strategy = { plugin = "declared" }
"#;
    let file = dir.join("rollcage.toml");
    let c = Config::parse(&file, text, &cx()).unwrap();
    let uses: Vec<(String, PluginKind, usize, usize)> = c
        .plugin_uses
        .iter()
        .map(|u| (u.what.clone(), u.kind, u.at.line, u.at.column))
        .collect();
    // The declared instance and the builtin are checked here already.
    assert_eq!(
        uses,
        [
            ("check `up`".to_string(), PluginKind::HealthCheck, 9, 10),
            (
                "environment `production`: strategy".to_string(),
                PluginKind::Strategy,
                13,
                12
            ),
            (
                "environment `production`: notify".to_string(),
                PluginKind::Notifier,
                14,
                11
            ),
        ]
    );
    let strategy = &c.plugin_uses[1];
    assert!(
        strategy
            .mismatch(PluginKind::Strategy, "mine.wasm")
            .is_none()
    );
    let e = strategy
        .mismatch(PluginKind::HealthCheck, "mine.wasm")
        .unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:13:12: error: environment `production`: strategy: plugin `mine` (mine.wasm) is a health-check, not a strategy\n  hint: its component exports the health-check world; a health-check plugin goes in a `[checks.<id>]` section's `plugin`",
            file.display()
        )
    );
}

#[test]
fn an_environment_names_its_exposure_plugin_and_settle_defaults_to_15_s() {
    let text = r#"
[plugins.flags]
component = "flags.wasm"
kind = "exposure"

[environments.production]
provider = "local"
strategy = { plugin = "canary", steps = [{ expose = 10 }], flag = "checkout-v2" }
exposure = "flags"
settle = "2s"

[environments.staging]
provider = "local"
strategy = { plugin = "canary" }
"#;
    let dir = std::env::temp_dir().join(format!("rollcage-exposure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("flags.wasm"), b"").unwrap();
    let c = Config::parse(&dir.join("rollcage.toml"), text, &cx()).unwrap();
    let production = &c.environments["production"];
    assert_eq!(production.exposure.as_ref().unwrap().name(), "flags");
    assert_eq!(production.settle, std::time::Duration::from_secs(2));
    let staging = &c.environments["staging"];
    assert!(staging.exposure.is_none());
    assert_eq!(staging.settle, DEFAULT_SETTLE);
    assert_eq!(DEFAULT_SETTLE, std::time::Duration::from_secs(15));
}

#[test]
fn a_service_field_a_provider_names_is_found_where_it_is_written() {
    let text = r#"
[environments.staging]
provider = "local"
strategy = { plugin = "rolling" }

[pipelines.web]
stages = ["staging"]

[pipelines.web.service]
image = "web:{release}"
labels = { team = "pay", "a.b/c" = "x" }
command = ["./web", "--port"]

[pipelines.api]
stages = ["staging"]
"#;
    let c = Config::parse(std::path::Path::new("r.toml"), text, &cx()).unwrap();
    let web = &c.pipelines["web"];
    let at = |field: &str| {
        let l = web.service_at.of(field);
        (l.line, l.column)
    };
    assert_eq!(at("image"), (10, 1));
    assert_eq!(at("labels.team"), (11, 12));
    // A quoted key is found as written, a nested path under an array too.
    assert_eq!(at("labels.a.b/c"), (11, 26));
    assert_eq!(at("command[1]"), (12, 21));
    // A field not written (the host's `name`) is at the table.
    assert_eq!(at("name"), (9, 1));
    assert_eq!(at(""), (9, 1));
    // A pipeline without a service table: its problems are at its header.
    let api = &c.pipelines["api"];
    assert_eq!(api.service_at.of("command").line, 14);
    assert_eq!(
        web.service_error("cluster", "labels.team", "bad")
            .to_string(),
        "r.toml:11:12: error: pipeline `web`: service: provider `cluster` rejected it: labels.team: bad"
    );
}
