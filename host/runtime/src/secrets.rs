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
