//! `builtin:console`: writes one readable line per deployment event to the
//! host's log, under the plugin's id. The notifier of the embedded default.

use rollcage_sdk::Notifier;
use rollcage_sdk::log::{LogLevel, log};
use rollcage_sdk::notifier::events::{kind_name, wanted};
use rollcage_sdk::types::{Event, EventKind};
use serde::Deserialize;

/// The plugin's `config` table.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Only these event kinds (`run-started`, `rolled-back`, ...); all when absent.
    #[serde(default)]
    events: Option<Vec<String>>,
}

/// The notifier.
pub struct Console;

/// The line written for an event.
pub fn render(event: &Event) -> String {
    let mut line = format!(
        "[{}] {} {}",
        kind_name(event.kind),
        event.pipeline,
        event.release.version
    );
    if let Some(env) = &event.environment {
        line.push_str(&format!(" in {env}"));
    }
    line.push_str(": ");
    line.push_str(&event.message);
    for (k, v) in &event.fields {
        line.push_str(&format!(" {k}={v}"));
    }
    line
}

impl Notifier for Console {
    fn notify(event: Event) -> Result<(), String> {
        let config: Config = rollcage_sdk::config()?;
        if !wanted(config.events.as_deref(), &event)? {
            return Ok(());
        }
        let level = match event.kind {
            EventKind::AnalysisFailed | EventKind::RolledBack => LogLevel::Warn,
            EventKind::Failed => LogLevel::Error,
            _ => LogLevel::Info,
        };
        log(
            level,
            &render(&event),
            &[("run_id", &event.run_id), ("event", kind_name(event.kind))],
        );
        Ok(())
    }
}

rollcage_sdk::export_notifier!(Console);

#[cfg(test)]
mod tests {
    use super::*;
    use rollcage_sdk::testing::sample_event;

    #[test]
    fn lines_name_the_event_pipeline_release_and_fields() {
        assert_eq!(
            render(&sample_event(EventKind::RolledBack)),
            "[rolled-back] api 1.2.0 in production: error ratio 0.31 above 0.05 error_ratio=0.31 weight=10"
        );
    }
}
