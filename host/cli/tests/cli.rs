//! The real `rollcage` binary, driven as a user would.

use std::path::Path;
use std::process::Output;

mod common;
use common::rollcage;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn plugins_list_shows_the_builtins() {
    let cache = tempfile::tempdir().unwrap();
    let out = rollcage(&["plugins", "list"], cache.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // Columns are as wide as their longest entry: compare words.
    let rows: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for line in [
        "blue-green strategy builtin:blue-green",
        "canary strategy builtin:canary",
        "console notifier builtin:console",
        "http health-check builtin:http",
        "jira notifier builtin:jira",
        "kubernetes environment-provider builtin:kubernetes",
        "local environment-provider builtin:local",
        "prometheus health-check builtin:prometheus",
        "rolling strategy builtin:rolling",
        "router-metrics health-check builtin:router-metrics",
        "slack notifier builtin:slack",
        "webhook notifier builtin:webhook",
    ] {
        assert!(rows.iter().any(|r| r.starts_with(line)), "{line}\n{text}");
    }
}

#[test]
fn plugins_list_takes_components_and_names_each_it_cannot_list() {
    let cache = tempfile::tempdir().unwrap();
    let fixture = rollcage_tests::fixture("static-provider");
    let bytes = std::fs::read(&fixture).unwrap();
    let not_wasm = workspace().join("Cargo.toml");
    let out = rollcage(
        &[
            "plugins",
            "list",
            "builtin:canary",
            fixture.to_str().unwrap(),
            "builtin:nope",
            not_wasm.to_str().unwrap(),
        ],
        cache.path(),
    );
    // What could be listed is; each source that could not is named.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let rows: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let digest = rollcage_registry::digest_of(&bytes);
    let stem = fixture.file_stem().unwrap().to_str().unwrap();
    assert!(
        rows.iter().any(|r| r.starts_with(&format!(
            "{stem} environment-provider {} rollcage:plugin@0.2.0",
            fixture.display()
        )) && r.contains(&format!("sha256:{}", &digest.hex()[..12]))),
        "{}",
        stdout(&out)
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("canary strategy builtin:canary")),
        "{}",
        stdout(&out)
    );
    assert_eq!(rows.len(), 3, "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("error: builtin:nope: no builtin named `nope`"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "error: plugin `Cargo` ({}): not a WebAssembly file",
            not_wasm.display()
        )),
        "{err}"
    );
}

/// Registry options where they cannot apply are refused, before anything
/// is fetched, each saying why.
#[test]
fn registry_options_are_refused_where_they_do_not_apply() {
    let cache = tempfile::tempdir().unwrap();
    let sha = "0".repeat(64);
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "plugins",
                "check",
                "oci://127.0.0.1:1/team/a:1",
                "--sha256",
                &sha,
            ],
            "oci://127.0.0.1:1/team/a:1: --sha256 is for a component downloaded from an https:// URL; pin an OCI reference with @sha256:<64 hex>",
        ),
        (
            &[
                "plugins",
                "list",
                "oci://127.0.0.1:1/team/a:1",
                "oci://127.0.0.2:1/team/b:1",
                "--auth-env",
                "HOME",
            ],
            "--auth-env gives the credentials of one registry, and these references name 127.0.0.1:1, 127.0.0.2:1",
        ),
        (
            &["plugins", "list", "--insecure"],
            "--insecure, --tls-ca and --auth-env are for components named on the command line",
        ),
        (
            &[
                "plugins",
                "pull",
                "oci://127.0.0.1:1/team/a:1",
                "--auth-env",
                "ROLLCAGE_TEST_NOT_SET",
            ],
            "oci://127.0.0.1:1/team/a:1: --auth-env ROLLCAGE_TEST_NOT_SET: the environment variable is not set",
        ),
        (
            &["plugins", "check", "https://127.0.0.1:1/a.wasm"],
            "https://127.0.0.1:1/a.wasm: a component from a URL is taken only with the digest it must have: give --sha256 HEX",
        ),
    ];
    for (args, said) in cases {
        let out = rollcage(args, cache.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(said), "{args:?}: {}", stderr(&out));
    }
    // `list` cannot take a URL's digest: it says where to check one.
    let out = rollcage(
        &["plugins", "list", "https://127.0.0.1:1/a.wasm"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`rollcage plugins check https://127.0.0.1:1/a.wasm --sha256 HEX`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn plugins_list_loads_a_configuration() {
    let cache = tempfile::tempdir().unwrap();
    let config = workspace().join("examples/rollcage.toml");
    let out = rollcage(
        &["plugins", "list", "--config", config.to_str().unwrap()],
        cache.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("healthz  health-check  builtin:http"),
        "{text}"
    );
    assert!(text.contains("hosts=127.0.0.1:*"), "{text}");
    // The compiled components were cached under the user cache folder.
    // (Beside them, the folder's integrity key.)
    let cached = std::fs::read_dir(cache.path().join("rollcage/components"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "cwasm")
        })
        .count();
    assert_eq!(cached, 3);
    assert!(cache.path().join("rollcage/components/.key").is_file());
}

#[test]
fn an_invalid_configuration_exits_2_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollcage.toml");
    std::fs::write(
        &path,
        "[plugins.console]\ncomponent = \"builtin:consol\"\n\n[plugins.rolling]\ncomponent = \"builtin:rolling\"\nsecret = [\"X\"]\n",
    )
    .unwrap();
    let out = rollcage(
        &["plugins", "list", "--config", path.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let shown = path.display();
    assert!(
        err.contains(&format!(
            "{shown}:2:13: error: plugin `console`: unknown component `builtin:consol`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{shown}:6:1: error: plugin `rolling`: unknown field `secret`"
        )),
        "{err}"
    );
    assert!(err.contains("hint: did you mean `secrets`?"), "{err}");
    assert!(err.contains("2 errors in the configuration"), "{err}");
}

#[test]
fn a_plugin_that_does_not_fit_its_declared_kind_fails_the_listing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollcage.toml");
    let fixture = rollcage_tests::fixture("misbehave");
    std::fs::write(
        &path,
        format!(
            "[plugins.odd]\ncomponent = {:?}\nkind = \"notifier\"\n",
            fixture.display().to_string()
        ),
    )
    .unwrap();
    let out = rollcage(
        &["plugins", "list", "--config", path.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("plugin `odd` (")
            && stderr(&out).contains("does not fit world `notifier`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn plugins_check_names_the_world_and_imports() {
    let cache = tempfile::tempdir().unwrap();
    let fixture = rollcage_tests::fixture("static-provider");
    let out = rollcage(
        &["plugins", "check", fixture.to_str().unwrap()],
        cache.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("world:     environment-provider (rollcage:plugin@0.2.0)"),
        "{text}"
    );
    assert!(text.contains("  rollcage:plugin/host@0.2.0"), "{text}");
    assert!(
        text.contains("ok: the host can run this environment-provider plugin"),
        "{text}"
    );
}

#[test]
fn plugins_check_refuses_what_is_not_a_component() {
    let cache = tempfile::tempdir().unwrap();
    let not_wasm = workspace().join("Cargo.toml");
    let out = rollcage(
        &["plugins", "check", not_wasm.to_str().unwrap()],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("): not a WebAssembly file"),
        "{}",
        stdout(&out)
    );

    let missing = rollcage(&["plugins", "check", "/nonexistent.wasm"], cache.path());
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn plugin_test_calls_a_component_once_with_its_grants() {
    let cache = tempfile::tempdir().unwrap();
    let check = rollcage_tests::fixture("misbehave");
    let check = check.to_str().unwrap();
    // A health check with a built-in sample target and its config.
    let out = rollcage(
        &["plugin", "test", check, "--config", "mode=ok"],
        cache.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("(health-check, "), "{text}");
    assert!(text.contains("result:  {\"detail\":\"fine\""), "{text}");
    assert!(text.contains("call:    "), "{text}");
    // Grants are what the command line gives: no host, so HTTP is denied.
    let out = rollcage(
        &[
            "plugin",
            "test",
            check,
            "--config",
            "mode=http",
            "--config",
            "arg=http://127.0.0.1:9/",
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("error:   "), "{}", stdout(&out));
    // A wrong --kind, and an input of the wrong shape, are bad input.
    let out = rollcage(
        &["plugin", "test", check, "--kind", "notifier"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is a health-check plugin, not a notifier"),
        "{}",
        stderr(&out)
    );
    let input = cache.path().join("input.json");
    std::fs::write(&input, "{\"slot\": 3}").unwrap();
    let out = rollcage(
        &[
            "plugin",
            "test",
            check,
            "--input",
            input.to_str().unwrap(),
            "--config",
            "mode=ok",
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a health-check input"),
        "{}",
        stderr(&out)
    );
}

/// A configuration with every section, using the fixture provider.
fn full_config(dir: &Path, steps: &str) -> std::path::PathBuf {
    let provider = rollcage_tests::fixture("static-provider");
    let path = dir.join("rollcage.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[plugins.platform]
component = {provider:?}
config = {{ slot = "1.0.0", release = "1.0.0", endpoint = "127.0.0.1:1" }}

[checks.healthz]
plugin = "http"
config = {{ url = "http://{{endpoint}}/healthz" }}

[environments.staging]
provider = "platform"
strategy = {{ plugin = "canary", steps = {steps} }}
analysis = {{ checks = ["healthz"] }}

[pipelines.api]
stages = ["staging"]
notify = ["console"]
"#,
            provider = provider.display().to_string()
        ),
    )
    .unwrap();
    path
}

#[test]
fn config_check_loads_every_plugin_a_configuration_uses() {
    let dir = tempfile::tempdir().unwrap();
    let path = full_config(dir.path(), "[10, 50, 100]");
    let out = rollcage(&["config", "check", path.to_str().unwrap()], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(": ok (4 plugins, 1 checks, 1 environments, 1 pipelines)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn config_check_has_the_strategy_validate_its_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let path = full_config(dir.path(), "[50, 10]");
    let out = rollcage(&["config", "check", path.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    // At the parameter, like every other configuration error.
    assert!(
        stderr(&out).contains(&format!(
            "{}:12:33: error: environment `staging`: plugin `canary` rejected its parameters: steps[2]: weight 10 is below the previous weight 50; weights only grow",
            path.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn config_check_loads_each_plugin_as_the_kind_its_use_needs() {
    // A health check's component, as a file whose kind is not declared:
    // only loading it tells what it is.
    let dir = tempfile::tempdir().unwrap();
    let check = dir.path().join("check.wasm");
    std::fs::write(&check, rollcage_builtins::get("http").unwrap().wasm).unwrap();
    let path = dir.path().join("rollcage.toml");
    std::fs::write(
        &path,
        r#"[plugins.ramp]
component = "check.wasm"

[plugins.pager]
component = "check.wasm"

[environments.production]
provider = "local"
strategy = { plugin = "ramp", steps = [10, 100] }
notify = ["pager"]

[pipelines.api]
stages = ["production"]
service = { command = ["./api", "--port", "{port}"] }
"#,
    )
    .unwrap();
    let out = rollcage(&["config", "check", path.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    let (shown, source) = (path.display(), check.display());
    for expected in [
        format!(
            "{shown}:9:12: error: environment `production`: strategy: plugin `ramp` ({source}) is a health-check, not a strategy\n  hint: its component exports the health-check world; a health-check plugin goes in a `[checks.<id>]` section's `plugin`"
        ),
        format!(
            "{shown}:10:11: error: environment `production`: notify: plugin `pager` ({source}) is a health-check, not a notifier"
        ),
        format!("2 problem(s) in {shown}"),
    ] {
        assert!(err.contains(&expected), "{expected}\n---\n{err}");
    }
    // `run` refuses it the same way, before touching anything.
    let out = rollcage(
        &["run", "api", "-c", path.to_str().unwrap(), "-r", "1.0.0"],
        dir.path(),
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("plugin `ramp` (")
            && stderr(&out).contains("is a health-check, not a strategy"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn started_by_is_the_operating_systems_user_name_when_user_is_unset() {
    // As in containers, cron jobs and CI runners: no USER, no LOGNAME.
    let dir = tempfile::tempdir().unwrap();
    let provider = rollcage_tests::fixture("static-provider");
    let path = dir.path().join("rollcage.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
database = "sqlite://runs.db"

[plugins.platform]
component = {provider:?}
config = {{ slot = "1.0.0", release = "1.0.0", endpoint = "127.0.0.1:1" }}

[environments.staging]
provider = "platform"
replicas = 1
strategy = {{ plugin = "canary", steps = [50, 100] }}

[pipelines.api]
stages = ["staging"]
"#,
            provider = provider.display().to_string()
        ),
    )
    .unwrap();
    let cfg = path.to_str().unwrap();
    let out = common::command(dir.path())
        .env_remove("USER")
        .env_remove("LOGNAME")
        .args(["run", "api", "-c", cfg, "--release", "1.0.0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let id = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    assert!(id.status.success(), "`id -un`: {}", stderr(&id));
    let name = String::from_utf8(id.stdout).unwrap().trim().to_string();
    assert!(
        stdout(&out).contains(&format!("started by {name} ")),
        "{}",
        stdout(&out)
    );
    let out = rollcage(&["runs", "list", "-c", cfg, "--output", "json"], dir.path());
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["run"]["started_by"], name.as_str());
}

/// Golden files of `config check`: each `tests/golden/config-check/*.toml`
/// is a broken configuration and the `.err` beside it exactly what
/// `config check` prints. `UPDATE_GOLDEN=1` rewrites the `.err` files after
/// a deliberate change; review the diff.
#[test]
fn config_check_reports_every_problem_at_once() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/config-check");
    let cache = tempfile::tempdir().unwrap();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty());
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_str().unwrap();
        // Run in the folder, so that messages name the file as given.
        let out = common::command(cache.path())
            .current_dir(&dir)
            .args(["config", "check", name])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        let got = stderr(&out);
        let expected_path = case.with_extension("err");
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            mismatches.push(format!("--- {name}: expected\n{expected}--- got\n{got}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn token_new_refuses_an_environment_limit_that_would_limit_nothing() {
    let cache = tempfile::tempdir().unwrap();
    for role in ["viewer", "admin"] {
        let out = rollcage(
            &["token", "new", "dash", "--role", role, "-e", "staging"],
            cache.path(),
        );
        assert_eq!(out.status.code(), Some(2), "{role}");
        assert!(
            stdout(&out).is_empty(),
            "no token is made: {}",
            stdout(&out)
        );
        assert!(
            stderr(&out).contains(&format!(
                "role {role} is not limited by environment; -e limits only deployers and approvers"
            )),
            "{}",
            stderr(&out)
        );
    }
    let out = rollcage(
        &["token", "new", "ci", "--role", "deployer", "-e", "staging"],
        cache.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("environments = [\"staging\"]"));
}
