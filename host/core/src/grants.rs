//! Capability grants (pure data, shared by the configuration and the runtime): which hosts a plugin may reach over HTTP and which
//! secrets it may read. Nothing is granted by default.
//!
//! `allow_hosts` patterns are `host`, `host:port`, `host:*`, `*.domain`,
//! `*.domain:port` or `*` (IPv6 as `[::1]:8080`). A pattern without a port
//! allows the default ports 80 and 443 only. Whatever the pattern, an address
//! in a denied network (link-local, including the cloud metadata address
//! 169.254.169.254) is refused: the check runs on the resolved address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// One `allow_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: HostMatch,
    port: PortMatch,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    Suffix(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortMatch {
    Default,
    Any,
    Exact(u16),
}

/// Why an `allow_hosts` entry is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid allow_hosts entry `{entry}`: {reason}")]
pub struct HostPatternError {
    pub entry: String,
    pub reason: String,
}

impl FromStr for HostPattern {
    type Err = HostPatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| HostPatternError {
            entry: s.to_string(),
            reason: reason.to_string(),
        };
        if s.contains("://") || s.contains('/') {
            return Err(err(
                "give a host and optional port, without a scheme or path",
            ));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let end = rest.find(']').ok_or_else(|| err("unclosed `[`"))?;
            let host = &rest[..end];
            let after = &rest[end + 1..];
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| err("expected `:port` after `]`"))?,
                ),
            };
            (host.to_string(), port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (s.to_string(), None),
            }
        };
        let port = match port {
            None => PortMatch::Default,
            Some("*") => PortMatch::Any,
            Some(p) => PortMatch::Exact(p.parse().map_err(|_| err("port must be 1-65535 or `*`"))?),
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostMatch::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                return Err(err("a wildcard must be `*` or `*.domain`"));
            }
            HostMatch::Suffix(format!(".{domain}"))
        } else if host.is_empty() {
            return Err(err("empty host"));
        } else if host.contains('*') {
            return Err(err("a wildcard must be `*` or `*.domain`"));
        } else {
            HostMatch::Exact(host)
        };
        Ok(HostPattern {
            host,
            port,
            text: s.to_string(),
        })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl HostPattern {
    /// Whether this pattern allows `host` (lower-cased, no brackets) on `port`.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host_ok = match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h.eq_ignore_ascii_case(host),
            HostMatch::Suffix(s) => host.to_ascii_lowercase().ends_with(s.as_str()),
        };
        let port_ok = match self.port {
            PortMatch::Default => port == 80 || port == 443,
            PortMatch::Any => true,
            PortMatch::Exact(p) => p == port,
        };
        host_ok && port_ok
    }
}

/// What one plugin is granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Hosts reachable over HTTP.
    pub allow_hosts: Vec<HostPattern>,
    /// Secret names readable through `host.secret`.
    pub secrets: Vec<String>,
}

impl Grants {
    /// Whether any pattern allows `host:port`.
    pub fn allows_host(&self, host: &str, port: u16) -> bool {
        self.allow_hosts.iter().any(|p| p.matches(host, port))
    }
}

/// Whether `ip` is in a network no plugin may reach, whatever its grants:
/// link-local (169.254.0.0/16, which holds the cloud metadata address
/// 169.254.169.254, and fe80::/10), the unspecified address, and AWS's IPv6
/// metadata address fd00:ec2::254.
pub fn is_denied_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_denied_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_denied_v4(v4);
            }
            v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

fn is_denied_v4(ip: Ipv4Addr) -> bool {
    ip.is_link_local() || ip.is_unspecified()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        s.parse().unwrap()
    }

    #[test]
    fn patterns_match_hosts_and_ports() {
        assert!(p("hooks.slack.com").matches("hooks.slack.com", 443));
        assert!(p("hooks.slack.com").matches("HOOKS.slack.com", 80));
        assert!(!p("hooks.slack.com").matches("hooks.slack.com", 8443));
        assert!(!p("hooks.slack.com").matches("evil.com", 443));
        assert!(p("127.0.0.1:9090").matches("127.0.0.1", 9090));
        assert!(!p("127.0.0.1:9090").matches("127.0.0.1", 9091));
        assert!(p("localhost:*").matches("localhost", 1));
        assert!(p("*.atlassian.net").matches("acme.atlassian.net", 443));
        assert!(p("*.atlassian.net").matches("a.b.atlassian.net", 443));
        assert!(!p("*.atlassian.net").matches("atlassian.net", 443));
        assert!(!p("*.atlassian.net").matches("evilatlassian.net", 443));
        assert!(p("*").matches("anything", 443));
        assert!(!p("*").matches("anything", 22));
        assert!(p("*:*").matches("anything", 22));
        assert!(p("[::1]:8080").matches("::1", 8080));
        assert!(p("[::1]:8080").matches("[::1]", 8080));
    }

    #[test]
    fn bad_patterns_say_why() {
        for (bad, why) in [
            ("https://x.com", "without a scheme"),
            ("x.com:99999", "port must be"),
            ("a*.com", "wildcard"),
            ("*.", "wildcard"),
            ("[::1", "unclosed"),
            ("", "empty host"),
        ] {
            let e = bad.parse::<HostPattern>().unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn metadata_and_link_local_addresses_are_denied() {
        for denied in [
            "169.254.169.254",
            "169.254.1.1",
            "0.0.0.0",
            "fe80::1",
            "::ffff:169.254.169.254",
            "fd00:ec2::254",
            "::",
        ] {
            assert!(is_denied_ip(denied.parse().unwrap()), "{denied}");
        }
        for allowed in ["127.0.0.1", "10.0.0.1", "93.184.216.34", "::1"] {
            assert!(!is_denied_ip(allowed.parse().unwrap()), "{allowed}");
        }
    }
}
