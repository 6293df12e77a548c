//! Logging to stderr, set up once per process: text for people, JSON lines
//! for machines (`[server] log = { format = "json" }`). Inside a run every
//! line carries the run's `run_id` and `stage` (from the engine's spans) and
//! a plugin's lines its `plugin` id.
//!
//! The level is `ROLLCAGE_LOG` if set, else `-v` (info) / `-vv` (debug),
//! else the configuration's level for a long-running host and `warn` for
//! one-off commands, whose own output is their progress.
//!
//! Every line passes through the host's [`Redactor`] on its way out, text
//! or JSON: a secret value a plugin or an error put into a message is
//! written as `[secret NAME]`. Colours are used only when standard error is
//! a terminal.
//!
//! A command that prints a run's progress to a person at a terminal
//! silences the console notifier's lines ([`quiet_plugins`]): they would
//! say again what the progress has just said.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use rollcage_config::LogConfig;
use rollcage_core::Redactor;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

static VERBOSE: AtomicU8 = AtomicU8::new(0);
static INIT: OnceLock<()> = OnceLock::new();
/// Set once the secrets are known (after logging is set up, which the
/// configuration's own errors already need).
static REDACTOR: RwLock<Option<Arc<Redactor>>> = RwLock::new(None);

/// Redact the values `redactor` knows from every line written from now on
/// (and from [`redact`]).
pub fn set_redactor(redactor: Arc<Redactor>) {
    *REDACTOR.write().unwrap_or_else(|e| e.into_inner()) = Some(redactor);
}

/// `text` without the secret values known so far, for output that does
/// not go through the log (the command's final error).
pub fn redact(text: &str) -> String {
    match &*REDACTOR.read().unwrap_or_else(|e| e.into_inner()) {
        Some(r) => r.redact(text).into_owned(),
        None => text.to_string(),
    }
}

/// Standard error, one whole log line at a time, redacted. The formatter
/// writes a line in one or more pieces to one writer and then drops it:
/// the line is collected, so that a value is never split between pieces.
struct RedactedStderr(Vec<u8>);

impl Write for RedactedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.0);
        let text = redact(&String::from_utf8_lossy(&line));
        std::io::stderr().write_all(text.as_bytes())
    }
}

impl Drop for RedactedStderr {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn redacted_stderr() -> RedactedStderr {
    RedactedStderr(Vec::with_capacity(256))
}

/// Plugin instances whose own log lines are not written.
static QUIET: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Write no log line of the plugin instances `ids` from now on.
pub fn quiet_plugins(ids: Vec<String>) {
    *QUIET.write().unwrap_or_else(|e| e.into_inner()) = ids;
}

/// Whether both standard output and standard error are a terminal: a
/// person reads the progress and the log on one screen.
pub fn person_at_terminal() -> bool {
    std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// Drops the lines of the plugins [`quiet_plugins`] names (the runtime
/// writes a plugin's lines with its id in the `plugin` field).
struct Quiet;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Quiet {
    fn event_enabled(&self, event: &tracing::Event<'_>, _: Context<'_, S>) -> bool {
        let quiet = QUIET.read().unwrap_or_else(|e| e.into_inner());
        if quiet.is_empty() || !event.metadata().target().starts_with("rollcage_runtime::") {
            return true;
        }
        let mut plugin = PluginField(None);
        event.record(&mut plugin);
        !plugin.0.is_some_and(|p| quiet.contains(&p))
    }
}

/// The `plugin` field of an event.
struct PluginField(Option<String>);

impl Visit for PluginField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "plugin" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "plugin" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

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
            .with_writer(redacted_stderr);
        if log.is_some_and(|l| l.format == "json") {
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .finish()
                .with(Quiet)
                .init();
        } else {
            builder.finish().with(Quiet).init();
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
            .with_writer(redacted_stderr)
            .without_time()
            .with_target(false)
            .with_ansi(false)
            .init();
    });
}
