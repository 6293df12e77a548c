//! Where a component's bytes come from when they are not in the binary or a
//! file: an OCI reference (`oci://registry/repo:tag` or `...@sha256:HEX`) or
//! an `https://` URL pinned by a SHA-256 digest. Parsed and validated here
//! so the configuration, the registry client and the lock file share one
//! spelling; nothing here fetches anything.

use std::fmt;
use std::str::FromStr;

/// A SHA-256 content digest, written `sha256:<64 lowercase hex>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// The 64 lowercase hex digits.
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// The digest of a 32-byte SHA-256 output.
    pub fn from_bytes(sha256: &[u8; 32]) -> Digest {
        Digest(sha256.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// `sha256:HEX` or bare `HEX` (the form `sha256 = "..."` takes).
    pub fn parse_loose(text: &str) -> Result<Digest, SourceError> {
        text.strip_prefix("sha256:").unwrap_or(text).parse_hex()
    }
}

trait ParseHex {
    fn parse_hex(self) -> Result<Digest, SourceError>;
}

impl ParseHex for &str {
    fn parse_hex(self) -> Result<Digest, SourceError> {
        if self.len() == 64
            && self
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            Ok(Digest(self.to_string()))
        } else {
            Err(SourceError(format!(
                "`{self}` is not a SHA-256 digest: expected 64 lowercase hex digits"
            )))
        }
    }
}

impl FromStr for Digest {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("sha256:") {
            Some(hex) => hex.parse_hex(),
            None => Err(SourceError(format!(
                "`{s}` is not a digest: expected `sha256:` and 64 lowercase hex digits"
            ))),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// Why a reference or digest does not parse; says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(String);

/// `oci://REGISTRY/REPOSITORY[:TAG][@sha256:HEX]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OciReference {
    /// `host` or `host:port`.
    pub registry: String,
    /// Lowercase path components, e.g. `team/slack-notify`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl OciReference {
    /// The registry's host without its port, for loopback checks and
    /// Docker config lookups.
    pub fn host(&self) -> &str {
        if let Some(rest) = self.registry.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        self.registry.split(':').next().unwrap_or(&self.registry)
    }

    /// Whether the registry is this machine (`localhost`, 127.0.0.0/8, ::1):
    /// the only place `insecure` (plain HTTP) is allowed.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(self.host())
    }

    /// The tag or digest the manifest is asked for by: the digest if pinned.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }
}

const OCI_EXPECTED: &str =
    "expected oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:<64 hex>";

impl FromStr for OciReference {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            SourceError(format!(
                "`{s}` is not an OCI reference: {why}; {OCI_EXPECTED}"
            ))
        };
        let rest = s.strip_prefix("oci://").ok_or_else(|| bad("no `oci://`"))?;
        let (rest, digest) = match rest.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(|e| bad(&e.0))?)),
            None => (rest, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no repository after the registry"))?;
        if registry.is_empty()
            || !registry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        {
            return Err(bad("the registry must be a host or host:port"));
        }
        // A tag follows the last `:` of the last path component.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        };
        if !repository.split('/').all(component_ok) {
            return Err(bad(
                "the repository must be lowercase path components (letters, digits, `.`, `_`, `-`)",
            ));
        }
        if let Some(tag) = tag
            && (tag.is_empty()
                || tag.len() > 128
                || !tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
        {
            return Err(bad("a tag is up to 128 letters, digits, `.`, `_`, `-`"));
        }
        if tag.is_none() && digest.is_none() {
            return Err(bad("no tag or digest"));
        }
        Ok(OciReference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Whether `host` (a name or an address, IPv6 with or without brackets)
/// is this machine: `localhost`, 127.0.0.0/8 or ::1.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_parse_with_tag_digest_or_both() {
        let r: OciReference = "oci://127.0.0.1:5000/team/slack-notify:1.2"
            .parse()
            .unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/slack-notify");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        assert!(r.is_loopback());
        assert_eq!(r.host(), "127.0.0.1");
        let pinned: OciReference = format!("oci://ghcr.io/acme/check@sha256:{HEX}")
            .parse()
            .unwrap();
        assert_eq!(pinned.tag, None);
        assert_eq!(pinned.digest.as_ref().unwrap().hex(), HEX);
        assert!(!pinned.is_loopback());
        assert_eq!(pinned.manifest_reference(), format!("sha256:{HEX}"));
        let both = format!("oci://localhost:5000/a:v1@sha256:{HEX}");
        assert_eq!(both.parse::<OciReference>().unwrap().to_string(), both);
    }

    #[test]
    fn loopback_hosts_are_this_machine_only() {
        for host in ["localhost", "127.0.0.1", "127.3.2.1", "::1", "[::1]"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["ghcr.io", "10.0.0.1", "[::2]", "localhost.example.com", ""] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn bad_references_say_what_was_expected() {
        for bad in [
            "ghcr.io/acme/check:1",
            "oci://ghcr.io",
            "oci://ghcr.io/Acme/check:1",
            "oci://ghcr.io/acme/check",
            "oci://ghcr.io/acme/check@sha256:abc",
            "oci://ghcr.io/acme/check:bad tag",
        ] {
            let e = bad.parse::<OciReference>().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("expected oci://"), "{e}");
        }
    }

    #[test]
    fn digests_are_64_lowercase_hex() {
        assert_eq!(
            Digest::parse_loose(HEX).unwrap().to_string(),
            format!("sha256:{HEX}")
        );
        assert!(Digest::parse_loose(&HEX.to_uppercase()).is_err());
        assert!(HEX.parse::<Digest>().is_err());
        assert!(Digest::parse_loose("sha256:12").is_err());
    }
}
