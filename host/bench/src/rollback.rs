//! Item 7: how fast a bad release stops taking traffic. The `rollcage`
//! binary (built beside this one) runs real deployments of the demo service
//! on the local runtime, SQLite file store, wasm plugins, as an operator
//! runs them; each run's log then says when the failing measurement was
//! recorded, when the step that sent all traffic back to the good release
//! was recorded (after the router applied it), and when the stage ended
//! `rolled_back`. Two ways a release fails:
//!
//! * *in its canary*: its analysis fails at 50 %; the strategy's rollback
//!   routes everything to the stable slot, then removes the canary;
//! * *after promotion*: it passes its canary (the analysis reads
//!   `/healthz`), is promoted, then fails its bake (which reads `/`); the
//!   previous release is brought up again and traffic shifts back in the
//!   canary's steps, then the bad slot is removed.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::report::{Section, TargetRow};
use crate::stats::{Summary, fmt_secs, verdict_at_most};
use crate::table::Table;

const TITLE: &str = "Rollback: a bad release stops taking traffic";
const TO_STABLE: f64 = 1.0;
const TO_END: f64 = 2.0;

/// The configuration of one scenario: `analysis` is the check of the
/// canary, `bake` the table of the bake (or empty).
fn config(analysis: &str, bake: &str) -> String {
    format!(
        r#"
[server]
database = "sqlite://runs.db"

[plugins.probe]
component = "builtin:http"
allow_hosts = ["127.0.0.1:*"]

[checks.healthz]
plugin = "probe"
config = {{ url = "http://{{endpoint}}/healthz", expect_status = [200] }}

[checks.root]
plugin = "probe"
config = {{ url = "http://{{endpoint}}/", expect_status = [200] }}

[environments.staging]
provider = "local"
strategy = {{ plugin = "canary", steps = [50, 100] }}
analysis = {{ checks = ["{analysis}"], interval = "100ms" }}
{bake}
replicas = 2
progress_deadline = "30s"

[pipelines.web]
stages = ["staging"]
service = {{ command = ["${{ROLLCAGE_EXE}}", "demo-service", "--port", "{{port}}"], env = {{ VERSION = "{{release}}", RELEASE_ERROR_RATES = "1.0.0=0" , ERROR_RATE = "1" }} }}
"#
    )
}

/// The three instants of one rolled back run, in ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Marks {
    failed_ms: u64,
    stable_ms: u64,
    ended_ms: u64,
}

/// The marks in a run's log (entries as `runs show --output json` prints
/// them): the first failing `analysis`, the first step (of the strategy's
/// rollback or of the way back after promotion) routing 100 % to `good`,
/// and the `stage-finished` entry.
fn marks(log: &[Value], good: &str) -> Option<Marks> {
    let failed_ms = log.iter().find(|e| {
        e["kind"] == "analysis"
            && e["data"]["outcome"]
                .as_str()
                .is_some_and(|o| o.starts_with("Failed"))
    })?["at_ms"]
        .as_u64()?;
    let all_to_good = |action: &Value| {
        action["type"] == "route"
            && action["weights"]
                .as_array()
                .is_some_and(|w| w.len() == 1 && w[0]["slot"] == good && w[0]["weight"] == 100)
    };
    let stable_ms = log
        .iter()
        .filter(|e| e["at_ms"].as_u64() >= Some(failed_ms))
        .find(|e| match e["kind"].as_str() {
            Some("rollback-step") => all_to_good(&e["data"]),
            Some("restore-step") => all_to_good(&e["data"]["action"]),
            _ => false,
        })?["at_ms"]
        .as_u64()?;
    let ended = log.iter().find(|e| e["kind"] == "stage-finished")?;
    (ended["data"]["result"] == "rolled_back").then_some(())?;
    Some(Marks {
        failed_ms,
        stable_ms,
        ended_ms: ended["at_ms"].as_u64()?,
    })
}

fn rollcage(exe: &Path, cache: &Path, args: &[&str]) -> Result<std::process::Output, String> {
    Command::new(exe)
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .env_remove("ROLLCAGE_SERVER")
        .output()
        .map_err(|e| format!("{}: {e}", exe.display()))
}

/// `rounds` bad releases rolled back in one scenario; the marks of each.
fn scenario(
    exe: &Path,
    dir: &Path,
    analysis: &str,
    bake: &str,
    rounds: usize,
) -> Result<Vec<Marks>, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let cfg = dir.join("rollcage.toml");
    std::fs::write(&cfg, config(analysis, bake)).map_err(|e| e.to_string())?;
    let cfg = cfg.to_str().ok_or("a temporary path that is not UTF-8")?;
    let cache = dir.join("cache");
    let good = rollcage(
        exe,
        &cache,
        &["run", "web", "-c", cfg, "--release", "1.0.0"],
    )?;
    if !good.status.success() {
        return Err(format!(
            "the good release failed: {}",
            String::from_utf8_lossy(&good.stdout)
        ));
    }
    let mut out = Vec::new();
    for i in 0..rounds {
        let release = format!("1.{}.0", i + 1);
        let bad = rollcage(
            exe,
            &cache,
            &[
                "run",
                "web",
                "-c",
                cfg,
                "--release",
                &release,
                "--output",
                "json",
            ],
        )?;
        let text = String::from_utf8_lossy(&bad.stdout);
        let log: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("seq").is_some())
            .collect();
        out.push(
            marks(&log, "1.0.0").ok_or_else(|| {
                format!("run of {release} did not roll back as expected:\n{text}")
            })?,
        );
    }
    Ok(out)
}

fn secs(ms: impl Iterator<Item = u64>) -> Vec<f64> {
    ms.map(|m| m as f64 / 1000.0).collect()
}

pub fn run(quick: bool, work: &Path) -> Section {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("rollcage")))
        .unwrap_or_else(|| PathBuf::from("rollcage"));
    if !exe.exists() {
        return Section::failed(
            7,
            TITLE,
            &format!(
                "no `rollcage` binary at {} (cargo build -p rollcage, with the same profile)",
                exe.display()
            ),
        );
    }
    let rounds = if quick { 3 } else { 15 };
    let mut section = Section::new(7, TITLE);
    section.method = format!(
        "The `rollcage` binary deploys the demo service on the local runtime (SQLite file store, builtin wasm plugins, canary in steps of 50 and 100 %, two instances) as an operator runs it: a good release 1.0.0, then {rounds} bad releases in a row, each rolled back; every bad release answers `/` with 500. *In its canary*: its analysis of `/` fails at 50 %. *After promotion*: its canary analyses `/healthz` (which every release answers), so it is promoted, and its bake (`duration = \"300ms\"`, `interval = \"100ms\"`, checks `/`) fails. The instants are the run log's own timestamps (ms, written by the store as each entry is recorded): the failing `analysis` entry, the step that routed 100 % to 1.0.0 (recorded once the router applied it), and `stage-finished` (`rolled_back`). Each run is its own process (a CLI run), so the runs' start-up is not in these numbers."
    );
    let mut table = Table::new(
        "From the failing measurement being recorded",
        &[
            "failure",
            "runs",
            "to 100 % on stable: median",
            "p99",
            "max",
            "to rolled_back: median",
            "p99",
            "max",
        ],
    );
    let cases = [
        ("in its canary", "root", String::new()),
        (
            "after promotion (bake)",
            "healthz",
            "bake = { duration = \"300ms\", interval = \"100ms\", checks = [\"root\"] }"
                .to_string(),
        ),
    ];
    let mut worst: Option<(f64, f64)> = None;
    for (i, (name, analysis, bake)) in cases.iter().enumerate() {
        let dir = work.join(format!("rollback-{i}"));
        match scenario(&exe, &dir, analysis, bake, rounds) {
            Ok(marks) => {
                let to_stable = Summary::of(&secs(
                    marks
                        .iter()
                        .map(|m| m.stable_ms.saturating_sub(m.failed_ms)),
                ));
                let to_end = Summary::of(&secs(
                    marks.iter().map(|m| m.ended_ms.saturating_sub(m.failed_ms)),
                ));
                if let (Some(s), Some(e)) = (to_stable, to_end) {
                    table.row(vec![
                        name.to_string(),
                        s.n.to_string(),
                        fmt_secs(s.median),
                        fmt_secs(s.p99),
                        fmt_secs(s.max),
                        fmt_secs(e.median),
                        fmt_secs(e.p99),
                        fmt_secs(e.max),
                    ]);
                    let (ws, we) = worst.unwrap_or((0.0, 0.0));
                    worst = Some((ws.max(s.p99), we.max(e.p99)));
                }
            }
            Err(e) => section.notes.push(format!("{name}: not measured: {e}")),
        }
    }
    section.tables.push(table);
    if let Some((to_stable, to_end)) = worst {
        section.targets.push(TargetRow {
            target: "failing measurement to 100 % on stable ≤ 1 s".into(),
            measured: format!("worst p99 of the two failures: {}", fmt_secs(to_stable)),
            verdict: verdict_at_most(to_stable, TO_STABLE, fmt_secs),
            why: String::new(),
        });
        section.targets.push(TargetRow {
            target: "failing measurement to the stage ending rolled_back ≤ 2 s".into(),
            measured: format!("worst p99 of the two failures: {}", fmt_secs(to_end)),
            verdict: verdict_at_most(to_end, TO_END, fmt_secs),
            why: String::new(),
        });
    }
    section.notes.push(
        "After promotion the way back starts the previous release's instances again (a process each, ready when `/healthz` answers) before any traffic moves; in its canary the stable slot is still running, so the first step moves all traffic at once.".into(),
    );
    section
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(kind: &str, at_ms: u64, data: Value) -> Value {
        json!({"seq": at_ms, "at_ms": at_ms, "kind": kind, "stage": "staging", "data": data})
    }

    #[test]
    fn the_marks_are_the_failure_the_route_to_stable_and_the_end() {
        let route = |w: Value| json!({"type": "route", "weights": w});
        let log = [
            entry("analysis", 100, json!({"outcome": "Passed"})),
            entry(
                "analysis",
                200,
                json!({"outcome": "Failed(\"check `root`\")"}),
            ),
            entry(
                "restore-step",
                250,
                json!({"action": route(json!([{"slot": "1.0.0", "weight": 50}, {"slot": "1.1.0", "weight": 50}]))}),
            ),
            entry(
                "restore-step",
                300,
                json!({"action": route(json!([{"slot": "1.0.0", "weight": 100}]))}),
            ),
            entry("stage-finished", 400, json!({"result": "rolled_back"})),
        ];
        assert_eq!(
            marks(&log, "1.0.0"),
            Some(Marks {
                failed_ms: 200,
                stable_ms: 300,
                ended_ms: 400
            })
        );
        // A strategy's rollback step counts too; a run that succeeded has none.
        let log = [
            entry("analysis", 10, json!({"outcome": "Failed(\"x\")"})),
            entry(
                "rollback-step",
                20,
                route(json!([{"slot": "1.0.0", "weight": 100}])),
            ),
            entry("stage-finished", 30, json!({"result": "rolled_back"})),
        ];
        assert_eq!(marks(&log, "1.0.0").map(|m| m.stable_ms), Some(20));
        assert_eq!(marks(&log[..1], "1.0.0"), None);
    }
}
