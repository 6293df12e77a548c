//! The dashboard through `Router::oneshot`, over an engine of plain Rust
//! fakes and a real SQLite store: sign-in and sessions, the POST guards
//! (same origin, CSRF token), `/v1` staying bearer-only, pages for unknown
//! runs and wrong roles, the start form's errors beside their fields, and a
//! rolled-back run's page. The browser tests (`host/cli/tests/dashboard.rs`)
//! drive the same pages in Chromium.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Answer, send, token};
use rollcage_api::{Api, ApiOptions, Auth, RateSettings, Role};
use rollcage_core::HealthCheck;
use rollcage_engine::fakes::scripted_against;
use rollcage_engine::run::Engine;
use rollcage_store::AuditFilter;

struct World {
    router: Router,
    engine: Arc<Engine>,
    _dir: tempfile::TempDir,
}

/// `staging` passes, `production` waits for an approver, `qa` fails its
/// analysis (`error-rate`, pass if < 0.05; the fake measures 0.1).
fn world(options: ApiOptions) -> World {
    let breaker = common::breaker();
    let dir = tempfile::tempdir().unwrap();
    let check = |verdict| {
        scripted_against("error-rate", vec![Ok(verdict)], "< 0.05") as Arc<dyn HealthCheck>
    };
    let engine = common::engine(dir.path(), &breaker, check, false);
    let auth = Auth::new(vec![
        token("viewer", Role::Viewer, &[]),
        token("alice", Role::Admin, &[]),
        token("bob", Role::Approver, &[]),
        token("alertmanager", Role::Alerts, &[]),
    ]);
    let api = Api::new(engine.clone(), auth, common::plugins(breaker), options);
    api.start_scheduler();
    World {
        router: api.router(),
        engine,
        _dir: dir,
    }
}

fn options() -> ApiOptions {
    ApiOptions {
        rate: RateSettings {
            per_second: 10_000,
            burst: 10_000,
        },
        event_poll: Duration::from_millis(100),
        ..ApiOptions::default()
    }
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let at = self.text.find("name=\"csrf\" value=\"").expect(&self.text) + 19;
        self.text[at..at + 64].to_string()
    }
}

async fn get(router: &Router, uri: &str, cookie: Option<&str>) -> Answer {
    let mut req = Request::get(uri).header(header::HOST, "127.0.0.1:7070");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    send(router, req.body(Body::empty()).unwrap()).await
}

/// A form POST as a browser sends it from this host's own page (or, with
/// `site`, from another).
async fn post(
    router: &Router,
    uri: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
    site: &str,
) -> Answer {
    let body: Vec<String> = form
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.replace(' ', "+").replace('=', "%3D").replace('\n', "%0A")
            )
        })
        .collect();
    let mut req = Request::post(uri)
        .header(header::HOST, "127.0.0.1:7070")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", site);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    send(router, req.body(Body::from(body.join("&"))).unwrap()).await
}

/// Sign in as `who`: the session's cookie.
async fn sign_in(router: &Router, who: &str) -> String {
    let token = format!("rc_{who}");
    let r = post(
        router,
        "/ui/login",
        None,
        &[("token", &token), ("next", "/ui/runs")],
        "same-origin",
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let set = r.headers[header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

async fn api_start(router: &Router, pipeline: &str) -> String {
    let req = Request::post("/v1/runs")
        .header(header::AUTHORIZATION, "Bearer rc_alice")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(format!(
            r#"{{"pipeline": "{pipeline}", "release": "2.0.0"}}"#
        )))
        .unwrap();
    let r = send(router, req).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let v: serde_json::Value = serde_json::from_str(&r.text).unwrap();
    v["id"].as_str().unwrap().to_string()
}

async fn until_status(engine: &Engine, id: &str, want: &str) {
    for _ in 0..500 {
        if engine.store().run(id).await.unwrap().status.as_str() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("run {id} never became {want}");
}

#[tokio::test]
async fn pages_need_a_session_and_sign_in_brings_the_person_back() {
    let w = world(options());
    let r = get(&w.router, "/ui/runs/abc?x=1", None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/ui/login?next=/ui/runs/abc%3Fx%3D1");
    let login = get(&w.router, r.location(), None).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(
        login
            .text
            .contains(r#"name="next" value="/ui/runs/abc?x=1""#),
        "{}",
        login.text
    );
    assert_eq!(
        login.headers[header::CONTENT_SECURITY_POLICY],
        "default-src 'self'; frame-ancestors 'none'"
    );

    // A wrong token: the form again, saying so, and no cookie.
    let bad = post(
        &w.router,
        "/ui/login",
        None,
        &[("token", "rc_nobody"), ("next", "/ui/runs")],
        "same-origin",
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.text.contains("not one this host knows"), "{}", bad.text);
    assert!(!bad.headers.contains_key(header::SET_COOKIE));

    let ok = post(
        &w.router,
        "/ui/login",
        None,
        &[("token", "rc_bob"), ("next", "/ui/runs/abc?x=1")],
        "same-origin",
    )
    .await;
    assert_eq!(
        (ok.status, ok.location()),
        (StatusCode::SEE_OTHER, "/ui/runs/abc?x=1")
    );
    let set = ok.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/ui"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "{set}");
    // Behind a TLS proxy the cookie is Secure.
    let req = Request::post("/ui/login")
        .header(header::HOST, "rollcage.example")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("x-forwarded-proto", "https")
        .body(Body::from("token=rc_bob&next=/ui/runs"))
        .unwrap();
    let tls = send(&w.router, req).await;
    assert!(
        tls.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .ends_with("; Secure")
    );
    // Another site's `next` is not followed.
    let away = post(
        &w.router,
        "/ui/login",
        None,
        &[("token", "rc_bob"), ("next", "//evil.example/")],
        "same-origin",
    )
    .await;
    assert_eq!(away.location(), "/ui/runs");

    // The session shows pages; it is no credential for /v1.
    let cookie = set.split(';').next().unwrap();
    let page = get(&w.router, "/ui/runs", Some(cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("bob (approver)"), "{}", page.text);
    let v1 = get(&w.router, "/v1/runs", Some(cookie)).await;
    assert_eq!(v1.status, StatusCode::UNAUTHORIZED, "{}", v1.text);

    // Sign-ins (and the failed one) are in the audit trail; sign-out too,
    // and it ends the session.
    let csrf = page.csrf();
    let out = post(
        &w.router,
        "/ui/logout",
        Some(cookie),
        &[("csrf", &csrf)],
        "same-origin",
    )
    .await;
    assert_eq!(
        (out.status, out.location()),
        (StatusCode::SEE_OTHER, "/ui/login")
    );
    assert!(
        out.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = get(&w.router, "/ui/runs", Some(cookie)).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    let audit = w
        .engine
        .store()
        .audit(&AuditFilter {
            limit: 50,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let actions: Vec<(String, String)> = audit
        .iter()
        .map(|a| (a.entry.actor.clone(), a.entry.action.clone()))
        .collect();
    for want in [
        ("bob", "login"),
        ("bob", "logout"),
        ("(unknown token)", "login-failed"),
    ] {
        assert!(
            actions.contains(&(want.0.to_string(), want.1.to_string())),
            "{actions:?}"
        );
    }
}

/// Alertmanager's token sends alerts and reads nothing: the dashboard
/// refuses it as `/v1` does, and says why.
#[tokio::test]
async fn an_alerts_token_cannot_sign_in() {
    let w = world(options());
    let r = post(
        &w.router,
        "/ui/login",
        None,
        &[("token", "rc_alertmanager"), ("next", "/ui/runs")],
        "same-origin",
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(!r.headers.contains_key(header::SET_COOKIE));
    assert!(r.text.contains("role alerts"), "{}", r.text);
}

#[tokio::test]
async fn sign_ins_from_one_address_are_rate_limited() {
    let w = world(ApiOptions {
        auth_failures_per_minute: 3,
        ..options()
    });
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = post(
            &w.router,
            "/ui/login",
            None,
            &[("token", "rc_wrong"), ("next", "/ui/runs")],
            "same-origin",
        )
        .await;
        statuses.push(r.status);
    }
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED);
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
}

#[tokio::test]
async fn posts_need_this_hosts_own_page_and_the_sessions_csrf_token() {
    let w = world(options());
    let id = api_start(&w.router, "api").await;
    until_status(&w.engine, &id, "awaiting_approval").await;
    let cookie = sign_in(&w.router, "bob").await;
    let page = get(&w.router, &format!("/ui/runs/{id}"), Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    // The components the run's plugins came from, by digest.
    for (name, digest) in common::PLUGIN_DIGESTS {
        assert!(
            page.text.contains(&format!(
                "<li><strong>{name}</strong> <code>{digest}</code></li>"
            )),
            "{}",
            page.text
        );
    }
    let csrf = page.csrf();
    let approve = format!("/ui/runs/{id}/actions/approve");

    // Another site's form, even with the right token: refused.
    for site in ["cross-site", "same-site"] {
        let r = post(&w.router, &approve, Some(&cookie), &[("csrf", &csrf)], site).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{site}");
        assert!(r.text.contains("another site"), "{}", r.text);
    }
    let mut req = Request::post(&approve)
        .header(header::HOST, "127.0.0.1:7070")
        .header(header::ORIGIN, "http://evil.example")
        .header(header::COOKIE, &cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    req = req.header("x-test", "origin only");
    let r = send(
        &w.router,
        req.body(Body::from(format!("csrf={csrf}"))).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // Without the token, or with another: refused.
    let r = post(&w.router, &approve, Some(&cookie), &[], "same-origin").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("CSRF"), "{}", r.text);
    let r = post(
        &w.router,
        &approve,
        Some(&cookie),
        &[("csrf", &"0".repeat(64))],
        "same-origin",
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        w.engine.store().run(&id).await.unwrap().status.as_str(),
        "awaiting_approval"
    );

    // The confirmation says what happens; the real POST approves.
    let confirm = get(&w.router, &approve, Some(&cookie)).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(
        confirm.text.contains("goes on in stage production"),
        "{}",
        confirm.text
    );
    let r = post(
        &w.router,
        &approve,
        Some(&cookie),
        &[("csrf", &csrf)],
        "same-origin",
    )
    .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, format!("/ui/runs/{id}").as_str()),
        "{}",
        r.text
    );
    until_status(&w.engine, &id, "succeeded").await;
}

#[tokio::test]
async fn unknown_runs_and_wrong_roles_get_a_page_that_says_so() {
    let w = world(options());
    let id = api_start(&w.router, "api").await;
    until_status(&w.engine, &id, "awaiting_approval").await;
    let viewer = sign_in(&w.router, "viewer").await;

    let r = get(&w.router, "/ui/runs/r-nope", Some(&viewer)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.text.contains("r-nope") && r.text.contains("<h1>Not found</h1>"),
        "{}",
        r.text
    );
    let r = get(&w.router, "/ui/nowhere", Some(&viewer)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // A viewer's run page: every action there, none enabled, each saying
    // the role it needs.
    let page = get(&w.router, &format!("/ui/runs/{id}"), Some(&viewer)).await;
    assert!(
        page.text
            .contains(r#"disabled data-action="approve">Approve (needs approver or admin)"#),
        "{}",
        page.text
    );
    assert!(page.text.contains(r#"disabled data-action="abort""#));
    assert!(
        !page
            .text
            .contains(&format!("href=\"/ui/runs/{id}/actions/"))
    );
    // Asked for anyway: a 403 page, and the API's refusal on POST.
    let r = get(
        &w.router,
        &format!("/ui/runs/{id}/actions/approve"),
        Some(&viewer),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.text.contains("this needs approver or admin"),
        "{}",
        r.text
    );
    let csrf = page.csrf();
    let r = post(
        &w.router,
        &format!("/ui/runs/{id}/actions/approve"),
        Some(&viewer),
        &[("csrf", &csrf)],
        "same-origin",
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("has role viewer"), "{}", r.text);
    let r = get(
        &w.router,
        &format!("/ui/runs/{id}/actions/launch"),
        Some(&viewer),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let start = get(&w.router, "/ui/start", Some(&viewer)).await;
    assert!(
        start.text.contains("Start (needs deployer or admin)"),
        "{}",
        start.text
    );
}

#[tokio::test]
async fn the_start_form_shows_the_apis_error_beside_the_field() {
    let w = world(options());
    let alice = sign_in(&w.router, "alice").await;
    let csrf = get(&w.router, "/ui/start", Some(&alice)).await.csrf();
    let bad = post(
        &w.router,
        "/ui/start",
        Some(&alice),
        &[
            ("csrf", &csrf),
            ("pipeline", "api"),
            ("release", "banana"),
            ("params", ""),
            ("notes", ""),
            ("confirmed", "1"),
        ],
        "same-origin",
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
    let at = bad.text.find(r#"id="release-error""#).expect(&bad.text);
    assert!(bad.text[at..].contains("banana"), "{}", &bad.text[at..]);
    assert!(bad.text.contains(r#"value="banana""#));
    let bad = post(
        &w.router,
        "/ui/start",
        Some(&alice),
        &[
            ("csrf", &csrf),
            ("pipeline", "api"),
            ("release", "2.0.0"),
            ("params", "ticket=1\nbroken"),
        ],
        "same-origin",
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let at = bad.text.find(r#"id="params-error""#).expect(&bad.text);
    assert!(bad.text[at..].contains("line 2"), "{}", &bad.text[at..]);

    // First what will happen, then the run.
    let form = [
        ("csrf", csrf.as_str()),
        ("pipeline", "flaky"),
        ("release", "2.0.0"),
        ("params", "ticket=OPS-1"),
        ("notes", ""),
    ];
    let confirm = post(&w.router, "/ui/start", Some(&alice), &form, "same-origin").await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(
        confirm.text.contains("through qa") && confirm.text.contains("ticket=OPS-1"),
        "{}",
        confirm.text
    );
    let mut confirmed = form.to_vec();
    confirmed.push(("confirmed", "1"));
    let r = post(
        &w.router,
        "/ui/start",
        Some(&alice),
        &confirmed,
        "same-origin",
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let id = r.location().strip_prefix("/ui/runs/").unwrap().to_string();
    let run = w.engine.store().run(&id).await.unwrap();
    assert_eq!(run.run.started_by, "alice");
}

#[tokio::test]
async fn a_rolled_back_run_shows_its_reason_first_and_the_failing_measurement() {
    let w = world(options());
    let id = api_start(&w.router, "flaky").await;
    until_status(&w.engine, &id, "rolled_back").await;
    let cookie = sign_in(&w.router, "viewer").await;
    let page = get(&w.router, &format!("/ui/runs/{id}"), Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    let t = &page.text;
    let rollback = t.find("Rolled back in qa").expect(t);
    let stages = t.find("<h2>Stages</h2>").unwrap();
    assert!(rollback < stages, "the rollback comes first");
    assert!(
        t[rollback..stages].contains("check `error-rate` failed"),
        "{t}"
    );
    assert!(t[rollback..stages].contains("route 1.0.0=100%"), "{t}");
    assert!(
        t.contains(r#"class="point fail""#) && t.contains(r#"data-value="0.1""#),
        "{t}"
    );
    assert!(t.contains("pass if &lt; 0.05"), "{t}");
    assert!(
        t.contains(r#"aria-label="traffic: 2.0.0 50%, 1.0.0 50%""#),
        "{t}"
    );
    // The runs list has it, and a finished run's page does not go live.
    assert!(!t.contains("sse-connect"));
    let list = get(&w.router, "/ui/runs?status=rolled_back", Some(&cookie)).await;
    assert!(
        list.text.contains(&format!("data-run=\"{id}\"")),
        "{}",
        list.text
    );
    let none = get(&w.router, "/ui/runs/table?status=succeeded", Some(&cookie)).await;
    assert!(!none.text.contains(&format!("data-run=\"{id}\"")));
    // Other pages answer.
    for p in ["/ui/environments", "/ui/plugins", "/ui/audit"] {
        let r = get(&w.router, p, Some(&cookie)).await;
        assert_eq!(r.status, StatusCode::OK, "{p}: {}", r.text);
    }
}

#[tokio::test]
async fn a_session_ends_when_idle_and_the_page_asks_to_sign_in_again() {
    let w = world(ApiOptions {
        session_idle: Duration::from_millis(300),
        ..options()
    });
    let cookie = sign_in(&w.router, "viewer").await;
    assert_eq!(
        get(&w.router, "/ui/plugins", Some(&cookie)).await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = get(&w.router, "/ui/plugins", Some(&cookie)).await;
    assert_eq!(
        (r.status, r.location()),
        (
            StatusCode::SEE_OTHER,
            "/ui/login?next=/ui/plugins&expired=1"
        )
    );
    let login = get(&w.router, r.location(), Some(&cookie)).await;
    assert!(login.text.contains("Your session ended"), "{}", login.text);
    // A live page's fetch is told where to go instead.
    let mut req = Request::get("/ui/runs/table")
        .header("hx-request", "true")
        .header(header::COOKIE, &cookie);
    req = req.header(header::HOST, "127.0.0.1:7070");
    let r = send(&w.router, req.body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["hx-redirect"], "/ui/login?next=/ui/runs");
}
