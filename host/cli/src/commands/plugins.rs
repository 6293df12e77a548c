//! `rollcage plugins list` and `rollcage plugins check`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use rollcage_core::{PluginId, PluginKind};
use rollcage_runtime::{Grants, Limits, PluginSpec, WIT_VERSION, Wasm};

/// The contract a component targets, as the table and `check` print it.
fn wit_of(version: &str) -> String {
    format!("rollcage:plugin@{version}")
}

use super::BAD_INPUT;
use crate::plugins::{kind_of, load_all};

struct Row {
    id: String,
    kind: String,
    component: String,
    wit: String,
    size: String,
    digest: String,
    grants: String,
}

fn print_table(rows: &[Row]) {
    let header = Row {
        id: "ID".into(),
        kind: "KIND".into(),
        component: "COMPONENT".into(),
        wit: "WIT".into(),
        size: "SIZE".into(),
        digest: "DIGEST".into(),
        grants: "GRANTS".into(),
    };
    let w = |f: fn(&Row) -> &String| {
        rows.iter()
            .chain([&header])
            .map(|r| f(r).chars().count())
            .max()
            .unwrap_or(0)
    };
    let (wi, wk, wc, ws) = (
        w(|r| &r.id),
        w(|r| &r.kind),
        w(|r| &r.component),
        w(|r| &r.size),
    );
    for r in [&header].into_iter().chain(rows) {
        println!(
            "{:wi$}  {:wk$}  {:wc$}  {:21}  {:>ws$}  {:19}  {}",
            r.id, r.kind, r.component, r.wit, r.size, r.digest, r.grants
        );
    }
}

fn human_size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    }
}

fn describe_grants(grants: &Grants) -> String {
    let mut parts = Vec::new();
    if !grants.allow_hosts.is_empty() {
        let hosts: Vec<String> = grants.allow_hosts.iter().map(|h| h.to_string()).collect();
        parts.push(format!("hosts={}", hosts.join(",")));
    }
    if !grants.secrets.is_empty() {
        parts.push(format!("secrets={}", grants.secrets.join(",")));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" ")
    }
}

/// A digest as the table shows it: enough hex to tell components apart.
fn short_digest(digest: &rollcage_core::Digest) -> String {
    format!("sha256:{}", &digest.hex()[..12])
}

/// `rollcage plugins list`: the builtins; or the plugins of `--config`; or
/// the components named on the command line (files, `builtin:NAME`, OCI
/// references pulled now).
pub async fn list(
    sources: &[String],
    config: Option<&Path>,
    registry: &super::registry::RegistryArgs,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if !sources.is_empty() {
        return list_sources(sources, registry, cache_dir).await;
    }
    if registry.any() {
        eprintln!(
            "error: --insecure, --tls-ca and --auth-env are for components named on the command line; a configuration's plugins are fetched with their own settings"
        );
        return Ok(ExitCode::from(BAD_INPUT));
    }
    let Some(path) = config else {
        let rows: Vec<Row> = rollcage_builtins::BUILTINS
            .iter()
            .map(|b| Row {
                id: b.name.to_string(),
                kind: b.kind().to_string(),
                component: format!("builtin:{}", b.name),
                wit: WIT_VERSION.into(),
                size: human_size(b.wasm.len()),
                digest: short_digest(&rollcage_registry::digest_of(b.wasm)),
                grants: "-".into(),
            })
            .collect();
        print_table(&rows);
        return Ok(ExitCode::SUCCESS);
    };
    let config = match super::load_config(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let runtime = super::runtime_for(&config, cache_dir)?;
    // As a run would: a locked component the cache lacks is fetched first.
    let fetched = crate::sources::fetch_missing(&config, &runtime).await;
    let set = load_all(&runtime, &config, None);
    let errors = if fetched.is_empty() {
        &set.errors
    } else {
        &fetched
    };
    for e in errors {
        eprintln!("error: {}", crate::logging::redact(e));
    }
    for e in &set.misused {
        eprintln!("{}", crate::logging::redact(&e.to_string()));
    }
    let failed = !errors.is_empty() || !set.misused.is_empty();
    let rows: Vec<Row> = set
        .loaded
        .iter()
        .map(|(id, p)| Row {
            id: id.clone(),
            kind: p.kind().to_string(),
            component: p.spec().source_name.clone(),
            wit: wit_of(p.wit_version()),
            size: human_size(p.info().size),
            digest: set
                .digests
                .get(id)
                .map(short_digest)
                .unwrap_or_else(|| "-".into()),
            grants: describe_grants(&p.spec().grants),
        })
        .collect();
    print_table(&rows);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The rows of components named on the command line; each one that cannot
/// be had or is not a plugin is an error naming it, and the others are
/// still listed.
async fn list_sources(
    sources: &[String],
    registry: &super::registry::RegistryArgs,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    // One set of credentials goes to one registry only.
    if registry.auth_env.is_some() {
        let registries: std::collections::BTreeSet<String> = sources
            .iter()
            .filter_map(|s| s.parse::<rollcage_core::OciReference>().ok())
            .map(|r| r.registry)
            .collect();
        if registries.len() > 1 {
            eprintln!(
                "error: --auth-env gives the credentials of one registry, and these references name {}: list one registry's at a time",
                registries.into_iter().collect::<Vec<_>>().join(", ")
            );
            return Ok(ExitCode::from(BAD_INPUT));
        }
    }
    let runtime = super::runtime(cache_dir)?;
    let store = crate::sources::blob_store(&runtime);
    let mut rows = Vec::new();
    let mut failed = false;
    for source in sources {
        if source.starts_with("https://") {
            eprintln!(
                "error: {source}: a component from a URL is taken only with its digest: `rollcage plugins check {source} --sha256 HEX`"
            );
            failed = true;
            continue;
        }
        let fetched =
            match super::registry::fetch_source(source, None, registry, store.as_ref()).await {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("error: {}", crate::logging::redact(&e));
                    failed = true;
                    continue;
                }
            };
        let wasm = Wasm::verified(&fetched.bytes, &fetched.digest);
        let name = source_name(source);
        let described = kind_of(&runtime, &name, source, wasm).and_then(|kind| {
            let info =
                rollcage_runtime::inspect_component(&runtime, wasm).map_err(anyhow::Error::msg)?;
            Ok((kind, info))
        });
        let (kind, info) = match described {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e:#}");
                failed = true;
                continue;
            }
        };
        rows.push(Row {
            id: name,
            kind: kind.to_string(),
            component: source.clone(),
            wit: info
                .wit_version()
                .map(wit_of)
                .unwrap_or_else(|| WIT_VERSION.into()),
            size: human_size(fetched.bytes.len()),
            digest: short_digest(&fetched.digest),
            grants: "-".into(),
        });
    }
    print_table(&rows);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The short name of a component source: a builtin's name, a file's stem,
/// a repository's last segment.
fn source_name(source: &str) -> String {
    if let Some(name) = source.strip_prefix("builtin:") {
        return name.to_string();
    }
    if let Ok(r) = source.parse::<rollcage_core::OciReference>() {
        return r
            .repository
            .rsplit('/')
            .next()
            .unwrap_or(&r.repository)
            .to_string();
    }
    Path::new(source)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| source.to_string())
}

pub async fn check(
    source: &str,
    sha256: Option<&str>,
    registry: &super::registry::RegistryArgs,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let runtime = super::runtime(cache_dir)?;
    let store = crate::sources::blob_store(&runtime);
    let fetched =
        match super::registry::fetch_source(source, sha256, registry, store.as_ref()).await {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {}", crate::logging::redact(&e));
                return Ok(ExitCode::from(BAD_INPUT));
            }
        };
    if fetched.from != source {
        println!("fetched:   {}", fetched.from);
    }
    let bytes = fetched.bytes;
    let source = source.to_string();
    let id: PluginId = "checked".parse().expect("valid id");
    println!("component: {source} ({})", human_size(bytes.len()));
    println!("digest:    {}", fetched.digest);
    let wasm = Wasm::verified(&bytes, &fetched.digest);
    let kind: PluginKind = match kind_of(&runtime, id.as_str(), &source, wasm) {
        Ok(k) => k,
        Err(e) => {
            println!("refused: {e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    // The version the component targets: the host serves 0.1.0 beside the current one.
    let version = rollcage_runtime::inspect_component(&runtime, wasm)
        .ok()
        .and_then(|info| info.wit_version())
        .map(wit_of)
        .unwrap_or_else(|| WIT_VERSION.to_string());
    println!("world:     {kind} ({version})");
    let spec = PluginSpec {
        id,
        kind,
        source_name: source,
        grants: Grants::default(),
        limits: Limits::default(),
        config_json: "{}".into(),
    };
    match runtime.load(spec, Wasm::verified(&bytes, &fetched.digest)) {
        Ok(p) => {
            print_imports(&p);
            println!("ok: the host can run this {kind} plugin");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("refused: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn print_imports(p: &Arc<rollcage_runtime::LoadedPlugin>) {
    println!("imports:");
    for import in &p.info().imports {
        println!("  {import}");
    }
}
