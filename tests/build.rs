//! Compiles the fixture plugins under `tests/plugins/` and records their paths.

use std::fmt::Write;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest.join("..").canonicalize().unwrap();
    let dir = manifest.join("plugins");
    println!("cargo:rerun-if-changed={}", dir.display());
    let built = rollcage_wasm_build::discover(&dir).and_then(|plugins| {
        rollcage_wasm_build::build(
            &workspace,
            &plugins,
            &rollcage_wasm_build::default_target_dir(),
        )
    });
    let artifacts = match built {
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
