//! `builtin:clickup`: ClickUp API v2 with a personal token (`pk_...`) or an
//! OAuth access token from a granted secret, sent as ClickUp wants it: the
//! bare token in `Authorization`, without `Bearer`.
//!
//! * When a deployment fails or rolls back (`create_on`), it creates a task
//!   in the list `list_id` (`POST /list/{list_id}/task`) whose
//!   `markdown_description` lists the pipeline, environment, release, run
//!   and analysis values.
//! * When a deployment succeeds, it finds the release's task, comments on
//!   it (`POST /task/{task_id}/comment`) and, with `success_status`, moves
//!   it to that status (`PUT /task/{task_id}`). The release's task is the
//!   run parameter `clickup_task` (`--param clickup_task=86abc123`, or a
//!   custom task ID such as `OPS-12` when `team_id` is set), or else, with
//!   `release_task_name`, the task of that name in the list (`GET
//!   /list/{list_id}/task`, closed tasks and subtasks included).
//!
//! ClickUp's error bodies (`{"err": "...", "ECODE": "..."}`) are part of the
//! error. A `429` is honoured: one retry once `X-RateLimit-Reset` (unix
//! seconds) has passed when that is near, else an error that says when the
//! limit resets (the host retries with backoff).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rollcage_sdk::Notifier;
use rollcage_sdk::http::{Request, Response, encode};
use rollcage_sdk::notifier::events::kind_name;
use rollcage_sdk::types::{Event, EventKind};
use serde::Deserialize;
use serde_json::{Value, json};

/// The plugin's `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// ClickUp's API base (tests point it at a local server).
    #[serde(default = "default_api")]
    pub api_url: String,
    /// Secret holding the token (`pk_...`).
    pub token_secret: String,
    /// List of created tasks, and where `release_task_name` is looked for.
    pub list_id: String,
    /// Events that create a task (default failed and rolled-back).
    #[serde(default = "default_create_on")]
    pub create_on: Vec<String>,
    /// Run parameter naming the release's task (default `clickup_task`).
    #[serde(default = "default_param")]
    pub task_param: String,
    /// Workspace (team) ID: needed for custom task IDs (`OPS-12`).
    #[serde(default)]
    pub team_id: Option<String>,
    /// Name of the release's task in the list when the run has no task
    /// parameter: `{pipeline}` and `{release}` are filled in.
    #[serde(default)]
    pub release_task_name: Option<String>,
    /// Status the release's task is moved to on success.
    #[serde(default)]
    pub success_status: Option<String>,
    /// Priority of created tasks: 1 urgent, 2 high, 3 normal, 4 low.
    #[serde(default)]
    pub priority: Option<u8>,
    /// Tags of created tasks (default `rollcage`, `deployment`).
    #[serde(default = "default_tags")]
    pub tags: Vec<String>,
    /// Longest wait for a rate limit's reset inside one call, in seconds
    /// (default 3).
    #[serde(default = "default_wait")]
    pub max_retry_wait_s: u64,
}

fn default_api() -> String {
    "https://api.clickup.com/api/v2".into()
}
fn default_create_on() -> Vec<String> {
    vec!["failed".into(), "rolled-back".into()]
}
fn default_param() -> String {
    "clickup_task".into()
}
fn default_tags() -> Vec<String> {
    vec!["rollcage".into(), "deployment".into()]
}
fn default_wait() -> u64 {
    3
}

/// Pages of 100 tasks read when looking for the release's task by name.
const SEARCH_PAGES: u32 = 10;

/// `text` with the characters Markdown would read as formatting escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The Markdown description of `event`: its message, then a list of the
/// pipeline, environment, release, run and every analysis value.
pub fn description(event: &Event) -> String {
    let run = match &event.url {
        Some(url) => format!("[{}]({url})", escape(&event.run_id)),
        None => escape(&event.run_id),
    };
    let mut lines = vec![
        format!("**{}**", escape(&event.message)),
        String::new(),
        format!("- **Pipeline:** {}", escape(&event.pipeline)),
        format!(
            "- **Environment:** {}",
            escape(event.environment.as_deref().unwrap_or("-"))
        ),
        format!("- **Release:** {}", escape(&event.release.version)),
        format!("- **Run:** {run}"),
    ];
    lines.extend(
        event
            .fields
            .iter()
            .map(|(k, v)| format!("- **{}:** {}", escape(k), escape(v))),
    );
    if let Some(notes) = &event.release.notes {
        lines.push(String::new());
        lines.push(format!("Release notes: {}", escape(notes)));
    }
    lines.join("\n")
}

/// The plain-text comment left on the release's task.
pub fn comment(event: &Event) -> String {
    let mut text = format!(
        "Release {} of {} deployed{} (run {}): {}",
        event.release.version,
        event.pipeline,
        event
            .environment
            .as_deref()
            .map(|e| format!(" to {e}"))
            .unwrap_or_default(),
        event.run_id,
        event.message
    );
    for (k, v) in &event.fields {
        text.push_str(&format!("\n{k}: {v}"));
    }
    if let Some(url) = &event.url {
        text.push_str(&format!("\n{url}"));
    }
    text
}

/// ClickUp's error body (`err`, `ECODE`) as one sentence.
fn clickup_error(what: &str, response: &Response) -> String {
    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let meaning = match response.status {
        400 => "rejected the request",
        401 => "did not accept the token (check the token secret)",
        403 => "refused: the token's user lacks access",
        404 => "found no such resource",
        429 => "rate limited the token",
        _ => "failed",
    };
    let status = match body["ECODE"].as_str() {
        Some(code) => format!("{} {code}", response.status),
        None => response.status.to_string(),
    };
    match body["err"].as_str() {
        Some(err) => format!("ClickUp {what}: {meaning} ({status}): {err}"),
        None => format!("ClickUp {what}: {meaning} ({status})"),
    }
}

/// Seconds since the epoch, by the clock the host grants.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Send, honouring a rate limit that resets within `max_wait` seconds with
/// one retry after the reset.
fn send(request: Request, what: &str, max_wait: u64) -> Result<Response, String> {
    let response = request.clone().send()?;
    if response.status != 429 {
        return Ok(response);
    }
    let Some(reset) = response
        .header("x-ratelimit-reset")
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return Err(clickup_error(what, &response));
    };
    // The limit is lifted in the second `reset` names: wait for the next.
    let wait = (reset + 1).saturating_sub(now());
    if wait > max_wait {
        return Err(format!(
            "{}; its limit resets in {wait} s (X-RateLimit-Reset {reset})",
            clickup_error(what, &response)
        ));
    }
    std::thread::sleep(Duration::from_secs(wait));
    let again = request.send()?;
    if again.status == 429 {
        return Err(format!(
            "{} twice in a row (X-RateLimit-Reset {reset})",
            clickup_error(what, &again)
        ));
    }
    Ok(again)
}

struct Client {
    base: String,
    token: String,
    max_wait: u64,
}

impl Client {
    fn new(config: &Config) -> Result<Client, String> {
        Ok(Client {
            base: config.api_url.trim_end_matches('/').to_string(),
            token: rollcage_sdk::secret(&config.token_secret)?,
            max_wait: config.max_retry_wait_s,
        })
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<Value, String> {
        // ClickUp takes the token itself, not `Bearer <token>`.
        let mut request = Request::new(method, &format!("{}{path}", self.base))
            .header("authorization", &self.token)
            .header("accept", "application/json");
        if let Some(body) = body {
            request = request.json(&body)?;
        }
        let response = send(request, what, self.max_wait)?;
        if !response.is_success() {
            return Err(clickup_error(what, &response));
        }
        if response.body.is_empty() {
            return Ok(Value::Null);
        }
        response.json().map_err(|e| format!("ClickUp {what}: {e}"))
    }
}

/// The release's task: its path (`/task/{id}`), the query ClickUp needs
/// for a custom task ID, and how it is named in messages.
#[derive(Debug, PartialEq)]
pub struct TaskRef {
    pub path: String,
    pub query: String,
    pub name: String,
}

impl TaskRef {
    /// The task itself, or its sub-resource `sub` (`comment`), with the
    /// query at the end.
    pub fn url(&self, sub: Option<&str>) -> String {
        match sub {
            Some(sub) => format!("{}/{sub}{}", self.path, self.query),
            None => format!("{}{}", self.path, self.query),
        }
    }
}

/// A task ID from a run parameter. ClickUp's own IDs are letters and
/// digits (`86abc123`); custom task IDs carry a dash (`OPS-12`) and need
/// the workspace's ID.
pub fn task_ref(id: &str, team_id: Option<&str>) -> Result<TaskRef, String> {
    let id = id.trim();
    if id.is_empty() {
        return Err("the run's ClickUp task parameter is empty".into());
    }
    let path = format!("/task/{}", encode(id));
    if !id.contains('-') {
        return Ok(TaskRef {
            path,
            query: String::new(),
            name: id.to_string(),
        });
    }
    let team = team_id.ok_or_else(|| {
        format!(
            "`{id}` is a custom task ID: set `team_id` (the workspace's ID) in the plugin's config"
        )
    })?;
    Ok(TaskRef {
        path,
        query: format!("?custom_task_ids=true&team_id={}", encode(team)),
        name: id.to_string(),
    })
}

/// `release_task_name` with `{pipeline}` and `{release}` filled in.
pub fn release_task_name(template: &str, event: &Event) -> String {
    template
        .replace("{pipeline}", &event.pipeline)
        .replace("{release}", &event.release.version)
}

/// The release's task of `event`, if the run names one or the list has
/// one of the configured name.
fn find_task(client: &Client, config: &Config, event: &Event) -> Result<Option<TaskRef>, String> {
    if let Some((_, id)) = event
        .release
        .params
        .iter()
        .find(|(k, _)| *k == config.task_param)
    {
        return task_ref(id, config.team_id.as_deref()).map(Some);
    }
    let Some(template) = &config.release_task_name else {
        return Ok(None);
    };
    let wanted = release_task_name(template, event);
    for page in 0..SEARCH_PAGES {
        let found = client.call(
            "GET",
            &format!(
                "/list/{}/task?page={page}&include_closed=true&subtasks=true",
                encode(&config.list_id)
            ),
            None,
            &format!("tasks of list {}", config.list_id),
        )?;
        let tasks = found["tasks"].as_array().cloned().unwrap_or_default();
        if let Some(id) = tasks
            .iter()
            .find(|t| t["name"].as_str().map(str::trim) == Some(wanted.as_str()))
            .and_then(|t| t["id"].as_str())
        {
            return Ok(Some(TaskRef {
                path: format!("/task/{}", encode(id)),
                query: String::new(),
                name: format!("{id} ({wanted})"),
            }));
        }
        if found["last_page"] != Value::Bool(false) || tasks.is_empty() {
            break;
        }
    }
    rollcage_sdk::log::warn(&format!(
        "no task named `{wanted}` in ClickUp list {}: nothing to comment on",
        config.list_id
    ));
    Ok(None)
}

/// The notifier.
pub struct ClickUp;

impl Notifier for ClickUp {
    fn notify(event: Event) -> Result<(), String> {
        let config: Config = rollcage_sdk::config()?;
        if let Some(p) = config.priority
            && !(1..=4).contains(&p)
        {
            return Err(format!(
                "priority = {p}: ClickUp's priorities are 1 (urgent), 2 (high), 3 (normal) and 4 (low)"
            ));
        }
        let kind = kind_name(event.kind);
        if config.create_on.iter().any(|k| k == kind) {
            let client = Client::new(&config)?;
            let env = event.environment.as_deref().unwrap_or("all stages");
            let name = format!(
                "Deployment of {} {} {} in {env}",
                event.pipeline,
                event.release.version,
                if event.kind == EventKind::RolledBack {
                    "rolled back"
                } else {
                    "failed"
                }
            );
            let mut body = json!({
                "name": name,
                "markdown_description": description(&event),
                "tags": config.tags,
            });
            if let Some(p) = config.priority {
                body["priority"] = json!(p);
            }
            let created = client.call(
                "POST",
                &format!("/list/{}/task", encode(&config.list_id)),
                Some(body),
                &format!("create task in list {}", config.list_id),
            )?;
            rollcage_sdk::log::info(&format!(
                "created ClickUp task {} {}",
                created["id"].as_str().unwrap_or("?"),
                created["url"].as_str().unwrap_or("")
            ));
            return Ok(());
        }
        if event.kind != EventKind::Succeeded {
            return Ok(());
        }
        let client = Client::new(&config)?;
        let Some(task) = find_task(&client, &config, &event)? else {
            return Ok(());
        };
        client.call(
            "POST",
            &task.url(Some("comment")),
            Some(json!({"comment_text": comment(&event), "notify_all": false})),
            &format!("comment on task {}", task.name),
        )?;
        if let Some(status) = &config.success_status {
            client.call(
                "PUT",
                &task.url(None),
                Some(json!({"status": status})),
                &format!("set the status of task {} to `{status}`", task.name),
            )?;
        }
        Ok(())
    }
}

rollcage_sdk::export_notifier!(ClickUp);

#[cfg(test)]
mod tests {
    use super::*;
    use rollcage_sdk::testing::sample_event;

    #[test]
    fn descriptions_list_every_value_in_markdown() {
        let text = description(&sample_event(EventKind::RolledBack));
        assert_eq!(
            text,
            "**error ratio 0.31 above 0.05**\n\n\
             - **Pipeline:** api\n\
             - **Environment:** production\n\
             - **Release:** 1.2.0\n\
             - **Run:** [run-42](http://127.0.0.1:7070/v1/runs/run-42)\n\
             - **error\\_ratio:** 0.31\n\
             - **weight:** 10\n\n\
             Release notes: faster checkout"
        );
    }

    #[test]
    fn custom_task_ids_need_the_workspace() {
        assert_eq!(
            task_ref("86abc123", None).unwrap().url(Some("comment")),
            "/task/86abc123/comment"
        );
        let custom = task_ref("OPS-12", Some("9001")).unwrap();
        assert_eq!(
            custom.url(None),
            "/task/OPS-12?custom_task_ids=true&team_id=9001"
        );
        assert_eq!(
            custom.url(Some("comment")),
            "/task/OPS-12/comment?custom_task_ids=true&team_id=9001"
        );
        assert!(
            task_ref("OPS-12", None)
                .unwrap_err()
                .contains("set `team_id`")
        );
    }

    #[test]
    fn release_task_names_are_filled_in() {
        let event = sample_event(EventKind::Succeeded);
        assert_eq!(
            release_task_name("Release {pipeline} {release}", &event),
            "Release api 1.2.0"
        );
    }
}
