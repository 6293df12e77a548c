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
        PluginKind::Notifier => (
            "It writes one log line per event of a run; replace `notify` with a call to your chat, ticketing or paging service.",
            format!("rollcage plugins test {wasm} --config prefix=deploys"),
            "config = { prefix = \"deploys\" }\n# then: notify = [\"NAME\"] in an environment or pipeline".replace("NAME", name),
        ),
        PluginKind::HealthCheck => (
            "It GETs `path` on every endpoint of the slot under analysis and passes when the healthy fraction is at least `min_ratio`.",
            format!("rollcage plugins test {wasm} --allow-host '127.0.0.1:*'"),
            "allow_hosts = [\"127.0.0.1:*\"]\nconfig = { path = \"/healthz\", min_ratio = 1.0 }\n# then: [checks.healthy] plugin = \"NAME\"".replace("NAME", name),
        ),
        PluginKind::Strategy => (
            "It starts the new release beside the stable one, sends it `first_weight` percent of traffic, has it analysed, then moves all traffic and removes the old slot.",
            format!("rollcage plugins test {wasm}"),
            "# then, in an environment: strategy = { plugin = \"NAME\", first_weight = 10 }".replace("NAME", name),
        ),
        PluginKind::EnvironmentProvider => (
            "It drives a small REST API at `api_url` (see the top of its code); replace the calls with your platform's.",
            format!("rollcage plugins test {wasm} --config api_url=http://127.0.0.1:8080 --allow-host 127.0.0.1:8080"),
            "allow_hosts = [\"127.0.0.1:8080\"]\nconfig = { api_url = \"http://127.0.0.1:8080\" }\n# then, in an environment: provider = \"NAME\"".replace("NAME", name),
        ),
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
    let fill = |t: &str| {
        t.replace("__NAME__", name)
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
}
