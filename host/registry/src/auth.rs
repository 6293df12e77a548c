//! Registry credentials: a host secret holding `user:password` (HTTP Basic,
//! and the login for a Bearer token service) or a bare token, or else the
//! standard Docker config file (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`, `auths.<registry>.auth` = base64 `user:password`)
//! that `docker login` and other registry tools write. Never printed.

use std::path::PathBuf;

use base64::Engine as _;

/// How the host proves who it is to a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic {
        user: String,
        password: String,
    },
    /// A bearer token given as is.
    Token(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user}:***)"),
            Credentials::Token(_) => write!(f, "Token(***)"),
        }
    }
}

impl Credentials {
    /// A secret's value: `user:password`, or a token.
    pub fn from_secret(value: &str) -> Credentials {
        let value = value.trim();
        match value.split_once(':') {
            Some((user, password)) => Credentials::Basic {
                user: user.into(),
                password: password.into(),
            },
            None => Credentials::Token(value.into()),
        }
    }

    /// The `Authorization` value for HTTP Basic, if these are a login.
    pub(crate) fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { user, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            Credentials::Token(_) => None,
        }
    }

    /// The credentials the Docker config file holds for `registry`
    /// (`host` or `host:port`), if any.
    pub fn from_docker_config(registry: &str) -> Result<Option<Credentials>, String> {
        let Some(path) = docker_config_path() else {
            return Ok(None);
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Self::from_docker_config_text(&text, registry)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    fn from_docker_config_text(text: &str, registry: &str) -> Result<Option<Credentials>, String> {
        let config: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
            return Ok(None);
        };
        // Keys are written `host:port`, or as URLs (`https://host/v1/`).
        let entry = auths.iter().find_map(|(key, value)| {
            let k = key
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            let k = k.split('/').next().unwrap_or(k);
            (k == registry).then_some(value)
        });
        let Some(entry) = entry else { return Ok(None) };
        if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| format!("auths.{registry}.auth is not base64"))?;
            let text = String::from_utf8(decoded)
                .map_err(|_| format!("auths.{registry}.auth is not text"))?;
            let (user, password) = text
                .split_once(':')
                .ok_or_else(|| format!("auths.{registry}.auth is not base64 of user:password"))?;
            return Ok(Some(Credentials::Basic {
                user: user.into(),
                password: password.into(),
            }));
        }
        if let Some(token) = entry.get("registrytoken").and_then(|t| t.as_str()) {
            return Ok(Some(Credentials::Token(token.into())));
        }
        Ok(None)
    }
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_docker_config_entry_is_found_by_registry() {
        let text = r#"{"auths": {"https://127.0.0.1:5000/v1/": {"auth": "dXNlcjpwYXNz"}, "other:1": {"auth": "eDp5"}}}"#;
        assert_eq!(
            Credentials::from_docker_config_text(text, "127.0.0.1:5000").unwrap(),
            Some(Credentials::Basic {
                user: "user".into(),
                password: "pass".into()
            })
        );
        assert_eq!(
            Credentials::from_docker_config_text(text, "ghcr.io").unwrap(),
            None
        );
        assert!(
            Credentials::from_docker_config_text(r#"{"auths": {"a": {"auth": "!!"}}}"#, "a")
                .is_err()
        );
    }

    #[test]
    fn a_secret_is_a_login_or_a_token_and_never_printed() {
        let login = Credentials::from_secret("ci:hunter2\n");
        assert_eq!(format!("{login:?}"), "Basic(ci:***)");
        assert!(login.basic_header().unwrap().starts_with("Basic "));
        let token = Credentials::from_secret("abc.def");
        assert_eq!(format!("{token:?}"), "Token(***)");
        assert_eq!(token.basic_header(), None);
    }
}
