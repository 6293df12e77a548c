//! Dashboard sessions: a token given once at sign-in is exchanged for a
//! random session id, kept by the browser in an `HttpOnly; SameSite=Strict`
//! cookie (`Secure` when the request came over TLS). The host keeps only
//! the id's SHA-256, the principal the token named, and a CSRF token that
//! every form of the session carries. A session ends after `session_idle`
//! without a request, or `session_lifetime` after sign-in, whichever comes
//! first. Sessions live in memory: a restarted host asks everyone to sign
//! in again, which is what a restart of the host that checks them should do.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

use crate::auth::Principal;

/// The cookie's name.
pub(crate) const COOKIE: &str = "rollcage_session";

/// A signed-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub principal: Principal,
    /// Carried by every form of the session, checked on every POST.
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// What a request's cookie names.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A live session, with its id.
    Live(String, Session),
    /// A session that ended by itself (idle or too old): the page says so.
    Expired,
    /// No cookie, or one the host does not know.
    Missing,
}

/// Every live session.
pub(crate) struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    lifetime: Duration,
}

impl Sessions {
    pub(crate) fn new(idle: Duration, lifetime: Duration) -> Sessions {
        Sessions {
            by_hash: Mutex::new(HashMap::new()),
            idle,
            lifetime,
        }
    }

    /// A new session for `principal`: its id (for the cookie) and itself.
    pub(crate) fn create(
        &self,
        principal: Principal,
    ) -> Result<(String, Session), getrandom::Error> {
        let id = random_hex()?;
        let now = Instant::now();
        let session = Session {
            principal,
            csrf: random_hex()?,
            created: now,
            last_seen: now,
        };
        let mut map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        // Ended sessions go when a new one comes, so the map stays the size
        // of the sessions in use.
        map.retain(|_, s| self.alive(s, now));
        map.insert(digest(&id), session.clone());
        Ok((id, session))
    }

    /// The session a request's cookie names; a live one counts as used now.
    pub(crate) fn lookup(&self, headers: &HeaderMap) -> Lookup {
        let Some(id) = cookie(headers) else {
            return Lookup::Missing;
        };
        let key = digest(&id);
        let now = Instant::now();
        let mut map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(&key) {
            None => Lookup::Missing,
            Some(s) if !self.alive(s, now) => {
                map.remove(&key);
                Lookup::Expired
            }
            Some(s) => {
                s.last_seen = now;
                Lookup::Live(id, s.clone())
            }
        }
    }

    /// Whether the cookie names a live session, without counting this as
    /// its use: a page left open on a live stream is still idle.
    pub(crate) fn is_live(&self, headers: &HeaderMap) -> bool {
        let Some(id) = cookie(headers) else {
            return false;
        };
        let map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&digest(&id))
            .is_some_and(|s| self.alive(s, Instant::now()))
    }

    /// End a session (sign-out); the session it was, if any.
    pub(crate) fn remove(&self, id: &str) -> Option<Session> {
        let mut map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&digest(id))
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_seen) < self.idle && now.duration_since(s.created) < self.lifetime
    }
}

/// The `Set-Cookie` value that gives the browser session `id`.
pub(crate) fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that makes the browser forget its session.
pub(crate) fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether the request reached the host over TLS (a terminating proxy in
/// front says so with `X-Forwarded-Proto`): the cookie is then `Secure`.
pub(crate) fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Whether two secrets are equal, in time that does not depend on where
/// they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn random_hex() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn alice() -> Principal {
        Principal {
            name: "alice".into(),
            role: Role::Approver,
            environments: vec![],
        }
    }

    fn with_cookie(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("theme=dark; {COOKIE}={id}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_until_it_is_removed() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(600));
        let (id, session) = s.create(alice()).unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(id, session.csrf);
        match s.lookup(&with_cookie(&id)) {
            Lookup::Live(found, got) => {
                assert_eq!((found, got.principal.name), (id.clone(), "alice".into()))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.lookup(&with_cookie("nope")), Lookup::Missing));
        assert!(matches!(s.lookup(&HeaderMap::new()), Lookup::Missing));
        assert!(s.remove(&id).is_some());
        assert!(matches!(s.lookup(&with_cookie(&id)), Lookup::Missing));
    }

    #[test]
    fn sessions_end_when_idle_and_when_old() {
        let idle = Sessions::new(Duration::from_millis(30), Duration::from_secs(600));
        let (id, _) = idle.create(alice()).unwrap();
        // Looking without using it keeps it idle.
        std::thread::sleep(Duration::from_millis(20));
        assert!(idle.is_live(&with_cookie(&id)));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!idle.is_live(&with_cookie(&id)));
        assert!(matches!(idle.lookup(&with_cookie(&id)), Lookup::Expired));
        // Used all the time, it still ends at its lifetime.
        let old = Sessions::new(Duration::from_secs(60), Duration::from_millis(80));
        let (id, _) = old.create(alice()).unwrap();
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(20));
            assert!(matches!(old.lookup(&with_cookie(&id)), Lookup::Live(..)));
        }
        std::thread::sleep(Duration::from_millis(40));
        assert!(matches!(old.lookup(&with_cookie(&id)), Lookup::Expired));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_tls() {
        let c = set_cookie("abc", false);
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "{c}"
        );
        assert!(!c.contains("Secure"));
        assert!(set_cookie("abc", true).ends_with("; Secure"));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(over_tls(&h) && !over_tls(&HeaderMap::new()));
        assert!(same_secret("a1", "a1") && !same_secret("a1", "a2"));
    }
}
