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

// ---- ClickUp ----------------------------------------------------------------

/// The token the ClickUp stand-in accepts: a personal token, sent bare.
const CLICKUP_TOKEN: &str = "pk_4242_TESTTOKEN";

/// A ClickUp API v2 stand-in: checks the token (the bare token in
/// `Authorization`, as ClickUp wants it), the path, query and body of each
/// documented request, and answers as ClickUp does: task objects, comment
/// ids, pages of tasks with `last_page`, and `{"err", "ECODE"}` errors.
fn clickup(r: &Recorded) -> rollcage_tests::stub::Reply {
    let err =
        |status: u16, err: &str, code: &str| json_reply(status, json!({"err": err, "ECODE": code}));
    if r.header("authorization") != Some(CLICKUP_TOKEN) {
        return err(401, "Token invalid", "OAUTH_017");
    }
    let task = |id: &str, name: &str, status: &str| {
        json!({
            "id": id, "custom_id": null, "name": name,
            "status": {"status": status, "color": "#d3d3d3", "type": "open", "orderindex": 0},
            "url": format!("https://app.clickup.com/t/{id}"),
            "list": {"id": "900", "name": "Deployments", "access": true},
        })
    };
    let (path, query) = r.path.split_once('?').unwrap_or((r.path.as_str(), ""));
    let custom = query == "custom_task_ids=true&team_id=9001";
    match (r.method.as_str(), path) {
        ("POST", "/api/v2/list/900/task") => {
            let body = r.json();
            let Some(name) = body["name"].as_str().filter(|n| !n.is_empty()) else {
                return err(400, "Task name invalid", "INPUT_005");
            };
            assert!(body["markdown_description"].is_string(), "{body}");
            assert!(body.get("description").is_none(), "{body}");
            assert!(
                body["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().all(Value::is_string)),
                "{body}"
            );
            if let Some(p) = body.get("priority")
                && !p.as_u64().is_some_and(|p| (1..=4).contains(&p))
            {
                return err(400, "Priority invalid", "INPUT_012");
            }
            json_reply(200, task("86abc999", name, "to do"))
        }
        // A list the token's workspace does not have.
        ("POST", p) if p.starts_with("/api/v2/list/") => {
            err(401, "Team not authorized", "OAUTH_027")
        }
        ("GET", "/api/v2/list/900/task") => {
            assert!(
                query.contains("include_closed=true") && query.contains("subtasks=true"),
                "{query}"
            );
            match query.split('&').find(|q| q.starts_with("page=")) {
                Some("page=0") => json_reply(
                    200,
                    json!({"tasks": [task("86aaa001", "Release api 1.1.0", "complete")], "last_page": false}),
                ),
                Some("page=1") => json_reply(
                    200,
                    json!({"tasks": [task("86aaa002", "Release api 1.2.0", "in progress")], "last_page": true}),
                ),
                _ => json_reply(200, json!({"tasks": [], "last_page": true})),
            }
        }
        ("POST", "/api/v2/task/86abc123/comment" | "/api/v2/task/86aaa002/comment")
        | ("POST", "/api/v2/task/OPS-12/comment")
            if !path.contains("OPS-12") || custom =>
        {
            let body = r.json();
            assert!(
                body["comment_text"]
                    .as_str()
                    .is_some_and(|t| t.contains("1.2.0")),
                "{body}"
            );
            assert!(body["notify_all"].is_boolean(), "{body}");
            json_reply(
                200,
                json!({"id": 458, "hist_id": "26508", "date": 1568036964079u64}),
            )
        }
        ("PUT", "/api/v2/task/86abc123" | "/api/v2/task/86aaa002")
        | ("PUT", "/api/v2/task/OPS-12")
            if !path.contains("OPS-12") || custom =>
        {
            match r.json()["status"].as_str() {
                Some("deployed") => json_reply(200, task("86abc123", "Release", "deployed")),
                _ => err(400, "Status does not exist", "CRTSK_001"),
            }
        }
        _ => err(404, "Task not found, deleted", "ITEM_013"),
    }
}

fn clickup_config(stub: &Stub, list: &str) -> Value {
    json!({
        "api_url": format!("{}/api/v2", stub.url()),
        "token_secret": "CLICKUP_TOKEN",
        "list_id": list,
        "success_status": "deployed",
    })
}

fn clickup_notifier(stub: &Stub, token: &str, config: Value) -> Arc<dyn Notifier> {
    let rt = runtime(&[("CLICKUP_TOKEN", token)]);
    notifier(&rt, "clickup", stub, &["CLICKUP_TOKEN"], config)
}

/// `event(kind)` of a run whose parameters are `params`.
fn event_with(kind: EventKind, params: &[(&str, &str)]) -> Event {
    let mut e = event(kind);
    e.release.params = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    e
}

fn requests_of(stub: &Stub) -> Vec<String> {
    stub.requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test]
async fn clickup_opens_a_task_on_rollback_and_comments_on_and_moves_the_release_task_on_success() {
    let stub = Stub::start(clickup).await;
    let c = clickup_notifier(&stub, CLICKUP_TOKEN, clickup_config(&stub, "900"));
    c.notify(&event(EventKind::RolledBack)).await.unwrap();
    c.notify(&event_with(
        EventKind::Succeeded,
        &[("clickup_task", "86abc123")],
    ))
    .await
    .unwrap();
    // Other events, and a success without a task, do nothing.
    c.notify(&event(EventKind::Step)).await.unwrap();
    c.notify(&event(EventKind::Succeeded)).await.unwrap();
    assert_eq!(
        requests_of(&stub),
        [
            "POST /api/v2/list/900/task",
            "POST /api/v2/task/86abc123/comment",
            "PUT /api/v2/task/86abc123",
        ]
    );
    let created = stub.requests()[0].json();
    assert_eq!(
        created["name"],
        "Deployment of api 1.2.0 rolled back in production"
    );
    let description = created["markdown_description"].as_str().unwrap();
    for line in [
        "**error ratio 0.31 above 0.05**",
        "- **Pipeline:** api",
        "- **Environment:** production",
        "- **Release:** 1.2.0",
        "- **Run:** [run-42](http://127.0.0.1:7070/v1/runs/run-42)",
        "- **error\\_ratio:** 0.31",
        "- **weight:** 10",
    ] {
        assert!(description.contains(line), "{line} in {description}");
    }
    assert_eq!(created["tags"], json!(["rollcage", "deployment"]));
    let comment = stub.requests()[1].json();
    assert!(
        comment["comment_text"]
            .as_str()
            .unwrap()
            .starts_with("Release 1.2.0 of api deployed to production (run run-42)"),
        "{comment}"
    );
    assert_eq!(stub.requests()[2].json(), json!({"status": "deployed"}));
}

#[tokio::test]
async fn clickup_finds_the_release_task_by_custom_id_or_by_name_in_the_list() {
    let stub = Stub::start(clickup).await;
    let mut config = clickup_config(&stub, "900");
    config["team_id"] = json!("9001");
    config["release_task_name"] = json!("Release {pipeline} {release}");
    let c = clickup_notifier(&stub, CLICKUP_TOKEN, config);
    c.notify(&event_with(
        EventKind::Succeeded,
        &[("clickup_task", "OPS-12")],
    ))
    .await
    .unwrap();
    // No task parameter: the task of that name, on the list's second page.
    c.notify(&event(EventKind::Succeeded)).await.unwrap();
    assert_eq!(
        requests_of(&stub),
        [
            "POST /api/v2/task/OPS-12/comment?custom_task_ids=true&team_id=9001",
            "PUT /api/v2/task/OPS-12?custom_task_ids=true&team_id=9001",
            "GET /api/v2/list/900/task?page=0&include_closed=true&subtasks=true",
            "GET /api/v2/list/900/task?page=1&include_closed=true&subtasks=true",
            "POST /api/v2/task/86aaa002/comment",
            "PUT /api/v2/task/86aaa002",
        ]
    );
}

#[tokio::test]
async fn clickup_errors_carry_clickups_err_and_ecode() {
    let stub = Stub::start(clickup).await;
    let failure =
        |c: Arc<dyn Notifier>, e: Event| async move { c.notify(&e).await.unwrap_err().to_string() };
    // A token sent as `Bearer ...`, or a wrong one, is refused as ClickUp does.
    let wrong = clickup_notifier(&stub, "pk_wrong", clickup_config(&stub, "900"));
    assert_eq!(
        failure(wrong, event(EventKind::Failed)).await,
        "plugin `clickup` failed: ClickUp create task in list 900: did not accept the token (check the token secret) (401 OAUTH_017): Token invalid"
    );
    let c = clickup_notifier(&stub, CLICKUP_TOKEN, clickup_config(&stub, "901"));
    assert_eq!(
        failure(c, event(EventKind::RolledBack)).await,
        "plugin `clickup` failed: ClickUp create task in list 901: did not accept the token (check the token secret) (401 OAUTH_027): Team not authorized"
    );
    let c = clickup_notifier(&stub, CLICKUP_TOKEN, clickup_config(&stub, "900"));
    assert_eq!(
        failure(
            c.clone(),
            event_with(EventKind::Succeeded, &[("clickup_task", "86zzz000")])
        )
        .await,
        "plugin `clickup` failed: ClickUp comment on task 86zzz000: found no such resource (404 ITEM_013): Task not found, deleted"
    );
    assert_eq!(
        failure(
            c,
            event_with(EventKind::Succeeded, &[("clickup_task", "OPS-12")])
        )
        .await,
        "plugin `clickup` failed: `OPS-12` is a custom task ID: set `team_id` (the workspace's ID) in the plugin's config"
    );
    let mut config = clickup_config(&stub, "900");
    config["success_status"] = json!("shipped");
    let c = clickup_notifier(&stub, CLICKUP_TOKEN, config);
    assert_eq!(
        failure(
            c,
            event_with(EventKind::Succeeded, &[("clickup_task", "86abc123")])
        )
        .await,
        "plugin `clickup` failed: ClickUp set the status of task 86abc123 to `shipped`: rejected the request (400 CRTSK_001): Status does not exist"
    );
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn clickup_waits_for_its_rate_limit_to_reset() {
    // ClickUp answers 429 with the second its limit resets in
    // `X-RateLimit-Reset`; the first request of each notification is
    // limited here.
    let reset_in = Arc::new(AtomicUsize::new(1));
    let arrivals: Arc<std::sync::Mutex<Vec<(u64, u64)>>> = Arc::default();
    let (limit, seen) = (reset_in.clone(), arrivals.clone());
    let stub = Stub::start(move |r: &Recorded| {
        let now = unix_now();
        let mut seen = seen.lock().unwrap();
        let limited = seen.len() % 2 == 0;
        let reset = now + limit.load(Ordering::SeqCst) as u64;
        seen.push((now, reset));
        if limited {
            let mut reply = json_reply(
                429,
                json!({"err": "Rate limit reached", "ECODE": "APP_002"}),
            );
            reply.1.extend([
                ("x-ratelimit-limit".into(), "100".into()),
                ("x-ratelimit-remaining".into(), "0".into()),
                ("x-ratelimit-reset".into(), reset.to_string()),
            ]);
            reply
        } else {
            clickup(r)
        }
    })
    .await;
    let c = clickup_notifier(&stub, CLICKUP_TOKEN, clickup_config(&stub, "900"));
    c.notify(&event(EventKind::RolledBack)).await.unwrap();
    let seen = arrivals.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[1].0 > seen[0].1,
        "retried at {} before the limit's reset second {} was over",
        seen[1].0,
        seen[0].1
    );

    // A reset further off than `max_retry_wait_s`: an error saying when,
    // for the host's retries, without waiting for it.
    reset_in.store(120, Ordering::SeqCst);
    let err = c
        .notify(&event(EventKind::RolledBack))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "plugin `clickup` failed: ClickUp create task in list 900: rate limited the token (429 APP_002): Rate limit reached; its limit resets in "
        ),
        "{err}"
    );
    assert_eq!(arrivals.lock().unwrap().len(), 3);
}
