//! `builtin:slack`: posts each event to Slack as a Block Kit message.
//!
//! Two ways in, both from granted secrets:
//! * an incoming webhook URL (`webhook_url_secret`): one message per event;
//! * a bot token (`bot_token_secret`) and a channel ID: `chat.postMessage`,
//!   with the run's first message carrying metadata (`rollcage_run`) so that
//!   later events of the same run are found again with
//!   `conversations.history` and go to its thread. The plugin keeps no state
//!   between calls; Slack is the state.
//!
//! A `429` is honoured: one retry after `Retry-After` when it is short, else
//! an error that says when to retry (the host retries with backoff). Slack's
//! `ok: false` answers become errors naming Slack's error code.

use std::time::Duration;

use rollcage_sdk::Notifier;
use rollcage_sdk::http::{Request, Response};
use rollcage_sdk::notifier::events::{kind_name, wanted};
use rollcage_sdk::types::{Event, EventKind};
use serde::Deserialize;
use serde_json::{Value, json};

/// The plugin's `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of the secret holding an incoming-webhook URL.
    #[serde(default)]
    pub webhook_url_secret: Option<String>,
    /// Name of the secret holding a bot token (`xoxb-...`).
    #[serde(default)]
    pub bot_token_secret: Option<String>,
    /// Channel ID (`C0123456789`) for the bot token.
    #[serde(default)]
    pub channel: Option<String>,
    /// Slack's Web API base (tests point it at a local server).
    #[serde(default = "default_api")]
    pub api_url: String,
    /// Only these event kinds; all when absent.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Longest `Retry-After` waited for inside one call, in seconds (default 3).
    #[serde(default = "default_wait")]
    pub max_retry_wait_s: u64,
}

fn default_api() -> String {
    "https://slack.com/api".into()
}
fn default_wait() -> u64 {
    3
}

fn emoji(kind: EventKind) -> &'static str {
    match kind {
        EventKind::RunStarted => ":rocket:",
        EventKind::StageStarted => ":arrow_forward:",
        EventKind::AwaitingApproval => ":raised_hand:",
        EventKind::Step => ":twisted_rightwards_arrows:",
        EventKind::AnalysisFailed => ":warning:",
        EventKind::RolledBack => ":rewind:",
        EventKind::Succeeded => ":white_check_mark:",
        EventKind::Failed => ":x:",
    }
}

/// The plain-text summary (Slack's `text`, shown in notifications).
pub fn summary(event: &Event) -> String {
    let env = event
        .environment
        .as_ref()
        .map(|e| format!(" in {e}"))
        .unwrap_or_default();
    format!(
        "{} {} {}{}: {}",
        emoji(event.kind),
        event.pipeline,
        event.release.version,
        env,
        event.message
    )
}

/// The Block Kit blocks for `event`.
pub fn blocks(event: &Event) -> Value {
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Pipeline*\n{}", event.pipeline)}),
        json!({"type": "mrkdwn", "text": format!("*Release*\n{}", event.release.version)}),
        json!({"type": "mrkdwn", "text": format!("*Event*\n{}", kind_name(event.kind))}),
    ];
    if let Some(env) = &event.environment {
        fields.insert(
            1,
            json!({"type": "mrkdwn", "text": format!("*Environment*\n{env}")}),
        );
    }
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": summary(event)}}),
        json!({"type": "section", "fields": fields}),
    ];
    if !event.fields.is_empty() {
        // Analysis values, traffic split, reasons: a context block holds at most 10 elements.
        let elements: Vec<Value> = event
            .fields
            .iter()
            .take(10)
            .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*: {v}")}))
            .collect();
        blocks.push(json!({"type": "context", "elements": elements}));
    }
    if let Some(url) = &event.url {
        blocks.push(json!({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "View run"}, "url": url}
        ]}));
    }
    Value::Array(blocks)
}

/// Send, honouring one short `Retry-After`.
fn send(request: Request, max_wait: u64) -> Result<Response, String> {
    let response = request.clone().send()?;
    if response.status != 429 {
        return Ok(response);
    }
    let after: u64 = response
        .header("retry-after")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1);
    if after > max_wait {
        return Err(format!("rate limited by Slack; retry after {after} s"));
    }
    std::thread::sleep(Duration::from_secs(after));
    let again = request.send()?;
    if again.status == 429 {
        return Err("rate limited by Slack twice in a row".into());
    }
    Ok(again)
}

/// Slack's Web API answers 200 with `{"ok": false, "error": "..."}` on failure.
fn web_api_result(method: &str, response: &Response) -> Result<Value, String> {
    if !response.is_success() {
        return Err(format!(
            "Slack {method} answered {}: {}",
            response.status,
            response.text()
        ));
    }
    let body: Value = response
        .json()
        .map_err(|e| format!("Slack {method}: {e}"))?;
    if body["ok"] == Value::Bool(true) {
        Ok(body)
    } else {
        let code = body["error"].as_str().unwrap_or("unknown_error");
        Err(format!("Slack {method} failed: {code}"))
    }
}

fn by_webhook(config: &Config, secret: &str, event: &Event) -> Result<(), String> {
    let url = rollcage_sdk::secret(secret)?;
    let request =
        Request::post(&url).json(&json!({"text": summary(event), "blocks": blocks(event)}))?;
    let response = send(request, config.max_retry_wait_s)?;
    if response.is_success() {
        Ok(())
    } else {
        // Incoming webhooks answer errors as plain text: `invalid_payload`, `channel_not_found`...
        Err(format!(
            "Slack webhook answered {}: {}",
            response.status,
            response.text().trim()
        ))
    }
}

fn by_bot(config: &Config, secret: &str, event: &Event) -> Result<(), String> {
    let token = rollcage_sdk::secret(secret)?;
    let channel = config
        .channel
        .as_deref()
        .ok_or("`channel` (a channel ID) is required with bot_token_secret")?;
    let auth = format!("Bearer {token}");
    let thread_ts = if event.kind == EventKind::RunStarted {
        None
    } else {
        let url = format!(
            "{}/conversations.history?channel={channel}&limit=200&include_all_metadata=true",
            config.api_url
        );
        let response = send(
            Request::get(&url).header("authorization", &auth),
            config.max_retry_wait_s,
        )?;
        let history = web_api_result("conversations.history", &response)?;
        history["messages"].as_array().and_then(|messages| {
            messages.iter().find_map(|m| {
                let meta = &m["metadata"];
                (meta["event_type"] == "rollcage_run"
                    && meta["event_payload"]["run_id"] == event.run_id.as_str())
                .then(|| m["ts"].as_str().map(str::to_string))
                .flatten()
            })
        })
    };
    let mut message = json!({
        "channel": channel,
        "text": summary(event),
        "blocks": blocks(event),
    });
    match thread_ts {
        Some(ts) => message["thread_ts"] = Value::String(ts),
        None => {
            message["metadata"] = json!({
                "event_type": "rollcage_run",
                "event_payload": {"run_id": event.run_id, "pipeline": event.pipeline},
            })
        }
    }
    let request = Request::post(&format!("{}/chat.postMessage", config.api_url))
        .header("authorization", &auth)
        .header("content-type", "application/json; charset=utf-8")
        .body(serde_json::to_vec(&message).map_err(|e| e.to_string())?);
    let response = send(request, config.max_retry_wait_s)?;
    web_api_result("chat.postMessage", &response).map(|_| ())
}

/// The notifier.
pub struct Slack;

impl Notifier for Slack {
    fn notify(event: Event) -> Result<(), String> {
        let config: Config = rollcage_sdk::config()?;
        if !wanted(config.events.as_deref(), &event)? {
            return Ok(());
        }
        match (&config.webhook_url_secret, &config.bot_token_secret) {
            (Some(secret), None) => by_webhook(&config, secret, &event),
            (None, Some(secret)) => by_bot(&config, secret, &event),
            _ => Err("set exactly one of webhook_url_secret and bot_token_secret".into()),
        }
    }
}

rollcage_sdk::export_notifier!(Slack);

#[cfg(test)]
mod tests {
    use super::*;
    use rollcage_sdk::testing::sample_event;

    #[test]
    fn blocks_carry_pipeline_environment_release_values_and_link() {
        let b = blocks(&sample_event(EventKind::RolledBack));
        assert_eq!(
            b[0]["text"]["text"],
            ":rewind: api 1.2.0 in production: error ratio 0.31 above 0.05"
        );
        assert_eq!(b[1]["fields"][1]["text"], "*Environment*\nproduction");
        assert_eq!(b[2]["elements"][0]["text"], "*error_ratio*: 0.31");
        assert_eq!(
            b[3]["elements"][0]["url"],
            "http://127.0.0.1:7070/v1/runs/run-42"
        );
    }
}
