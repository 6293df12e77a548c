//! Compiles plugin crates to WebAssembly components from a build script.
//!
//! A plugin crate declares itself in its `Cargo.toml`:
//!
//! ```toml
//! [package.metadata.rollcage]
//! name = "console"     # the builtin name: `builtin:console`
//! kind = "notifier"    # its world
//! ```
//!
//! Plugin crates are plain libraries, so that their logic compiles and is
//! unit-tested natively with the rest of the workspace; only here are they
//! linked as `cdylib` components. [`discover`] finds such crates under a
//! folder and [`build`] compiles each with its own `cargo rustc --profile
//! wasm-plugin --target wasm32-wasip2 -p <crate> --crate-type cdylib`: one
//! invocation per crate, so that the SDK's per-kind features are not unified
//! across plugins (a component must export exactly its own world). The wasm
//! target is added with rustup when it is missing, since rustup installs the
//! targets of `rust-toolchain.toml` only on `rustup toolchain install`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

/// The wasm target plugins are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// The workspace's cargo profile plugins are built with (release, with thin
/// LTO): its own, so that how the host is built does not change the
/// components.
pub const PROFILE: &str = "wasm-plugin";

/// The folder in the wasm target folder where [`build`] records how long
/// each plugin's last build took: a file per package, holding seconds.
pub const BUILD_TIMES: &str = "build-times";

/// A plugin crate found by [`discover`].
#[derive(Debug, Clone)]
pub struct PluginCrate {
    /// Cargo package name.
    pub package: String,
    /// Name from `[package.metadata.rollcage]`.
    pub name: String,
    /// Kind (world) from `[package.metadata.rollcage]`.
    pub kind: String,
    /// Folder of the crate.
    pub dir: PathBuf,
}

/// A compiled plugin.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The crate it was built from.
    pub plugin: PluginCrate,
    /// Path of the component.
    pub wasm: PathBuf,
}

#[derive(Deserialize)]
struct Manifest {
    package: Package,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    rollcage: Option<RollcageMeta>,
}

#[derive(Deserialize)]
struct RollcageMeta {
    name: String,
    kind: String,
}

/// Every plugin crate directly under `dir`, sorted by name.
pub fn discover(dir: &Path) -> Result<Vec<PluginCrate>, String> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let crate_dir = entry.map_err(|e| e.to_string())?.path();
        let manifest_path = crate_dir.join("Cargo.toml");
        if !manifest_path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
        let manifest: Manifest =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
        if let Some(meta) = manifest.package.metadata.and_then(|m| m.rollcage) {
            found.push(PluginCrate {
                package: manifest.package.name,
                name: meta.name,
                kind: meta.kind,
                dir: crate_dir,
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Compile `plugins` (members of the workspace at `workspace`) into
/// `target_dir`, and tell cargo to rerun the build script when the plugins,
/// the SDK or the WIT change.
pub fn build(
    workspace: &Path,
    plugins: &[PluginCrate],
    target_dir: &Path,
) -> Result<Vec<Artifact>, String> {
    ensure_target()?;
    for watched in ["sdk", "wit", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut artifacts = Vec::new();
    // How long each plugin took, for `rollcage-bench --first-build`: the
    // host's build sees all of them as one build-script run. One file per
    // plugin, since two build scripts (builtins, test fixtures) may build
    // into this folder at once.
    let times = target_dir.join(BUILD_TIMES);
    for plugin in plugins {
        let started = std::time::Instant::now();
        println!("cargo:rerun-if-changed={}", plugin.dir.display());
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(workspace)
            .args([
                "rustc",
                "--profile",
                PROFILE,
                "--lib",
                "--target",
                TARGET,
                "-p",
            ])
            .arg(&plugin.package)
            .args(["--crate-type", "cdylib"])
            .arg("--target-dir")
            .arg(target_dir);
        // The outer cargo's settings are for the host build, not for wasm.
        for var in [
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTFLAGS",
            "CARGO_BUILD_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "RUSTC_WORKSPACE_WRAPPER",
            "RUSTC_WRAPPER",
        ] {
            cmd.env_remove(var);
        }
        let status = cmd
            .status()
            .map_err(|e| format!("could not run `{cargo}`: {e}"))?;
        if !status.success() {
            return Err(format!(
                "building plugin `{}` for {TARGET} failed ({status}); see the output above",
                plugin.package
            ));
        }
        let wasm = target_dir
            .join(TARGET)
            .join(PROFILE)
            .join(format!("{}.wasm", plugin.package.replace('-', "_")));
        if !wasm.is_file() {
            return Err(format!(
                "plugin `{}` built but {} is missing: is it a library crate?",
                plugin.package,
                wasm.display()
            ));
        }
        // Only a record: a build that cannot write it is still a good build.
        let _ = std::fs::create_dir_all(&times).and_then(|()| {
            std::fs::write(
                times.join(&plugin.package),
                format!("{:.2}\n", started.elapsed().as_secs_f64()),
            )
        });
        artifacts.push(Artifact {
            plugin: plugin.clone(),
            wasm,
        });
    }
    Ok(artifacts)
}

/// The folder for wasm builds: `<workspace target>/wasm-plugins`, shared by
/// debug and release host builds so plugins compile once. Derived from the
/// build script's `OUT_DIR` (`<target>/<profile>/build/<pkg>/out`).
pub fn default_target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("ROLLCAGE_PLUGIN_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set for build scripts"));
    out.ancestors()
        .nth(4)
        .map(|t| t.join("wasm-plugins"))
        .unwrap_or_else(|| out.join("wasm-plugins"))
}

/// Add the wasm target with rustup when the toolchain lacks it.
fn ensure_target() -> Result<(), String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .map_err(|e| format!("could not run `{rustc}`: {e}"))?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && libdir.is_dir() {
        return Ok(());
    }
    println!("cargo:warning=the {TARGET} target is missing; running `rustup target add {TARGET}`");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map_err(|e| {
            format!(
                "the Rust target {TARGET} is missing and rustup could not be run ({e}); \
                 install it with `rustup target add {TARGET}`"
            )
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "the Rust target {TARGET} is missing and `rustup target add {TARGET}` failed ({status}); \
             plugins cannot be built without it"
        ))
    }
}

/// For build scripts: compile every plugin crate under `folder` (of the
/// workspace at `workspace`) into the shared wasm target folder, or print
/// why not and exit, which fails the build with that message.
pub fn build_folder_or_exit(workspace: &Path, folder: &Path) -> Vec<Artifact> {
    println!("cargo:rerun-if-changed={}", folder.display());
    match discover(folder).and_then(|plugins| build(workspace, &plugins, &default_target_dir())) {
        Ok(artifacts) => artifacts,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
