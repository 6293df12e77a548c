//! Live progress of a run, read from its log in the store: stages, steps,
//! traffic splits, analysis values against their verdicts, a bar for timed
//! pauses on a terminal; or, for machines, every log entry as a JSON line.
//! The same lines serve `runs show` for a finished run.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use rollcage_core::{Action, Outcome, Pause, StepRecord};
use rollcage_store::{Event, Run, RunStatus, Store};
use serde_json::Value;

use crate::cli::Output;

/// How often the log is read while following a run.
const POLL: Duration = Duration::from_millis(150);

/// Print run `id`'s log as it grows until the run is finished (or, with
/// `until_finished` false, until the log has been read once). Returns the
/// run as last read and the sequence number of the last entry printed.
pub async fn follow(
    store: &dyn Store,
    id: &str,
    output: Output,
    until_finished: bool,
) -> anyhow::Result<(Run, u64)> {
    let tty = output == Output::Text && std::io::stdout().is_terminal();
    let mut after = 0;
    let mut pause: Option<(Instant, u64)> = None;
    loop {
        // Read the status first: a run seen finished has all its log.
        let run = store.run(id).await?;
        let events = store.events(id, after).await?;
        for e in &events {
            after = e.seq;
            if pause.take().is_some() && tty {
                out!("\r\x1b[K");
            }
            match output {
                Output::Json => outln!("{}", serde_json::to_string(e)?),
                Output::Text => {
                    if let Some(line) = describe(e, id) {
                        outln!("{line}");
                    }
                    if let Some(ms) = timed_pause(e) {
                        pause = Some((Instant::now(), ms));
                    }
                }
            }
        }
        if run.status.is_finished() || !until_finished {
            if output == Output::Json {
                outln!("{}", serde_json::json!({ "run": run }));
            }
            return Ok((run, after));
        }
        if let (Some((since, ms)), true) = (pause, tty) {
            out!("\r{}", bar(since.elapsed(), Duration::from_millis(ms)));
        }
        std::io::stdout().flush().ok();
        tokio::time::sleep(POLL).await;
    }
}

/// For a person: the `notification` entries of run `id` after sequence
/// number `after`, those of deliveries that ended once the run had (a
/// failed one gets a line, as while following).
pub async fn late_notifications(store: &dyn Store, id: &str, after: u64) -> anyhow::Result<()> {
    for e in store.events(id, after).await? {
        if e.kind == "notification"
            && let Some(line) = describe(&e, id)
        {
            outln!("{line}");
        }
    }
    Ok(())
}

fn timed_pause(e: &Event) -> Option<u64> {
    if e.kind != "intent" {
        return None;
    }
    match serde_json::from_value::<Action>(e.data.clone()).ok()? {
        Action::Pause {
            pause: Pause::DurationMs(ms),
        } => Some(ms),
        _ => None,
    }
}

/// `  pausing [#######.............] 12s / 30s`
fn bar(elapsed: Duration, total: Duration) -> String {
    const WIDTH: usize = 30;
    let done = if total.is_zero() {
        WIDTH
    } else {
        ((elapsed.as_secs_f64() / total.as_secs_f64()) * WIDTH as f64).min(WIDTH as f64) as usize
    };
    format!(
        "  pausing [{}{}] {}s / {}s",
        "#".repeat(done),
        ".".repeat(WIDTH - done),
        elapsed.as_secs().min(total.as_secs()),
        total.as_secs()
    )
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// One line for a person, or nothing for entries only machines need.
pub fn describe(e: &Event, run_id: &str) -> Option<String> {
    let stage = e.stage.as_deref().unwrap_or("");
    let d = &e.data;
    Some(match e.kind.as_str() {
        "run-started" => format!(
            "run {run_id} started by {} (stages: {})",
            str_of(d, "by"),
            d["stages"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
        "stage-started" => match d["stable"].as_str() {
            Some(stable) => format!("[{stage}] started; stable release {stable}"),
            None => format!("[{stage}] started; first deployment"),
        },
        "waiting-for-environment" => format!(
            "[{stage}] queued: the environment is {} run {}; this run goes when it is done",
            if d["holding"] == true {
                "held by"
            } else {
                "queued for first by"
            },
            str_of(d, "holder")
        ),
        "environment-locked" => format!("[{stage}] the environment is this run's now"),
        "waiting-for-window" => format!(
            "[{stage}] outside its window {}: waiting {} s",
            str_of(d, "window"),
            d["seconds"]
        ),
        "awaiting-approval" => format!(
            "[{stage}] waiting for approval{}: rollcage runs approve {run_id}",
            d["why"]
                .as_str()
                .map(|w| format!(" ({w})"))
                .unwrap_or_default()
        ),
        "approved" => format!("[{stage}] approved by {}", str_of(d, "by")),
        "aborted" => format!("[{stage}] aborted by {}", str_of(d, "by")),
        "decision" => format!(
            "[{stage}] {} asked by {}",
            str_of(d, "action"),
            str_of(d, "by")
        ),
        "pre-jobs-done" => format!("[{stage}] pre-deploy jobs done"),
        "post-jobs-done" => format!("[{stage}] post-deploy jobs done"),
        "bake-started" => format!(
            "[{stage}] baking {} for {} s: measured every {} s",
            str_of(d, "release"),
            d["duration_ms"].as_u64().unwrap_or(0) / 1000,
            d["interval_ms"].as_u64().unwrap_or(0) / 1000
        ),
        "bake-finished" => format!("[{stage}] bake passed"),
        "restore-step" => {
            let record: StepRecord = serde_json::from_value(d.clone()).ok()?;
            // Pauses and analyses of the way back are not waited for.
            match record.action {
                Action::Pause { .. } | Action::Analyze(_) => return None,
                action => format!("  back {action}"),
            }
        }
        "step" => {
            let record: StepRecord = serde_json::from_value(d.clone()).ok()?;
            match &record.outcome {
                Outcome::Ok => format!("  ok   {}", record.action),
                Outcome::AnalysisPassed => format!("  ok   {}: analysis passed", record.action),
                Outcome::AnalysisFailed(r) => {
                    format!("  FAIL {}: analysis failed: {r}", record.action)
                }
                Outcome::Failed(r) => format!("  FAIL {}: {r}", record.action),
            }
        }
        "analysis" => {
            let lines: Vec<String> = d["measurements"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| match m.get("error") {
                    Some(err) => format!(
                        "       {}: error: {}",
                        str_of(m, "check"),
                        err.as_str().unwrap_or("")
                    ),
                    None => format!(
                        "       {}: {} ({}) {}",
                        str_of(m, "check"),
                        m["value"]
                            .as_f64()
                            .map(|v| format!("{v:.4}"))
                            .unwrap_or_else(|| "no value".into()),
                        str_of(m, "verdict"),
                        str_of(m, "detail")
                    ),
                })
                .collect();
            if lines.is_empty() {
                return None;
            }
            lines.join("\n")
        }
        "rolling-back" => match d["to"].as_str() {
            Some(to) => format!(
                "[{stage}] rolling back to {to} after promotion: {}",
                str_of(d, "reason")
            ),
            None => format!("[{stage}] rolling back: {}", str_of(d, "reason")),
        },
        "rollback-step" => match serde_json::from_value(d.clone()).ok()? {
            // Set by the engine, not asked by the strategy: the flag's
            // exposure before the run.
            Action::Expose(c) => format!("  back flag {} restored to {}%", c.flag, c.percent),
            action => format!("  back {action}"),
        },
        "exposure-before" => format!(
            "  flag {} was at {}% before the run (control {})",
            str_of(d, "flag"),
            d["percent"],
            str_of(d, "control")
        ),
        "stage-finished" => match d["reason"].as_str() {
            Some(reason) => format!("[{stage}] {}: {reason}", str_of(d, "result")),
            None => format!("[{stage}] {}", str_of(d, "result")),
        },
        "refused" => format!("[{stage}] refused: {}", str_of(d, "reason")),
        "notification" => match d["error"].as_str() {
            Some(err) => format!(
                "  notifier {} failed after {} attempt(s): {err}",
                str_of(d, "notifier"),
                d["attempts"]
            ),
            None => return None,
        },
        _ => return None,
    })
}

/// The closing line of a run.
pub fn summary(run: &Run) -> String {
    let r = &run.run;
    match run.status {
        RunStatus::Succeeded => format!(
            "{} {} succeeded in every stage ({})",
            r.pipeline,
            r.release,
            r.stages.join(", ")
        ),
        status => format!(
            "{} {} {}{}{}",
            r.pipeline,
            r.release,
            status.as_str().replace('_', " "),
            run.stage
                .as_deref()
                .map(|s| format!(" in {s}"))
                .unwrap_or_default(),
            run.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, data: Value) -> Event {
        Event {
            seq: 1,
            at_ms: 0,
            kind: kind.into(),
            stage: Some("production".into()),
            data,
            epoch: 1,
        }
    }

    #[test]
    fn steps_show_the_traffic_split_and_the_outcome() {
        let step = json!({"action": {"type": "route", "weights": [{"slot": "1.0.0", "weight": 90}, {"slot": "1.1.0", "weight": 10}]}, "outcome": {"type": "ok"}});
        assert_eq!(
            describe(&event("step", step), "r1").unwrap(),
            "  ok   route 1.0.0=90% 1.1.0=10%"
        );
        let failed = json!({"action": {"type": "analyze", "checks": [], "slot": "1.1.0"}, "outcome": {"type": "analysis_failed", "reason": "check `error-rate` failed"}});
        assert_eq!(
            describe(&event("step", failed), "r1").unwrap(),
            "  FAIL analyze 1.1.0: analysis failed: check `error-rate` failed"
        );
    }

    #[test]
    fn measurements_show_value_verdict_and_detail() {
        let a = json!({"outcome": "Failed", "measurements": [{"check": "error-rate", "verdict": "fail", "value": 0.31, "detail": "0.31 fails < 0.05"}]});
        assert_eq!(
            describe(&event("analysis", a), "r1").unwrap(),
            "       error-rate: 0.3100 (fail) 0.31 fails < 0.05"
        );
    }

    #[test]
    fn an_approval_says_how_to_approve() {
        let line = describe(&event("awaiting-approval", json!({"gate": "stage"})), "r9").unwrap();
        assert_eq!(
            line,
            "[production] waiting for approval: rollcage runs approve r9"
        );
    }

    #[test]
    fn a_queued_run_names_the_run_it_waits_for() {
        let d = json!({"environment": "production", "holder": "r1", "holding": true});
        assert_eq!(
            describe(&event("waiting-for-environment", d), "r2").unwrap(),
            "[production] queued: the environment is held by run r1; this run goes when it is done"
        );
    }

    #[test]
    fn the_bar_fills_with_time() {
        assert_eq!(
            bar(Duration::from_secs(15), Duration::from_secs(30)),
            format!("  pausing [{}{}] 15s / 30s", "#".repeat(15), ".".repeat(15))
        );
    }
}
