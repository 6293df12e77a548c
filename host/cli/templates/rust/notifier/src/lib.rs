//! __NAME__: a notifier. It receives every event of a run (started, step,
//! analysis failed, awaiting approval, succeeded, rolled back...) and tells
//! someone; here, one log line per event, prefixed by `prefix`.

use rollcage_sdk::Notifier;
use rollcage_sdk::log::{LogLevel, log};
use rollcage_sdk::types::Event;
use serde::Deserialize;

/// The plugin's `config` table.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Put before every line (default `rollcage`).
    #[serde(default)]
    prefix: Option<String>,
}

/// The line for an event.
fn render(prefix: &str, event: &Event) -> String {
    let env = event.environment.as_deref().unwrap_or("-");
    format!(
        "{prefix}: {} {} in {env}: {}",
        event.pipeline, event.release.version, event.message
    )
}

struct Plugin;

impl Notifier for Plugin {
    fn notify(event: Event) -> Result<(), String> {
        let config: Config = rollcage_sdk::config()?;
        let prefix = config.prefix.as_deref().unwrap_or("rollcage");
        log(LogLevel::Info, &render(prefix, &event), &[("run_id", &event.run_id)]);
        Ok(())
    }
}

rollcage_sdk::export_notifier!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use rollcage_sdk::testing::sample_event;
    use rollcage_sdk::types::EventKind;

    #[test]
    fn a_line_names_pipeline_release_and_environment() {
        let line = render("deploys", &sample_event(EventKind::Succeeded));
        assert!(line.starts_with("deploys: "), "{line}");
    }
}
