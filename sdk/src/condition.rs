//! Conditions a measured value must meet, as operators write them in a
//! check's config: `< 0.05`, `<= 2`, `> 0`, `>= 0.99`, `== 1`, `!= 0`,
//! `between 0.1 0.5` (both ends included).
//!
//! ```
//! use rollcage_sdk::condition::Condition;
//!
//! let c = Condition::parse("< 0.05").unwrap();
//! assert!(c.holds(0.01));
//! assert!(!c.holds(0.31));
//! assert_eq!(c.to_string(), "< 0.05");
//! ```

use std::fmt;

/// A condition a value must meet to pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// `< n`
    Lt(f64),
    /// `<= n`
    Le(f64),
    /// `> n`
    Gt(f64),
    /// `>= n`
    Ge(f64),
    /// `== n`
    Eq(f64),
    /// `!= n`
    Ne(f64),
    /// `between low high`, both ends included.
    Between(f64, f64),
}

impl Condition {
    /// Parse `< 0.05`, `>= 0.99`, `== 1`, `!= 0`, `between 0.1 0.5`.
    ///
    /// ```
    /// use rollcage_sdk::condition::Condition;
    /// assert_eq!(Condition::parse("between 0.1 0.5"), Ok(Condition::Between(0.1, 0.5)));
    /// assert!(Condition::parse("about 3").unwrap_err().contains("`between LOW HIGH`"));
    /// ```
    pub fn parse(text: &str) -> Result<Condition, String> {
        let bad = || {
            format!(
                "invalid condition `{text}`: use <, <=, >, >=, ==, != and a number, or `between LOW HIGH`"
            )
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let num = |s: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|n| !n.is_nan())
                .ok_or_else(bad)
        };
        match words.as_slice() {
            ["between", lo, hi] => {
                let (lo, hi) = (num(lo)?, num(hi)?);
                if lo > hi {
                    return Err(format!("invalid condition `{text}`: {lo} is above {hi}"));
                }
                Ok(Condition::Between(lo, hi))
            }
            [op, n] => {
                let n = num(n)?;
                Ok(match *op {
                    "<" => Condition::Lt(n),
                    "<=" => Condition::Le(n),
                    ">" => Condition::Gt(n),
                    ">=" => Condition::Ge(n),
                    "==" => Condition::Eq(n),
                    "!=" => Condition::Ne(n),
                    _ => return Err(bad()),
                })
            }
            _ => Err(bad()),
        }
    }

    /// Whether `v` passes. NaN never passes.
    ///
    /// ```
    /// use rollcage_sdk::condition::Condition;
    /// assert!(Condition::Between(0.1, 0.5).holds(0.5));
    /// assert!(!Condition::Ne(0.0).holds(f64::NAN));
    /// ```
    pub fn holds(self, v: f64) -> bool {
        match self {
            Condition::Lt(n) => v < n,
            Condition::Le(n) => v <= n,
            Condition::Gt(n) => v > n,
            Condition::Ge(n) => v >= n,
            Condition::Eq(n) => v == n,
            Condition::Ne(n) => !v.is_nan() && v != n,
            Condition::Between(lo, hi) => (lo..=hi).contains(&v),
        }
    }
}

/// Writes the condition as it parses: `< 0.05`, `between 0.1 0.5`.
impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Lt(n) => write!(f, "< {n}"),
            Condition::Le(n) => write!(f, "<= {n}"),
            Condition::Gt(n) => write!(f, "> {n}"),
            Condition::Ge(n) => write!(f, ">= {n}"),
            Condition::Eq(n) => write!(f, "== {n}"),
            Condition::Ne(n) => write!(f, "!= {n}"),
            Condition::Between(lo, hi) => write!(f, "between {lo} {hi}"),
        }
    }
}

impl std::str::FromStr for Condition {
    type Err = String;

    fn from_str(text: &str) -> Result<Condition, String> {
        Condition::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_and_hold() {
        assert!(Condition::parse("< 0.05").unwrap().holds(0.01));
        assert!(!Condition::parse("< 0.05").unwrap().holds(0.05));
        assert!(Condition::parse("<= 0.05").unwrap().holds(0.05));
        assert!(Condition::parse("> 0").unwrap().holds(1.0));
        assert!(Condition::parse(">= 0.99").unwrap().holds(0.99));
        assert!(Condition::parse("== 1").unwrap().holds(1.0));
        assert!(Condition::parse("!= 0").unwrap().holds(1.0));
        assert!(!Condition::parse("!= 0").unwrap().holds(0.0));
        assert!(Condition::parse("between 0.1 0.5").unwrap().holds(0.5));
        assert!(Condition::parse("  between   0.1 0.5 ").unwrap().holds(0.1));
        assert!(!Condition::parse("between 0.1 0.5").unwrap().holds(0.6));
        for bad in [
            "",
            "<",
            "about 3",
            "< x",
            "< NaN",
            "between 2 1",
            "between 1",
            "< 1 2",
        ] {
            assert!(Condition::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Condition::parse("~ 3").unwrap_err(),
            "invalid condition `~ 3`: use <, <=, >, >=, ==, != and a number, or `between LOW HIGH`"
        );
        assert_eq!(
            Condition::parse("between 2 1").unwrap_err(),
            "invalid condition `between 2 1`: 2 is above 1"
        );
    }

    #[test]
    fn nan_never_holds() {
        for text in ["< 1", "<= 1", "> 1", ">= 1", "== 1", "!= 1", "between 0 1"] {
            assert!(!Condition::parse(text).unwrap().holds(f64::NAN), "{text}");
        }
    }

    #[test]
    fn conditions_display_as_they_parse() {
        for text in [
            "< 0.05",
            "<= 2",
            "> 0",
            ">= 0.99",
            "== 1",
            "!= 0",
            "between 0.1 0.5",
            "< -1.5",
        ] {
            let c: Condition = text.parse().unwrap();
            assert_eq!(c.to_string(), text);
            assert_eq!(Condition::parse(&c.to_string()).unwrap(), c);
        }
        assert_eq!(Condition::parse("<   5.0").unwrap().to_string(), "< 5");
    }
}
