//! The plugin's `config` table and its validation: every problem at once,
//! each naming its key (`problem.field` is the dotted path in the JSON).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::api::url_safe;

/// The plugin's `config` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Unleash's base URL (`https://unleash.example.com`, without `/api`).
    pub url: String,
    /// Name of the granted secret holding an admin API token (or a
    /// personal access token).
    pub token_secret: String,
    /// The Unleash project of the flags.
    #[serde(default = "default_project")]
    pub project: String,
    /// Rollcage environment name → Unleash environment name; a name not
    /// listed is used as is.
    #[serde(default)]
    pub environments: BTreeMap<String, String>,
    /// Title of the flexible-rollout strategy this plugin owns in each
    /// environment of a flag.
    #[serde(default = "default_title")]
    pub strategy_title: String,
}

fn default_project() -> String {
    "default".into()
}

fn default_title() -> String {
    "rollcage".into()
}

/// The keys of the table, for the unknown-key message.
const KEYS: [&str; 5] = [
    "url",
    "token_secret",
    "project",
    "environments",
    "strategy_title",
];

impl Config {
    /// The Unleash environment for Rollcage environment `environment`.
    pub fn unleash_environment<'a>(&'a self, environment: &'a str) -> &'a str {
        self.environments
            .get(environment)
            .map(String::as_str)
            .unwrap_or(environment)
    }

    /// The base URL without a trailing slash.
    pub fn base(&self) -> &str {
        self.url.trim_end_matches('/')
    }
}

/// The config parsed from `json`, or every problem found, each as
/// `(field, message)`.
pub fn parse(json: &str) -> Result<Config, Vec<(String, String)>> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| vec![(String::new(), format!("the config is not JSON: {e}"))])?;
    let Some(table) = value.as_object() else {
        return Err(vec![(String::new(), "the config must be a table".into())]);
    };
    let mut problems = Vec::new();
    for key in table.keys() {
        if !KEYS.contains(&key.as_str()) {
            problems.push((
                key.clone(),
                format!("unknown key `{key}`; expected one of {}", KEYS.join(", ")),
            ));
        }
    }
    for key in ["url", "token_secret"] {
        if !table.contains_key(key) {
            problems.push((key.into(), format!("`{key}` is required")));
        }
    }
    for key in ["url", "token_secret", "project", "strategy_title"] {
        if let Some(v) = table.get(key)
            && !v.is_string()
        {
            problems.push((key.into(), format!("`{key}` must be a string, not {v}")));
        }
    }
    let text = |key: &str| table.get(key).and_then(Value::as_str);
    if let Some(url) = text("url")
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        problems.push((
            "url".into(),
            format!("`{url}` is not an http:// or https:// URL (Unleash's base URL, e.g. https://unleash.example.com)"),
        ));
    }
    if let Some(url) = text("url")
        && url.trim_end_matches('/').ends_with("/api")
    {
        problems.push((
            "url".into(),
            format!(
                "`{url}` ends in /api: give Unleash's base URL; the plugin adds /api/admin/..."
            ),
        ));
    }
    if text("token_secret") == Some("") {
        problems.push((
            "token_secret".into(),
            "the name of a granted secret holding an Unleash admin API token".into(),
        ));
    }
    if let Some(project) = text("project")
        && !url_safe(project)
    {
        problems.push((
            "project".into(),
            format!("`{project}` is not an Unleash project id (letters, digits, `-_.~`)"),
        ));
    }
    if text("strategy_title").is_some_and(|t| t.trim().is_empty()) {
        problems.push((
            "strategy_title".into(),
            "must not be empty: it tells the plugin's strategy apart from others".into(),
        ));
    }
    match table.get("environments") {
        None => {}
        Some(Value::Object(map)) => {
            for (rollcage, unleash) in map {
                let field = format!("environments.{rollcage}");
                match unleash.as_str() {
                    Some(name) if url_safe(name) => {}
                    Some(name) => problems.push((
                        field,
                        format!(
                            "`{name}` is not an Unleash environment name (letters, digits, `-_.~`)"
                        ),
                    )),
                    None => problems.push((
                        field,
                        format!("must be the Unleash environment's name, not {unleash}"),
                    )),
                }
            }
        }
        Some(other) => problems.push((
            "environments".into(),
            format!(
                "must be a table of Rollcage environment = \"Unleash environment\", not {other}"
            ),
        )),
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    serde_json::from_value(value).map_err(|e| vec![(String::new(), e.to_string())])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> Vec<String> {
        parse(json)
            .unwrap_err()
            .into_iter()
            .map(|(f, _)| f)
            .collect()
    }

    #[test]
    fn defaults_fill_the_rest() {
        let c =
            parse(r#"{"url":"http://127.0.0.1:4242/","token_secret":"UNLEASH_TOKEN"}"#).unwrap();
        assert_eq!(c.project, "default");
        assert_eq!(c.strategy_title, "rollcage");
        assert_eq!(c.base(), "http://127.0.0.1:4242");
        assert_eq!(c.unleash_environment("production"), "production");
    }

    #[test]
    fn environments_map_rollcage_names_to_unleash_names() {
        let c = parse(
            r#"{"url":"https://u.example.com","token_secret":"T","environments":{"prod":"production"}}"#,
        )
        .unwrap();
        assert_eq!(c.unleash_environment("prod"), "production");
        assert_eq!(c.unleash_environment("staging"), "staging");
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let f = fields(
            r#"{"url":"ftp://x","tokn_secret":"T","project":"a/b","strategy_title":" ","environments":{"prod":"pro duction","stage":3}}"#,
        );
        assert_eq!(
            f,
            vec![
                "tokn_secret",
                "token_secret",
                "url",
                "project",
                "strategy_title",
                "environments.prod",
                "environments.stage"
            ]
        );
    }

    #[test]
    fn messages_say_what_to_write() {
        let problems =
            parse(r#"{"url":"https://u.example.com/api","token_secret":""}"#).unwrap_err();
        assert!(problems[0].1.contains("ends in /api"), "{problems:?}");
        assert!(problems[1].1.contains("granted secret"), "{problems:?}");
        let problems = parse(r#"{"url":3,"token_secret":"T"}"#).unwrap_err();
        assert_eq!(
            problems[0],
            ("url".into(), "`url` must be a string, not 3".into())
        );
        assert_eq!(fields("[]"), vec![""]);
        assert_eq!(
            fields(r#"{"url":"http://x","token_secret":"T","environments":[]}"#),
            vec!["environments"]
        );
    }
}
