//! Rollcage's first-party plugins, embedded in the binary so that it runs
//! with nothing else installed. Each crate under `plugins/` is compiled to a
//! wasm component by this crate's build script and referenced from
//! configuration as `builtin:<name>`.

use rollcage_core::PluginKind;

/// One embedded plugin component.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// The name after `builtin:`.
    pub name: &'static str,
    /// Its world, as written in the plugin's `Cargo.toml`.
    pub kind: &'static str,
    /// The component's bytes.
    pub wasm: &'static [u8],
}

impl Builtin {
    /// The plugin kind.
    pub fn kind(&self) -> PluginKind {
        self.kind
            .parse()
            .expect("plugin kinds are checked when the builtins are built")
    }
}

/// Every embedded plugin, sorted by name.
pub static BUILTINS: &[Builtin] = include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// The embedded plugin with this name (`console` for `builtin:console`).
pub fn get(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_a_component_of_a_known_kind() {
        assert!(!BUILTINS.is_empty());
        for b in BUILTINS {
            let _ = b.kind();
            // A component's preamble: magic, then layer 1 (component) version 0x0d.
            assert_eq!(&b.wasm[..4], b"\0asm", "{}", b.name);
            assert_eq!(
                &b.wasm[4..8],
                &[0x0d, 0x00, 0x01, 0x00],
                "{} is not a component",
                b.name
            );
        }
    }
}
