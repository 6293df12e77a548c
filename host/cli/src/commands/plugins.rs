//! `rollcage plugins list` and `rollcage plugins check`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use rollcage_core::{PluginId, PluginKind};
use rollcage_runtime::{Grants, Limits, PluginSpec, WIT_VERSION};

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
    grants: String,
}

fn print_table(rows: &[Row]) {
    let header = Row {
        id: "ID".into(),
        kind: "KIND".into(),
        component: "COMPONENT".into(),
        wit: "WIT".into(),
        size: "SIZE".into(),
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
            "{:wi$}  {:wk$}  {:wc$}  {:21}  {:>ws$}  {}",
            r.id, r.kind, r.component, r.wit, r.size, r.grants
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

pub async fn list(config: Option<&Path>, cache_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let Some(path) = config else {
        let rows: Vec<Row> = rollcage_builtins::BUILTINS
            .iter()
            .map(|b| Row {
                id: b.name.to_string(),
                kind: b.kind().to_string(),
                component: format!("builtin:{}", b.name),
                wit: WIT_VERSION.into(),
                size: human_size(b.wasm.len()),
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
    let set = load_all(&runtime, &config, None);
    for e in &set.errors {
        eprintln!("error: {}", crate::logging::redact(e));
    }
    for e in &set.misused {
        eprintln!("{}", crate::logging::redact(&e.to_string()));
    }
    let failed = !set.errors.is_empty() || !set.misused.is_empty();
    let rows: Vec<Row> = set
        .loaded
        .iter()
        .map(|(id, p)| Row {
            id: id.clone(),
            kind: p.kind().to_string(),
            component: p.spec().source_name.clone(),
            wit: wit_of(p.wit_version()),
            size: human_size(p.info().size),
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

pub async fn check(file: &Path, cache_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return Ok(ExitCode::from(BAD_INPUT));
        }
    };
    let runtime = super::runtime(cache_dir)?;
    let source = file.display().to_string();
    let id: PluginId = "checked".parse().expect("valid id");
    println!("component: {source} ({})", human_size(bytes.len()));
    let kind: PluginKind = match kind_of(&runtime, id.as_str(), &source, &bytes) {
        Ok(k) => k,
        Err(e) => {
            println!("refused: {e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    // The version the component targets: the host serves 0.1.0 beside the current one.
    let version = rollcage_runtime::inspect_component(&runtime, &bytes)
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
    match runtime.load(spec, &bytes) {
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
