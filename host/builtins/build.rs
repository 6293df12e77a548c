//! Compiles every crate under `plugins/` to a wasm component and writes the
//! table that embeds them (`$OUT_DIR/builtins.rs`).

use std::fmt::Write;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest.join("../..").canonicalize().unwrap();
    let plugins_dir = workspace.join("plugins");
    println!("cargo:rerun-if-changed={}", plugins_dir.display());
    let result = rollcage_wasm_build::discover(&plugins_dir).and_then(|plugins| {
        rollcage_wasm_build::build(
            &workspace,
            &plugins,
            &rollcage_wasm_build::default_target_dir(),
        )
    });
    let artifacts = match result {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
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
