//! A health check's threshold as its `pass_if` states it (`< 0.05`,
//! `>= 100`): the comparison and the number a measurement's value is held
//! against. The plugin judges each measurement itself; the host reads the
//! same condition only to record it beside each value in the run's log, so
//! that a chart can draw the line every value was measured against.

use serde::{Deserialize, Serialize};

/// `pass_if = "<op> <number>"`: a value passes when `value <op> number`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// `<`, `<=`, `>`, `>=`, `==` or `!=`.
    pub op: Op,
    pub value: f64,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

impl Threshold {
    /// The threshold of a `pass_if` text, or `None` when it is not one
    /// comparison with a number.
    pub fn parse(text: &str) -> Option<Threshold> {
        let t = text.trim();
        // Two-character operators first, so `<=` is not read as `<`.
        let ops = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        let (op, rest) = ops
            .iter()
            .find_map(|(s, op)| t.strip_prefix(s).map(|rest| (*op, rest)))?;
        let value: f64 = rest.trim().parse().ok()?;
        value.is_finite().then_some(Threshold { op, value })
    }

    /// The `pass_if` of a plugin's configuration (as JSON), if it holds a
    /// threshold.
    pub fn from_config_json(config_json: &str) -> Option<Threshold> {
        let v: serde_json::Value = serde_json::from_str(config_json).ok()?;
        Threshold::parse(v.get("pass_if")?.as_str()?)
    }

    /// Whether `value` passes.
    pub fn passes(&self, value: f64) -> bool {
        match self.op {
            Op::Lt => value < self.value,
            Op::Le => value <= self.value,
            Op::Gt => value > self.value,
            Op::Ge => value >= self.value,
            Op::Eq => value == self.value,
            Op::Ne => value != self.value,
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.op.as_str(), self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_if_texts_are_read() {
        let t = Threshold::parse("< 0.05").unwrap();
        assert_eq!((t.op, t.value), (Op::Lt, 0.05));
        assert!(t.passes(0.01) && !t.passes(0.3));
        assert_eq!(Threshold::parse(">=100").unwrap().op, Op::Ge);
        assert_eq!(Threshold::parse(" <= 2 ").unwrap().op, Op::Le);
        for bad in ["", "about 3", "< x", "< inf", "3"] {
            assert_eq!(Threshold::parse(bad), None, "{bad}");
        }
        assert_eq!(
            Threshold::from_config_json(r#"{"pass_if": "> 5", "metric": "x"}"#),
            Some(Threshold {
                op: Op::Gt,
                value: 5.0
            })
        );
        assert_eq!(Threshold::from_config_json(r#"{"url": "x"}"#), None);
        assert_eq!(
            serde_json::to_value(Threshold::parse("< 0.05").unwrap()).unwrap(),
            serde_json::json!({"op": "<", "value": 0.05})
        );
    }
}
