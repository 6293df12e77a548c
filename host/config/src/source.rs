//! A configuration file's text, for turning byte spans into `line:col`.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::DeValue;

use crate::error::{ConfigError, Fields, Location};

/// A configuration file's path and text.
pub struct Source<'a> {
    pub path: PathBuf,
    pub text: &'a str,
}

impl<'a> Source<'a> {
    pub fn new(path: &Path, text: &'a str) -> Self {
        Source {
            path: path.to_path_buf(),
            text,
        }
    }

    /// 1-based line and column (in characters) of byte `offset`.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = self.text[line_start..offset].chars().count() + 1;
        (line, column)
    }

    /// The place of byte `offset`.
    pub fn location(&self, offset: usize) -> crate::error::Location {
        let (line, column) = self.line_col(offset);
        crate::error::Location {
            path: self.path.clone(),
            line,
            column,
        }
    }

    /// An error at `span`.
    pub fn error(&self, span: Range<usize>, message: String, hint: Option<String>) -> ConfigError {
        let (line, column) = self.line_col(span.start);
        ConfigError {
            path: self.path.clone(),
            line,
            column,
            message,
            hint,
        }
    }

    /// An error from the TOML parser or a section's deserializer.
    pub fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_string();
        let hint = suggest_field(&message);
        self.error(span, message, hint)
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`", the nearest
/// expected name, when one is close enough to be a typo.
fn suggest_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, expected) = rest.split_once('`')?;
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|candidate| (edit_distance(unknown, candidate), candidate))
        .min()?;
    (best.0 <= unknown.len().max(3) / 2).then(|| format!("did you mean `{}`?", best.1))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

impl Fields {
    /// Where `value` and every field under it are written.
    pub(crate) fn of_value(src: &Source<'_>, value: &Spanned<DeValue<'_>>) -> Self {
        let mut fields = Fields::at(src.location(value.span().start));
        collect(src, "", value, &mut fields.fields);
        fields
    }
}

/// Adds the place of every field under `value` to `out`, by dotted path
/// from `prefix`.
fn collect(
    src: &Source<'_>,
    prefix: &str,
    value: &Spanned<DeValue<'_>>,
    out: &mut std::collections::BTreeMap<String, Location>,
) {
    match value.get_ref() {
        DeValue::Table(table) => {
            for (key, v) in table {
                let k: &str = key.get_ref();
                let path = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(path.clone(), src.location(key.span().start));
                collect(src, &path, v, out);
            }
        }
        DeValue::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let path = format!("{prefix}[{i}]");
                out.insert(path.clone(), src.location(v.span().start));
                collect(src, &path, v, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(
            suggest_field("unknown field `databse`, expected one of `listen`, `database`"),
            Some("did you mean `database`?".into())
        );
        assert_eq!(
            suggest_field("unknown field `zzz`, expected `memory_mb` or `timeout_ms`"),
            None
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
