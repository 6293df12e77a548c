//! Compiles every crate under `plugins/` to a wasm component and writes the
//! table that embeds them (`$OUT_DIR/builtins.rs`).

use std::fmt::Write;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest.join("../..").canonicalize().unwrap();
    let artifacts =
        rollcage_wasm_build::build_folder_or_exit(&workspace, &workspace.join("plugins"));
    let mut table = String::from("&[\n");
    for a in &artifacts {
        writeln!(
            table,
            "    Builtin {{ name: {:?}, kind: {:?}, wasm: include_bytes!({:?}) }},",
            a.plugin.name,
            a.plugin.kind,
            a.wasm.display().to_string()
        )
        .unwrap();
    }
    table.push(']');
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("builtins.rs");
    std::fs::write(out, table).unwrap();
}
