//! Command-line syntax (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Rollcage: progressive delivery where every integration is a sandboxed
/// WebAssembly plugin.
#[derive(Debug, Parser)]
#[command(name = "rollcage", version, about)]
pub struct Cli {
    /// More log output (-v info, -vv debug); ROLLCAGE_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect plugins: the builtins, a configuration's, or one component file.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Check a configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration and load every plugin it uses against its
    /// world, without starting anything.
    Check {
        /// The configuration file.
        #[arg(default_value = "rollcage.toml")]
        file: PathBuf,
        /// Compiled-component cache folder (default: the user cache folder).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// List plugins: id, kind, component, WIT version, size, grants. Without
    /// --config, the builtin plugins.
    List {
        /// A rollcage.toml whose [plugins] to load and list.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Compiled-component cache folder (default: the user cache folder).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Check a component file: which world it fits, what it imports, and
    /// whether the host can run it.
    Check {
        /// The .wasm component.
        file: PathBuf,
        /// Compiled-component cache folder (default: the user cache folder).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}
