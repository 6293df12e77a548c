//! Release versions: SemVer 2.0.0 (`MAJOR.MINOR.PATCH`, optional
//! `-prerelease` and `+build`), as the release practice asks.

use std::fmt;
use std::str::FromStr;

/// A validated SemVer version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

impl Version {
    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn numeric(part: &str) -> bool {
    !part.is_empty()
        && part.chars().all(|c| c.is_ascii_digit())
        && (part == "0" || !part.starts_with('0'))
}

fn identifiers(s: &str, leading_zeros_matter: bool) -> bool {
    s.split('.').all(|id| {
        !id.is_empty()
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && (!leading_zeros_matter || !id.chars().all(|c| c.is_ascii_digit()) || numeric(id))
    })
}

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid release `{s}`: use SemVer, MAJOR.MINOR.PATCH such as 1.4.0 (or 1.4.0-rc.1)"
            )
        };
        let (rest, build) = match s.split_once('+') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        let (core, pre) = match rest.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (rest, None),
        };
        let nums: Vec<&str> = core.split('.').collect();
        let valid = nums.len() == 3
            && nums.iter().all(|n| numeric(n))
            && pre.is_none_or(|p| identifiers(p, true))
            && build.is_none_or(|b| identifiers(b, false));
        if valid {
            Ok(Version(s.to_string()))
        } else {
            Err(bad())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_is_validated() {
        for good in [
            "1.4.0",
            "0.0.1",
            "10.20.30",
            "1.0.0-rc.1",
            "1.0.0-alpha-1",
            "1.0.0+build.5",
            "1.0.0-beta+exp.sha.5114f85",
        ] {
            assert!(good.parse::<Version>().is_ok(), "{good}");
        }
        for bad in [
            "1.4", "v1.4.0", "1.04.0", "1.4.0-", "1.4.0-01", "1.4.0+", "latest", "",
        ] {
            let e = bad.parse::<Version>().unwrap_err();
            assert!(e.contains("use SemVer"), "{bad}");
        }
    }
}
