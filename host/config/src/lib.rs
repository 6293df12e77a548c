//! Rollcage's configuration (`rollcage.toml`): parsing and validation.
//!
//! Every section is deserialized on its own with `deny_unknown_fields`, so
//! one bad section does not hide the errors of the next; then references and
//! values are checked. All problems come back at once, each with
//! `file:line:col`, a message naming the field, and a hint where one helps.
//! This crate knows nothing of wasm: it describes plugins, it does not load
//! them.

mod error;
mod plugins;
mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rollcage_core::{PluginId, PluginKind};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

pub use error::{ConfigError, ConfigErrors};
pub use plugins::{ComponentRef, LimitsConfig, PluginConfig};
pub use source::Source;

/// A builtin plugin the configuration may name as `builtin:<name>`.
#[derive(Debug, Clone, Copy)]
pub struct KnownBuiltin {
    pub name: &'static str,
    pub kind: PluginKind,
}

/// What validation needs to know of the world outside the file.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Builtin plugins available.
    pub builtins: Vec<KnownBuiltin>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTP API.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// `sqlite://path` or `postgres://...`.
    #[serde(default = "default_database")]
    pub database: String,
    /// Where compiled plugin components are cached.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

fn default_listen() -> String {
    "127.0.0.1:7070".into()
}
fn default_database() -> String {
    "sqlite://rollcage.db".into()
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            database: default_database(),
            cache_dir: None,
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[plugins.<id>]`, by id.
    pub plugins: BTreeMap<PluginId, PluginConfig>,
}

const SECTIONS: &[&str] = &["server", "plugins"];

impl Config {
    /// Read and validate the file at `path`.
    pub fn load(path: &Path, cx: &Context) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::whole_file(
                path,
                format!("cannot read: {e}"),
            )])
        })?;
        Config::parse(path, &text, cx)
    }

    /// Validate `text`, read from `path` (used in messages and to resolve
    /// relative component paths).
    pub fn parse(path: &Path, text: &str, cx: &Context) -> Result<Config, ConfigErrors> {
        let src = Source::new(path, text);
        let mut errors = Vec::new();
        let root = match DeTable::parse(text) {
            Ok(root) => root,
            Err(e) => return Err(ConfigErrors(vec![src.toml_error(&e)])),
        };
        let mut server = ServerConfig::default();
        let mut plugins = BTreeMap::new();
        for (key, value) in root.get_ref() {
            let name: &str = key.get_ref();
            match name {
                "server" => match deserialize::<ServerConfig>(value) {
                    Ok(s) => server = s,
                    Err(e) => {
                        let mut err = src.toml_error(&e);
                        err.message = format!("[server]: {}", err.message);
                        errors.push(err);
                    }
                },
                "plugins" => plugins = plugins::parse(&src, value, cx, &mut errors),
                other => errors.push(src.error(
                    key.span(),
                    format!("unknown section `{other}`"),
                    Some(format!("expected one of: {}", SECTIONS.join(", "))),
                )),
            }
        }
        if errors.is_empty() {
            Ok(Config {
                path: path.to_path_buf(),
                server,
                plugins,
            })
        } else {
            errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(errors))
        }
    }
}

/// Deserialize one section, keeping the document's spans in errors.
pub(crate) fn deserialize<'i, T: serde::de::Deserialize<'i>>(
    value: &Spanned<DeValue<'i>>,
) -> Result<T, toml::de::Error> {
    T::deserialize(ValueDeserializer::from(value.clone()))
}

#[cfg(test)]
mod tests;
