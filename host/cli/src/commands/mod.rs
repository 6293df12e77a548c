//! One module per command; each returns the process exit code:
//! 0 success, 1 failure, 2 bad input.

mod plugins;

use std::process::ExitCode;

use crate::cli::{Command, PluginsCommand};

/// Exit code for bad input (an invalid configuration, a missing file).
pub const BAD_INPUT: u8 = 2;

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Plugins(PluginsCommand::List { config, cache_dir }) => {
            plugins::list(config.as_deref(), cache_dir).await
        }
        Command::Plugins(PluginsCommand::Check { file, cache_dir }) => {
            plugins::check(&file, cache_dir).await
        }
    }
}
