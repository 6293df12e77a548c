//! Registry credentials, never printed:
//!
//! * a host secret holding `user:password` (HTTP Basic, and the login for a
//!   Bearer token service) or a bare token;
//! * else the standard Docker config file (`$DOCKER_CONFIG/config.json`,
//!   else `~/.docker/config.json`) that `docker login`, `oras login` and
//!   other registry tools write, read the way the Docker CLI reads it: the
//!   registry's credential helper (`credHelpers`), else the default store
//!   (`credsStore`), else `auths.<registry>` (`auth` = base64
//!   `user:password`, `identitytoken`, `registrytoken`).
//!
//! A credential helper is the program `docker-credential-<name>` on PATH,
//! asked with `get` and the registry on standard input; it answers
//! `{"ServerURL", "Username", "Secret"}`, the user `<token>` meaning the
//! secret is an identity token.

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
    /// A refresh token for the registry's token service (OAuth2
    /// `grant_type=refresh_token`): what `docker login` keeps for registries
    /// that log in through a browser, and helpers give with user `<token>`.
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user}:***)"),
            Credentials::Token(_) => write!(f, "Token(***)"),
            Credentials::IdentityToken(_) => write!(f, "IdentityToken(***)"),
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
            Credentials::Token(_) | Credentials::IdentityToken(_) => None,
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
        Self::from_docker_config_text(&text, registry, &run_helper)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `text`'s credentials for `registry`, asking helpers through `helper`
    /// (name, registry) -> the helper's answer, if it has one.
    fn from_docker_config_text(
        text: &str,
        registry: &str,
        helper: &AskHelper,
    ) -> Result<Option<Credentials>, String> {
        let config: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        // Keys are written `host:port`, or as URLs (`https://host/v1/`).
        let find = |table: &str| {
            config.get(table).and_then(|t| t.as_object()).and_then(|t| {
                t.iter().find_map(|(key, value)| {
                    let k = key
                        .trim_start_matches("https://")
                        .trim_start_matches("http://");
                    let k = k.split('/').next().unwrap_or(k);
                    (k == registry).then_some(value)
                })
            })
        };
        let named_helper = find("credHelpers")
            .and_then(|h| h.as_str())
            .map(|h| ("credHelpers", h))
            .or_else(|| {
                config
                    .get("credsStore")
                    .and_then(|h| h.as_str())
                    .filter(|h| !h.is_empty())
                    .map(|h| ("credsStore", h))
            });
        if let Some((table, name)) = named_helper {
            let answer = helper(name, registry).map_err(|e| format!("{table}: {e}"))?;
            return Ok(answer.map(|a| {
                if a.username == "<token>" {
                    Credentials::IdentityToken(a.secret)
                } else {
                    Credentials::Basic {
                        user: a.username,
                        password: a.secret,
                    }
                }
            }));
        }
        let Some(entry) = find("auths") else {
            return Ok(None);
        };
        // `docker login` to a registry that gives an identity token keeps
        // it beside an `auth` of the user and an empty password: the token
        // is the credential.
        if let Some(token) = entry
            .get("identitytoken")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
        {
            return Ok(Some(Credentials::IdentityToken(token.into())));
        }
        if let Some(auth) = entry
            .get("auth")
            .and_then(|a| a.as_str())
            .filter(|a| !a.is_empty())
        {
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

/// Ask credential helper `name` about `registry`: its answer, if it has one.
type AskHelper = dyn Fn(&str, &str) -> Result<Option<HelperAnswer>, String>;

/// What a credential helper answered.
struct HelperAnswer {
    username: String,
    secret: String,
}

/// How long a credential helper may take to answer.
const HELPER_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// Ask `docker-credential-<name> get` for `registry`'s credentials. A
/// helper that has none says so (exit 1, "credentials not found"), which
/// is no credentials, not an error.
fn run_helper(name: &str, registry: &str) -> Result<Option<HelperAnswer>, String> {
    use std::io::Write;
    let program = format!("docker-credential-{name}");
    let mut child = std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("credential helper `{program}`: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is told nothing; its answer
        // below says why.
        let _ = stdin.write_all(registry.as_bytes());
    }
    // A helper that waits for someone (a passphrase prompt) would hold
    // the command, or a server's start, for ever.
    let deadline = std::time::Instant::now() + HELPER_TIME;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "credential helper `{program}` gave no answer within {} s",
                    HELPER_TIME.as_secs()
                ));
            }
            Err(e) => return Err(format!("credential helper `{program}`: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("credential helper `{program}`: {e}"))?;
    let said = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        // The helper's own words about why it failed; an answer with a
        // secret is never printed, but a failure has none.
        let why = String::from_utf8_lossy(&out.stderr);
        let why = if why.trim().is_empty() { said } else { why };
        return Err(format!(
            "credential helper `{program}` failed ({}): {}",
            out.status,
            why.trim()
        ));
    }
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|_| {
        format!("credential helper `{program}` did not answer JSON with Username and Secret")
    })?;
    let field = |k: &str| answer.get(k).and_then(|v| v.as_str()).unwrap_or("");
    if field("Secret").is_empty() {
        return Ok(None);
    }
    Ok(Some(HelperAnswer {
        username: field("Username").to_string(),
        secret: field("Secret").to_string(),
    }))
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

    fn no_helper(name: &str, _: &str) -> Result<Option<HelperAnswer>, String> {
        Err(format!("no helper {name} here"))
    }

    #[test]
    fn a_docker_config_entry_is_found_by_registry() {
        let text = r#"{"auths": {"https://127.0.0.1:5000/v1/": {"auth": "dXNlcjpwYXNz"}, "other:1": {"auth": "eDp5"}}}"#;
        assert_eq!(
            Credentials::from_docker_config_text(text, "127.0.0.1:5000", &no_helper).unwrap(),
            Some(Credentials::Basic {
                user: "user".into(),
                password: "pass".into()
            })
        );
        assert_eq!(
            Credentials::from_docker_config_text(text, "ghcr.io", &no_helper).unwrap(),
            None
        );
        assert!(
            Credentials::from_docker_config_text(
                r#"{"auths": {"a": {"auth": "!!"}}}"#,
                "a",
                &no_helper
            )
            .is_err()
        );
        // An OAuth login keeps a refresh token beside the user with an
        // empty password (`ci:`), as `docker login` writes it.
        assert_eq!(
            Credentials::from_docker_config_text(
                r#"{"auths": {"a": {"auth": "Y2k6", "identitytoken": "refresh"}}}"#,
                "a",
                &no_helper
            )
            .unwrap(),
            Some(Credentials::IdentityToken("refresh".into()))
        );
    }

    #[test]
    fn a_credential_helper_is_asked_before_the_auths_entries() {
        let helper = |name: &str, registry: &str| -> Result<Option<HelperAnswer>, String> {
            match (name, registry) {
                ("pass", "ghcr.io") => Ok(Some(HelperAnswer {
                    username: "ci".into(),
                    secret: "from-pass".into(),
                })),
                ("ecr", "aws") => Ok(Some(HelperAnswer {
                    username: "<token>".into(),
                    secret: "refresh".into(),
                })),
                _ => Ok(None),
            }
        };
        // `auths` has a login for each registry too: the helpers come first.
        let text = r#"{"credsStore": "pass", "credHelpers": {"aws": "ecr"}, "auths": {"aws": {"auth": "eDp5"}, "ghcr.io": {"auth": "eDp5"}, "other": {"auth": "eDp5"}}}"#;
        // The registry's own helper, then the default store.
        assert_eq!(
            Credentials::from_docker_config_text(text, "aws", &helper).unwrap(),
            Some(Credentials::IdentityToken("refresh".into()))
        );
        assert_eq!(
            Credentials::from_docker_config_text(text, "ghcr.io", &helper).unwrap(),
            Some(Credentials::Basic {
                user: "ci".into(),
                password: "from-pass".into()
            })
        );
        // With a default store, the store is asked, as the Docker CLI does.
        assert_eq!(
            Credentials::from_docker_config_text(text, "other", &helper).unwrap(),
            None
        );
        // A helper that cannot run is an error naming where it came from.
        let e = Credentials::from_docker_config_text(text, "aws", &no_helper).unwrap_err();
        assert_eq!(e, "credHelpers: no helper ecr here");
    }

    #[test]
    fn a_missing_helper_program_is_named() {
        let e = run_helper("rollcage-test-no-such-helper", "r")
            .err()
            .unwrap();
        assert!(
            e.starts_with("credential helper `docker-credential-rollcage-test-no-such-helper`"),
            "{e}"
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
