//! The JavaScript exposure example `examples/plugins/flagd-file`, built
//! with its own build script (componentize-js) and driven through the real
//! binary (`rollcage plugins test`, which sets and reads a flag's exposure)
//! against its file service `flag_files.py`, which refuses any file that is
//! not in flagd's documented format and any write without the `If-Match`
//! of the file read. Where the tools are missing the test says so and
//! skips, except in CI (`CI=true`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};

mod common;
use common::{rollcage, text};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/plugins/flagd-file")
        .canonicalize()
        .unwrap()
}

/// The built component (built once per test binary), or `None` (having
/// said why) when a tool is missing outside CI.
fn build() -> Option<PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Command::new("bash")
                .arg(example().join("build.sh"))
                .output()
                .unwrap();
            if !out.status.success() {
                let why = text(&out.stderr);
                let ci = std::env::var("CI").is_ok_and(|v| v == "true");
                if !ci && why.contains("not found") {
                    eprintln!("SKIPPED: flagd-file cannot be built here: {why}");
                    return None;
                }
                panic!("flagd-file/build.sh failed:\n{}{why}", text(&out.stdout));
            }
            // Its own unit tests (the flag file's edits, the calls it makes),
            // natively under Node, with the helpers the build took.
            let tests = Command::new("npm")
                .args(["test", "--silent"])
                .current_dir(example())
                .output()
                .unwrap();
            assert!(
                tests.status.success(),
                "flagd-file's unit tests:\n{}{}",
                text(&tests.stdout),
                text(&tests.stderr)
            );
            Some(example().join("target/flagd-file.wasm"))
        })
        .clone()
}

/// The file service: the process, its port, the folder it serves (and
/// records requests in).
struct FlagFiles {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for FlagFiles {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FlagFiles {
    fn start(token: &str) -> FlagFiles {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("python3")
            .arg(example().join("flag_files.py"))
            .args(["--port", "0", "--token", token, "--dir"])
            .arg(dir.path())
            .arg("--record")
            .arg(dir.path().join("requests.jsonl"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let port = common::port_on_first_line(&mut child, "flag_files.py");
        FlagFiles { child, port, dir }
    }

    fn write(&self, name: &str, doc: &Value) {
        std::fs::write(
            self.dir.path().join(name),
            serde_json::to_vec_pretty(doc).unwrap(),
        )
        .unwrap();
    }

    fn read(&self, name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir.path().join(name)).unwrap()).unwrap()
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn puts(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["method"] == "PUT")
            .collect()
    }
}

/// `rollcage plugins test` of the component for `flag` in `environment`,
/// setting `percent` first when given: exit code, stdout.
fn call(
    wasm: &Path,
    files: &FlagFiles,
    token: &str,
    flag: &str,
    environment: &str,
    percent: Option<u32>,
) -> (Option<i32>, String) {
    let cache = cache();
    let input = tempfile::NamedTempFile::new().unwrap();
    let mut call = json!({ "flag": flag, "environment": environment });
    if let Some(p) = percent {
        call["percent"] = json!(p);
    }
    std::fs::write(input.path(), call.to_string()).unwrap();
    let url = format!(
        "url=http://127.0.0.1:{}/flags/{{environment}}.flagd.json",
        files.port
    );
    let host = format!("127.0.0.1:{}", files.port);
    let secret = format!("FLAG_FILES_TOKEN={token}");
    let out = rollcage(
        &[
            "plugins",
            "test",
            wasm.to_str().unwrap(),
            "--kind",
            "exposure",
            "--config",
            &url,
            "--config",
            "token_secret=FLAG_FILES_TOKEN",
            "--allow-host",
            &host,
            "--secret",
            &secret,
            "--input",
            input.path().to_str().unwrap(),
        ],
        cache,
    );
    (out.status.code(), text(&out.stdout) + &text(&out.stderr))
}

/// One compiled-component cache for the test binary: the 13 MB component
/// is compiled once.
fn cache() -> &'static Path {
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    CACHE.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// The `result:` line's status.
fn status(stdout: &str) -> Value {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("result:"))
        .unwrap_or_else(|| panic!("no result in\n{stdout}"));
    serde_json::from_str(line.trim()).unwrap()
}

#[test]
fn flagd_file_writes_fractional_splits_the_file_service_accepts() {
    let Some(wasm) = build() else { return };
    let files = FlagFiles::start("s3cret");
    let declared = json!({
        "state": "ENABLED",
        "variants": { "new": true, "old": false },
        "defaultVariant": "old",
    });
    let other =
        json!({ "state": "ENABLED", "variants": { "a": "x", "b": "y" }, "defaultVariant": "a" });
    files.write(
        "production.flagd.json",
        &json!({
            "$schema": "https://flagd.dev/schema/v0/flags.json",
            "flags": { "checkout-v2": declared, "theme": other },
        }),
    );

    let (code, out) = call(&wasm, &files, "s3cret", "checkout-v2", "production", None);
    assert_eq!(code, Some(0), "{out}");
    let s = status(&out);
    assert_eq!((&s["percent"], &s["enabled"]), (&json!(0), &json!(true)));
    let mut revisions = vec![s["revision"].clone()];
    for percent in [10u32, 50, 100] {
        let (code, out) = call(
            &wasm,
            &files,
            "s3cret",
            "checkout-v2",
            "production",
            Some(percent),
        );
        assert_eq!(code, Some(0), "{out}");
        let file = files.read("production.flagd.json");
        let flag = &file["flags"]["checkout-v2"];
        assert_eq!(flag["state"], "ENABLED");
        assert_eq!(flag["variants"], declared["variants"]);
        if percent == 100 {
            assert_eq!(flag["defaultVariant"], "new");
            assert!(flag.get("targeting").is_none(), "{flag}");
        } else {
            // flagd's fractional split: [variant, weight] buckets.
            assert_eq!(flag["defaultVariant"], "old");
            assert_eq!(
                flag["targeting"],
                json!({ "fractional": [["new", percent], ["old", 100 - percent]] })
            );
        }
        // Everything else in the file is kept.
        assert_eq!(file["flags"]["theme"], other);
        assert_eq!(file["$schema"], "https://flagd.dev/schema/v0/flags.json");
        let s = status(&out);
        assert_eq!(
            (&s["percent"], &s["enabled"]),
            (&json!(percent), &json!(true))
        );
        assert!(!revisions.contains(&s["revision"]), "{out}");
        revisions.push(s["revision"].clone());
    }
    // Every write was conditional on the file read, and the strict service
    // accepted it as a flagd flag file.
    let puts = files.puts();
    assert_eq!(puts.len(), 3, "{puts:?}");
    for put in &puts {
        assert_eq!(put["status"], 204, "{put}");
        assert!(
            put["if_match"].as_str().is_some_and(|e| e.starts_with('"')),
            "{put}"
        );
    }
    // Desired state: the same percent again writes nothing.
    let (code, out) = call(
        &wasm,
        &files,
        "s3cret",
        "checkout-v2",
        "production",
        Some(100),
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(files.puts().len(), 3);
    // Back to 0: the flag as it was declared.
    let (code, out) = call(
        &wasm,
        &files,
        "s3cret",
        "checkout-v2",
        "production",
        Some(0),
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        files.read("production.flagd.json")["flags"]["checkout-v2"],
        declared
    );
    assert_eq!(status(&out)["percent"], 0);
}

#[test]
fn flagd_file_mistakes_are_said_in_words() {
    let Some(wasm) = build() else { return };
    let files = FlagFiles::start("s3cret");
    files.write(
        "staging.flagd.json",
        &json!({ "flags": { "checkout-v2": { "state": "ENABLED", "variants": { "on": true, "off": false }, "defaultVariant": "off" } } }),
    );
    let fails = |token: &str, flag: &str, env: &str, percent: Option<u32>| {
        let (code, out) = call(&wasm, &files, token, flag, env, percent);
        assert_eq!(code, Some(1), "{out}");
        out
    };
    let e = fails("s3cret", "checkout-v2", "staging", Some(150));
    assert!(e.contains("150% is not a percent"), "{e}");
    let e = fails("s3cret", "search-v3", "staging", Some(10));
    assert!(
        e.contains("flag `search-v3`") && e.contains("not in the file"),
        "{e}"
    );
    let e = fails("s3cret", "checkout-v2", "production", None);
    assert!(e.contains("no flag file at that URL (404)"), "{e}");
    let e = fails("wrong", "checkout-v2", "staging", None);
    assert!(e.contains("refused the token (401)"), "{e}");
    assert!(
        files.requests().iter().all(|r| r["method"] == "GET"),
        "nothing was written: {:?}",
        files.requests()
    );
}
