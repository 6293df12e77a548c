//! The first-party notifiers, as wasm components through the runtime, each
//! against a loopback stand-in for its service that checks requests against
//! the service's documented API and answers as the service does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rollcage_core::*;
use rollcage_runtime::{Grants, Limits, MapSecrets, PluginSpec, Runtime, RuntimeOptions};
use rollcage_tests::stub::{Recorded, Stub, json_reply};
use serde_json::{Value, json};

fn runtime(secrets: &[(&str, &str)]) -> Runtime {
    let map = secrets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Runtime::new(RuntimeOptions {
        cache_dir: None,
        pooling: true,
        secrets: Arc::new(MapSecrets(map)),
    })
    .unwrap()
}

fn notifier(
    rt: &Runtime,
    builtin: &str,
    stub: &Stub,
    secrets: &[&str],
    config: Value,
) -> Arc<dyn Notifier> {
    let spec = PluginSpec {
        id: builtin.parse().unwrap(),
        kind: PluginKind::Notifier,
        source_name: format!("builtin:{builtin}"),
        grants: Grants {
            allow_hosts: vec![format!("127.0.0.1:{}", stub.addr.port()).parse().unwrap()],
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            ..Grants::default()
        },
        limits: Limits::default(),
        config_json: config.to_string(),
    };
    rt.load(spec, rollcage_builtins::get(builtin).unwrap().wasm)
        .unwrap()
        .notifier()
        .unwrap()
}

fn event(kind: EventKind) -> Event {
    Event {
        kind,
        run_id: "run-42".into(),
        pipeline: "api".into(),
        environment: Some("production".into()),
        release: Release {
            version: "1.2.0".into(),
            notes: Some("faster checkout".into()),
            params: vec![("issue_key".into(), "OPS-12".into())],
        },
        message: "error ratio 0.31 above 0.05".into(),
        fields: vec![
            ("error_ratio".into(), "0.31".into()),
            ("weight".into(), "10".into()),
        ],
        url: Some("http://127.0.0.1:7070/v1/runs/run-42".into()),
        timestamp_ms: 1_700_000_000_000,
    }
}

// ---- webhook ----------------------------------------------------------------

#[tokio::test]
async fn webhook_posts_signed_versioned_json() {
    let stub = Stub::start(|_| (204, vec![], String::new())).await;
    let rt = runtime(&[("HOOK_KEY", "It's a Secret to Everybody")]);
    let hook = notifier(
        &rt,
        "webhook",
        &stub,
        &["HOOK_KEY"],
        json!({"url": format!("{}/deploys", stub.url()), "signing_secret": "HOOK_KEY"}),
    );
    hook.notify(&event(EventKind::RolledBack)).await.unwrap();
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/deploys"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-rollcage-event"), Some("rolled-back"));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"It's a Secret to Everybody").unwrap();
    mac.update(&r.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(r.header("x-rollcage-signature"), Some(expected.as_str()));
    let body = r.json();
    assert_eq!(body["schema"], "rollcage.event/v1");
    assert_eq!(body["kind"], "rolled-back");
    assert_eq!(body["release"]["version"], "1.2.0");
    assert_eq!(body["release"]["params"]["issue_key"], "OPS-12");
    assert_eq!(body["fields"]["error_ratio"], "0.31");
}

#[tokio::test]
async fn webhook_errors_name_the_status() {
    let stub = Stub::start(|_| (500, vec![], "boom".into())).await;
    let rt = runtime(&[]);
    let hook = notifier(&rt, "webhook", &stub, &[], json!({"url": stub.url()}));
    let err = hook.notify(&event(EventKind::Failed)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `webhook` failed: webhook answered 500: boom"
    );
}

// ---- Slack ------------------------------------------------------------------

/// What Slack documents for a message: non-empty `text`, at most 50 blocks of
/// known types, section text at most 3000 characters, at most 10 fields.
fn check_slack_message(body: &Value) -> Result<(), String> {
    let text = body["text"].as_str().ok_or("no text")?;
    if text.is_empty() {
        return Err("empty text".into());
    }
    let blocks = body["blocks"].as_array().ok_or("blocks is not an array")?;
    if blocks.is_empty() || blocks.len() > 50 {
        return Err(format!("{} blocks", blocks.len()));
    }
    for b in blocks {
        match b["type"].as_str() {
            Some("section") => {
                if let Some(t) = b["text"]["text"].as_str()
                    && t.chars().count() > 3000
                {
                    return Err("section text over 3000".into());
                }
                if let Some(f) = b["fields"].as_array()
                    && f.len() > 10
                {
                    return Err("over 10 fields".into());
                }
                if b["text"].is_null() && b["fields"].is_null() {
                    return Err("section without text or fields".into());
                }
            }
            Some("context") => {
                let n = b["elements"].as_array().map_or(0, |e| e.len());
                if n == 0 || n > 10 {
                    return Err(format!("context with {n} elements"));
                }
            }
            Some("actions") => {
                for e in b["elements"].as_array().ok_or("actions without elements")? {
                    if e["type"] == "button" && e["text"]["type"] != "plain_text" {
                        return Err("button text must be plain_text".into());
                    }
                }
            }
            other => return Err(format!("unknown block type {other:?}")),
        }
    }
    Ok(())
}

#[tokio::test]
async fn slack_webhook_posts_block_kit() {
    let stub = Stub::start(|r: &Recorded| match check_slack_message(&r.json()) {
        Ok(()) => (200, vec![], "ok".into()),
        Err(_) => (400, vec![], "invalid_blocks".into()),
    })
    .await;
    let rt = runtime(&[(
        "SLACK_WEBHOOK_URL",
        &format!("{}/services/T0/B0/x", stub.url()),
    )]);
    let slack = notifier(
        &rt,
        "slack",
        &stub,
        &["SLACK_WEBHOOK_URL"],
        json!({"webhook_url_secret": "SLACK_WEBHOOK_URL"}),
    );
    slack.notify(&event(EventKind::RolledBack)).await.unwrap();
    let reqs = stub.requests();
    assert_eq!(reqs[0].path, "/services/T0/B0/x");
    let body = reqs[0].json();
    check_slack_message(&body).unwrap();
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("api 1.2.0 in production")
    );
}

#[tokio::test]
async fn slack_webhook_errors_and_rate_limits() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let stub = Stub::start(move |r: &Recorded| {
        if r.path.ends_with("/gone") {
            return (404, vec![], "no_service".into());
        }
        // The first call is rate limited, the second goes through.
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            (
                429,
                vec![("retry-after".into(), "1".into())],
                "rate_limited".into(),
            )
        } else {
            (200, vec![], "ok".into())
        }
    })
    .await;
    let rt = runtime(&[
        ("GOOD", &format!("{}/services/ok", stub.url())),
        ("GONE", &format!("{}/services/gone", stub.url())),
    ]);
    let ok = notifier(
        &rt,
        "slack",
        &stub,
        &["GOOD"],
        json!({"webhook_url_secret": "GOOD"}),
    );
    ok.notify(&event(EventKind::Succeeded)).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let gone = notifier(
        &rt,
        "slack",
        &stub,
        &["GONE"],
        json!({"webhook_url_secret": "GONE"}),
    );
    let err = gone.notify(&event(EventKind::Succeeded)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `slack` failed: Slack webhook answered 404: no_service"
    );
}

#[tokio::test]
async fn slack_bot_threads_the_events_of_one_run() {
    let posted: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
    let log = posted.clone();
    let stub = Stub::start(move |r: &Recorded| {
        if r.header("authorization") != Some("Bearer xoxb-test") {
            return json_reply(200, json!({"ok": false, "error": "invalid_auth"}));
        }
        if r.method == "GET" && r.path.starts_with("/api/conversations.history?channel=C123&") {
            assert!(r.path.contains("include_all_metadata=true"), "{}", r.path);
            let messages: Vec<Value> = log
                .lock()
                .unwrap()
                .iter()
                .filter(|m| m.get("metadata").is_some())
                .map(|m| json!({"type": "message", "ts": "1700000000.000100", "text": m["text"], "metadata": m["metadata"]}))
                .collect();
            return json_reply(200, json!({"ok": true, "messages": messages}));
        }
        if r.method == "POST" && r.path == "/api/chat.postMessage" {
            let body = r.json();
            if body["channel"] != "C123" {
                return json_reply(200, json!({"ok": false, "error": "channel_not_found"}));
            }
            if let Err(e) = check_slack_message(&body) {
                return json_reply(200, json!({"ok": false, "error": "invalid_blocks", "detail": e}));
            }
            log.lock().unwrap().push(body);
            return json_reply(200, json!({"ok": true, "channel": "C123", "ts": "1700000000.000100"}));
        }
        json_reply(404, json!({"ok": false, "error": "unknown_method"}))
    })
    .await;
    let rt = runtime(&[("SLACK_BOT_TOKEN", "xoxb-test")]);
    let config = |channel: &str| json!({"bot_token_secret": "SLACK_BOT_TOKEN", "channel": channel, "api_url": format!("{}/api", stub.url())});
    let slack = notifier(&rt, "slack", &stub, &["SLACK_BOT_TOKEN"], config("C123"));
    slack.notify(&event(EventKind::RunStarted)).await.unwrap();
    slack.notify(&event(EventKind::RolledBack)).await.unwrap();
    let posted = posted.lock().unwrap().clone();
    assert_eq!(posted.len(), 2);
    assert_eq!(posted[0]["metadata"]["event_payload"]["run_id"], "run-42");
    assert!(posted[0].get("thread_ts").is_none());
    assert_eq!(posted[1]["thread_ts"], "1700000000.000100");

    let lost = notifier(&rt, "slack", &stub, &["SLACK_BOT_TOKEN"], config("C999"));
    let err = lost
        .notify(&event(EventKind::RunStarted))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `slack` failed: Slack chat.postMessage failed: channel_not_found"
    );
}

// ---- Jira -------------------------------------------------------------------

/// A Jira Cloud stand-in: checks the basic-auth header and the shape of each
/// documented request, answers as Jira does.
fn jira(r: &Recorded) -> rollcage_tests::stub::Reply {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ops@example.com:api-token")
    );
    if r.header("authorization") != Some(expected.as_str()) {
        return json_reply(
            401,
            json!({"errorMessages": ["Client must be authenticated to access this resource."], "errors": {}}),
        );
    }
    let is_adf =
        |doc: &Value| doc["type"] == "doc" && doc["version"] == 1 && doc["content"].is_array();
    match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/rest/api/3/issue") => {
            let f = &r.json()["fields"];
            if f["project"]["key"] != "OPS" {
                return json_reply(
                    400,
                    json!({"errorMessages": [], "errors": {"project": "valid project is required"}}),
                );
            }
            assert_eq!(f["issuetype"]["name"], "Bug");
            assert!(f["summary"].as_str().unwrap().contains("rolled back"));
            assert!(is_adf(&f["description"]), "{}", f["description"]);
            json_reply(
                201,
                json!({"id": "10001", "key": "OPS-99", "self": "https://x/rest/api/3/issue/10001"}),
            )
        }
        ("POST", "/rest/api/3/issue/OPS-12/comment") => {
            assert!(is_adf(&r.json()["body"]));
            json_reply(201, json!({"id": "1"}))
        }
        ("GET", "/rest/api/3/issue/OPS-12/transitions") => json_reply(
            200,
            json!({"transitions": [{"id": "11", "name": "To Do"}, {"id": "31", "name": "Deployed"}]}),
        ),
        ("POST", "/rest/api/3/issue/OPS-12/transitions") => {
            assert_eq!(r.json()["transition"]["id"], "31");
            (204, vec![], String::new())
        }
        _ => json_reply(
            404,
            json!({"errorMessages": ["Issue does not exist or you do not have permission to see it."], "errors": {}}),
        ),
    }
}

fn jira_config(stub: &Stub, project: &str) -> Value {
    json!({
        "base_url": stub.url(),
        "email_secret": "JIRA_EMAIL",
        "token_secret": "JIRA_API_TOKEN",
        "project": project,
        "transition": "Deployed",
    })
}

#[tokio::test]
async fn jira_opens_an_issue_on_rollback_and_transitions_the_release_issue_on_success() {
    let stub = Stub::start(jira).await;
    let rt = runtime(&[
        ("JIRA_EMAIL", "ops@example.com"),
        ("JIRA_API_TOKEN", "api-token"),
    ]);
    let j = notifier(
        &rt,
        "jira",
        &stub,
        &["JIRA_EMAIL", "JIRA_API_TOKEN"],
        jira_config(&stub, "OPS"),
    );
    j.notify(&event(EventKind::RolledBack)).await.unwrap();
    j.notify(&event(EventKind::Succeeded)).await.unwrap();
    // Other events do nothing.
    j.notify(&event(EventKind::Step)).await.unwrap();
    let paths: Vec<String> = stub
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        paths,
        [
            "POST /rest/api/3/issue",
            "POST /rest/api/3/issue/OPS-12/comment",
            "GET /rest/api/3/issue/OPS-12/transitions",
            "POST /rest/api/3/issue/OPS-12/transitions",
        ]
    );
}

#[tokio::test]
async fn jira_errors_carry_jiras_messages() {
    let stub = Stub::start(jira).await;
    let rt = runtime(&[
        ("JIRA_EMAIL", "ops@example.com"),
        ("JIRA_API_TOKEN", "wrong"),
    ]);
    let j = notifier(
        &rt,
        "jira",
        &stub,
        &["JIRA_EMAIL", "JIRA_API_TOKEN"],
        jira_config(&stub, "OPS"),
    );
    assert_eq!(
        j.notify(&event(EventKind::Failed))
            .await
            .unwrap_err()
            .to_string(),
        "plugin `jira` failed: Jira create issue: did not accept the credentials (check the email and API token secrets) (401): Client must be authenticated to access this resource."
    );
    let rt = runtime(&[
        ("JIRA_EMAIL", "ops@example.com"),
        ("JIRA_API_TOKEN", "api-token"),
    ]);
    let j = notifier(
        &rt,
        "jira",
        &stub,
        &["JIRA_EMAIL", "JIRA_API_TOKEN"],
        jira_config(&stub, "NOPE"),
    );
    assert_eq!(
        j.notify(&event(EventKind::RolledBack))
            .await
            .unwrap_err()
            .to_string(),
        "plugin `jira` failed: Jira create issue: rejected the request (400): project: valid project is required"
    );
}
