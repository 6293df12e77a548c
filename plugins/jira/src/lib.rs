//! `builtin:jira`: Jira Cloud REST API v3, basic auth with an account email
//! and API token (both granted secrets).
//!
//! * When a deployment fails or rolls back (`create_on`), it creates an issue
//!   in `project` with the analysis values in an Atlassian Document Format
//!   description.
//! * When a deployment succeeds and the run has an `issue_key` parameter
//!   (`rollcage run ... --param issue_key=OPS-12`), it comments on that issue
//!   and, if `transition` is set, moves it through the transition of that name.
//!
//! Jira's `errorMessages` and `errors` become the error text of 400, 401,
//! 403 and 404 answers.

use base64::Engine as _;
use rollcage_sdk::Notifier;
use rollcage_sdk::http::{Request, Response};
use rollcage_sdk::notifier::events::kind_name;
use rollcage_sdk::types::{Event, EventKind};
use serde::Deserialize;
use serde_json::{Value, json};

/// The plugin's `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `https://<site>.atlassian.net`.
    pub base_url: String,
    /// Secret holding the account email.
    pub email_secret: String,
    /// Secret holding the API token.
    pub token_secret: String,
    /// Project key for created issues, for example `OPS`.
    pub project: String,
    /// Issue type for created issues (default `Bug`).
    #[serde(default = "default_issue_type")]
    pub issue_type: String,
    /// Events that create an issue (default failed and rolled-back).
    #[serde(default = "default_create_on")]
    pub create_on: Vec<String>,
    /// Run parameter naming the release issue (default `issue_key`).
    #[serde(default = "default_param")]
    pub issue_key_param: String,
    /// Transition applied to the release issue on success, by name.
    #[serde(default)]
    pub transition: Option<String>,
}

fn default_issue_type() -> String {
    "Bug".into()
}
fn default_create_on() -> Vec<String> {
    vec!["failed".into(), "rolled-back".into()]
}
fn default_param() -> String {
    "issue_key".into()
}

/// An ADF paragraph.
fn paragraph(text: &str) -> Value {
    json!({"type": "paragraph", "content": [{"type": "text", "text": text}]})
}

/// The ADF document describing `event`: summary, then a bullet list of its
/// details and analysis values.
pub fn description(event: &Event) -> Value {
    let mut items = vec![
        format!("Pipeline: {}", event.pipeline),
        format!(
            "Environment: {}",
            event.environment.as_deref().unwrap_or("-")
        ),
        format!("Release: {}", event.release.version),
        format!("Run: {}", event.run_id),
    ];
    items.extend(event.fields.iter().map(|(k, v)| format!("{k}: {v}")));
    let list: Vec<Value> = items
        .iter()
        .map(|i| json!({"type": "listItem", "content": [paragraph(i)]}))
        .collect();
    let mut content = vec![
        paragraph(&event.message),
        json!({"type": "bulletList", "content": list}),
    ];
    if let Some(url) = &event.url {
        content.push(json!({"type": "paragraph", "content": [
            {"type": "text", "text": "View the run", "marks": [{"type": "link", "attrs": {"href": url}}]}
        ]}));
    }
    json!({"type": "doc", "version": 1, "content": content})
}

/// Jira's error body (`errorMessages`, `errors`) as one sentence.
fn jira_error(what: &str, response: &Response) -> String {
    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let mut messages: Vec<String> = body["errorMessages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if let Some(errors) = body["errors"].as_object() {
        messages.extend(
            errors
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or(""))),
        );
    }
    let meaning = match response.status {
        400 => "rejected the request",
        401 => "did not accept the credentials (check the email and API token secrets)",
        403 => "refused: the account lacks permission",
        404 => "found no such resource",
        _ => "failed",
    };
    if messages.is_empty() {
        format!("Jira {what}: {meaning} ({})", response.status)
    } else {
        format!(
            "Jira {what}: {meaning} ({}): {}",
            response.status,
            messages.join("; ")
        )
    }
}

struct Client {
    base: String,
    auth: String,
}

impl Client {
    fn new(config: &Config) -> Result<Client, String> {
        let email = rollcage_sdk::secret(&config.email_secret)?;
        let token = rollcage_sdk::secret(&config.token_secret)?;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{email}:{token}"));
        Ok(Client {
            base: config.base_url.trim_end_matches('/').to_string(),
            auth: format!("Basic {auth}"),
        })
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<Value, String> {
        let mut request = Request::new(method, &format!("{}{path}", self.base))
            .header("authorization", &self.auth)
            .header("accept", "application/json");
        if let Some(body) = body {
            request = request.json(&body)?;
        }
        let response = request.send()?;
        if !response.is_success() {
            return Err(jira_error(what, &response));
        }
        if response.body.is_empty() {
            return Ok(Value::Null);
        }
        response.json().map_err(|e| format!("Jira {what}: {e}"))
    }
}

/// The notifier.
pub struct Jira;

impl Notifier for Jira {
    fn notify(event: Event) -> Result<(), String> {
        let config: Config = rollcage_sdk::config()?;
        let kind = kind_name(event.kind);
        if config.create_on.iter().any(|k| k == kind) {
            let client = Client::new(&config)?;
            let env = event.environment.as_deref().unwrap_or("all stages");
            let summary = format!(
                "Deployment of {} {} {} in {env}",
                event.pipeline,
                event.release.version,
                if event.kind == EventKind::RolledBack {
                    "rolled back"
                } else {
                    "failed"
                }
            );
            let created = client.call(
                "POST",
                "/rest/api/3/issue",
                Some(json!({"fields": {
                    "project": {"key": config.project},
                    "issuetype": {"name": config.issue_type},
                    "summary": summary,
                    "description": description(&event),
                    "labels": ["rollcage", "deployment"],
                }})),
                "create issue",
            )?;
            rollcage_sdk::log::info(&format!(
                "created Jira issue {}",
                created["key"].as_str().unwrap_or("?")
            ));
            return Ok(());
        }
        if event.kind != EventKind::Succeeded {
            return Ok(());
        }
        let Some((_, key)) = event
            .release
            .params
            .iter()
            .find(|(k, _)| *k == config.issue_key_param)
        else {
            return Ok(());
        };
        let client = Client::new(&config)?;
        client.call(
            "POST",
            &format!("/rest/api/3/issue/{key}/comment"),
            Some(json!({"body": description(&event)})),
            &format!("comment on {key}"),
        )?;
        if let Some(name) = &config.transition {
            let transitions = client.call(
                "GET",
                &format!("/rest/api/3/issue/{key}/transitions"),
                None,
                &format!("transitions of {key}"),
            )?;
            let id = transitions["transitions"]
                .as_array()
                .and_then(|ts| {
                    ts.iter()
                        .find(|t| t["name"].as_str() == Some(name.as_str()))
                })
                .and_then(|t| t["id"].as_str())
                .ok_or_else(|| format!("Jira issue {key} has no transition named `{name}`"))?;
            client.call(
                "POST",
                &format!("/rest/api/3/issue/{key}/transitions"),
                Some(json!({"transition": {"id": id}})),
                &format!("transition {key}"),
            )?;
        }
        Ok(())
    }
}

rollcage_sdk::export_notifier!(Jira);

#[cfg(test)]
mod tests {
    use super::*;
    use rollcage_sdk::testing::sample_event;

    #[test]
    fn descriptions_are_adf_documents() {
        let doc = description(&sample_event(EventKind::RolledBack));
        assert_eq!(doc["type"], "doc");
        assert_eq!(doc["version"], 1);
        assert_eq!(
            doc["content"][0]["content"][0]["text"],
            "error ratio 0.31 above 0.05"
        );
        let items = doc["content"][1]["content"].as_array().unwrap();
        assert_eq!(items.len(), 6);
        assert_eq!(
            items[4]["content"][0]["content"][0]["text"],
            "error_ratio: 0.31"
        );
        assert_eq!(doc["content"][2]["content"][0]["marks"][0]["type"], "link");
    }
}
