//! One module per command; each returns the process exit code:
//! 0 success, 1 failure, 2 bad input.

mod config;
mod demo;
mod plugin_new;
mod plugin_test;
mod plugins;
mod progress;
mod registry;
mod remote;
mod run;
mod runs;
mod serve;
mod token;
mod wit_json;

use std::process::ExitCode;

use std::path::PathBuf;

use rollcage_runtime::{ComponentCache, Runtime, RuntimeOptions};

use crate::cli::{Command, ConfigCommand, PluginsCommand};
pub use registry::RegistryArgs;

/// Exit code for bad input (an invalid configuration, a missing file).
pub const BAD_INPUT: u8 = 2;

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    // Commands that read a configuration set logging up from it; the rest
    // (and errors before it) log with the defaults.
    if !matches!(
        command,
        Command::Run(_)
            | Command::Runs(_)
            | Command::Demo(_)
            | Command::Serve(_)
            | Command::Plugins(PluginsCommand::Test(_))
    ) {
        crate::logging::init(None, false);
    }
    match command {
        Command::Plugins(PluginsCommand::List {
            sources,
            config,
            registry,
            cache_dir,
        }) => plugins::list(&sources, config.as_deref(), &registry, cache_dir).await,
        Command::Plugins(PluginsCommand::Check {
            source,
            sha256,
            registry,
            cache_dir,
        }) => plugins::check(&source, sha256.as_deref(), &registry, cache_dir).await,
        Command::Plugins(PluginsCommand::Lock {
            config,
            check,
            cache_dir,
        }) => registry::lock(&config, cache_dir, check).await,
        Command::Plugins(PluginsCommand::Push {
            file,
            reference,
            registry,
            cache_dir,
        }) => registry::push(&file, &reference, &registry, cache_dir).await,
        Command::Plugins(PluginsCommand::Pull {
            reference,
            config,
            registry,
            cache_dir,
        }) => {
            registry::pull(
                reference.as_deref(),
                config.as_deref(),
                &registry,
                cache_dir,
            )
            .await
        }
        Command::Plugins(PluginsCommand::Test(args)) => plugin_test::test(args).await,
        Command::Plugins(PluginsCommand::New(args)) => plugin_new::new(args),
        Command::Config(ConfigCommand::Check { file, cache_dir }) => {
            config::check(&file, cache_dir).await
        }
        Command::Run(args) => run::run(args).await,
        Command::Demo(args) => demo::demo(args).await,
        Command::DemoService { args } => {
            let settings = match rollcage_demo_service::Settings::from_env_and_args(args) {
                Ok(s) => s,
                Err(e) => return Ok(bad_input(e)),
            };
            rollcage_demo_service::serve(settings).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs(command) => runs::run(command).await,
        Command::Serve(args) => serve::serve(args).await,
        Command::Token(crate::cli::TokenCommand::New(args)) => token::new(args),
    }
}

/// The plugin runtime, with the compiled-component cache in `cache_dir` or
/// the user cache folder.
fn runtime(cache_dir: Option<PathBuf>) -> anyhow::Result<Runtime> {
    Ok(Runtime::new(RuntimeOptions {
        cache_dir: cache_dir.or_else(ComponentCache::default_dir),
        ..RuntimeOptions::default()
    })?)
}

/// The plugin runtime for `config`: its cache folder and its secret source
/// (`[server] secrets_file`, or the environment), as the host uses them.
fn runtime_for(
    config: &rollcage_config::Config,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<Runtime> {
    let secrets = crate::host::secret_source(config)?;
    crate::host::install_redactor(config, &*secrets, vec![]);
    let cache_dir = cache_dir
        .or(config.server.cache_dir.clone())
        .or_else(ComponentCache::default_dir);
    if let Some(dir) = &cache_dir {
        crate::host::private_dir(dir)?;
    }
    Ok(Runtime::new(RuntimeOptions {
        cache_dir,
        secrets,
        ..RuntimeOptions::default()
    })?)
}

/// Print `message` as an error; the bad-input exit code.
fn bad_input(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(BAD_INPUT)
}

/// Read and validate a configuration; on errors, print them all and give the
/// bad-input exit code.
fn load_config(path: &std::path::Path) -> Result<rollcage_config::Config, ExitCode> {
    let config = rollcage_config::Config::load(path, &crate::plugins::config_context());
    crate::logging::init(config.as_ref().ok().map(|c| &c.server.log), false);
    config.map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::from(BAD_INPUT)
    })
}
