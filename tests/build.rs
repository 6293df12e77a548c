//! Compiles the fixture plugins under `tests/plugins/` and records their paths.

use std::fmt::Write;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest.join("..").canonicalize().unwrap();
    let artifacts =
        rollcage_wasm_build::build_folder_or_exit(&workspace, &manifest.join("plugins"));
    let mut table = String::from("&[\n");
    for a in &artifacts {
        writeln!(
            table,
            "    ({:?}, {:?}),",
            a.plugin.name,
            a.wasm.display().to_string()
        )
        .unwrap();
    }
    table.push(']');
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("fixtures.rs");
    std::fs::write(out, table).unwrap();
}
