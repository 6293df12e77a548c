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
    /// Inspect, test and start plugins: the builtins, a configuration's, or
    /// one component file.
    #[command(subcommand, alias = "plugin")]
    Plugins(PluginsCommand),
    /// Check a configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Take a release through a pipeline's stages, showing progress.
    /// Exit code 0 succeeded, 1 failed or rolled back, 2 bad input.
    Run(RunArgs),
    /// List, show, approve, abort and resume runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Run the host: engine, local runtime and HTTP API, until SIGINT or
    /// SIGTERM. Unfinished runs are resumed at start.
    Serve(ServeArgs),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Deploy a demo service on this machine: a good release promoted
    /// through staging and production, a bad one rolled back by analysis.
    Demo(DemoArgs),
    /// The demo service itself (what the demo's local runtime starts).
    #[command(hide = true)]
    DemoService {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the demo's configuration, database and logs in this folder
    /// (default: a temporary folder, removed at the end).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Compiled-component cache folder (default: the user cache folder).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Where the dashboard listens while the demo runs (default: a free
    /// port on 127.0.0.1).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub dashboard: String,
}

/// Output for people or for machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Output {
    #[default]
    Text,
    /// One JSON document per line: each event, then the run.
    Json,
}

/// Where the host's configuration and cache are.
#[derive(Debug, Clone, clap::Args)]
pub struct HostArgs {
    /// The configuration file.
    #[arg(long, short = 'c', default_value = "rollcage.toml")]
    pub config: PathBuf,
    /// Compiled-component cache folder (default: the user cache folder).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Talk to a `rollcage serve` at this URL (http://HOST:PORT) instead
    /// of running here.
    #[arg(long, env = "ROLLCAGE_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The API token for --server.
    #[arg(long, env = "ROLLCAGE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Listen here instead of `[server] listen` (port 0: any free port).
    #[arg(long)]
    pub listen: Option<String>,
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a random token; print it, and the lines that grant it.
    New(TokenNewArgs),
}

#[derive(Debug, clap::Args)]
pub struct TokenNewArgs {
    /// Who holds it (the name in the audit trail).
    pub name: String,
    #[arg(long, value_enum)]
    pub role: TokenRoleArg,
    /// Environments a deployer or approver acts in (repeatable; all when absent).
    #[arg(long = "environment", short = 'e')]
    pub environments: Vec<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TokenRoleArg {
    Viewer,
    Deployer,
    Approver,
    /// For Prometheus Alertmanager: only `POST /v1/hooks/alertmanager`.
    Alerts,
    Admin,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The pipeline to run.
    pub pipeline: String,
    /// The release, a SemVer version such as 1.4.0.
    #[arg(long, short = 'r')]
    pub release: String,
    /// A file of release notes.
    #[arg(long)]
    pub notes: Option<PathBuf>,
    /// A run parameter, such as jira_issue=OPS-12 (repeatable).
    #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Only this stage (repeatable); all stages when absent.
    #[arg(long = "stage", short = 's')]
    pub stages: Vec<String>,
    /// Print the plan and the rollback plan; touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Who starts the run (default: $USER).
    #[arg(long = "as", value_name = "NAME")]
    pub by: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Runs, newest first.
    List {
        #[arg(long)]
        pipeline: Option<String>,
        /// queued, running, awaiting_approval, succeeded, rolled_back, failed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
        #[command(flatten)]
        host: HostArgs,
    },
    /// A run and its whole log: stages, steps, analysis measurements,
    /// notifications.
    Show {
        id: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Approve a run waiting for a person.
    Approve {
        id: String,
        /// Who approves (default: $USER).
        #[arg(long = "as", value_name = "NAME")]
        by: Option<String>,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Abort a run: it rolls back at its next step.
    Abort {
        id: String,
        /// Who aborts (default: $USER).
        #[arg(long = "as", value_name = "NAME")]
        by: Option<String>,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Drive every unfinished run (after a crash) to its end.
    Resume {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
        #[command(flatten)]
        host: HostArgs,
    },
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
    /// List plugins: id, kind, component, WIT version, size, digest, grants.
    /// The builtins; or with --config a configuration's plugins; or the
    /// components given (files, builtin:NAME, oci:// references).
    List {
        /// Components to list: .wasm files, builtin:NAME, or
        /// oci://REGISTRY/REPOSITORY:TAG (or @sha256:...), pulled now.
        #[arg(conflicts_with = "config")]
        sources: Vec<String>,
        /// A rollcage.toml whose [plugins] to load and list.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        #[command(flatten)]
        registry: crate::commands::RegistryArgs,
        /// Compiled-component cache folder (default: the user cache folder).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Check a component: which world it fits, what it imports, and whether
    /// the host can run it.
    Check {
        /// The .wasm component, builtin:NAME, oci://REGISTRY/REPOSITORY:TAG
        /// (or @sha256:...), or an https:// URL with --sha256.
        source: String,
        /// The SHA-256 an https:// component must have.
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        #[command(flatten)]
        registry: crate::commands::RegistryArgs,
        /// Compiled-component cache folder (default: the user cache folder).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Resolve every oci:// and https:// component of a configuration to a
    /// digest, cache it, and write rollcage.lock beside the configuration.
    Lock {
        /// The rollcage.toml.
        #[arg(long, short = 'c', default_value = "rollcage.toml")]
        config: PathBuf,
        /// Write nothing; fail if the lock file is missing or out of date
        /// (a tag moved, a component changed).
        #[arg(long)]
        check: bool,
        /// Compiled-component cache folder (default: the user cache folder).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Push a component to an OCI registry, in the Wasm OCI artifact layout
    /// (annotated with its plugin kind and WIT version).
    Push {
        /// The .wasm component.
        file: PathBuf,
        /// oci://REGISTRY/REPOSITORY:TAG
        reference: String,
        #[command(flatten)]
        registry: crate::commands::RegistryArgs,
        /// Compiled-component cache folder (default: the user cache folder).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Pull a component into the local cache: one reference, or with
    /// --config every locked component the cache lacks.
    Pull {
        /// oci://REGISTRY/REPOSITORY:TAG (or @sha256:...).
        #[arg(required_unless_present = "config")]
        reference: Option<String>,
        /// A rollcage.toml whose locked components to fetch.
        #[arg(long, short = 'c', conflicts_with = "reference")]
        config: Option<PathBuf>,
        #[command(flatten)]
        registry: crate::commands::RegistryArgs,
        /// Compiled-component cache folder (default: the user cache folder).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Load one component with the given grants and call it once with a
    /// sample input; print the result, its log lines and the time taken.
    Test(PluginTestArgs),
    /// Start a plugin project that builds as generated.
    New(PluginNewArgs),
}

#[derive(Debug, clap::Args)]
pub struct PluginNewArgs {
    /// The plugin's name (lowercase letters, digits, dashes).
    pub name: String,
    #[arg(long, value_enum)]
    pub kind: KindArg,
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: LangArg,
    /// Where to create it (default: ./NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The Rust SDK to depend on (default: the one of this build's source).
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

/// A plugin's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LangArg {
    Rust,
    Python,
    Js,
}

#[derive(Debug, clap::Args)]
pub struct PluginTestArgs {
    /// The .wasm component, or `builtin:NAME` for a builtin plugin.
    #[arg(required_unless_present = "print_input")]
    pub file: Option<PathBuf>,
    /// The kind expected (default: the world the component fits).
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// The call's input as JSON in the WIT's spelling (default: a built-in
    /// sample of the kind; `--print-input` prints it): an event (notifier),
    /// a check target (health check), a deploy state (strategy: validate,
    /// decide and rollback), a target (provider: status) or a flag and
    /// environment (exposure: `{"flag": ..., "environment": ...}` reads its
    /// exposure; with `"percent": N` sets it first).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Print the input the call would get, as JSON for `--input`, and stop
    /// (with FILE or --kind).
    #[arg(long)]
    pub print_input: bool,
    /// A key of the plugin's config (repeatable); JSON values are parsed.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Strategy: a parameter (repeatable), as KEY=VALUE (JSON values are
    /// parsed) or a JSON object; what an environment's `strategy = { ... }`
    /// gives besides `plugin`. Validated before anything is decided.
    #[arg(long = "params", value_name = "KEY=VALUE|JSON")]
    pub params: Vec<String>,
    /// Strategy: drive `decide` to `done` over a simulated environment
    /// (every step succeeds, every analysis passes) and print the plan and
    /// the rollback plan, as `run --dry-run` does.
    #[arg(long)]
    pub plan: bool,
    /// Health check: an endpoint (HOST:PORT) of the slot measured
    /// (repeatable).
    #[arg(long = "endpoint", value_name = "HOST:PORT")]
    pub endpoints: Vec<String>,
    /// Notifier: the event's kind, as the WIT names it: run-started,
    /// stage-started, awaiting-approval, step, analysis-failed,
    /// rolled-back, succeeded, failed (default succeeded).
    #[arg(long, value_name = "KIND")]
    pub event: Option<String>,
    /// A host the plugin may reach (repeatable): host, host:port, host:*.
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_hosts: Vec<String>,
    /// A restricted network the plugin may reach (repeatable): an address
    /// or network such as 10.0.0.0/8, for hosts granted by name.
    #[arg(long = "allow-private", value_name = "NET")]
    pub allow_private: Vec<String>,
    /// A secret granted to the plugin (repeatable).
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    pub secrets: Vec<String>,
    #[arg(long, default_value_t = 64)]
    pub memory_mb: u64,
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Compiled-component cache folder (default: the user cache folder).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// A plugin kind on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    Notifier,
    HealthCheck,
    Strategy,
    EnvironmentProvider,
    Exposure,
}

impl From<KindArg> for rollcage_core::PluginKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Notifier => rollcage_core::PluginKind::Notifier,
            KindArg::HealthCheck => rollcage_core::PluginKind::HealthCheck,
            KindArg::Strategy => rollcage_core::PluginKind::Strategy,
            KindArg::EnvironmentProvider => rollcage_core::PluginKind::EnvironmentProvider,
            KindArg::Exposure => rollcage_core::PluginKind::Exposure,
        }
    }
}
