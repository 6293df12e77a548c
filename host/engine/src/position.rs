//! Where a run is, read from its log. The log is what the engine acts on
//! (a resumed run continues from it), so whoever decides something about
//! a run (may this token approve it? which environment does a rollback
//! take back?) reads the run's position from here, never from the run's
//! summary fields, which are written after the fact and can lag behind.

use rollcage_store::Event;

/// The stage a run is in, waiting in, or queued for: the first of its
/// `stages` whose log shows no successful `stage-finished`. Stages run in
/// order and a stage that does not succeed ends the run, so this is also
/// the stage a finished run stopped in. `None` when every stage succeeded.
pub fn current_stage<'a>(stages: &'a [String], log: &[Event]) -> Option<&'a str> {
    stages
        .iter()
        .find(|s| !succeeded(s, log))
        .map(String::as_str)
}

/// The stage a decision or follow-up on a run acts in: the current stage,
/// or for a run whose stages all succeeded its last one.
pub fn acting_stage<'a>(stages: &'a [String], log: &[Event]) -> Option<&'a str> {
    current_stage(stages, log).or_else(|| stages.last().map(String::as_str))
}

fn succeeded(stage: &str, log: &[Event]) -> bool {
    log.iter().any(|e| {
        e.kind == "stage-finished"
            && e.stage.as_deref() == Some(stage)
            && e.data["result"] == "succeeded"
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(kind: &str, stage: Option<&str>, data: serde_json::Value) -> Event {
        Event {
            seq: 0,
            at_ms: 0,
            kind: kind.into(),
            stage: stage.map(str::to_string),
            data,
            epoch: 1,
        }
    }

    #[test]
    fn the_current_stage_is_the_first_not_yet_succeeded() {
        let stages = vec!["staging".to_string(), "production".to_string()];
        let mut log = vec![];
        assert_eq!(current_stage(&stages, &log), Some("staging"));
        log.push(entry("run-started", None, json!({})));
        log.push(entry("stage-started", Some("staging"), json!({})));
        assert_eq!(current_stage(&stages, &log), Some("staging"));
        log.push(entry(
            "stage-finished",
            Some("staging"),
            json!({"result": "succeeded"}),
        ));
        // Production has not logged anything yet: it is still the stage
        // the run is in (waiting for its lock, window or approval).
        assert_eq!(current_stage(&stages, &log), Some("production"));
        let mut failed = log.clone();
        failed.push(entry(
            "stage-finished",
            Some("production"),
            json!({"result": "rolled_back"}),
        ));
        assert_eq!(current_stage(&stages, &failed), Some("production"));
        log.push(entry(
            "stage-finished",
            Some("production"),
            json!({"result": "succeeded"}),
        ));
        assert_eq!(current_stage(&stages, &log), None);
        assert_eq!(acting_stage(&stages, &log), Some("production"));
    }
}
