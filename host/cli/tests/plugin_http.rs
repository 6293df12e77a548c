//! Outgoing HTTP errors reach a plugin as errors it can read, in every
//! language: a project made by `rollcage plugins new` (its Rust SDK, its
//! Python `wasi_http` helper, its JavaScript `fetch`) sends requests with
//! and without a body to a host outside `allow_hosts` and to a closed port,
//! and reports what each request said. A denial reads `denied: ...`, a
//! closed port `connection refused ...`; nothing crashes. The Python and
//! JavaScript plugins also show what a plugin sees of the environment and
//! of files. Where the Python or JavaScript tools are missing the test
//! says so and skips that language, except in CI (`CI=true`), where that
//! fails.

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

/// A notifier that sends each request of [`ATTEMPTS`] to its `url` and
/// fails with what each said, `LABEL: message | ...`.
const RUST_APP: &str = r##"
use rollcage_sdk::Notifier;
use rollcage_sdk::http::Request;
use rollcage_sdk::types::Event;

#[derive(serde::Deserialize)]
struct Config {
    url: String,
}

struct Plugin;

impl Notifier for Plugin {
    fn notify(_event: Event) -> Result<(), String> {
        let config: Config = rollcage_sdk::config()?;
        let attempts = [
            ("GET", "GET", Vec::new()),
            ("POST", "POST", br#"{"text":"deployed"}"#.to_vec()),
            ("POST-large", "POST", vec![b'x'; 40_000]),
        ];
        let mut said = Vec::new();
        for (label, method, body) in attempts {
            match Request::new(method, &config.url).body(body).send() {
                Ok(r) => said.push(format!("{label}: answered {}", r.status)),
                Err(e) => said.push(format!("{label}: {e}")),
            }
        }
        Err(said.join(" | "))
    }
}

rollcage_sdk::export_notifier!(Plugin);
"##;

const PYTHON_APP: &str = r#"
import os

import rollcage
import wasi_http
from wit_world import exports
from wit_world.imports.rollcage_plugin_types import Event


class NotifierApi(exports.NotifierApi):
    @rollcage.returns_errors
    def notify(self, event: Event) -> None:
        url = rollcage.config({"url": str})["url"]
        attempts = [
            ("GET", "GET", None),
            ("POST", "POST", b'{"text": "deployed"}'),
            ("POST-large", "POST", b"x" * 40_000),
        ]
        said = []
        for label, method, body in attempts:
            try:
                response = wasi_http.request(method, url, body=body)
                said.append(f"{label}: answered {response.status}")
            except wasi_http.HttpError as e:
                said.append(f"{label}: {e}")
        try:
            said.append(f"env: found {os.environ['HOME']}")
        except KeyError as e:
            said.append(f"env: {e}")
        raise rollcage.PluginError(" | ".join(said))
"#;

const JS_APP: &str = r#"
import { config, PluginError, returnsErrors } from './rollcage.js';

function stream(text) {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(new TextEncoder().encode(text));
      controller.close();
    },
  });
}

export const notifierApi = {
  notify: returnsErrors(async (event) => {
    const { url } = config({ url: String });
    const attempts = [
      ['GET', { method: 'GET' }],
      ['POST', { method: 'POST', body: JSON.stringify({ text: 'deployed' }) }],
      ['POST-large', { method: 'POST', body: 'x'.repeat(40000) }],
      ['POST-stream', { method: 'POST', body: stream('deployed'), duplex: 'half' }],
    ];
    const said = [];
    for (const [label, init] of attempts) {
      try {
        const response = await fetch(url, init);
        said.push(`${label}: answered ${response.status}`);
      } catch (e) {
        said.push(`${label}: ${e && e.message ? e.message : e}`);
      }
    }
    try {
      await fetch('file:///etc/passwd');
      said.push('file: answered');
    } catch (e) {
      said.push(`file: ${e.message}`);
    }
    said.push(`process: ${typeof process}`);
    throw new PluginError(said.join(' | '));
  }),
};
"#;

/// The labels each language's plugin reports, one per request.
fn attempts(lang: &str) -> &'static [&'static str] {
    match lang {
        "js" => &["GET", "POST", "POST-large", "POST-stream"],
        _ => &["GET", "POST", "POST-large"],
    }
}

/// A notifier project in `lang` with the app above in place of the
/// template's; its component, or `None` when the language's tools are
/// missing outside CI.
fn build(root: &Path, lang: &str, cache: &Path) -> Option<PathBuf> {
    let dir = root.join(lang);
    let out = rollcage(
        &[
            "plugins",
            "new",
            "poster",
            "--kind",
            "notifier",
            "--lang",
            lang,
            "--dir",
            dir.to_str().unwrap(),
        ],
        cache,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (file, app) = match lang {
        "rust" => ("src/lib.rs", RUST_APP),
        "python" => ("app.py", PYTHON_APP),
        _ => ("app.js", JS_APP),
    };
    std::fs::write(dir.join(file), app).unwrap();
    let mut build = Command::new("bash");
    build.arg(dir.join("build.sh"));
    build.env("ROLLCAGE_TOOLS", workspace().join(".tools"));
    build.env("CARGO_TARGET_DIR", workspace().join("target/plugin-new"));
    let out = build.output().unwrap();
    if !out.status.success() {
        let why = text(&out.stderr);
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        if lang != "rust" && !ci && why.contains("not found") {
            eprintln!("SKIPPED {lang}: {why}");
            return None;
        }
        panic!("{lang}: build.sh failed:\n{}{why}", text(&out.stdout));
    }
    Some(dir.join("target/poster.wasm"))
}

/// What each request said, by label, from `plugins test`'s error line.
fn said(lang: &str, wasm: &Path, extra: &[&str], cache: &Path) -> Vec<(String, String)> {
    let mut args = vec!["plugins", "test", wasm.to_str().unwrap()];
    args.extend(extra);
    let out = rollcage(&args, cache);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{lang}: {stdout}{}",
        text(&out.stderr)
    );
    assert!(
        !stdout.contains("crashed"),
        "{lang}: a request must not crash the plugin: {stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{lang}: no error line: {stdout}"));
    let first = attempts(lang)[0];
    let start = line
        .find(&format!("{first}: "))
        .unwrap_or_else(|| panic!("{lang}: {line}"));
    line[start..]
        .split(" | ")
        .map(|part| {
            let (label, message) = part.split_once(": ").unwrap();
            (label.to_string(), message.to_string())
        })
        .collect()
}

fn message<'a>(said: &'a [(String, String)], label: &str) -> &'a str {
    said.iter()
        .find(|(l, _)| l == label)
        .map(|(_, m)| m.as_str())
        .unwrap_or_else(|| panic!("no `{label}` in {said:?}"))
}

fn errors_reach_the_plugin(lang: &str) {
    let root = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let Some(wasm) = build(root.path(), lang, cache.path()) else {
        return;
    };

    // A host outside allow_hosts: every request is denied, with or without
    // a body, and says so before any body is sent.
    let denied = said(
        lang,
        &wasm,
        &["--config", "url=http://example.com/hook"],
        cache.path(),
    );
    for label in attempts(lang) {
        let m = message(&denied, label);
        assert!(m.contains("denied:"), "{lang} {label}: {m}");
        assert!(!m.contains("connection refused"), "{lang} {label}: {m}");
    }

    // A closed port that the plugin may reach: a connection error, told
    // apart from a denial.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("url=http://127.0.0.1:{port}/hook");
    let grant = format!("127.0.0.1:{port}");
    let refused = said(
        lang,
        &wasm,
        &["--config", &url, "--allow-host", &grant],
        cache.path(),
    );
    for label in attempts(lang) {
        let m = message(&refused, label);
        assert!(m.contains("connection refused"), "{lang} {label}: {m}");
        assert!(!m.contains("denied"), "{lang} {label}: {m}");
    }

    // What a plugin sees of the environment and of files says what to use.
    match lang {
        "python" => {
            let m = message(&denied, "env");
            assert!(
                m.contains("plugins see no environment variables") && m.contains("rollcage.config"),
                "{m}"
            );
        }
        "js" => {
            let m = message(&denied, "file");
            assert!(
                m.contains("only http:// and https:// URLs; a plugin has no files"),
                "{m}"
            );
            assert_eq!(message(&denied, "process"), "undefined");
        }
        _ => {}
    }
}

#[test]
fn rust_plugins_read_denials_and_connection_errors() {
    errors_reach_the_plugin("rust");
}

#[test]
fn python_plugins_read_denials_and_connection_errors() {
    errors_reach_the_plugin("python");
}

#[test]
fn javascript_plugins_read_denials_and_connection_errors() {
    errors_reach_the_plugin("js");
}
