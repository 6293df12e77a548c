//! `rollcage config check`: validate a configuration and load every plugin
//! it uses against its world, without starting anything. Strategy parameters
//! are checked by the strategy plugins themselves (`validate`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::BAD_INPUT;
use crate::plugins::load_all;

pub async fn check(path: &Path, cache_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = match super::load_config(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let runtime = super::runtime_for(&config, cache_dir)?;
    let set = load_all(&runtime, &config, None);
    let mut problems = set.errors.clone();
    for env in config.environments.values() {
        let Some(strategy) = set.get(&env.strategy).and_then(|p| p.strategy()) else {
            continue;
        };
        if let Err(e) = strategy.validate(&env.strategy_params.to_string()).await {
            problems.push(format!("environment `{}`: {e}", env.name));
        }
    }
    // A plugin's or strategy's message can quote a configured value.
    for p in &problems {
        eprintln!("error: {}", crate::logging::redact(p));
    }
    if !problems.is_empty() {
        eprintln!("{} problem(s) in {}", problems.len(), path.display());
        return Ok(ExitCode::from(BAD_INPUT));
    }
    println!(
        "{}: ok ({} plugins, {} checks, {} environments, {} pipelines)",
        path.display(),
        set.loaded.len(),
        config.checks.len(),
        config.environments.len(),
        config.pipelines.len()
    );
    Ok(ExitCode::SUCCESS)
}
