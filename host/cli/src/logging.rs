//! Logging to stderr, set up once per process: text for people, JSON lines
//! for machines (`[server] log = { format = "json" }`). Inside a run every
//! line carries the run's `run_id` and `stage` (from the engine's spans) and
//! a plugin's lines its `plugin` id.
//!
//! The level is `ROLLCAGE_LOG` if set, else `-v` (info) / `-vv` (debug),
//! else the configuration's level for a long-running host and `warn` for
//! one-off commands, whose own output is their progress.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

use rollcage_config::LogConfig;

static VERBOSE: AtomicU8 = AtomicU8::new(0);
static INIT: OnceLock<()> = OnceLock::new();

/// Remember `-v` for whichever command sets logging up.
pub fn set_verbosity(verbose: u8) {
    VERBOSE.store(verbose, Ordering::Relaxed);
}

/// Set logging up from a configuration's `[server] log` (first call wins).
/// `serving`: a long-running host, which logs at the configured level.
pub fn init(log: Option<&LogConfig>, serving: bool) {
    INIT.get_or_init(|| {
        let level = match VERBOSE.load(Ordering::Relaxed) {
            0 if serving => log.map_or("info", |l| l.level.as_str()).to_string(),
            0 => "warn".to_string(),
            1 => "info".to_string(),
            _ => "debug".to_string(),
        };
        let filter = tracing_subscriber::EnvFilter::try_from_env("ROLLCAGE_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
        // Colours only for a person at a terminal, not in a log file.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr);
        if log.is_some_and(|l| l.format == "json") {
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .init();
        } else {
            builder.init();
        }
    });
}

/// For `plugins test`: the plugin's own log lines, short, on stderr; the
/// host's only when they warn (`-v` for more).
pub fn init_plugin_test() {
    INIT.get_or_init(|| {
        let level = match VERBOSE.load(Ordering::Relaxed) {
            // Plugin lines: `log` (hostapi), stdout and stderr (state).
            0 => "warn,rollcage_runtime::hostapi=trace,rollcage_runtime::state=trace",
            1 => "info",
            _ => "debug",
        };
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(level))
            .with_writer(std::io::stderr)
            .without_time()
            .with_target(false)
            .with_ansi(false)
            .init();
    });
}
