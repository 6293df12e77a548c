use super::*;

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
        ],
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
    assert_eq!(p.limits.memory_mb, Some(32));
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
