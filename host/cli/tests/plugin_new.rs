//! `rollcage plugins new` makes projects that build as generated: every
//! kind in Rust, Python and JavaScript is created, built with its own
//! `build.sh`, checked by the host, and called once with `plugins test`.
//! Where the Python or JavaScript tools are missing the test says so and
//! skips those languages, except in CI (`CI=true`), where that fails.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{rollcage, text};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

const KINDS: [&str; 5] = [
    "notifier",
    "health-check",
    "strategy",
    "environment-provider",
    "exposure",
];

/// Create and build `kind` in `lang`; the component, or `None` when the
/// language's tools are missing outside CI.
fn create_and_build(root: &Path, lang: &str, kind: &str, cache: &Path) -> Option<PathBuf> {
    let name = format!("my-{kind}");
    let dir = root.join(format!("{lang}-{kind}"));
    let out = rollcage(
        &[
            "plugins",
            "new",
            &name,
            "--kind",
            kind,
            "--lang",
            lang,
            "--dir",
            dir.to_str().unwrap(),
        ],
        cache,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut build = Command::new("bash");
    build.arg(dir.join("build.sh"));
    // The repository's tool folder (made by .ci/install-plugin-tools), and
    // one target folder for the Rust projects so they share dependencies.
    build.env("ROLLCAGE_TOOLS", workspace().join(".tools"));
    build.env("CARGO_TARGET_DIR", workspace().join("target/plugin-new"));
    let out = build.output().unwrap();
    if !out.status.success() {
        let why = text(&out.stderr);
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        if lang != "rust" && !ci && why.contains("not found") {
            eprintln!("SKIPPED {lang} {kind}: {why}");
            return None;
        }
        panic!(
            "{lang} {kind}: build.sh failed:\n{}{why}",
            text(&out.stdout)
        );
    }
    let wasm = dir.join("target").join(format!("{name}.wasm"));
    assert!(wasm.exists(), "{lang} {kind}: no {}", wasm.display());
    Some(wasm)
}

fn check_and_call(wasm: &Path, lang: &str, kind: &str, cache: &Path) {
    let w = wasm.to_str().unwrap();
    let out = rollcage(&["plugins", "check", w], cache);
    assert!(
        out.status.success(),
        "{lang} {kind}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains(&format!("ok: the host can run this {kind} plugin")),
        "{}",
        text(&out.stdout)
    );
    let mut args = vec!["plugins", "test", w];
    match kind {
        "notifier" => args.extend(["--config", "prefix=deploys"]),
        // No server answers there: the call must fail cleanly, naming it.
        "environment-provider" | "exposure" => args.extend([
            "--config",
            "api_url=http://127.0.0.1:9",
            "--allow-host",
            "127.0.0.1:9",
        ]),
        _ => {}
    }
    let out = rollcage(&args, cache);
    let stdout = text(&out.stdout);
    // Only the provider's and the exposure's calls fail: nothing answers at
    // their API address.
    let code = if kind == "environment-provider" || kind == "exposure" {
        1
    } else {
        0
    };
    assert_eq!(
        out.status.code(),
        Some(code),
        "{lang} {kind}: {stdout}{}",
        text(&out.stderr)
    );
    match kind {
        "notifier" => assert!(
            text(&out.stderr).contains("deploys: web 1.4.0 in production"),
            "{lang}: {}",
            text(&out.stderr)
        ),
        "health-check" => assert!(
            stdout.contains("\"verdict\":\"inconclusive\""),
            "{lang}: {stdout}"
        ),
        "strategy" => {
            assert!(
                stdout.contains("\"decide\":{\"apply-slot\":{"),
                "{lang}: {stdout}"
            );
            assert!(
                stdout.contains("{\"remove-slot\":\"1.4.0\"}"),
                "{lang}: {stdout}"
            );
        }
        _ => assert!(
            stdout.contains("error:   plugin `test` failed"),
            "{lang}: {stdout}"
        ),
    }
    if kind == "exposure" {
        exposure_checks_before_calling(w, lang, cache);
    }
}

/// An exposure plugin's config is validated before any call, naming the
/// key, and a percent over 100 is refused before any request.
fn exposure_checks_before_calling(wasm: &str, lang: &str, cache: &Path) {
    let out = rollcage(
        &["plugins", "test", wasm, "--config", "api_url=127.0.0.1:9"],
        cache,
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{lang}: {stdout}");
    assert!(
        stdout
            .contains("error:   config: api_url: `127.0.0.1:9` is not an http:// or https:// URL"),
        "{lang}: {stdout}"
    );
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        input.path(),
        r#"{"flag": "checkout-v2", "environment": "production", "percent": 150}"#,
    )
    .unwrap();
    let out = rollcage(
        &[
            "plugins",
            "test",
            wasm,
            "--config",
            "api_url=http://127.0.0.1:9",
            "--allow-host",
            "127.0.0.1:9",
            "--input",
            input.path().to_str().unwrap(),
        ],
        cache,
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{lang}: {stdout}");
    assert!(
        stdout.contains("flag `checkout-v2` in `production`: 150% is not a percent"),
        "{lang}: {stdout}"
    );
    assert!(!stdout.contains("127.0.0.1:9"), "{lang}: {stdout}");
}

#[test]
fn rust_projects_build_as_generated() {
    let root = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    for kind in KINDS {
        let wasm = create_and_build(root.path(), "rust", kind, cache.path()).unwrap();
        check_and_call(&wasm, "rust", kind, cache.path());
    }
    // The project folder must be new or empty; names are checked.
    let out = rollcage(
        &[
            "plugins",
            "new",
            "x",
            "--kind",
            "notifier",
            "--dir",
            root.path().join("rust-notifier").to_str().unwrap(),
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("exists and is not empty"),
        "{}",
        text(&out.stderr)
    );
    let out = rollcage(
        &["plugins", "new", "My_Plugin", "--kind", "notifier"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn python_projects_build_as_generated() {
    let root = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    for kind in KINDS {
        if let Some(wasm) = create_and_build(root.path(), "python", kind, cache.path()) {
            check_and_call(&wasm, "python", kind, cache.path());
        }
    }
}

#[test]
fn javascript_projects_build_as_generated() {
    let root = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    for kind in KINDS {
        if let Some(wasm) = create_and_build(root.path(), "js", kind, cache.path()) {
            check_and_call(&wasm, "js", kind, cache.path());
        }
    }
}
