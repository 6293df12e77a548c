//! `rollcage plugins new NAME --kind K --lang rust|python|js`: a plugin
//! project that builds as generated: the code of a minimal working plugin
//! of that kind, a build script, a README, and (for Python and JavaScript)
//! the WIT contract it is built against. The templates and the WIT are
//! embedded in the binary (`templates/<lang>/common` and
//! `templates/<lang>/<kind>`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rollcage_core::PluginKind;

use super::bad_input;
use crate::cli::{LangArg, PluginNewArgs};

static TEMPLATES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/templates.rs"));
static WIT: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/wit.rs"));

/// The Rust SDK of the source tree this binary was built from.
fn default_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk")
}

/// Per kind: what the plugin does, how to try it, how to configure it.
fn about(kind: PluginKind, name: &str) -> (&'static str, String, String) {
    let wasm = format!("target/{name}.wasm");
    match kind {
        PluginKind::Exposure => (
            "It shows a feature flag to a percent of users in an environment through a small REST flag service at `api_url` (see the top of its code); replace the calls with your flag service's.",
            format!("rollcage plugins test {wasm} --config api_url=http://127.0.0.1:8080 --allow-host 127.0.0.1:8080   # a flag service you run"),
            "allow_hosts = [\"127.0.0.1:8080\"]\nconfig = { api_url = \"http://127.0.0.1:8080\" }\n# then, in an environment: exposure = \"NAME\"; and in its canary's steps: { expose = 10 }".replace("NAME", name),
        ),
        PluginKind::Notifier => (
            "It writes one log line per event of a run; replace `notify` with a call to your chat, ticketing or paging service.",
            format!("rollcage plugins test {wasm} --config prefix=deploys"),
            "config = { prefix = \"deploys\" }\n# then: notify = [\"NAME\"] in an environment or pipeline".replace("NAME", name),
        ),
        PluginKind::HealthCheck => (
            "It GETs `path` on every endpoint of the slot under analysis and passes when the healthy fraction is at least `min_ratio`.",
            format!("rollcage plugins test {wasm} --allow-host '127.0.0.1:*' --endpoint 127.0.0.1:8080   # a service you run"),
            "allow_hosts = [\"127.0.0.1:*\"]\nconfig = { path = \"/healthz\", min_ratio = 1.0 }\n# then: [checks.healthy] plugin = \"NAME\"".replace("NAME", name),
        ),
        PluginKind::Strategy => (
            "It starts the new release beside the stable one, sends it `first_weight` percent of traffic, has it analysed, then moves all traffic and removes the old slot.",
            format!("rollcage plugins test {wasm} --params first_weight=20 --plan"),
            "# then, in an environment: strategy = { plugin = \"NAME\", first_weight = 10 }".replace("NAME", name),
        ),
        PluginKind::EnvironmentProvider => (
            "It drives a small REST API at `api_url` (see the top of its code); replace the calls with your platform's.",
            format!("rollcage plugins test {wasm} --config api_url=http://127.0.0.1:8080 --allow-host 127.0.0.1:8080"),
            "allow_hosts = [\"127.0.0.1:8080\"]\nconfig = { api_url = \"http://127.0.0.1:8080\" }\n# then, in an environment: provider = \"NAME\"".replace("NAME", name),
        ),
    }
}

/// How a language's plugin reads its config, logs, calls HTTP and fails.
struct Idioms {
    config: &'static str,
    log: &'static str,
    http: &'static str,
    fail: &'static str,
}

fn idioms(lang: LangArg) -> Idioms {
    match lang {
        LangArg::Rust => Idioms {
            config: "`rollcage_sdk::config()`",
            log: "`rollcage_sdk::log::log`",
            http: "`rollcage_sdk::http::Request`",
            fail: "return `Err(message)`",
        },
        LangArg::Python => Idioms {
            config: "`rollcage.config(...)`",
            log: "`rollcage.log(...)`",
            http: "`wasi_http.request(...)`",
            fail: "raise `rollcage.PluginError(message)`",
        },
        LangArg::Js => Idioms {
            config: "`config(...)`",
            log: "`log(...)`",
            http: "`fetch()`",
            fail: "throw `new PluginError(message)`",
        },
    }
}

/// The README's last section: what a plugin of this kind is granted, and
/// how it reads its settings, logs and fails. Each kind speaks of itself
/// only: a strategy is pure and granted nothing, so its README says so and
/// says nothing of hosts, secrets or HTTP.
fn grants(kind: PluginKind, lang: LangArg) -> String {
    let i = idioms(lang);
    let (reach, fails) = match kind {
        PluginKind::Exposure => (
            "list the hosts of the flag service it drives in `allow_hosts`, and the secrets it reads (an API token) in `secrets`",
            "Setting an exposure is desired state, not a delta: the engine may repeat it after a crash, and sets the percent from before the run again when it rolls back.",
        ),
        PluginKind::Strategy => {
            let params = match lang {
                LangArg::Rust => {
                    "check them in `validate`, read them from `state.params` in `decide` and `rollback`"
                }
                LangArg::Python | LangArg::Js => {
                    "check them in `validate`, read them from `state.params` in `decide` and `rollback` (the `params` helper does both)"
                }
            };
            return format!(
                "A strategy is pure: it decides from the deploy state it is given and \
                 nothing else, so that a run can be previewed (`rollcage run --dry-run`), \
                 replayed and resumed. It is granted nothing: no hosts, no secrets (the \
                 host refuses a strategy configured with any), and it makes no calls of \
                 its own. Its parameters are the rest of the environment's \
                 `strategy = {{ ... }}` table: {params}. Log with {log}; {fail} for a \
                 problem the run should show, and the engine executes `rollback`.\n",
                log = i.log,
                fail = i.fail,
            );
        }
        PluginKind::HealthCheck => (
            "list the hosts it measures in `allow_hosts`, and the secrets it reads (a metrics API's token) in `secrets`",
            "Return a measurement whose verdict is `fail` for an unhealthy release, and fail the call only when it could not measure: an error counts towards the analysis's limit of errors in a row, not its failure limit.",
        ),
        PluginKind::Notifier => (
            "list the hosts it posts to in `allow_hosts`, and the secrets it reads (a webhook URL, a token) in `secrets`",
            "A notification that fails is retried from the host's queue; it never holds the run.",
        ),
        PluginKind::EnvironmentProvider => (
            "list the hosts of the platform API it drives in `allow_hosts`, and the secrets it reads (an API token) in `secrets`",
            "Its actions are desired state, not deltas: the engine may repeat one after a crash.",
        ),
    };
    format!(
        "A plugin is granted nothing by default: {reach}. Read your config with \
         {config}, log with {log}, call HTTP with {http}; {fail} for a failure \
         the run should show. {fails}\n",
        config = i.config,
        log = i.log,
        http = i.http,
        fail = i.fail,
    )
}

/// Python's HTTP client module, for every kind but a strategy's.
const PYTHON_HTTP_ROW: &str =
    "| `wasi_http.py` | a small blocking HTTP client over `wasi:http` |\n";

/// What goes into a JavaScript component, by kind.
fn js_runtime(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Strategy => {
            "`app.js` and the modules it imports go into the component. A strategy\nuses only the state passed in: no `fetch()`, no `Date.now()`, no\n`Math.random()`."
        }
        _ => {
            "`app.js` and the modules it imports go into the component; `fetch()` is\nthere too, over `wasi:http`."
        }
    }
}

/// The files of a new project, by path relative to its folder.
pub fn files(name: &str, kind: PluginKind, lang: LangArg, sdk: &Path) -> Vec<(String, String)> {
    let lang_dir = match lang {
        LangArg::Rust => "rust",
        LangArg::Python => "python",
        LangArg::Js => "js",
    };
    let kind_name = kind.to_string();
    let (text, try_it, use_it) = about(kind, name);
    let grants = grants(kind, lang);
    let http_row = if kind == PluginKind::Strategy {
        ""
    } else {
        PYTHON_HTTP_ROW
    };
    let fill = |t: &str| {
        t.replace("__GRANTS__\n", &grants)
            .replace("__HTTP_FILE__\n", http_row)
            .replace("__RUNTIME__", js_runtime(kind))
            .replace("__NAME__", name)
            .replace("__CRATE__", &name.replace('-', "_"))
            .replace("__SDK__", &sdk.display().to_string())
            .replace("__KIND__", &kind_name)
            .replace("__WORLD__", kind.world())
            .replace("__ABOUT__", text)
            .replace("__TRY__", &try_it)
            .replace("__USE__", &use_it)
    };
    let mut out = Vec::new();
    for prefix in [
        format!("{lang_dir}/common/"),
        format!("{lang_dir}/{kind_name}/"),
    ] {
        for (path, text) in TEMPLATES {
            if let Some(rel) = path.strip_prefix(&prefix) {
                // A strategy makes no HTTP calls: no client to tempt it.
                if kind == PluginKind::Strategy && rel == "wasi_http.py" {
                    continue;
                }
                // Stored without the dot, so that it does not act on this tree.
                let rel = if rel == "gitignore" {
                    ".gitignore"
                } else {
                    rel
                };
                out.push((rel.to_string(), fill(text)));
            }
        }
    }
    if lang != LangArg::Rust {
        for (path, text) in WIT {
            out.push((format!("wit/{path}"), text.to_string()));
        }
    }
    out
}

/// A plugin name: lowercase letters, digits and dashes, starting with a
/// letter (it becomes a crate, a file and a configuration id).
fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

pub fn new(args: PluginNewArgs) -> anyhow::Result<ExitCode> {
    if !valid_name(&args.name) {
        return Ok(bad_input(format!(
            "plugin name `{}`: use lowercase letters, digits and dashes, starting with a letter",
            args.name
        )));
    }
    let kind = PluginKind::from(args.kind);
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        return Ok(bad_input(format!(
            "{} exists and is not empty; choose another --dir",
            dir.display()
        )));
    }
    let sdk = match &args.sdk {
        Some(p) => p.clone(),
        None => default_sdk(),
    };
    let sdk = sdk
        .canonicalize()
        .or_else(|_| std::path::absolute(&sdk))
        .unwrap_or(sdk);
    if args.lang == LangArg::Rust && !sdk.join("Cargo.toml").exists() {
        return Ok(bad_input(format!(
            "no rollcage-sdk at {}; pass --sdk PATH (the `sdk` folder of the Rollcage source)",
            sdk.display()
        )));
    }
    let files = files(&args.name, kind, args.lang, &sdk);
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)?;
        if rel.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    println!(
        "created {} ({kind} plugin in {:?}, {} files); next: {}/build.sh",
        dir.display(),
        args.lang,
        files.len(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_and_language_has_its_code_and_build_script() {
        let sdk = Path::new("/sdk");
        for kind in [
            PluginKind::Notifier,
            PluginKind::HealthCheck,
            PluginKind::Strategy,
            PluginKind::EnvironmentProvider,
            PluginKind::Exposure,
        ] {
            for lang in [LangArg::Rust, LangArg::Python, LangArg::Js] {
                let files = files("my-plugin", kind, lang, sdk);
                let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
                assert!(names.contains(&"build.sh"), "{kind} {lang:?}: {names:?}");
                assert!(names.contains(&"README.md"), "{kind} {lang:?}: {names:?}");
                let code = match lang {
                    LangArg::Rust => "src/lib.rs",
                    LangArg::Python => "app.py",
                    LangArg::Js => "app.js",
                };
                assert!(names.contains(&code), "{kind} {lang:?}: {names:?}");
                for (path, text) in &files {
                    assert!(
                        !text.contains("__NAME__") && !text.contains("__KIND__"),
                        "{path}"
                    );
                }
            }
        }
        assert!(valid_name("my-plugin2"));
        assert!(!valid_name("My_Plugin") && !valid_name("2x") && !valid_name(""));
    }

    #[test]
    fn each_kinds_readme_speaks_of_its_kind_only() {
        // What a README of another kind would say: a strategy is pure, so
        // nothing in its README may tell the author to reach out.
        let of_kind = |k: PluginKind| -> &'static [&'static str] {
            match k {
                PluginKind::Strategy => &["strateg", "`state.params`"],
                PluginKind::HealthCheck => &["health check", "health-check", "measure"],
                PluginKind::Notifier => &["notifier", "notification"],
                PluginKind::EnvironmentProvider => &["provider", "platform API"],
                PluginKind::Exposure => &["exposure"],
            }
        };
        let reaching_out = [
            "allow_hosts",
            "`secrets`",
            "call HTTP",
            "wasi_http",
            "http::Request",
            "over `wasi:http`",
        ];
        let sdk = Path::new("/sdk");
        for kind in PluginKind::ALL {
            for lang in [LangArg::Rust, LangArg::Python, LangArg::Js] {
                let files = files("my-plugin", kind, lang, sdk);
                let readme = &files.iter().find(|(p, _)| p == "README.md").unwrap().1;
                let at = format!("{kind} {lang:?} README.md");
                assert!(
                    !readme.contains("__"),
                    "{at}: a placeholder is left\n{readme}"
                );
                for other in PluginKind::ALL.into_iter().filter(|k| *k != kind) {
                    for word in of_kind(other) {
                        assert!(
                            !readme.to_lowercase().contains(&word.to_lowercase()),
                            "{at} speaks of a {other} (`{word}`):\n{readme}"
                        );
                    }
                }
                let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
                if kind == PluginKind::Strategy {
                    assert!(
                        readme.contains("A strategy is pure")
                            && readme.contains("It is granted nothing"),
                        "{at}:\n{readme}"
                    );
                    for word in reaching_out {
                        assert!(!readme.contains(word), "{at} says `{word}`:\n{readme}");
                    }
                    assert!(!names.contains(&"wasi_http.py"), "{at}: {names:?}");
                } else {
                    assert!(readme.contains("allow_hosts"), "{at}:\n{readme}");
                    let http = idioms(lang).http;
                    assert!(readme.contains(http), "{at}: {http}\n{readme}");
                    if lang == LangArg::Python {
                        assert!(names.contains(&"wasi_http.py"), "{at}: {names:?}");
                        assert!(readme.contains("| `wasi_http.py` |"), "{at}");
                    }
                }
            }
        }
    }
}
