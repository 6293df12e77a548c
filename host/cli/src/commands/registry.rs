//! `rollcage plugins lock`, `push` and `pull`: components in OCI registries
//! and at https URLs, pinned by digest in `rollcage.lock`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rollcage_core::{OciReference, TlsCa};
use rollcage_registry::{LockFile, PushAnnotations};
use rollcage_runtime::{EnvSecrets, WIT_VERSION};

use super::bad_input;
use crate::plugins::kind_of;
use crate::sources;

/// How the command line reaches a registry.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Plain HTTP, for a registry on this machine (loopback) only.
    #[arg(long)]
    pub insecure: bool,
    /// A PEM file of a private CA the registry's (or file server's)
    /// certificate is signed by.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// An environment variable holding `user:password` or a token (default:
    /// the Docker config file: the registry's credential helper or its
    /// auths entry; else an anonymous token, if the registry gives one).
    #[arg(long, value_name = "VAR")]
    pub auth_env: Option<String>,
}

impl RegistryArgs {
    /// Whether any of these was given.
    pub fn any(&self) -> bool {
        self.insecure || self.tls_ca.is_some() || self.auth_env.is_some()
    }

    fn client(&self, reference: &OciReference) -> anyhow::Result<rollcage_registry::OciClient> {
        if self.insecure && !reference.is_loopback() {
            anyhow::bail!(
                "--insecure (plain HTTP) is allowed only for a loopback registry, not `{}`",
                reference.registry
            );
        }
        if let Some(var) = &self.auth_env
            && std::env::var_os(var).is_none()
        {
            anyhow::bail!("--auth-env {var}: the environment variable is not set");
        }
        sources::oci_client(
            reference,
            self.insecure,
            self.auth_env.as_deref(),
            self.tls_ca.clone().map(TlsCa::File).as_ref(),
            &EnvSecrets,
        )
    }
}

fn parse_reference(text: &str) -> Result<OciReference, ExitCode> {
    text.parse::<OciReference>()
        .map_err(|e| bad_input(e.to_string()))
}

/// `rollcage plugins lock`: resolve every remote component of `config` to
/// a digest, cache its bytes, and write `rollcage.lock` beside it. With
/// `check`, write nothing and fail if the lock would change.
pub async fn lock(
    config_path: &Path,
    cache_dir: Option<PathBuf>,
    check: bool,
) -> anyhow::Result<ExitCode> {
    let config = match super::load_config(config_path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let runtime = super::runtime_for(&config, cache_dir)?;
    let Some(store) = sources::blob_store(&runtime) else {
        return Ok(bad_input(
            "no cache folder for downloads: give --cache-dir".into(),
        ));
    };
    let path = LockFile::path_for(&config.path);
    let (lock, changes) = match sources::lock(&config, &runtime, &store).await {
        Ok(done) => done,
        Err(problems) => {
            for p in &problems {
                eprintln!("error: {}", crate::logging::redact(p));
            }
            eprintln!("{} not written", path.display());
            return Ok(ExitCode::from(1));
        }
    };
    let before = LockFile::read(&path).unwrap_or_default();
    if check {
        if before == lock {
            println!(
                "{}: up to date ({} plugins)",
                path.display(),
                lock.entries.len()
            );
            return Ok(ExitCode::SUCCESS);
        }
        for c in &changes {
            eprintln!("would change: {c}");
        }
        for gone in before
            .entries
            .keys()
            .filter(|k| !lock.entries.contains_key(*k))
        {
            eprintln!("would remove: {gone}");
        }
        eprintln!(
            "{} is out of date: run `rollcage plugins lock`",
            path.display()
        );
        return Ok(ExitCode::from(1));
    }
    lock.write(&path)?;
    for c in &changes {
        println!("locked {c}");
    }
    println!("{}: {} plugins locked", path.display(), lock.entries.len());
    Ok(ExitCode::SUCCESS)
}

/// `rollcage plugins push FILE oci://...`.
pub async fn push(
    file: &Path,
    reference: &str,
    registry: &RegistryArgs,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let reference = match parse_reference(reference) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    if reference.tag.is_none() {
        return Ok(bad_input(format!(
            "{reference}: push to a tag (oci://REGISTRY/REPOSITORY:TAG); the digest is the one of what is pushed"
        )));
    }
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => return Ok(bad_input(format!("cannot read {}: {e}", file.display()))),
    };
    let runtime = super::runtime(cache_dir)?;
    let source = file.display().to_string();
    // Only a component the host can take is pushed, with what it is.
    let kind = match kind_of(&runtime, "pushed", &source, &bytes) {
        Ok(k) => k,
        Err(e) => return Ok(bad_input(format!("{e:#}"))),
    };
    let info = rollcage_runtime::inspect_component(&runtime, &bytes).map_err(anyhow::Error::msg)?;
    // The contract the component itself targets (0.1.0 components are still
    // served), not the newest one the host speaks.
    let wit = info
        .wit_version()
        .map(|v| format!("rollcage:plugin@{v}"))
        .unwrap_or_else(|| WIT_VERSION.to_string());
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "org.opencontainers.image.created".to_string(),
        rollcage_registry::oci::now_rfc3339(),
    );
    if let Some(stem) = file.file_stem() {
        annotations.insert(
            "org.opencontainers.image.title".to_string(),
            stem.to_string_lossy().into_owned(),
        );
    }
    if let Some(tag) = &reference.tag {
        annotations.insert("org.opencontainers.image.version".to_string(), tag.clone());
    }
    annotations.insert(
        rollcage_registry::oci::ANNOTATION_WIT.to_string(),
        wit.clone(),
    );
    annotations.insert(
        rollcage_registry::oci::ANNOTATION_KIND.to_string(),
        kind.to_string(),
    );
    let what = PushAnnotations {
        annotations,
        exports: info.exports.clone(),
        imports: info.imports.clone(),
    };
    let client = match registry.client(&reference) {
        Ok(c) => c,
        Err(e) => return Ok(bad_input(format!("{reference}: {e:#}"))),
    };
    match client.push(&reference, &bytes, &what).await {
        Ok(digest) => {
            let pinned = OciReference {
                tag: None,
                digest: Some(digest.clone()),
                ..reference.clone()
            };
            println!("pushed {source} ({kind}, {wit}) to {reference}");
            println!("manifest {digest}");
            println!("component {}", rollcage_registry::digest_of(&bytes));
            println!("pinned: {pinned}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {reference}: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `rollcage plugins pull oci://...` (one reference) or `--config FILE`
/// (every locked component the cache lacks).
pub async fn pull(
    reference: Option<&str>,
    config: Option<&Path>,
    registry: &RegistryArgs,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if let Some(path) = config {
        let config = match super::load_config(path) {
            Ok(c) => c,
            Err(code) => return Ok(code),
        };
        let runtime = super::runtime_for(&config, cache_dir)?;
        let Some(store) = sources::blob_store(&runtime) else {
            return Ok(bad_input(
                "no cache folder for downloads: give --cache-dir".into(),
            ));
        };
        let problems = sources::fetch_missing(&config, &runtime).await;
        for p in &problems {
            eprintln!("error: {}", crate::logging::redact(p));
        }
        if !problems.is_empty() {
            return Ok(ExitCode::from(1));
        }
        let count = sources::remote_plugins(&config).count();
        println!(
            "{count} locked components in the cache ({})",
            store
                .path(&rollcage_registry::digest_of(b""))
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let Some(text) = reference else {
        return Ok(bad_input(
            "give a reference (oci://...) or --config FILE".into(),
        ));
    };
    let reference = match parse_reference(text) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let runtime = super::runtime(cache_dir)?;
    let Some(store) = sources::blob_store(&runtime) else {
        return Ok(bad_input(
            "no cache folder for downloads: give --cache-dir".into(),
        ));
    };
    let client = match registry.client(&reference) {
        Ok(c) => c,
        Err(e) => return Ok(bad_input(format!("{reference}: {e:#}"))),
    };
    let pulled = match client.pull(&reference).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {reference}: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let path = store.put(&pulled.layer_digest, &pulled.bytes)?;
    println!("pulled {reference}");
    println!("manifest {}", pulled.manifest_digest);
    println!("component {} -> {}", pulled.layer_digest, path.display());
    Ok(ExitCode::SUCCESS)
}

/// A component named on the command line, fetched: its bytes, their
/// digest, and where they came from (one line for the reader).
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub digest: rollcage_core::Digest,
    pub from: String,
}

/// The component `text` names: `builtin:NAME`, a file, an OCI reference
/// (pulled now), or an `https://` URL with `sha256` (downloaded now and
/// refused unless it has that digest). What was fetched over the network
/// is kept in the download cache, `store`. The error names the source.
pub async fn fetch_source(
    text: &str,
    sha256: Option<&str>,
    registry: &RegistryArgs,
    store: Option<&rollcage_registry::BlobStore>,
) -> Result<Fetched, String> {
    let keep = |digest: &rollcage_core::Digest, bytes: &[u8]| match store {
        Some(store) => store
            .put(digest, bytes)
            .map(|_| ())
            .map_err(|e| format!("{text}: {e}")),
        None => Ok(()),
    };
    if text.starts_with("oci://") {
        let reference = text.parse::<OciReference>().map_err(|e| e.to_string())?;
        if sha256.is_some() {
            return Err(format!(
                "{reference}: --sha256 is for a component downloaded from an https:// URL; pin an OCI reference with @sha256:<64 hex>"
            ));
        }
        let client = registry
            .client(&reference)
            .map_err(|e| format!("{reference}: {e:#}"))?;
        let pulled = client
            .pull(&reference)
            .await
            .map_err(|e| format!("{reference}: {e}"))?;
        keep(&pulled.layer_digest, &pulled.bytes)?;
        return Ok(Fetched {
            from: format!("{reference} (manifest {})", pulled.manifest_digest),
            digest: pulled.layer_digest,
            bytes: pulled.bytes,
        });
    }
    if text.starts_with("https://") || text.starts_with("http://") {
        let Some(sha256) = sha256 else {
            return Err(format!(
                "{text}: a component from a URL is taken only with the digest it must have: give --sha256 HEX"
            ));
        };
        if !text.starts_with("https://") {
            return Err(format!(
                "{text}: components are downloaded over https:// only"
            ));
        }
        let expected =
            rollcage_core::Digest::parse_loose(sha256).map_err(|e| format!("--sha256: {e}"))?;
        let transport = sources::transport(
            registry.tls_ca.clone().map(TlsCa::File).as_ref(),
            &EnvSecrets,
        )
        .map_err(|e| format!("{text}: {e:#}"))?;
        let bytes = rollcage_registry::https::download(&transport, text, &expected)
            .await
            .map_err(|e| e.to_string())?;
        keep(&expected, &bytes)?;
        return Ok(Fetched {
            from: format!("{text} ({expected})"),
            digest: expected,
            bytes,
        });
    }
    if sha256.is_some() {
        return Err(format!(
            "{text}: --sha256 is for a component downloaded from an https:// URL"
        ));
    }
    if let Some(name) = text.strip_prefix("builtin:") {
        let builtin = rollcage_builtins::get(name).ok_or_else(|| {
            format!("{text}: no builtin named `{name}` (`rollcage plugins list` shows them)")
        })?;
        return Ok(Fetched {
            bytes: builtin.wasm.to_vec(),
            digest: rollcage_registry::digest_of(builtin.wasm),
            from: text.to_string(),
        });
    }
    let bytes = std::fs::read(text).map_err(|e| format!("cannot read {text}: {e}"))?;
    Ok(Fetched {
        digest: rollcage_registry::digest_of(&bytes),
        bytes,
        from: text.to_string(),
    })
}
