//! Embeds the plugin project templates (`templates/<lang>/<kind>/`) and the
//! WIT contract (`wit/`) in the binary, for `rollcage plugins new`.

use std::fmt::Write;
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn table(root: &Path) -> String {
    println!("cargo:rerun-if-changed={}", root.display());
    let mut all = Vec::new();
    files(root, &mut all);
    let mut t = String::from("&[\n");
    for p in all {
        println!("cargo:rerun-if-changed={}", p.display());
        let rel = p
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        writeln!(
            t,
            "    ({rel:?}, include_str!({:?})),",
            p.display().to_string()
        )
        .unwrap();
    }
    t.push(']');
    t
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(out.join("templates.rs"), table(&manifest.join("templates"))).unwrap();
    let wit = manifest.join("../../wit").canonicalize().unwrap();
    std::fs::write(out.join("wit.rs"), table(&wit)).unwrap();
}
