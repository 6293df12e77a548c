//! Where secret values come from. A plugin only ever sees the names granted
//! to it; the source behind them is the operator's choice.

use std::collections::BTreeMap;

/// A source of secret values by name.
pub trait SecretSource: Send + Sync {
    /// The value of `name`, if the source has it.
    fn get(&self, name: &str) -> Option<String>;
}

/// Secrets from the host process's environment variables.
#[derive(Debug, Default, Clone, Copy)]
pub struct EnvSecrets;

impl SecretSource for EnvSecrets {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Secrets from a fixed map (tests, and sources loaded up front).
#[derive(Default, Clone)]
pub struct MapSecrets(pub BTreeMap<String, String>);

impl std::fmt::Debug for MapSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values never reach logs.
        f.debug_tuple("MapSecrets")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretSource for MapSecrets {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

impl MapSecrets {
    /// Secrets from a TOML file of `NAME = "value"` lines. The file must be
    /// readable by its owner only (mode 0600 or stricter): a secrets file
    /// others can read is refused, not used.
    pub fn from_file(path: &std::path::Path) -> Result<MapSecrets, String> {
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| format!("secrets file {shown}: {e}"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(format!(
                    "secrets file {shown} is readable by others (mode {mode:04o}); run `chmod 600 {shown}`"
                ));
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("secrets file {shown}: {e}"))?;
        // The parser's messages quote the offending line, which may hold a
        // value: report only where it is.
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e
                .span()
                .map(|s| format!(" at line {}", text[..s.start].lines().count().max(1)))
                .unwrap_or_default();
            format!("secrets file {shown} is not valid TOML{at}")
        })?;
        let mut map = BTreeMap::new();
        for (name, value) in table {
            match value {
                toml::Value::String(v) => {
                    map.insert(name, v);
                }
                _ => {
                    return Err(format!("secrets file {shown}: `{name}` must be a string"));
                }
            }
        }
        Ok(MapSecrets(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(mode: u32, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn a_private_file_is_read() {
        let (_d, path) = write(0o600, "SLACK_TOKEN = \"xoxb-1\"\n");
        let s = MapSecrets::from_file(&path).unwrap();
        assert_eq!(s.get("SLACK_TOKEN").as_deref(), Some("xoxb-1"));
        assert_eq!(format!("{s:?}"), "MapSecrets([\"SLACK_TOKEN\"])");
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        let (_d, path) = write(0o644, "SLACK_TOKEN = \"xoxb-1\"\n");
        let e = MapSecrets::from_file(&path).unwrap_err();
        assert!(e.contains("readable by others (mode 0644)"), "{e}");
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn errors_never_quote_values() {
        let (_d, path) = write(0o600, "A = \"fine\"\nB = \"hunter2\n");
        let e = MapSecrets::from_file(&path).unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let (_d, path) = write(0o600, "A = 3\n");
        assert!(
            MapSecrets::from_file(&path)
                .unwrap_err()
                .contains("`A` must be a string")
        );
    }
}
