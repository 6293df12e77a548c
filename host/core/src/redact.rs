//! Secret values kept out of text. A plugin that is misconfigured, or
//! simply careless, can put a secret it was given into an error message,
//! a measurement's detail or a job's output; from there the host would
//! copy it into the run's log, the live stream, the database, notifications
//! and its own log. A [`Redactor`] knows every secret value the host holds
//! and replaces each occurrence with `[secret NAME]`; the host applies one
//! where text enters the store, in its log writer, in notifications and on
//! the command line's error output.
//!
//! A value is looked for as it is, and as it appears escaped inside a JSON
//! string or a Rust debug string (the forms log lines and stored documents
//! take). Values shorter than [`Redactor::MIN_LEN`] characters are not
//! looked for: they would match ordinary text everywhere, and a secret that
//! short protects nothing anyway; [`Redactor::new`] names them, so that the
//! host can warn.

use std::borrow::Cow;

/// Replaces secret values in text with `[secret NAME]`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// `(needle, replacement)`, longest needle first, so that a secret that
    /// contains another is replaced whole.
    patterns: Vec<(String, String)>,
}

impl Redactor {
    /// Values shorter than this (in characters) are not redacted.
    pub const MIN_LEN: usize = 6;

    /// A redactor for `secrets` (`(name, value)` pairs), and the names of
    /// those whose value is too short to be redacted.
    pub fn new(secrets: impl IntoIterator<Item = (String, String)>) -> (Redactor, Vec<String>) {
        let mut patterns = Vec::new();
        let mut too_short = Vec::new();
        for (name, value) in secrets {
            if value.chars().count() < Self::MIN_LEN {
                if !value.is_empty() {
                    too_short.push(name);
                }
                continue;
            }
            let replacement = format!("[secret {name}]");
            let debug = format!("{value:?}");
            let debug = debug[1..debug.len() - 1].to_string();
            for needle in [json_escaped(&value), debug, value] {
                if !patterns.iter().any(|(n, _)| *n == needle) {
                    patterns.push((needle, replacement.clone()));
                }
            }
        }
        patterns.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        too_short.sort();
        too_short.dedup();
        (Redactor { patterns }, too_short)
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// `text` with every secret value replaced; borrowed when it had none.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.patterns.is_empty() || !self.patterns.iter().any(|(n, _)| text.contains(n)) {
            return Cow::Borrowed(text);
        }
        // One pass from left to right: a replacement is never searched
        // again, so a secret that happens to look like part of
        // `[secret NAME]` cannot garble it.
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        loop {
            let next = self
                .patterns
                .iter()
                .filter_map(|(needle, repl)| {
                    rest.find(needle.as_str()).map(|at| (at, needle, repl))
                })
                // Earliest first; at the same place the longest (they are
                // sorted longest first and `min_by_key` keeps the first).
                .min_by_key(|(at, _, _)| *at);
            match next {
                Some((at, needle, repl)) => {
                    out.push_str(&rest[..at]);
                    out.push_str(repl);
                    rest = &rest[at + needle.len()..];
                }
                None => {
                    out.push_str(rest);
                    return Cow::Owned(out);
                }
            }
        }
    }

    /// [`Redactor::redact`] in place.
    pub fn redact_string(&self, text: &mut String) {
        if let Cow::Owned(clean) = self.redact(text) {
            *text = clean;
        }
    }
}

/// `value` as it appears between the quotes of a JSON string.
fn json_escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(pairs: &[(&str, &str)]) -> (Redactor, Vec<String>) {
        Redactor::new(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())))
    }

    #[test]
    fn every_occurrence_of_a_value_is_replaced_by_its_name() {
        let (r, short) = redactor(&[("HOOK", "s3cr3t-hook-key"), ("PIN", "1234")]);
        assert_eq!(short, ["PIN"]);
        assert_eq!(
            r.redact("secret `s3cr3t-hook-key` is not granted; again s3cr3t-hook-key"),
            "secret `[secret HOOK]` is not granted; again [secret HOOK]"
        );
        // Too short to look for: left alone (and named above).
        assert_eq!(r.redact("pin 1234"), "pin 1234");
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn escaped_forms_and_overlapping_values_are_caught() {
        let (r, _) = redactor(&[
            ("QUOTED", "pa\"ss\\word\n"),
            ("OUTER", "token-abcdef-123"),
            ("INNER", "abcdef"),
        ]);
        // As a JSON document or a debug string holds it.
        assert_eq!(
            r.redact(r#"{"e":"pa\"ss\\word\n"}"#),
            r#"{"e":"[secret QUOTED]"}"#
        );
        assert_eq!(r.redact("pa\"ss\\word\n!"), "[secret QUOTED]!");
        // The longer secret wins where both match; the shorter elsewhere.
        assert_eq!(
            r.redact("token-abcdef-123 / abcdef"),
            "[secret OUTER] / [secret INNER]"
        );
    }

    #[test]
    fn a_secret_that_looks_like_the_replacement_does_not_garble_it() {
        let (r, _) = redactor(&[("A", "secret"), ("B", "zzzzzzzz")]);
        assert_eq!(r.redact("zzzzzzzz secret"), "[secret B] [secret A]");
    }
}
