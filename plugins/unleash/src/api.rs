//! The Unleash Admin API as this plugin uses it, without I/O: the paths,
//! what a flag's JSON says about our exposure, the calls that bring it to a
//! desired percent, and what an error status means in words. `lib.rs`
//! sends the calls; everything here is unit-tested natively.
//!
//! Endpoints (Unleash 5 and later, `Authorization: <admin or personal
//! access token>`):
//! * `GET  /api/admin/projects/{project}/features/{flag}`: the flag, with
//!   every environment's `enabled` and `strategies`.
//! * `POST /api/admin/projects/{project}/features/{flag}/environments/{env}/strategies`:
//!   add a strategy.
//! * `PATCH .../environments/{env}/strategies/{id}`: a JSON patch of it.
//! * `POST .../environments/{env}/on`: enable the flag in that environment.

use serde_json::{Value, json};

/// Unleash's gradual rollout strategy: `rollout` percent of users by a
/// stable hash of `stickiness` (`default`: userId, else sessionId, else
/// random) and `groupId`.
pub const FLEXIBLE_ROLLOUT: &str = "flexibleRollout";

/// One Admin API call: method, path below the base URL, JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Value>,
}

/// Where one flag lives in Unleash and which strategy is ours.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub project: String,
    pub flag: String,
    /// The Unleash environment (after `environments` mapping).
    pub environment: String,
    /// Title of the strategy this plugin owns.
    pub title: String,
}

/// What a flag's JSON says about one environment.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// The flag is enabled in the environment.
    pub enabled: bool,
    /// Our strategy's id and rollout, when it exists.
    pub ours: Option<(String, u32)>,
    /// Other strategies that are not disabled: Unleash enables the flag
    /// for a user when any strategy does, so they add to our exposure.
    pub others: Vec<String>,
    /// A hash of the environment's `enabled` and strategies as the server
    /// returned them: it changes whenever anyone changes the flag there.
    pub revision: String,
}

/// Whether `name` can be put in a URL path as is. Unleash's own names are
/// URL-friendly (letters, digits, `-_.~`); anything else is refused rather
/// than escaped, so that a path never reaches another resource.
pub fn url_safe(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
}

impl Target {
    /// `/api/admin/projects/{project}/features/{flag}`.
    pub fn feature_path(&self) -> String {
        format!(
            "/api/admin/projects/{}/features/{}",
            self.project, self.flag
        )
    }

    fn environment_path(&self) -> String {
        format!("{}/environments/{}", self.feature_path(), self.environment)
    }

    /// The flag, environment and project, for error messages.
    pub fn describe(&self) -> String {
        format!(
            "flag `{}` in Unleash environment `{}` (project `{}`)",
            self.flag, self.environment, self.project
        )
    }

    /// Our strategy in `flag` (the JSON of `GET feature_path`), in this
    /// target's environment.
    pub fn state(&self, flag: &Value) -> Result<State, String> {
        let environments = flag["environments"]
            .as_array()
            .ok_or("the flag's JSON has no `environments` list")?;
        let env = environments
            .iter()
            .find(|e| e["name"] == self.environment.as_str())
            .ok_or_else(|| {
                let known: Vec<&str> = environments
                    .iter()
                    .filter_map(|e| e["name"].as_str())
                    .collect();
                format!(
                    "Unleash environment `{}` is not enabled in project `{}` (it has: {}); map the Rollcage environment to one of them in `environments`",
                    self.environment,
                    self.project,
                    known.join(", ")
                )
            })?;
        let enabled = env["enabled"].as_bool().unwrap_or(false);
        let strategies = env["strategies"].as_array().cloned().unwrap_or_default();
        let mut ours = None;
        let mut others = Vec::new();
        for s in &strategies {
            let title = s["title"].as_str().unwrap_or("");
            if s["name"] == FLEXIBLE_ROLLOUT && title == self.title && ours.is_none() {
                let id = s["id"]
                    .as_str()
                    .ok_or("our strategy has no `id`")?
                    .to_string();
                let rollout = rollout(&s["parameters"]["rollout"]).ok_or_else(|| {
                    format!(
                        "strategy `{}` has rollout {} (not 0-100)",
                        self.title, s["parameters"]["rollout"]
                    )
                })?;
                ours = Some((id, rollout));
            } else if s["disabled"] != true {
                let name = s["name"].as_str().unwrap_or("?");
                others.push(if title.is_empty() {
                    name.to_string()
                } else {
                    format!("{name} `{title}`")
                });
            }
        }
        Ok(State {
            enabled,
            ours,
            others,
            revision: revision(enabled, &strategies),
        })
    }

    /// The calls that expose the flag to `percent` of users from `state`:
    /// none when it already is. Our strategy is created or changed before
    /// the environment is enabled, so that enabling never exposes more
    /// (Unleash adds a 100% default strategy to an environment enabled
    /// without strategies). At 0 the environment is left as it is: other
    /// strategies there keep working, ours exposes nobody.
    pub fn plan(&self, state: &State, percent: u32) -> Vec<Call> {
        let mut calls = Vec::new();
        match &state.ours {
            Some((_, rollout)) if *rollout == percent => {}
            Some((id, _)) => calls.push(Call {
                method: "PATCH",
                path: format!("{}/strategies/{id}", self.environment_path()),
                body: Some(json!([
                    { "op": "replace", "path": "/parameters/rollout", "value": percent.to_string() }
                ])),
            }),
            // Without our strategy nobody is exposed by us already.
            None if percent == 0 => {}
            None => calls.push(Call {
                method: "POST",
                path: format!("{}/strategies", self.environment_path()),
                body: Some(json!({
                    "name": FLEXIBLE_ROLLOUT,
                    "title": self.title,
                    "constraints": [],
                    "parameters": {
                        "rollout": percent.to_string(),
                        "stickiness": "default",
                        "groupId": self.flag,
                    },
                })),
            }),
        }
        if percent > 0 && !state.enabled {
            calls.push(Call {
                method: "POST",
                path: format!("{}/on", self.environment_path()),
                body: None,
            });
        }
        calls
    }

    /// What an error answer means, in words naming the flag.
    pub fn status_error(&self, call: &str, status: u16, body: &str, token_secret: &str) -> String {
        let detail = server_message(body);
        match status {
            401 | 403 => format!(
                "{}: Unleash refused the token in secret `{token_secret}` ({status}{detail}): the Admin API needs an admin API token or a personal access token, not a client (backend) or frontend token",
                self.describe()
            ),
            404 if call == "GET" => format!(
                "{}: the flag does not exist in project `{}` ({status}{detail}); create it in Unleash first: flags belong to the code that reads them, this plugin only sets their rollout",
                self.describe(),
                self.project
            ),
            _ => format!("{}: {call} answered {status}{detail}", self.describe()),
        }
    }
}

/// `: <message>` from an Unleash error body, or nothing.
fn server_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

/// A `rollout` parameter (a string "0".."100"; a number is accepted too).
fn rollout(value: &Value) -> Option<u32> {
    let n = match value {
        Value::String(s) => s.trim().parse::<u32>().ok()?,
        Value::Number(n) => u32::try_from(n.as_u64()?).ok()?,
        _ => return None,
    };
    (n <= 100).then_some(n)
}

/// FNV-1a (64 bits) of the environment's `enabled` and its strategies in
/// canonical JSON (serde_json sorts object keys), as 16 hex digits.
fn revision(enabled: bool, strategies: &[Value]) -> String {
    let text = json!({ "enabled": enabled, "strategies": strategies }).to_string();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            project: "default".into(),
            flag: "checkout-v2".into(),
            environment: "production".into(),
            title: "rollcage".into(),
        }
    }

    /// A flag as `GET /api/admin/projects/default/features/checkout-v2`
    /// returns it (Unleash 8.2, trimmed).
    fn flag(enabled: bool, strategies: Value) -> Value {
        json!({
            "name": "checkout-v2",
            "project": "default",
            "environments": [
                { "name": "development", "enabled": false, "strategies": [] },
                { "name": "production", "lastSeenAt": null, "enabled": enabled, "yes": 0, "no": 0,
                  "type": "production", "sortOrder": 3, "strategies": strategies },
            ],
        })
    }

    fn ours(rollout: &str) -> Value {
        json!({
            "name": "flexibleRollout", "id": "01M8QAXZ", "title": "rollcage", "disabled": false,
            "constraints": [], "variants": [], "segments": [], "sortOrder": 0,
            "parameters": { "groupId": "checkout-v2", "rollout": rollout, "stickiness": "default" },
        })
    }

    #[test]
    fn a_new_flag_gets_our_strategy_then_is_enabled() {
        let t = target();
        let state = t.state(&flag(false, json!([]))).unwrap();
        assert_eq!(state.ours, None);
        assert!(!state.enabled);
        let calls = t.plan(&state, 10);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].method, "POST");
        assert_eq!(
            calls[0].path,
            "/api/admin/projects/default/features/checkout-v2/environments/production/strategies"
        );
        let body = calls[0].body.as_ref().unwrap();
        assert_eq!(body["name"], "flexibleRollout");
        assert_eq!(body["title"], "rollcage");
        assert_eq!(
            body["parameters"]["rollout"], "10",
            "a string, as Unleash keeps it"
        );
        assert_eq!(body["parameters"]["stickiness"], "default");
        assert_eq!(body["parameters"]["groupId"], "checkout-v2");
        assert_eq!(
            calls[1],
            Call {
                method: "POST",
                path: "/api/admin/projects/default/features/checkout-v2/environments/production/on"
                    .into(),
                body: None
            }
        );
    }

    #[test]
    fn an_existing_rollout_is_patched_and_a_repeat_does_nothing() {
        let t = target();
        let state = t.state(&flag(true, json!([ours("10")]))).unwrap();
        assert_eq!(state.ours, Some(("01M8QAXZ".into(), 10)));
        let calls = t.plan(&state, 50);
        assert_eq!(
            calls,
            vec![Call {
                method: "PATCH",
                path: "/api/admin/projects/default/features/checkout-v2/environments/production/strategies/01M8QAXZ".into(),
                body: Some(json!([{ "op": "replace", "path": "/parameters/rollout", "value": "50" }])),
            }]
        );
        assert!(
            t.plan(&state, 10).is_empty(),
            "desired state: nothing to do"
        );
    }

    #[test]
    fn zero_on_a_flag_never_exposed_changes_nothing() {
        let t = target();
        let state = t.state(&flag(false, json!([]))).unwrap();
        assert!(t.plan(&state, 0).is_empty());
        // Enabled with our strategy: the rollout goes to 0, the
        // environment stays as it is.
        let state = t.state(&flag(true, json!([ours("50")]))).unwrap();
        let calls = t.plan(&state, 0);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].method, "PATCH");
    }

    #[test]
    fn other_strategies_are_reported_and_not_ours() {
        let t = target();
        let mut theirs = ours("100");
        theirs["title"] = json!("internal users");
        theirs["id"] = json!("other");
        let mut off = ours("100");
        off["title"] = json!("");
        off["disabled"] = json!(true);
        let state = t.state(&flag(true, json!([theirs, off]))).unwrap();
        assert_eq!(state.ours, None);
        assert_eq!(state.others, vec!["flexibleRollout `internal users`"]);
    }

    #[test]
    fn the_revision_follows_changes_but_not_usage_counts() {
        let t = target();
        let a = t.state(&flag(true, json!([ours("10")]))).unwrap();
        let b = t.state(&flag(true, json!([ours("50")]))).unwrap();
        let c = t.state(&flag(false, json!([ours("10")]))).unwrap();
        assert_ne!(a.revision, b.revision);
        assert_ne!(a.revision, c.revision);
        let mut counted = flag(true, json!([ours("10")]));
        counted["environments"][1]["yes"] = json!(12);
        counted["environments"][1]["lastSeenAt"] = json!("2026-11-30T22:59:06.742Z");
        assert_eq!(t.state(&counted).unwrap().revision, a.revision);
        assert_eq!(a.revision.len(), 16);
    }

    #[test]
    fn a_missing_environment_names_the_ones_there() {
        let mut t = target();
        t.environment = "prod".into();
        let e = t.state(&flag(true, json!([]))).unwrap_err();
        assert!(
            e.contains("`prod` is not enabled in project `default`"),
            "{e}"
        );
        assert!(e.contains("development, production"), "{e}");
    }

    #[test]
    fn a_rollout_out_of_range_on_the_server_is_an_error() {
        let t = target();
        let e = t.state(&flag(true, json!([ours("150")]))).unwrap_err();
        assert!(e.contains("rollout \"150\""), "{e}");
    }

    #[test]
    fn error_statuses_say_what_is_wrong() {
        let t = target();
        let e = t.status_error(
            "GET",
            403,
            r#"{"message":"invalid token: expected a different token type for this endpoint"}"#,
            "UNLEASH_TOKEN",
        );
        assert!(
            e.starts_with("flag `checkout-v2` in Unleash environment `production`"),
            "{e}"
        );
        assert!(e.contains("secret `UNLEASH_TOKEN`"), "{e}");
        assert!(
            e.contains("admin API token or a personal access token"),
            "{e}"
        );
        assert!(e.contains("expected a different token type"), "{e}");
        let e = t.status_error("GET", 404, r#"{"name":"NotFoundError","message":"There's no feature named \"checkout-v2\" in project \"default\"."}"#, "T");
        assert!(
            e.contains("the flag does not exist in project `default`"),
            "{e}"
        );
        assert!(e.contains("flags belong to the code"), "{e}");
        let e = t.status_error("PATCH", 500, "oops", "T");
        assert!(e.ends_with("PATCH answered 500"), "{e}");
    }

    #[test]
    fn names_that_are_not_url_safe_are_refused() {
        assert!(url_safe("checkout-v2"));
        assert!(url_safe("team.checkout_v2~x"));
        for bad in ["", "..", "a/b", "a b", "a?b", "a%2Fb", "é"] {
            assert!(!url_safe(bad), "{bad:?}");
        }
    }
}
