//! `rollcage config check`: validate a configuration and load every plugin
//! it uses as the kind its use needs (a component file of undeclared kind
//! named as a strategy must be a strategy), without starting anything. Strategy parameters
//! are checked by the strategy plugins themselves (`validate`), for every
//! environment that could be read even when others could not: their
//! complaints are reported with the configuration's own errors, each at the
//! parameter's `file:line:col`, so that one check shows everything to fix.
//! The plan each strategy would follow is asked for too: its expose steps
//! must name an exposure control (the environment's `exposure` when they
//! name none), reported at the strategy table. Providers check the
//! service table of each pipeline through their environments, and exposure
//! controls their own `config`, in the same way: each problem names a
//! field, reported at that field's line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rollcage_config::{Config, ConfigError, sort_errors};
use rollcage_core::{PluginError, Release};
use rollcage_engine::preview::exposure_problems;

use super::BAD_INPUT;
use crate::plugins::{PluginSet, load_all};

pub async fn check(path: &Path, cache_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (config, errors) = Config::load_partial(path, &crate::plugins::config_context());
    crate::logging::init(config.as_ref().map(|c| &c.server.log), false);
    let Some(config) = config else {
        eprintln!("{errors}");
        return Ok(ExitCode::from(BAD_INPUT));
    };
    let mut config_errors = errors.0;
    let runtime = super::runtime_for(&config, cache_dir)?;
    // A locked component the cache lacks is fetched by its digest first.
    let fetched = crate::sources::fetch_missing(&config, &runtime).await;
    let set = load_all(&runtime, &config, None);
    let mut problems = if fetched.is_empty() {
        set.errors.clone()
    } else {
        fetched
    };
    // A component of another kind than its use needs is the configuration's
    // mistake: reported at the reference, with the others.
    config_errors.extend(set.misused.iter().cloned());
    for env in config.environments.values() {
        let Some(strategy) = set.get(&env.strategy).and_then(|p| p.strategy()) else {
            continue;
        };
        match strategy.validate(&env.strategy_params.to_string()).await {
            Ok(()) => {}
            Err(PluginError::InvalidParams { problems: each, .. }) => {
                config_errors.extend(each.iter().map(|p| env.strategy_error(p)));
            }
            Err(e) => problems.push(format!("environment `{}`: {e}", env.name)),
        }
        // Expose steps need a control of the exposure kind: the plan the
        // strategy would follow says which it names.
        let plan = rollcage_engine::preview::preview(
            &*strategy,
            &env.name,
            Release::new("1.0.1"),
            Some(Release::new("1.0.0")),
            env.replicas,
            &env.strategy_params.to_string(),
        )
        .await;
        if let Ok(plan) = plan {
            let kind_of = |id: &str| {
                set.loaded
                    .get(id)
                    .map(|p| p.kind())
                    .or_else(|| id.parse().ok().and_then(|id| config.plugins.get(&id)?.kind))
            };
            let default = env.exposure.as_ref().map(|r| r.name());
            for p in exposure_problems(&env.name, &plan.plan, default, &kind_of) {
                config_errors.push(env.strategy_at.error(p, None));
            }
        }
    }
    // Each provider checks the service definitions it will be handed, and
    // each exposure control its own configuration: their problems name a
    // field, reported at its line.
    config_errors.extend(service_problems(&config, &set, &mut problems).await);
    config_errors.extend(exposure_config_problems(&config, &set, &mut problems).await);
    sort_errors(&config.path, &mut config_errors);
    // A plugin's or strategy's message can quote a configured value.
    for e in &config_errors {
        eprintln!("{}", crate::logging::redact(&e.to_string()));
    }
    for p in &problems {
        eprintln!("error: {}", crate::logging::redact(p));
    }
    let total = config_errors.len() + problems.len();
    if total > 0 {
        eprintln!("{total} problem(s) in {}", path.display());
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

/// What each environment's provider finds in the service table of every
/// pipeline that goes through the environment (once per provider and
/// pipeline). A provider that could not be asked is a problem of its own.
async fn service_problems(
    config: &Config,
    set: &PluginSet,
    problems: &mut Vec<String>,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut asked = BTreeSet::new();
    for pipeline in config.pipelines.values() {
        for stage in &pipeline.stages {
            let Some(env) = config.environments.get(stage) else {
                continue;
            };
            let name = env.provider.name();
            if !asked.insert((name.to_string(), pipeline.name.clone())) {
                continue;
            }
            let Some(provider) = set
                .get(&env.provider)
                .and_then(|p| p.environment_provider())
            else {
                continue;
            };
            match provider.validate(&pipeline.service.to_string()).await {
                Ok(found) => errors.extend(
                    found
                        .iter()
                        .map(|p| pipeline.service_error(name, &p.field, &p.message)),
                ),
                Err(e) => problems.push(format!(
                    "pipeline `{}`: checking its service with provider `{name}`: {e}",
                    pipeline.name
                )),
            }
        }
    }
    errors
}

/// What each exposure control finds in its own `config` table.
async fn exposure_config_problems(
    config: &Config,
    set: &PluginSet,
    problems: &mut Vec<String>,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (name, plugin) in &set.loaded {
        let Some(control) = plugin.exposure() else {
            continue;
        };
        let found = match control.validate(&plugin.spec().config_json).await {
            Ok(found) => found,
            Err(e) => {
                problems.push(format!("plugin `{name}`: checking its config: {e}"));
                continue;
            }
        };
        let at = name
            .parse()
            .ok()
            .and_then(|id| config.plugins.get(&id))
            .and_then(|p| p.config_at.as_ref());
        for p in found {
            let subject = if p.field.is_empty() {
                String::new()
            } else {
                format!("{}: ", p.field)
            };
            let message = format!("plugin `{name}`: config: {subject}{}", p.message);
            match at {
                Some(at) => errors.push(at.of(&p.field).error(message, None)),
                None => problems.push(message),
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_problems_point_at_the_parameter_they_name() {
        let text = "[environments.staging]\nprovider = \"static-provider\"\nstrategy = { plugin = \"canary\", steps = [50, 10] }\n";
        let cx = rollcage_config::Context {
            builtins: vec![
                rollcage_config::KnownBuiltin {
                    name: "canary",
                    kind: rollcage_core::PluginKind::Strategy,
                },
                rollcage_config::KnownBuiltin {
                    name: "static-provider",
                    kind: rollcage_core::PluginKind::EnvironmentProvider,
                },
            ],
            vars: Some(Default::default()),
        };
        let config = Config::parse(Path::new("r.toml"), text, &cx).unwrap();
        let env = &config.environments["staging"];
        let at = |e: ConfigError| format!("{}:{}", e.line, e.column);
        assert_eq!(
            at(env.strategy_error("steps[2]: weight 10 is below 50")),
            "3:33"
        );
        assert_eq!(at(env.strategy_error("`steps`: missing")), "3:33");
        assert_eq!(at(env.strategy_error("something is off")), "3:12");
        assert_eq!(
            env.strategy_error("steps[2]: x").to_string(),
            "r.toml:3:33: error: environment `staging`: plugin `canary` rejected its parameters: steps[2]: x"
        );
    }
}
