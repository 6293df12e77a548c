//! Capability grants (pure data, shared by the configuration and the
//! runtime): which hosts a plugin may reach over HTTP, which restricted
//! networks, and which secrets it may read. Nothing is granted by default.
//!
//! `allow_hosts` patterns are `host`, `host:port`, `host:*`, `*.domain`,
//! `*.domain:port` or `*` (IPv6 as `[::1]:8080`). A pattern without a port
//! allows the default ports 80 and 443 only.
//!
//! The host name is only half of the check: the address it resolves to is
//! checked too, in canonical form (IPv4-mapped, IPv4-compatible, NAT64 and
//! 6to4 spellings are read as the IPv4 address they carry), so that a
//! granted name cannot lead a plugin into the host's own networks:
//! * public addresses are reached;
//! * restricted networks (loopback, RFC 1918, unique local, CGNAT, ...) only
//!   when the grant names the address (an IP literal in `allow_hosts`,
//!   such as `127.0.0.1:9090`) or its network (`allow_private =
//!   ["10.0.0.0/8"]`);
//! * forbidden networks (unspecified, link-local with the cloud metadata
//!   address 169.254.169.254, multicast) never.
//!
//! `tls_ca` adds a private certificate authority that the plugin's HTTPS
//! requests trust beside the public roots (a cluster's API, an internal
//! Prometheus); the certificate is still verified for the host name.

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
    /// The address this pattern names, when its host is an IP literal
    /// (`127.0.0.1:9090`, `[::1]:*`): a grant to reach that address even in
    /// a restricted network.
    pub fn literal_ip(&self) -> Option<IpAddr> {
        match &self.host {
            HostMatch::Exact(h) => h.parse().ok().map(canonical_ip),
            _ => None,
        }
    }

    /// Whether this pattern's port part allows `port`.
    pub fn matches_port(&self, port: u16) -> bool {
        match self.port {
            PortMatch::Default => port == 80 || port == 443,
            PortMatch::Any => true,
            PortMatch::Exact(p) => p == port,
        }
    }

    /// Whether this pattern allows `host` (lower-cased, no brackets) on `port`.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host_ok = match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h.eq_ignore_ascii_case(host),
            HostMatch::Suffix(s) => host.to_ascii_lowercase().ends_with(s.as_str()),
        };
        host_ok && self.matches_port(port)
    }
}

/// What one plugin is granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Hosts reachable over HTTP.
    pub allow_hosts: Vec<HostPattern>,
    /// Restricted networks (loopback, private, unique local, CGNAT) the
    /// plugin may reach after resolution, beyond the addresses named in
    /// `allow_hosts`.
    pub allow_private: Vec<IpNet>,
    /// Secret names readable through `host.secret`.
    pub secrets: Vec<String>,
    /// A private certificate authority trusted for HTTPS, beside the public
    /// roots.
    pub tls_ca: Option<TlsCa>,
}

/// Where a plugin's private certificate authority (`tls_ca`) is read from:
/// PEM text, one or more certificates. The host reads it when the plugin is
/// loaded; the plugin never sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsCa {
    /// A PEM file (the configuration resolves it against its own folder).
    File(std::path::PathBuf),
    /// A secret of the host's secret source holding the PEM text.
    Secret(String),
}

impl fmt::Display for TlsCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsCa::File(path) => write!(f, "{}", path.display()),
            TlsCa::Secret(name) => write!(f, "secret {name}"),
        }
    }
}

impl Grants {
    /// Whether any pattern allows `host:port`.
    pub fn allows_host(&self, host: &str, port: u16) -> bool {
        self.allow_hosts.iter().any(|p| p.matches(host, port))
    }

    /// Whether a request to `port` may connect to `ip`, the address a
    /// granted host resolved to. A public address may; an address in a
    /// restricted network only when the grant names it (an IP literal in
    /// `allow_hosts` matching the port, or a network of `allow_private`);
    /// an address in a forbidden network never. The error says which
    /// network and how to grant it.
    pub fn may_connect(&self, ip: IpAddr, port: u16) -> Result<(), String> {
        let ip = canonical_ip(ip);
        match classify_ip(ip) {
            Reach::Public => Ok(()),
            Reach::Never(network) => Err(format!(
                "{ip} is in a denied network ({network}), which no grant opens"
            )),
            Reach::Restricted(network) => {
                let named = self
                    .allow_hosts
                    .iter()
                    .any(|p| p.literal_ip() == Some(ip) && p.matches_port(port));
                if named || self.allow_private.iter().any(|n| n.contains(ip)) {
                    Ok(())
                } else {
                    Err(format!(
                        "{ip} is in a denied network ({network}); name the address in allow_hosts or its network in allow_private to reach it"
                    ))
                }
            }
        }
    }
}

/// An IP network for `allow_private`: `10.0.0.0/8`, `fd00::/8`, or one
/// address (`127.0.0.1`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("invalid allow_private entry `{s}`: {why}");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| bad("expected an IP address or network such as 10.0.0.0/8 or ::1"))?;
        let addr = canonical_ip(addr);
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| bad(&format!("the prefix length must be 0-{bits}")))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl IpNet {
    /// Whether `ip` (in canonical form) lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical_ip(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (whole, rest) = ((prefix / 8) as usize, prefix % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

/// Where an address stands for a plugin's outgoing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// On the public internet.
    Public,
    /// In a network reachable only when the grant names it.
    Restricted(&'static str),
    /// In a network no grant opens.
    Never(&'static str),
}

/// The IPv4 address an IPv6 address stands for, where it embeds one:
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::`); otherwise the address
/// itself. Every check runs on this form, so that no spelling of a denied
/// IPv4 address passes as IPv6.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    let seg = v6.segments();
    let o = v6.octets();
    let v4 = |a: u8, b: u8, c: u8, d: u8| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    // IPv4-compatible, except `::` and `::1`, which are IPv6's own.
    if seg[..6] == [0; 6] && !(seg[6] == 0 && seg[7] <= 1) {
        return v4(o[12], o[13], o[14], o[15]);
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4(o[12], o[13], o[14], o[15]);
    }
    if seg[0] == 0x2002 {
        return v4(o[2], o[3], o[4], o[5]);
    }
    ip
}

/// Which networks an address (in canonical form) belongs to.
pub fn classify_ip(ip: IpAddr) -> Reach {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Reach {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Reach::Never("unspecified, 0.0.0.0/8")
    } else if ip.is_link_local() {
        Reach::Never("link-local, 169.254.0.0/16, which holds cloud metadata")
    } else if ip.is_multicast() || ip.is_broadcast() {
        Reach::Never("multicast or broadcast")
    } else if ip.is_loopback() {
        Reach::Restricted("loopback, 127.0.0.0/8")
    } else if ip.is_private() {
        Reach::Restricted("private, RFC 1918")
    } else if a == 100 && (b & 0xc0) == 64 {
        Reach::Restricted("shared address space (CGNAT), 100.64.0.0/10")
    } else if a == 198 && (b & 0xfe) == 18 {
        Reach::Restricted("benchmarking, 198.18.0.0/15")
    } else if a >= 240 {
        Reach::Restricted("reserved, 240.0.0.0/4")
    } else {
        Reach::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> Reach {
    let s0 = ip.segments()[0];
    if ip.is_unspecified() {
        Reach::Never("unspecified, ::")
    } else if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Reach::Never("cloud metadata, fd00:ec2::254")
    } else if (s0 & 0xffc0) == 0xfe80 {
        Reach::Never("link-local, fe80::/10")
    } else if (s0 & 0xff00) == 0xff00 {
        Reach::Never("multicast, ff00::/8")
    } else if ip.is_loopback() {
        Reach::Restricted("loopback, ::1")
    } else if (s0 & 0xfe00) == 0xfc00 {
        Reach::Restricted("unique local, fc00::/7")
    } else if (s0 & 0xffc0) == 0xfec0 {
        Reach::Restricted("site-local, fec0::/10")
    } else if ip.segments()[..3] == [0x64, 0xff9b, 1] {
        Reach::Restricted("local-use NAT64, 64:ff9b:1::/48")
    } else {
        Reach::Public
    }
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
    fn forbidden_networks_are_never_reachable_whatever_the_grant() {
        let g = Grants {
            allow_hosts: vec![p("*:*"), p("169.254.169.254:*")],
            allow_private: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            ..Grants::default()
        };
        for denied in [
            "169.254.169.254",
            "169.254.1.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "fe80::1",
            "ff02::1",
            "::",
            "fd00:ec2::254",
            // Other spellings of the metadata address.
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "64:ff9b::169.254.169.254",
            "2002:a9fe:a9fe::",
        ] {
            let ip: IpAddr = denied.parse().unwrap();
            let err = g.may_connect(ip, 80).unwrap_err();
            assert!(err.contains("which no grant opens"), "{denied}: {err}");
        }
    }

    #[test]
    fn restricted_networks_need_the_address_or_network_named() {
        let wildcard = Grants {
            allow_hosts: vec![p("*:*")],
            ..Grants::default()
        };
        for restricted in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd12::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
        ] {
            let ip: IpAddr = restricted.parse().unwrap();
            let err = wildcard.may_connect(ip, 80).unwrap_err();
            assert!(
                err.contains("name the address in allow_hosts"),
                "{restricted}: {err}"
            );
        }
        assert_eq!(
            wildcard
                .may_connect("127.0.0.1".parse().unwrap(), 80)
                .unwrap_err(),
            "127.0.0.1 is in a denied network (loopback, 127.0.0.0/8); name the address in allow_hosts or its network in allow_private to reach it"
        );
        // Named as a literal, on a matching port.
        let literal = Grants {
            allow_hosts: vec![p("127.0.0.1:9090"), p("[::1]:*")],
            ..Grants::default()
        };
        assert!(
            literal
                .may_connect("127.0.0.1".parse().unwrap(), 9090)
                .is_ok()
        );
        assert!(
            literal
                .may_connect("::ffff:127.0.0.1".parse().unwrap(), 9090)
                .is_ok()
        );
        assert!(
            literal
                .may_connect("127.0.0.1".parse().unwrap(), 9091)
                .is_err()
        );
        assert!(
            literal
                .may_connect("127.0.0.2".parse().unwrap(), 9090)
                .is_err()
        );
        assert!(literal.may_connect("::1".parse().unwrap(), 1).is_ok());
        // Named as a network.
        let network = Grants {
            allow_hosts: vec![p("*.internal:*")],
            allow_private: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            ..Grants::default()
        };
        assert!(
            network
                .may_connect("10.200.3.4".parse().unwrap(), 443)
                .is_ok()
        );
        assert!(
            network
                .may_connect("::ffff:10.1.1.1".parse().unwrap(), 443)
                .is_ok()
        );
        assert!(network.may_connect("fd99::1".parse().unwrap(), 443).is_ok());
        assert!(
            network
                .may_connect("192.168.0.1".parse().unwrap(), 443)
                .is_err()
        );
        // Public addresses need nothing more than the host grant.
        for public in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "::ffff:93.184.216.34",
        ] {
            assert!(
                wildcard.may_connect(public.parse().unwrap(), 443).is_ok(),
                "{public}"
            );
        }
    }

    #[test]
    fn networks_parse_and_match_by_prefix() {
        let n: IpNet = "172.16.0.0/12".parse().unwrap();
        assert!(n.contains("172.31.255.255".parse().unwrap()));
        assert!(!n.contains("172.32.0.0".parse().unwrap()));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let mapped: IpNet = "::ffff:10.0.0.0/8".parse().unwrap();
        assert!(mapped.contains("10.0.0.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "localhost", "10.0.0.0/x", ""] {
            let e = bad.parse::<IpNet>().unwrap_err();
            assert!(
                e.starts_with(&format!("invalid allow_private entry `{bad}`")),
                "{e}"
            );
        }
    }
}
