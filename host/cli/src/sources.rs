//! Where the bytes of a `component = "oci://..." | "https://..."` come from
//! for this host: `rollcage.lock` beside the configuration pins each to a
//! digest, and the download cache (`<cache dir>/blobs/sha256/<hex>`) holds
//! the verified bytes. Runs read only the lock and the cache; the network
//! is used by `rollcage plugins lock` and `pull`, and by a run only to
//! fetch a locked digest the cache lacks. A registry that is down then
//! does not stop a run whose components are cached.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rollcage_config::{ComponentRef, Config, PluginConfig};
use rollcage_core::{Digest, OciReference, PluginId, TlsCa};
use rollcage_registry::{BlobStore, Credentials, LockEntry, LockFile, OciClient, Transport};
use rollcage_runtime::{Runtime, SecretSource};

/// The download cache of `runtime`'s cache folder.
pub fn blob_store(runtime: &Runtime) -> Option<BlobStore> {
    runtime.cache().dir().map(BlobStore::new)
}

/// The lock beside `config`, read once for a load.
pub struct Locked {
    path: PathBuf,
    lock: Result<LockFile, String>,
    store: Option<BlobStore>,
}

impl Locked {
    pub fn read(config: &Config, runtime: &Runtime) -> Locked {
        let path = LockFile::path_for(&config.path);
        Locked {
            lock: LockFile::read(&path).map_err(|e| e.to_string()),
            path,
            store: blob_store(runtime),
        }
    }

    /// The lock entry of remote plugin `id`, checked against what the
    /// configuration says now.
    pub fn entry(&self, id: &PluginId, component: &ComponentRef) -> anyhow::Result<LockEntry> {
        let lock = self.lock.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        let shown = self.path.display();
        let Some(entry) = lock.entries.get(id.as_str()) else {
            anyhow::bail!(
                "plugin `{id}` ({component}): not in {shown}: run `rollcage plugins lock` to pin it to a digest"
            );
        };
        if entry.source != component.to_string() {
            anyhow::bail!(
                "plugin `{id}`: {shown} pins `{}`, the configuration says `{component}`: run `rollcage plugins lock`",
                entry.source
            );
        }
        let locked = entry.component_digest()?;
        match component {
            ComponentRef::Url { sha256, .. } if sha256 != &locked => anyhow::bail!(
                "plugin `{id}` ({component}): the configuration's sha256 is {sha256}, {shown} pins {locked}: run `rollcage plugins lock`"
            ),
            ComponentRef::Oci {
                reference:
                    OciReference {
                        digest: Some(pinned),
                        ..
                    },
                ..
            } if entry.manifest.as_deref() != Some(&pinned.to_string()) => anyhow::bail!(
                "plugin `{id}` ({component}): the reference pins manifest {pinned}, {shown} has {}: run `rollcage plugins lock`",
                entry.manifest.as_deref().unwrap_or("none")
            ),
            _ => {}
        }
        Ok(entry.clone())
    }

    /// The locked, cached bytes of remote plugin `id`, and their digest.
    pub fn bytes(
        &self,
        id: &PluginId,
        component: &ComponentRef,
    ) -> anyhow::Result<(Vec<u8>, Digest)> {
        let entry = self.entry(id, component)?;
        let digest = entry.component_digest()?;
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("plugin `{id}` ({component}): no cache folder for downloads (set HOME, XDG_CACHE_HOME or --cache-dir)"))?;
        match store.get(&digest)? {
            Some(bytes) => Ok((bytes, digest)),
            None => anyhow::bail!(
                "plugin `{id}` ({component}): {digest} is not in the download cache ({}): run `rollcage plugins pull --config FILE`",
                store.path(&digest).display()
            ),
        }
    }
}

/// Every `[plugins.<id>]` whose component is remote.
pub fn remote_plugins(config: &Config) -> impl Iterator<Item = &PluginConfig> {
    config.plugins.values().filter(|p| p.component.is_remote())
}

/// A client for `reference`: plain HTTP only if the configuration allowed
/// it (loopback), `tls_ca` trusted, and credentials from its
/// `registry_auth_secret` or else the Docker config file.
pub fn oci_client(
    reference: &OciReference,
    insecure: bool,
    auth_secret: Option<&str>,
    tls_ca: Option<&TlsCa>,
    secrets: &dyn SecretSource,
) -> anyhow::Result<OciClient> {
    let transport =
        transport(tls_ca, secrets)?.with_plain_http(insecure && reference.is_loopback());
    let credentials = match auth_secret {
        Some(name) => Some(Credentials::from_secret(&secrets.get(name).ok_or_else(
            || {
                anyhow::anyhow!(
                    "registry_auth_secret `{name}` is not set in the host's secret source"
                )
            },
        )?)),
        None => Credentials::from_docker_config(&reference.registry).map_err(anyhow::Error::msg)?,
    };
    Ok(OciClient::new(transport, credentials))
}

/// HTTPS trusting the public roots and `tls_ca`.
pub fn transport(tls_ca: Option<&TlsCa>, secrets: &dyn SecretSource) -> anyhow::Result<Transport> {
    let pem = match tls_ca {
        None => None,
        Some(TlsCa::File(path)) => Some(
            std::fs::read(path).map_err(|e| anyhow::anyhow!("CA file {}: {e}", path.display()))?,
        ),
        Some(TlsCa::Secret(name)) => Some(
            secrets
                .get(name)
                .ok_or_else(|| anyhow::anyhow!("CA secret `{name}` is not set"))?
                .into_bytes(),
        ),
    };
    Transport::new(pem.as_deref()).map_err(anyhow::Error::msg)
}

/// The CA trusted when fetching `p`'s component: its `registry_tls_ca`,
/// else the `tls_ca` it is granted.
fn fetch_ca(p: &PluginConfig) -> Option<&TlsCa> {
    p.registry_tls_ca.as_ref().or(p.tls_ca.as_ref())
}

/// What `plugins lock` found for one plugin.
pub struct Resolved {
    pub entry: LockEntry,
    pub bytes: Vec<u8>,
}

/// Resolve plugin `p`'s source now: pull the tag (or pinned digest), or
/// download the URL, verifying every digest.
pub async fn resolve(p: &PluginConfig, secrets: &dyn SecretSource) -> anyhow::Result<Resolved> {
    let id = &p.id;
    let source = p.component.to_string();
    match &p.component {
        ComponentRef::Oci {
            reference,
            insecure,
            auth_secret,
        } => {
            let client = oci_client(
                reference,
                *insecure,
                auth_secret.as_deref(),
                fetch_ca(p),
                secrets,
            )
            .map_err(|e| anyhow::anyhow!("plugin `{id}` ({source}): {e:#}"))?;
            let pulled = client
                .pull(reference)
                .await
                .map_err(|e| anyhow::anyhow!("plugin `{id}` ({source}): {e}"))?;
            Ok(Resolved {
                entry: LockEntry {
                    id: id.to_string(),
                    source,
                    manifest: Some(pulled.manifest_digest.to_string()),
                    digest: pulled.layer_digest.to_string(),
                },
                bytes: pulled.bytes,
            })
        }
        ComponentRef::Url { url, sha256 } => {
            let transport = transport(fetch_ca(p), secrets)
                .map_err(|e| anyhow::anyhow!("plugin `{id}` ({source}): {e:#}"))?;
            let bytes = rollcage_registry::https::download(&transport, url, sha256)
                .await
                .map_err(|e| anyhow::anyhow!("plugin `{id}`: {e}"))?;
            Ok(Resolved {
                entry: LockEntry {
                    id: id.to_string(),
                    source,
                    manifest: None,
                    digest: sha256.to_string(),
                },
                bytes,
            })
        }
        _ => anyhow::bail!("plugin `{id}` ({source}) is not a remote component"),
    }
}

/// Fetch into the download cache every locked component it lacks, by its
/// locked digest; a tag that has moved since the lock, or bytes that are
/// not the locked ones, are refused naming both digests. One line per
/// problem. Without a cache folder there is nothing to fetch into: loading
/// then says which component is missing.
pub async fn fetch_missing(config: &Config, runtime: &Runtime) -> Vec<String> {
    let Some(store) = blob_store(runtime) else {
        return vec![];
    };
    let locked = Locked::read(config, runtime);
    let secrets = runtime.secrets();
    let mut problems = Vec::new();
    for p in remote_plugins(config) {
        let entry = match locked.entry(&p.id, &p.component) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("{e:#}"));
                continue;
            }
        };
        let Ok(digest) = entry.component_digest() else {
            continue;
        };
        if store.contains(&digest) {
            continue;
        }
        if let Err(e) = fetch_locked(p, &entry, &*secrets, &store).await {
            problems.push(format!("{e:#}"));
        }
    }
    problems
}

/// Fetch the locked component of `p` into `store`.
pub async fn fetch_locked(
    p: &PluginConfig,
    entry: &LockEntry,
    secrets: &dyn SecretSource,
    store: &BlobStore,
) -> anyhow::Result<()> {
    let id = &p.id;
    let source = p.component.to_string();
    let locked = entry.component_digest()?;
    let resolved = resolve(p, secrets).await?;
    // The source resolved now must be what the lock pinned: a moved tag or
    // a changed file is a change to review, not one to take silently.
    if let (Some(now), Some(then)) = (&resolved.entry.manifest, &entry.manifest)
        && now != then
    {
        anyhow::bail!(
            "plugin `{id}` ({source}): the tag now names manifest {now}, rollcage.lock pins {then}: review the change and run `rollcage plugins lock` to take it"
        );
    }
    let now: Digest = resolved.entry.digest.parse()?;
    if now != locked {
        anyhow::bail!(
            "plugin `{id}` ({source}): the component now has digest {now}, rollcage.lock pins {locked}: review the change and run `rollcage plugins lock` to take it"
        );
    }
    store
        .put(&locked, &resolved.bytes)
        .map_err(|e| anyhow::anyhow!("plugin `{id}` ({source}): {e}"))?;
    Ok(())
}

/// The lock file for `config`: every remote plugin resolved now and its
/// bytes cached; and one line per change from the lock at `path`.
pub async fn lock(
    config: &Config,
    runtime: &Runtime,
    store: &BlobStore,
) -> Result<(LockFile, Vec<String>), Vec<String>> {
    let path = LockFile::path_for(&config.path);
    let before = LockFile::read(&path).unwrap_or_default();
    let secrets = runtime.secrets();
    let mut lock = LockFile::default();
    let mut problems = Vec::new();
    let mut changes = Vec::new();
    for p in remote_plugins(config) {
        let resolved = match resolve(p, &*secrets).await {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{e:#}"));
                continue;
            }
        };
        let digest: Digest = match resolved.entry.digest.parse() {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("plugin `{}`: {e}", p.id));
                continue;
            }
        };
        // Only a component the host can take is locked: an artifact that
        // is something else is refused now, not at the first run.
        if let Err(e) = check_component(runtime, p, &resolved.bytes, &digest) {
            problems.push(e);
            continue;
        }
        if let Err(e) = store.put(&digest, &resolved.bytes) {
            problems.push(format!("plugin `{}` ({}): {e}", p.id, p.component));
            continue;
        }
        match before.entries.get(p.id.as_str()) {
            Some(old)
                if old.digest == resolved.entry.digest && old.source == resolved.entry.source => {}
            Some(old) => changes.push(format!(
                "{}: {} -> {} ({})",
                p.id, old.digest, resolved.entry.digest, resolved.entry.source
            )),
            None => changes.push(format!(
                "{}: {} ({})",
                p.id, resolved.entry.digest, resolved.entry.source
            )),
        }
        lock.entries.insert(p.id.to_string(), resolved.entry);
    }
    if problems.is_empty() {
        Ok((lock, changes))
    } else {
        Err(problems)
    }
}

/// Whether `bytes` are a component of the kind `p` declares (or of one
/// kind, when it declares none); compiled into the cache on the way.
fn check_component(
    runtime: &Runtime,
    p: &PluginConfig,
    bytes: &[u8],
    digest: &Digest,
) -> Result<(), String> {
    let id = &p.id;
    let source = p.component.to_string();
    let wasm = rollcage_runtime::Wasm::verified(bytes, digest);
    let found = crate::plugins::kind_of(runtime, id.as_str(), &source, wasm).map_err(|e| {
        format!("{e:#}; expected a WebAssembly component (a plugin built for wasm32-wasip2)")
    })?;
    match p.kind {
        Some(kind) if kind != found => Err(format!(
            "plugin `{id}` ({source}) is a {found}, but its configuration says {kind}"
        )),
        _ => Ok(()),
    }
}

/// The digest of every component a load used, by the name configuration
/// refers to it with: what a run records.
pub type Digests = BTreeMap<String, Digest>;
