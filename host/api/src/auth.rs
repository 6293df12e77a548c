//! Bearer tokens and roles. Tokens are defined in configuration by the
//! SHA-256 of their value (they are random, so a plain hash is enough; the
//! value itself is never stored or logged). A token's name is who acts in
//! the audit trail and in `require_different_approver`.

use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Read; start, retry and roll back runs in its environments.
    Deployer,
    /// Read; approve and abort runs in its environments.
    Approver,
    /// Only `POST /v1/hooks/alertmanager`: alerts on its environments.
    Alerts,
    /// Everything, everywhere.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Approver => "approver",
            Role::Alerts => "alerts",
            Role::Admin => "admin",
        }
    }
}

/// One configured token.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub name: String,
    /// SHA-256 of the token.
    pub hash: [u8; 32],
    pub role: Role,
    /// Environments a deployer or approver acts in; all when empty.
    pub environments: Vec<String>,
}

impl TokenEntry {
    /// An entry from configuration's `sha256:<hex>` form.
    pub fn new(
        name: &str,
        hash: &str,
        role: Role,
        environments: Vec<String>,
    ) -> Result<TokenEntry, String> {
        let bytes = hash
            .strip_prefix("sha256:")
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| format!("token `{name}`: hash must be `sha256:` and 64 hex digits"))?;
        Ok(TokenEntry {
            name: name.to_string(),
            hash: bytes,
            role,
            environments,
        })
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub environments: Vec<String>,
}

/// What a request wants to do in an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Deploy,
    Decide,
    /// Send alerts (the environments they act in are checked per alert).
    Alert,
}

impl Principal {
    /// `Ok` if this principal may do `what` in every one of `environments`;
    /// otherwise a 403 that names the role needed and the environment.
    pub fn require(&self, what: Permission, environments: &[String]) -> Result<(), ApiError> {
        let role_ok = match (self.role, what) {
            (Role::Admin, _) => return Ok(()),
            (Role::Deployer, Permission::Deploy)
            | (Role::Approver, Permission::Decide)
            | (Role::Alerts, Permission::Alert) => true,
            _ => false,
        };
        let needed = match what {
            Permission::Deploy => "deployer",
            Permission::Decide => "approver",
            Permission::Alert => "alerts",
        };
        if !role_ok {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token `{}` has role {}; this needs {needed} or admin",
                    self.name,
                    self.role.as_str()
                ),
            ));
        }
        if self.environments.is_empty() {
            return Ok(());
        }
        match environments.iter().find(|e| !self.environments.contains(e)) {
            None => Ok(()),
            Some(env) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token `{}` may not act in environment `{env}` (it may in: {})",
                    self.name,
                    self.environments.join(", ")
                ),
            )),
        }
    }
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Vec<TokenEntry>,
}

impl Auth {
    pub fn new(tokens: Vec<TokenEntry>) -> Auth {
        Auth { tokens }
    }

    /// The principal a request's `Authorization: Bearer` header names, or
    /// a 401 saying what is missing.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let unauthorized = |message: &str| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                message.to_string(),
            )
        };
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing `Authorization: Bearer <token>` header"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare with every token, without stopping early.
        let mut found = None;
        for entry in &self.tokens {
            let diff = entry
                .hash
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(entry);
            }
        }
        let entry = found.ok_or_else(|| unauthorized("unknown token"))?;
        Ok(Principal {
            name: entry.name.clone(),
            role: entry.role,
            environments: entry.environments.clone(),
        })
    }
}

/// `sha256:<hex>` of a token, as configuration holds it.
pub fn hash_token(token: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// A new random token (256 bits).
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("rc_{}", hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(vec![
            TokenEntry::new(
                "ci",
                &hash_token("rc_ci"),
                Role::Deployer,
                vec!["staging".into()],
            )
            .unwrap(),
            TokenEntry::new("root", &hash_token("rc_root"), Role::Admin, vec![]).unwrap(),
        ])
    }

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn tokens_are_recognised_by_their_hash() {
        let a = auth();
        assert_eq!(a.authenticate(&bearer("Bearer rc_ci")).unwrap().name, "ci");
        assert_eq!(
            a.authenticate(&bearer("Bearer rc_root")).unwrap().role,
            Role::Admin
        );
        for bad in ["Bearer rc_nope", "Basic abc", "Bearer "] {
            let e = a.authenticate(&bearer(bad)).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (StatusCode::UNAUTHORIZED, "unauthorized"),
                "{bad}"
            );
        }
        let e = a.authenticate(&HeaderMap::new()).unwrap_err();
        assert!(e.message.contains("missing"), "{}", e.message);
        assert!(new_token().unwrap().starts_with("rc_"));
        assert!(TokenEntry::new("x", "sha256:abc", Role::Admin, vec![]).is_err());
    }

    #[test]
    fn roles_and_environments_limit_what_a_token_does() {
        let a = auth();
        let ci = a.authenticate(&bearer("Bearer rc_ci")).unwrap();
        assert!(ci.require(Permission::Deploy, &["staging".into()]).is_ok());
        let e = ci
            .require(Permission::Deploy, &["staging".into(), "production".into()])
            .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(e.message.contains("`production`"), "{}", e.message);
        let e = ci
            .require(Permission::Decide, &["staging".into()])
            .unwrap_err();
        assert!(
            e.message.contains("needs approver or admin"),
            "{}",
            e.message
        );
        let root = a.authenticate(&bearer("Bearer rc_root")).unwrap();
        assert!(
            root.require(Permission::Decide, &["production".into()])
                .is_ok()
        );
    }
}
