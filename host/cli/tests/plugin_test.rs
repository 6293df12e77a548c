//! `rollcage plugins test` drives every kind end to end, with the builtin
//! plugins (no language toolchain needed): a strategy's parameters and
//! whole plan, a health check's endpoints, a notifier's event, and the
//! input JSON in the WIT's own spelling.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Output;

mod common;
use common::{rollcage, text};

fn out(o: &Output) -> (String, String) {
    (text(&o.stdout), text(&o.stderr))
}

fn test(args: &[&str], cache: &Path) -> (Option<i32>, String, String) {
    let mut all = vec!["plugins", "test"];
    all.extend(args);
    let o = rollcage(&all, cache);
    let (stdout, stderr) = out(&o);
    (o.status.code(), stdout, stderr)
}

#[test]
fn a_strategys_parameters_are_given_with_params_and_validated_first() {
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let (code, stdout, stderr) = test(&["builtin:canary", "--params", "steps=[20, 100]"], c);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("\"params\":\"{\\\"steps\\\":[20,100]}\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("result:  {\"decide\":{\"apply-slot\":{"),
        "{stdout}"
    );
    // Rejected parameters stop the call before `decide`, naming the problem.
    let (code, stdout, _) = test(&["builtin:canary", "--params", "{\"steps\": [50, 10]}"], c);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("error:   plugin `test` rejected its parameters: steps[2]: weight 10 is below the previous weight 50"),
        "{stdout}"
    );
    assert!(!stdout.contains("result:"), "{stdout}");
    // A parameter given as config is not silently dropped.
    let (code, stdout, stderr) = test(&["builtin:canary", "--config", "steps=[50, 10]"], c);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("warning: --config sets the plugin's own `config` table; a strategy's parameters (the keys of an environment's `strategy = { ... }`) are given with --params"),
        "{stderr}"
    );
    let (code, _, stderr) = test(&["builtin:canary", "--params", "steps"], c);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--params `steps`: expected KEY=VALUE or a JSON object"),
        "{stderr}"
    );
}

#[test]
fn plan_drives_a_strategy_to_done_and_shows_its_rollback() {
    let cache = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = test(
        &[
            "builtin:canary",
            "--plan",
            "--params",
            "steps=[20, {\"pause\": \"1m\"}, 100]",
        ],
        cache.path(),
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let plan: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("plan:"))
        .collect();
    assert_eq!(
        plan[0],
        "plan:    1.3.2 -> 1.4.0, 3 replica(s), parameters {\"steps\":[20,{\"pause\":\"1m\"},100]}"
    );
    let steps: Vec<&str> = plan[1..]
        .iter()
        .take_while(|l| !l.starts_with("rollback"))
        .map(|l| l.trim())
        .collect();
    assert!(
        steps[0].starts_with("1. apply slot 1.4.0: 1.4.0 x"),
        "{stdout}"
    );
    assert!(steps.contains(&"3. analyze 1.4.0"), "{stdout}");
    assert!(steps.iter().any(|s| s.ends_with(". pause 1m")), "{stdout}");
    assert!(
        steps.iter().any(|s| s.ends_with("route 1.4.0=100%")),
        "{stdout}"
    );
    assert!(steps.last().unwrap().ends_with(". done"), "{stdout}");
    assert!(
        stdout.contains("rollback, if the check after step 3 failed:\n      route 1.3.2=100%\n      remove slot 1.4.0\n"),
        "{stdout}"
    );
    assert!(stdout.contains("1m of timed pauses"), "{stdout}");
    // --plan is a strategy's: another kind is warned, not silently run.
    let (code, _, stderr) = test(&["builtin:console", "--plan"], cache.path());
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("warning: --plan is for a strategy; a notifier plugin ignores it"),
        "{stderr}"
    );
}

/// A loopback server answering every request `status` with `body`; its
/// address.
fn serve(status: u16, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn endpoint_gives_a_health_check_something_to_measure() {
    let cache = tempfile::tempdir().unwrap();
    let up = serve(200, "ok");
    let (code, stdout, stderr) = test(
        &["builtin:http", "--endpoint", &up, "--allow-host", &up],
        cache.path(),
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("\"endpoints\":[\"{up}\"]")),
        "{stdout}"
    );
    assert!(stdout.contains("\"verdict\":\"pass\""), "{stdout}");
    let down = serve(503, "no");
    let (_, stdout, _) = test(
        &["builtin:http", "--endpoint", &down, "--allow-host", &down],
        cache.path(),
    );
    assert!(stdout.contains("\"verdict\":\"fail\""), "{stdout}");
    // Without an endpoint, the author is told why the verdict cannot be
    // more than inconclusive.
    let (_, _, stderr) = test(&["builtin:http"], cache.path());
    assert!(
        stderr.contains("warning: the check target has no endpoints"),
        "{stderr}"
    );
}

#[test]
fn event_chooses_what_a_notifier_is_told() {
    let cache = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = test(&["builtin:console", "--event", "rolled-back"], cache.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("\"kind\":\"rolled-back\""), "{stdout}");
    assert!(stderr.contains("[rolled-back]"), "{stderr}");
    let (code, _, stderr) = test(&["builtin:console", "--event", "rolled_back"], cache.path());
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("unknown event kind `rolled_back`: expected one of run-started, stage-started, awaiting-approval, step, analysis-failed, rolled-back, succeeded, failed"),
        "{stderr}"
    );
    // Flags of other kinds are warned about.
    let (_, _, stderr) = test(
        &[
            "builtin:console",
            "--endpoint",
            "127.0.0.1:1",
            "--params",
            "a=1",
        ],
        cache.path(),
    );
    for w in [
        "warning: --endpoint is for a health-check; a notifier plugin ignores it",
        "warning: --params is for a strategy; a notifier plugin ignores it",
    ] {
        assert!(stderr.contains(w), "{w}\n{stderr}");
    }
    let (_, _, stderr) = test(
        &[
            "builtin:canary",
            "--allow-host",
            "example.com",
            "--event",
            "step",
        ],
        cache.path(),
    );
    for w in [
        "warning: --allow-host is ignored: a strategy is granted nothing",
        "warning: --event is for a notifier; a strategy plugin ignores it",
    ] {
        assert!(stderr.contains(w), "{w}\n{stderr}");
    }
}

#[test]
fn print_input_prints_each_kinds_input_in_the_wits_spelling_and_input_reads_it() {
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let print = |args: &[&str]| -> serde_json::Value {
        let (code, stdout, stderr) = test(args, c);
        assert_eq!(code, Some(0), "{args:?}: {stdout}{stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    };
    let event = print(&[
        "--print-input",
        "--kind",
        "notifier",
        "--event",
        "rolled-back",
    ]);
    assert_eq!(event["kind"], "rolled-back");
    assert_eq!(event["run-id"], "r0123456789ab");
    assert!(event["timestamp-ms"].is_u64(), "{event}");
    let target = print(&[
        "--print-input",
        "--kind",
        "health-check",
        "--endpoint",
        "127.0.0.1:8080",
    ]);
    assert_eq!(target["endpoints"], serde_json::json!(["127.0.0.1:8080"]));
    let provider = print(&["--print-input", "--kind", "environment-provider"]);
    assert!(provider["service-spec"].is_string(), "{provider}");
    // From a component, the kind is its own; the parameters are in it.
    let state = print(&[
        "builtin:canary",
        "--print-input",
        "--params",
        "steps=[50, 100]",
    ]);
    assert_eq!(state["params"], "{\"steps\":[50,100]}");
    assert_eq!(state["status"]["weights"][0]["slot"], "1.3.2");
    // What it prints, with a step recorded in the WIT's spelling, is an
    // input the plugin takes.
    let mut state = state;
    state["history"] = serde_json::json!([
        {"action": {"apply-slot": {"name": "1.4.0", "release": {"version": "1.4.0"}, "replicas": 1}}, "outcome": "ok"},
    ]);
    let input = c.join("state.json");
    std::fs::write(&input, state.to_string()).unwrap();
    let (code, stdout, stderr) = test(&["builtin:canary", "--input", input.to_str().unwrap()], c);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("result:  {\"decide\":{\"route\":["),
        "{stdout}"
    );
    for kind in ["notifier", "health-check", "environment-provider"] {
        let path = c.join(format!("{kind}.json"));
        std::fs::write(&path, print(&["--print-input", "--kind", kind]).to_string()).unwrap();
        let builtin = match kind {
            "notifier" => "builtin:console",
            "health-check" => "builtin:http",
            _ => "builtin:local",
        };
        let (code, stdout, stderr) = test(
            &[builtin, "--input", path.to_str().unwrap(), "--print-input"],
            c,
        );
        assert_eq!(code, Some(0), "{kind}: {stdout}{stderr}");
    }
    // The host's own spelling is refused, with the way to the right one.
    let wrong = c.join("wrong.json");
    std::fs::write(
        &wrong,
        event.to_string().replace("rolled-back", "rolled_back"),
    )
    .unwrap();
    let (code, _, stderr) = test(&["builtin:console", "--input", wrong.to_str().unwrap()], c);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("not a notifier input"), "{stderr}");
    assert!(
        stderr.contains("hint: `rollcage plugins test --print-input --kind notifier` prints one"),
        "{stderr}"
    );
    // Neither a plugin nor a kind: nothing to print.
    let (code, _, _) = test(&["--print-input"], c);
    assert_eq!(code, Some(2));
}
