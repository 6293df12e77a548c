//! The web dashboard under `/ui`: pages rendered on the host (askama
//! templates), kept live by htmx's SSE extension, pictures drawn as inline
//! SVG. Sign-in exchanges an API token for a cookie session (`session`);
//! every page needs one, every POST also a same-origin request and the
//! session's CSRF token. Actions go through the API's own handlers with
//! the session's principal, so the API's checks are the ones that hold;
//! the pages only show which buttons would pass them.
//!
//! * `session`: sessions, cookies, CSRF tokens;
//! * `pages`: the read-only pages (runs, a run, environments, plugins,
//!   audit) and their view models;
//! * `actions`: sign-in and -out, approve, abort, retry, roll back, start;
//! * `live`: the SSE streams that tell a page to fetch itself again;
//! * `chart`: analysis charts and traffic splits as SVG;
//! * `assets`: the embedded static files, under content-hashed names;
//! * `fmt`: times and durations for people.

mod actions;
mod assets;
mod chart;
mod fmt;
mod live;
mod pages;
mod session;

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::auth::{Permission, Principal};
use crate::error::ApiError;
use crate::{ApiOptions, AppState};

pub(crate) use session::Sessions;

/// The policy of every dashboard response: only the host's own files, and
/// no framing by another site.
pub(crate) const CSP: &str = "default-src 'self'; frame-ancestors 'none'";

/// The dashboard's share of the host's state.
pub(crate) struct UiState {
    pub sessions: Sessions,
    /// Sign-in attempts per client address (failed ones also count in
    /// the API's failed-authentication limit).
    pub logins: crate::rate::RateLimiter,
}

impl UiState {
    pub(crate) fn new(options: &ApiOptions) -> UiState {
        UiState {
            sessions: Sessions::new(options.session_idle, options.session_lifetime),
            // A person signs in a few times a minute at most; the API's
            // limit on failures guards the tokens themselves.
            logins: crate::rate::RateLimiter::per_minute(
                options.auth_failures_per_minute.saturating_mul(2),
            ),
        }
    }
}

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/runs") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/runs") }))
        .route("/ui/login", get(actions::login_page).post(actions::login))
        .route("/ui/logout", axum::routing::post(actions::logout))
        .route("/ui/runs", get(pages::runs))
        .route("/ui/runs/table", get(pages::runs_table))
        .route("/ui/runs/live", get(live::runs))
        .route("/ui/runs/{id}", get(pages::run))
        .route("/ui/runs/{id}/body", get(pages::run_body))
        .route("/ui/runs/{id}/live", get(live::run))
        .route(
            "/ui/runs/{id}/actions/{action}",
            get(actions::confirm).post(actions::act),
        )
        .route("/ui/start", get(actions::start_page).post(actions::start))
        .route("/ui/environments", get(pages::environments))
        .route("/ui/plugins", get(pages::plugins))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/assets/{file}", get(assets::serve))
        .route("/ui/{*rest}", get(not_found))
        .layer(middleware::from_fn(protect))
}

/// Headers of every dashboard response: the content policy, no framing,
/// no sniffing, no referrer to other sites, and pages not kept in caches
/// (they show what a session may see).
///
/// A POST from another site is refused here, before its session or form is
/// looked at (a browser sends no `SameSite=Strict` cookie with it anyway,
/// and the refusal should say why rather than ask to sign in).
async fn protect(req: Request, next: Next) -> Response {
    let asset = req.uri().path().starts_with("/ui/assets/");
    let cross_site = (req.method() == axum::http::Method::POST)
        .then(|| same_origin(req.headers()).err())
        .flatten();
    let mut response = match cross_site {
        Some(why) => error_page(
            Chrome::new("Refused", "", None),
            StatusCode::FORBIDDEN,
            "Refused",
            &why,
        ),
        None => next.run(req).await,
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn not_found(signed: Option<Signed>, uri: axum::http::Uri) -> Response {
    let chrome = Chrome::new("Not found", "", signed.as_ref());
    error_page(
        chrome,
        StatusCode::NOT_FOUND,
        "Not found",
        &format!("There is no page {}.", crate::error::clip(uri.path())),
    )
}

/// What every page's frame shows.
pub(crate) struct Chrome {
    pub title: String,
    /// The navigation entry of this page.
    pub current: &'static str,
    pub user: Option<String>,
    pub role: &'static str,
    pub csrf: String,
    pub css: String,
    pub htmx: String,
    pub sse: String,
    pub js: String,
}

impl Chrome {
    pub(crate) fn new(title: &str, current: &'static str, signed: Option<&Signed>) -> Chrome {
        Chrome {
            title: title.to_string(),
            current,
            user: signed.map(|s| s.principal.name.clone()),
            role: signed.map_or("", |s| s.principal.role.as_str()),
            csrf: signed.map(|s| s.csrf.clone()).unwrap_or_default(),
            css: assets::url("ui.css"),
            htmx: assets::url("htmx.min.js"),
            sse: assets::url("sse.min.js"),
            js: assets::url("ui.js"),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    heading: String,
    message: String,
    back: String,
    back_label: String,
}

/// A page that says what went wrong, with `status`.
pub(crate) fn error_page(
    chrome: Chrome,
    status: StatusCode,
    heading: &str,
    message: &str,
) -> Response {
    let signed_in = chrome.user.is_some();
    let page = ErrorPage {
        chrome,
        heading: heading.to_string(),
        message: message.to_string(),
        back: if signed_in { "/ui/runs" } else { "/ui/login" }.into(),
        back_label: if signed_in {
            "Back to the runs"
        } else {
            "Sign in"
        }
        .into(),
    };
    (status, render(&page)).into_response()
}

/// The page for an error the API gave.
pub(crate) fn api_error_page(signed: &Signed, title: &str, e: &ApiError) -> Response {
    let heading = match e.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::CONFLICT => "Not possible now",
        StatusCode::TOO_MANY_REQUESTS => "Too many requests",
        s if s.is_server_error() => "Something went wrong",
        _ => "Refused",
    };
    error_page(
        Chrome::new(title, "", Some(signed)),
        e.status,
        heading,
        &e.message,
    )
}

/// A template as an HTML response (a template that fails to render is a
/// bug in this crate: the host's log gets it, the person a 500).
pub(crate) fn render<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => ApiError::internal(format!("template: {e}")).into_response(),
    }
}

/// A template as a string, for a fragment inside a page.
pub(crate) fn render_string<T: Template>(t: &T) -> String {
    t.render().unwrap_or_else(|e| {
        tracing::error!("template: {e}");
        String::from("<p>This part could not be shown; the host's log says why.</p>")
    })
}

/// A signed-in request: its session's principal and CSRF token.
#[derive(Debug, Clone)]
pub(crate) struct Signed {
    pub session_id: String,
    pub principal: Principal,
    pub csrf: String,
}

impl Signed {
    /// Whether the principal may do `what` in `environments`, and if not
    /// what the page says instead (the role needed).
    pub(crate) fn may(&self, what: Permission, environments: &[String]) -> Result<(), String> {
        self.principal
            .require(what, environments)
            .map_err(|e| match what {
                _ if e.message.contains("may not act in environment") => {
                    format!("not in {}", environments.join(", "))
                }
                Permission::Deploy => "needs deployer or admin".into(),
                Permission::Decide => "needs approver or admin".into(),
                Permission::Alert => "needs alerts or admin".into(),
            })
    }
}

impl FromRequestParts<Arc<AppState>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        match state.ui.sessions.lookup(&parts.headers) {
            session::Lookup::Live(session_id, s) => Ok(Signed {
                session_id,
                principal: s.principal,
                csrf: s.csrf,
            }),
            session::Lookup::Expired => Err(to_login(parts, true)),
            session::Lookup::Missing => Err(to_login(parts, false)),
        }
    }
}

impl axum::extract::OptionalFromRequestParts<Arc<AppState>> for Signed {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(
            <Signed as FromRequestParts<Arc<AppState>>>::from_request_parts(parts, state)
                .await
                .ok(),
        )
    }
}

/// To the sign-in page, which brings the person back to this page (a
/// link from a chat or a mail lands where it pointed, after sign-in).
fn to_login(parts: &Parts, expired: bool) -> Response {
    let back = if parts.method == axum::http::Method::GET {
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/ui/runs".into())
    } else {
        "/ui/runs".into()
    };
    // A fragment or a live stream asked for by a page: tell the page
    // (htmx follows `HX-Redirect`), or the stream's client, to sign in.
    let fragment = parts.headers.contains_key("hx-request")
        || parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
    let back = if fragment { page_of(&back) } else { back };
    let location = format!(
        "/ui/login?next={}{}",
        encode(&back),
        if expired { "&expired=1" } else { "" }
    );
    if fragment {
        return (
            StatusCode::UNAUTHORIZED,
            [("hx-redirect", location)],
            "sign in again",
        )
            .into_response();
    }
    Redirect::to(&location).into_response()
}

/// The page a fragment or stream URL belongs to.
fn page_of(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    for suffix in ["/body", "/live", "/table"] {
        if let Some(p) = path.strip_suffix(suffix) {
            return p.to_string();
        }
    }
    path.to_string()
}

/// Refuse a POST another site sent: browsers say where a request comes
/// from in `Sec-Fetch-Site` (and `Origin`); anything but this host's own
/// pages is refused before the session or the form is looked at.
pub(crate) fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return Err(format!(
                "this request came from another site (Sec-Fetch-Site: {}); the dashboard takes changes only from its own pages",
                crate::error::clip(site)
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let ours = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| !host.is_empty() && o == host);
        if !ours {
            return Err(format!(
                "this request came from another origin ({}); the dashboard takes changes only from its own pages",
                crate::error::clip(origin)
            ));
        }
    }
    Ok(())
}

/// A `next` that stays on the dashboard (never another site).
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui") && !n.starts_with("//") && !n.contains('\\') => {
            n.to_string()
        }
        _ => "/ui/runs".into(),
    }
}

/// Percent-encoding of a query value.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn only_this_hosts_own_pages_may_post() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:7070")])).is_ok());
        assert!(
            same_origin(&headers(&[
                ("host", "127.0.0.1:7070"),
                ("sec-fetch-site", "same-origin"),
                ("origin", "http://127.0.0.1:7070")
            ]))
            .is_ok()
        );
        for bad in [
            vec![("host", "127.0.0.1:7070"), ("sec-fetch-site", "cross-site")],
            vec![("host", "127.0.0.1:7070"), ("sec-fetch-site", "same-site")],
            vec![
                ("host", "127.0.0.1:7070"),
                ("origin", "http://evil.example"),
            ],
            vec![("host", "127.0.0.1:7070"), ("origin", "null")],
        ] {
            let e = same_origin(&headers(&bad)).unwrap_err();
            assert!(e.contains("another"), "{e}");
        }
    }

    #[test]
    fn after_sign_in_a_person_goes_back_only_to_the_dashboard() {
        assert_eq!(safe_next(Some("/ui/runs/abc")), "/ui/runs/abc");
        for bad in [
            "//evil.example/ui",
            "https://evil.example",
            "/v1/runs",
            "/ui\\x",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/runs", "{bad}");
        }
        assert_eq!(page_of("/ui/runs/abc/body"), "/ui/runs/abc");
        assert_eq!(
            encode("/ui/runs?status=failed"),
            "/ui/runs%3Fstatus%3Dfailed"
        );
    }
}
