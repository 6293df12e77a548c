//! What a component is: its imports and exports, and which world it fits.
//! Used at load time for precise refusals and by `rollcage plugins check`.

use rollcage_core::PluginKind;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The shape of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    /// Size of the component in bytes.
    pub size: usize,
    /// Names of everything it imports.
    pub imports: Vec<String>,
    /// Names of everything it exports.
    pub exports: Vec<String>,
}

impl ComponentInfo {
    /// The plugin kinds whose export interface the component has, in any
    /// served contract version.
    pub fn kinds(&self) -> Vec<PluginKind> {
        PluginKind::ALL
            .into_iter()
            .filter(|k| {
                self.exports
                    .iter()
                    .any(|e| k.version_of_export(e).is_some())
            })
            .collect()
    }

    /// The contract version (`0.2.0`, `0.1.0`) of the first kind export
    /// found, if the component has one.
    pub fn wit_version(&self) -> Option<&'static str> {
        PluginKind::ALL
            .into_iter()
            .find_map(|k| self.exports.iter().find_map(|e| k.version_of_export(e)))
    }
}

/// Refuse bytes that are not a component, saying what they are instead.
pub(crate) fn check_preamble(wasm: &[u8]) -> Result<(), String> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err("not a WebAssembly file".into());
    }
    match wasm[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(
            "a core WebAssembly module, not a component: build for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
                .into(),
        ),
        _ => Err("a WebAssembly binary of an unknown version".into()),
    }
}

pub(crate) fn component_info(engine: &Engine, component: &Component, size: usize) -> ComponentInfo {
    let ty = component.component_type();
    ComponentInfo {
        size,
        imports: ty
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect(),
        exports: ty
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect(),
    }
}

/// Compile (through the runtime's cache) and describe a component without
/// loading it as any particular kind.
pub fn inspect_component<'a>(
    runtime: &crate::Runtime,
    wasm: impl Into<crate::Wasm<'a>>,
) -> Result<ComponentInfo, String> {
    let wasm = wasm.into();
    check_preamble(wasm.bytes())?;
    let engine = runtime.engine();
    let component = runtime
        .cache()
        .get(engine, wasm)
        .map_err(|e| format!("could not be compiled: {e}"))?;
    Ok(component_info(engine, &component, wasm.bytes().len()))
}
