//! `builtin:webhook`: POSTs each event as JSON (schema `rollcage.event/v1`)
//! to a URL, signed like GitHub's webhooks: `X-Rollcage-Signature:
//! sha256=<hex HMAC-SHA256 of the body>` with a granted secret as the key.

use hmac::{Hmac, Mac};
use rollcage_sdk::Notifier;
use rollcage_sdk::http::Request;
use rollcage_sdk::notifier::events::{kind_name, wanted};
use rollcage_sdk::types::Event;
use serde::Deserialize;
use sha2::Sha256;

/// The body's schema name; a new incompatible shape gets a new version.
pub const SCHEMA: &str = "rollcage.event/v1";

/// The plugin's `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Where to POST.
    url: String,
    /// Name of the granted secret used as the HMAC key; unsigned when absent.
    #[serde(default)]
    signing_secret: Option<String>,
    /// Only these event kinds; all when absent.
    #[serde(default)]
    events: Option<Vec<String>>,
}

/// The JSON body for `event`.
pub fn body(event: &Event) -> serde_json::Value {
    let fields: serde_json::Map<String, serde_json::Value> = event
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let params: serde_json::Map<String, serde_json::Value> = event
        .release
        .params
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::json!({
        "schema": SCHEMA,
        "kind": kind_name(event.kind),
        "run_id": event.run_id,
        "pipeline": event.pipeline,
        "environment": event.environment,
        "release": {
            "version": event.release.version,
            "notes": event.release.notes,
            "params": params,
        },
        "message": event.message,
        "fields": fields,
        "url": event.url,
        "timestamp_ms": event.timestamp_ms,
    })
}

/// `sha256=<hex>` of `body` keyed with `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The notifier.
pub struct Webhook;

impl Notifier for Webhook {
    fn notify(event: Event) -> Result<(), String> {
        let config: Config = rollcage_sdk::config()?;
        if !wanted(config.events.as_deref(), &event)? {
            return Ok(());
        }
        let payload = serde_json::to_vec(&body(&event)).map_err(|e| e.to_string())?;
        let mut request = Request::post(&config.url)
            .header("content-type", "application/json")
            .header("user-agent", "rollcage-webhook/1")
            .header("x-rollcage-event", kind_name(event.kind));
        if let Some(name) = &config.signing_secret {
            let key = rollcage_sdk::secret(name)?;
            request = request.header("x-rollcage-signature", &signature(key.as_bytes(), &payload));
        }
        let response = request.body(payload).send()?;
        if response.is_success() {
            Ok(())
        } else {
            let text = response.text();
            Err(format!(
                "webhook answered {}: {}",
                response.status,
                text.chars().take(200).collect::<String>()
            ))
        }
    }
}

rollcage_sdk::export_notifier!(Webhook);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_githubs_scheme() {
        // The example of GitHub's webhook documentation.
        assert_eq!(
            signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
