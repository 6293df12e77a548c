//! Golden-file tests of configuration errors: each `tests/golden/*.toml` is
//! a broken configuration and the `.err` beside it the exact message a user
//! sees. Set `UPDATE_GOLDEN=1` to rewrite the `.err` files after a deliberate
//! change, and review the diff.

use std::path::Path;

use rollcage_config::{Config, Context, KnownBuiltin};
use rollcage_core::PluginKind;

fn cx() -> Context {
    let builtin = |name, kind| KnownBuiltin { name, kind };
    Context {
        builtins: vec![
            builtin("console", PluginKind::Notifier),
            builtin("http", PluginKind::HealthCheck),
            builtin("rolling", PluginKind::Strategy),
            builtin("canary", PluginKind::Strategy),
            builtin("blue-green", PluginKind::Strategy),
            builtin("static-provider", PluginKind::EnvironmentProvider),
        ],
        // No variable is set: messages do not depend on the machine.
        vars: Some(Default::default()),
    }
}

#[test]
fn broken_configs_give_the_expected_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
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
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(case).unwrap();
        // Messages name the file as the user gave it.
        let shown = Path::new("golden").join(&name);
        let err = match Config::parse(&shown, &text, &cx()) {
            Ok(_) => panic!("{name} parsed without error"),
            Err(e) => format!("{e}\n"),
        };
        let expected_path = case.with_extension("err");
        if update {
            std::fs::write(&expected_path, &err).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if err != expected {
            mismatches.push(format!("--- {name}: expected\n{expected}--- got\n{err}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
