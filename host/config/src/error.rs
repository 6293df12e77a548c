//! Configuration errors: each names the file, line, column and field.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl ConfigError {
    /// A problem with the file as a whole (it cannot be read).
    pub fn whole_file(path: &Path, message: String) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            message,
            hint: None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: error: {}", self.path.display(), self.message)?;
        } else {
            write!(
                f,
                "{}:{}:{}: error: {}",
                self.path.display(),
                self.line,
                self.column,
                self.message
            )?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// A place in a configuration file, kept for problems found after it was
/// read: a strategy's parameters are checked by the strategy's plugin, and
/// its complaints point here like every other configuration error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// An error at this place.
    pub fn error(&self, message: String, hint: Option<String>) -> ConfigError {
        ConfigError {
            path: self.path.clone(),
            line: self.line,
            column: self.column,
            message,
            hint,
        }
    }
}

/// Every problem found in a configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        let n = self.0.len();
        write!(
            f,
            "\n{n} error{} in the configuration",
            if n == 1 { "" } else { "s" }
        )
    }
}

/// Where a table the host hands on as JSON (a pipeline's `service`, a
/// plugin's `config`) and each of its fields are written, so that a
/// plugin's complaint about a field points at its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The table itself.
    pub at: Location,
    /// Each field by dotted path: a table's keys as `a.b`, an array's
    /// elements as `a[0]`.
    pub fields: std::collections::BTreeMap<String, Location>,
}

impl Fields {
    /// A table with no fields known (not written, or built by the host).
    pub fn at(at: Location) -> Self {
        Fields {
            at,
            fields: Default::default(),
        }
    }

    /// The place of `field` (a dotted path), or of the nearest enclosing
    /// field written in the file, or of the table.
    pub fn of(&self, field: &str) -> &Location {
        let mut path = field;
        loop {
            if let Some(at) = self.fields.get(path) {
                return at;
            }
            match path.rfind(['.', '[']) {
                Some(i) => path = &path[..i],
                None => return &self.at,
            }
        }
    }
}
