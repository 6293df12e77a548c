//! Plugins from registries, end to end against a real OCI registry (the
//! CNCF distribution `docker-registry`, started on loopback with a
//! temporary storage folder) and a local HTTPS file server: push, lock,
//! run; a moved tag and a tampered blob refused; a registry that is down
//! (a clear error, while the cached, locked component still runs); auth
//! required and given (a secret, the Docker config file); URL sources with
//! the right and the wrong sha256; an artifact that is not a component.
//! Also: a registry behind a token service (a login, a refresh token from
//! a credential helper, a bare token, anonymous pulls), a blob redirect to
//! storage that must not see the login, and the layouts other wasm tools
//! push.
//!
//! A component pushed by oras-py (another registry client, in
//! `.tools/venv`) is locked and run too.
//!
//! Without `docker-registry` (and `htpasswd` for the auth case, oras-py for
//! its case) the registry tests print SKIPPED, except in CI (`CI=true`),
//! where they fail.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rollcage_kube_standin::pki::{ServerCert, TestCa};

mod common;
use common::{command, text};

mod registry_standins;
use registry_standins::{
    LOGIN, REFRESH_TOKEN, RedirectingRegistry, TOKEN_AUDIENCE, TOKEN_ISSUER, TokenService,
};

/// A tool from PATH, or SKIPPED (a failure under CI=true).
fn tool(name: &str, why: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is not installed; .ci/run installs it ({why})");
        }
        eprintln!("SKIPPED: no {name} ({why}; apt-get install {why})");
    }
    found
}

/// A `docker-registry` on 127.0.0.1, killed on drop.
struct Registry {
    child: Child,
    addr: String,
    storage: PathBuf,
    _dir: tempfile::TempDir,
}

/// How a test registry wants clients to prove who they are.
enum Auth<'a> {
    /// Plain HTTP, anyone may push and pull.
    None,
    /// TLS, and an htpasswd login (HTTP Basic).
    Login {
        user: &'a str,
        password: &'a str,
        cert: &'a ServerCert,
    },
    /// TLS, and Bearer tokens from `service`, whose signing CA it trusts.
    Tokens {
        cert: &'a ServerCert,
        service: &'a TokenService,
    },
}

impl Registry {
    fn start(auth: Auth<'_>) -> Option<Registry> {
        let binary = tool("docker-registry", "docker-registry")?;
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: test-secret\n",
            storage.display()
        );
        let tls = |config: &mut String, cert: &ServerCert| {
            std::fs::write(dir.path().join("cert.pem"), &cert.cert_pem).unwrap();
            std::fs::write(dir.path().join("key.pem"), &cert.key_pem).unwrap();
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("cert.pem").display(),
                dir.path().join("key.pem").display(),
            ));
        };
        match auth {
            Auth::None => {}
            Auth::Login {
                user,
                password,
                cert,
            } => {
                let htpasswd = tool("htpasswd", "apache2-utils")?;
                let out = Command::new(htpasswd)
                    .args(["-nbB", user, password])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "htpasswd: {}", text(&out.stderr));
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, &out.stdout).unwrap();
                tls(&mut config, cert);
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                    file.display()
                ));
            }
            Auth::Tokens { cert, service } => {
                tls(&mut config, cert);
                let bundle = dir.path().join("token-signers.pem");
                std::fs::write(&bundle, &service.signer_ca_pem).unwrap();
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {TOKEN_AUDIENCE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    service.realm(),
                    bundle.display()
                ));
            }
        }
        let config_file = dir.path().join("config.yml");
        std::fs::write(&config_file, config).unwrap();
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Registry {
            child,
            addr,
            storage,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&registry.addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(registry)
    }

    fn reference(&self, repo_tag: &str) -> String {
        format!("oci://{}/{repo_tag}", self.addr)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The file holding blob `hex` in the registry's storage.
    fn blob_file(&self, hex: &str) -> PathBuf {
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    rollcage_registry::digest_of(bytes).hex().to_string()
}

fn run(args: &[&str], cache: &Path) -> Output {
    command(cache).args(args).output().unwrap()
}

fn all(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// `out` succeeded; else the panic shows everything it printed.
#[track_caller]
fn assert_ok(out: &Output) {
    assert!(out.status.success(), "{}", all(out));
}

/// `out` printed `needle` on its standard output.
#[track_caller]
fn assert_prints(out: &Output, needle: &str) {
    assert!(
        text(&out.stdout).contains(needle),
        "expected on stdout: {needle}\n{}",
        all(out)
    );
}

/// `out` said `needle`, on either stream.
#[track_caller]
fn assert_says(out: &Output, needle: &str) {
    assert!(
        all(out).contains(needle),
        "expected: {needle}\n{}",
        all(out)
    );
}

/// A pipeline whose provider is `component` (the static-provider fixture
/// from a registry or URL), with `extra` keys beside it.
fn write_config(dir: &Path, component: &str, extra: &str) -> PathBuf {
    write_pipeline(dir, component, extra, "", "canary", "")
}

/// A pipeline through `staging`, whose provider `platform` is `provider`
/// (with `provider_extra` keys), beside the `[plugins.*]` tables of
/// `plugins`; its strategy is plugin `strategy` with steps 50 and 100, and
/// `pipeline_extra` goes into `[pipelines.api]`.
fn write_pipeline(
    dir: &Path,
    provider: &str,
    provider_extra: &str,
    plugins: &str,
    strategy: &str,
    pipeline_extra: &str,
) -> PathBuf {
    let path = dir.join("rollcage.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
database = "sqlite://runs.db"

[plugins.platform]
component = "{provider}"
{provider_extra}
config = {{ slot = "1.0.0", release = "1.0.0", endpoint = "127.0.0.1:1" }}

{plugins}

[environments.staging]
provider = "platform"
replicas = 1
strategy = {{ plugin = "{strategy}", steps = [50, 100] }}

[pipelines.api]
stages = ["staging"]
{pipeline_extra}
"#
        ),
    )
    .unwrap();
    path
}

fn provider_wasm() -> (PathBuf, Vec<u8>) {
    let path = rollcage_tests::fixture("static-provider");
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// `rollcage runs show` of the newest run of `config`.
fn show_latest_run(config: &str, cache: &Path) -> Output {
    let out = run(&["runs", "list", "-c", config, "--output", "json"], cache);
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = runs[0]["id"].as_str().unwrap().to_string();
    run(&["runs", "show", &id, "-c", config], cache)
}

fn push(file: &Path, reference: &str, extra: &[&str], cache: &Path) -> Output {
    let mut args = vec!["plugins", "push", file.to_str().unwrap(), reference];
    args.extend_from_slice(extra);
    run(&args, cache)
}

/// The body of `GET path` from a plain-HTTP registry at `addr`.
fn http_get(addr: &str, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).unwrap();
    // A registry shows an OCI manifest only to a client that accepts one.
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    assert!(
        response.starts_with(b"HTTP/1.0 200") || response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response[..at])
    );
    response[at + 4..].to_vec()
}

/// The manifest `repo_tag` names in a plain-HTTP registry, as JSON.
fn stored_manifest(registry: &Registry, repository: &str, tag: &str) -> serde_json::Value {
    let body = http_get(&registry.addr, &format!("/v2/{repository}/manifests/{tag}"));
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn a_pushed_plugin_is_locked_and_runs_from_the_registry_even_when_it_is_down() {
    let Some(mut registry) = Registry::start(Auth::None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (file, bytes) = provider_wasm();
    let reference = registry.reference("team/static-provider:1.0");

    let out = push(&file, &reference, &["--insecure"], &cache);
    assert_ok(&out);
    assert_prints(&out, "(environment-provider, rollcage:plugin@");
    assert!(text(&out.stdout).contains(&format!("component sha256:{}", sha256_hex(&bytes))));

    // What the registry keeps: the Wasm OCI artifact layout, annotated
    // with what the component is.
    let manifest = stored_manifest(&registry, "team/static-provider", "1.0");
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(
        manifest["layers"][0]["digest"],
        format!("sha256:{}", sha256_hex(&bytes))
    );
    let notes = &manifest["annotations"];
    assert_eq!(notes["dev.rollcage.plugin.kind"], "environment-provider");
    assert_eq!(notes["dev.rollcage.wit.version"], "rollcage:plugin@0.2.0");
    assert_eq!(
        notes["org.opencontainers.image.title"],
        file.file_stem().unwrap().to_str().unwrap()
    );
    assert_eq!(notes["org.opencontainers.image.version"], "1.0");
    assert!(notes["org.opencontainers.image.created"].is_string());
    let config_blob = http_get(
        &registry.addr,
        &format!(
            "/v2/team/static-provider/blobs/{}",
            manifest["config"]["digest"].as_str().unwrap()
        ),
    );
    let config_json: serde_json::Value = serde_json::from_slice(&config_blob).unwrap();
    assert_eq!(config_json["architecture"], "wasm");
    assert_eq!(config_json["os"], "wasip2");
    assert!(
        config_json["component"]["exports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "rollcage:plugin/provider-api@0.2.0"),
        "{config_json}"
    );
    // A component of the older contract is annotated with its own version.
    let legacy = rollcage_tests::fixture("legacy-strategy");
    let out = push(
        &legacy,
        &registry.reference("team/legacy:0.1"),
        &["--insecure"],
        &cache,
    );
    assert_ok(&out);
    let notes = stored_manifest(&registry, "team/legacy", "0.1")["annotations"].clone();
    assert_eq!(notes["dev.rollcage.wit.version"], "rollcage:plugin@0.1.0");
    assert_eq!(notes["dev.rollcage.plugin.kind"], "strategy");

    // `check` and `list` take references.
    let out = run(&["plugins", "check", &reference, "--insecure"], &cache);
    assert_ok(&out);
    assert_prints(&out, &format!("fetched:   {reference} (manifest sha256:"));
    assert_prints(
        &out,
        "world:     environment-provider (rollcage:plugin@0.2.0)",
    );
    assert_prints(
        &out,
        "ok: the host can run this environment-provider plugin",
    );
    let legacy_ref = registry.reference("team/legacy:0.1");
    let out = run(
        &[
            "plugins",
            "list",
            &reference,
            &legacy_ref,
            "builtin:canary",
            "--insecure",
        ],
        &cache,
    );
    assert_ok(&out);
    let rows: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let short = |b: &[u8]| format!("sha256:{}", &sha256_hex(b)[..12]);
    for (row, digest) in [
        (
            format!("static-provider environment-provider {reference} rollcage:plugin@0.2.0"),
            short(&bytes),
        ),
        (
            format!("legacy strategy {legacy_ref} rollcage:plugin@0.1.0"),
            short(&std::fs::read(&legacy).unwrap()),
        ),
        (
            "canary strategy builtin:canary rollcage:plugin@0.2.0".to_string(),
            short(rollcage_builtins::get("canary").unwrap().wasm),
        ),
    ] {
        assert!(
            rows.iter()
                .any(|r| r.starts_with(&row) && r.contains(&digest)),
            "{row} {digest}\n{}",
            all(&out)
        );
    }
    // A reference that names nothing is an error naming it; the rest are
    // still listed.
    let missing = registry.reference("team/nothing:1");
    let out = run(
        &["plugins", "list", &missing, "builtin:canary", "--insecure"],
        &cache,
    );
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_says(&out, &format!("error: {missing}: "));
    assert_prints(&out, "builtin:canary");

    let config = write_config(dir.path(), &reference, "insecure = true");
    let cfg = config.to_str().unwrap();
    // Not locked yet: refused, saying what to do.
    let out = run(&["config", "check", cfg], &cache);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert_says(
        &out,
        &format!(
            "plugin `platform` ({reference}): not in {}: run `rollcage plugins lock`",
            dir.path().join("rollcage.lock").display()
        ),
    );

    let out = run(&["plugins", "lock", "-c", cfg], &cache);
    assert_ok(&out);
    let lock = std::fs::read_to_string(dir.path().join("rollcage.lock")).unwrap();
    assert!(
        lock.starts_with("# This file is generated by `rollcage plugins lock`"),
        "{lock}"
    );
    assert!(
        lock.contains(&format!("digest = \"sha256:{}\"", sha256_hex(&bytes))),
        "{lock}"
    );
    assert!(
        lock.contains(&format!("source = \"{reference}\"")),
        "{lock}"
    );
    let out = run(&["plugins", "lock", "-c", cfg, "--check"], &cache);
    assert_ok(&out);
    // Another host fetches every locked component ahead of its runs...
    let pulled = dir.path().join("pulled-cache");
    let out = run(&["plugins", "pull", "-c", cfg], &pulled);
    assert_ok(&out);
    assert_prints(&out, "1 locked components in the cache");
    assert!(
        pulled
            .join("rollcage/components/blobs/sha256")
            .join(sha256_hex(&bytes))
            .is_file()
    );
    // ...and `plugins list -c` fetches what its cache lacks, as a run does.
    let listed = dir.path().join("listed-cache");
    let out = run(&["plugins", "list", "-c", cfg], &listed);
    assert_ok(&out);
    assert_prints(&out, &format!("sha256:{}", &sha256_hex(&bytes)[..12]));

    let out = run(&["run", "api", "-c", cfg, "--release", "1.0.0"], &cache);
    assert_ok(&out);
    let out = show_latest_run(cfg, &cache);
    assert_prints(
        &out,
        &format!("plugin platform sha256:{}", sha256_hex(&bytes)),
    );
    // Builtins are recorded too, by the digest of their bytes.
    let canary = rollcage_builtins::get("canary").unwrap().wasm;
    assert_prints(
        &out,
        &format!("plugin canary sha256:{}", sha256_hex(canary)),
    );

    // The registry goes away: fetching says so; the cached, locked
    // component still runs.
    registry.stop();
    let out = run(&["plugins", "pull", &reference, "--insecure"], &cache);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_says(&out, "registry unreachable");
    assert_says(&out, "cannot connect to 127.0.0.1");
    let out = run(&["plugins", "lock", "-c", cfg], &cache);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_says(
        &out,
        &format!("plugin `platform` ({reference}): registry unreachable"),
    );
    let out = run(&["run", "api", "-c", cfg, "--release", "1.0.0"], &cache);
    assert_ok(&out);
    let out = run(&["run", "api", "-c", cfg, "--release", "1.0.0"], &pulled);
    assert_ok(&out);
    // Without the cache, the locked component cannot be had: a clear error.
    let empty = dir.path().join("empty-cache");
    let out = run(&["run", "api", "-c", cfg, "--release", "1.0.0"], &empty);
    assert!(!out.status.success());
    assert_says(
        &out,
        &format!("plugin `platform` ({reference}): registry unreachable"),
    );
}

#[test]
fn a_moved_tag_or_a_tampered_blob_is_refused_naming_both_digests() {
    let Some(registry) = Registry::start(Auth::None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (file, bytes) = provider_wasm();
    let reference = registry.reference("team/provider:stable");
    let out = push(&file, &reference, &["--insecure"], &cache);
    assert_ok(&out);
    let config = write_config(dir.path(), &reference, "insecure = true");
    let cfg = config.to_str().unwrap();
    let out = run(&["plugins", "lock", "-c", cfg], &cache);
    assert_ok(&out);
    let lock = std::fs::read_to_string(dir.path().join("rollcage.lock")).unwrap();
    let locked_manifest = lock
        .lines()
        .find_map(|l| l.strip_prefix("manifest = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();

    // The tag moves to another component.
    let other = dir.path().join("console.wasm");
    std::fs::write(&other, rollcage_builtins::get("console").unwrap().wasm).unwrap();
    let out = push(&other, &reference, &["--insecure"], &cache);
    assert_ok(&out);
    let moved = text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("manifest "))
        .unwrap()
        .to_string();
    assert_ne!(moved, locked_manifest);
    // The lock is now out of date, and a host without the component in
    // its cache refuses the moved tag, naming both manifests.
    let out = run(&["plugins", "lock", "-c", cfg, "--check"], &cache);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_says(&out, "is out of date");
    let fresh = dir.path().join("fresh-cache");
    let out = run(&["config", "check", cfg], &fresh);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert_says(
        &out,
        &format!(
            "plugin `platform` ({reference}): the tag now names manifest {moved}, rollcage.lock pins {locked_manifest}"
        ),
    );
    // The host that has it cached runs the locked component still.
    let out = run(&["config", "check", cfg], &cache);
    assert_ok(&out);

    // A reference pinned by digest does not follow the tag: it locks and
    // runs the component it names on a host that never had it.
    let pinned = format!("oci://{}/team/provider@{locked_manifest}", registry.addr);
    let pinned_dir = dir.path().join("pinned");
    std::fs::create_dir_all(&pinned_dir).unwrap();
    let pinned_config = write_config(&pinned_dir, &pinned, "insecure = true");
    let pinned_cfg = pinned_config.to_str().unwrap();
    let pinned_cache = dir.path().join("pinned-cache");
    let out = run(&["plugins", "lock", "-c", pinned_cfg], &pinned_cache);
    assert_ok(&out);
    let lock = std::fs::read_to_string(pinned_dir.join("rollcage.lock")).unwrap();
    assert!(
        lock.contains(&format!("manifest = \"{locked_manifest}\"")),
        "{lock}"
    );
    let other_host = dir.path().join("other-host-cache");
    let out = run(
        &["run", "api", "-c", pinned_cfg, "--release", "1.0.0"],
        &other_host,
    );
    assert_ok(&out);
    let out = show_latest_run(pinned_cfg, &other_host);
    assert_prints(
        &out,
        &format!("plugin platform sha256:{}", sha256_hex(&bytes)),
    );

    // A blob whose bytes are not its digest is refused before anything
    // compiles it.
    let hex = sha256_hex(&bytes);
    let blob = registry.blob_file(&hex);
    let mut tampered = bytes.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    std::fs::write(&blob, &tampered).unwrap();
    let out = run(&["plugins", "pull", &pinned, "--insecure"], &fresh);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_says(
        &out,
        &format!(
            "the component's bytes have digest sha256:{}, not the sha256:{hex} its manifest names",
            sha256_hex(&tampered)
        ),
    );
    assert!(
        !fresh
            .join("rollcage/components/blobs/sha256")
            .join(&hex)
            .exists()
    );
}

#[test]
fn an_artifact_that_is_not_a_component_is_refused_at_lock() {
    let Some(registry) = Registry::start(Auth::None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // A container image, pushed by another tool.
    let image = registry.reference("team/image:1");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = rollcage_registry::OciClient::new(
            rollcage_registry::Transport::new(None)
                .unwrap()
                .with_plain_http(true),
            None,
        );
        client
            .push_artifact(
                &image.parse().unwrap(),
                ("application/vnd.oci.image.config.v1+json", b"{}"),
                &[("application/vnd.oci.image.layer.v1.tar+gzip", b"not wasm")],
                &Default::default(),
            )
            .await
            .unwrap();
    });
    let config = write_config(dir.path(), &image, "insecure = true");
    let out = run(&["plugins", "lock", "-c", config.to_str().unwrap()], &cache);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_says(
        &out,
        &format!(
            "plugin `platform` ({image}): {image} is not a Wasm component artifact: expected an OCI image manifest with one `application/wasm` layer (config `application/vnd.wasm.config.v0+json`), found config `application/vnd.oci.image.config.v1+json` and layers `application/vnd.oci.image.layer.v1.tar+gzip`"
        ),
    );
    assert!(!dir.path().join("rollcage.lock").exists());

    // A wasm layer that is a text file, not a component.
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, "hello").unwrap();
    let out = push(
        &junk,
        &registry.reference("team/junk:1"),
        &["--insecure"],
        &cache,
    );
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert_says(&out, "not a WebAssembly file");
}

#[test]
fn a_registry_that_wants_a_login_takes_a_secret_or_the_docker_config() {
    let ca = TestCa::new("registry CA");
    let cert = ca.issue(&["127.0.0.1", "localhost"]);
    let Some(registry) = Registry::start(Auth::Login {
        user: "ci",
        password: "s3cret",
        cert: &cert,
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let ca_arg = ca_file.to_str().unwrap();
    let (file, _) = provider_wasm();
    let reference = registry.reference("team/private:1");
    // An empty Docker config: the developer's own is not used.
    let docker = dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let push_with = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "plugins",
            "push",
            file.to_str().unwrap(),
            &reference,
            "--tls-ca",
            ca_arg,
        ];
        args.extend_from_slice(extra);
        let mut c = command(&cache);
        c.env("DOCKER_CONFIG", &docker);
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(&args).output().unwrap()
    };
    let out = push_with(&[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_says(&out, "the registry wants credentials and none were given");
    let out = push_with(
        &["--auth-env", "REGISTRY_LOGIN"],
        &[("REGISTRY_LOGIN", "ci:wrong")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_says(&out, "the registry refused the credentials");
    assert!(!all(&out).contains("wrong"), "{}", all(&out));
    let out = push_with(
        &["--auth-env", "REGISTRY_LOGIN"],
        &[("REGISTRY_LOGIN", "ci:s3cret")],
    );
    assert_ok(&out);

    // A granted secret of the host (here its environment)...
    let config = write_config(
        dir.path(),
        &reference,
        "registry_auth_secret = \"REGISTRY_LOGIN\"\ntls_ca = \"ca.pem\"",
    );
    let cfg = config.to_str().unwrap();
    let out = command(&cache)
        .env("DOCKER_CONFIG", &docker)
        .env("REGISTRY_LOGIN", "ci:s3cret")
        .args(["plugins", "lock", "-c", cfg])
        .output()
        .unwrap();
    assert_ok(&out);
    let out = command(&cache)
        .env("DOCKER_CONFIG", &docker)
        .env("REGISTRY_LOGIN", "ci:s3cret")
        .args(["run", "api", "-c", cfg, "--release", "1.0.0"])
        .output()
        .unwrap();
    assert_ok(&out);

    // ...or the Docker config file's entry for the registry.
    std::fs::remove_file(dir.path().join("rollcage.lock")).unwrap();
    let config = write_config(dir.path(), &reference, "tls_ca = \"ca.pem\"");
    let cfg = config.to_str().unwrap();
    let out = command(&cache)
        .env("DOCKER_CONFIG", &docker)
        .args(["plugins", "lock", "-c", cfg])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_says(&out, "none were given");
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "Y2k6czNjcmV0"}}}}}}"#,
            registry.addr
        ),
    )
    .unwrap();
    let out = command(&cache)
        .env("DOCKER_CONFIG", &docker)
        .args(["plugins", "lock", "-c", cfg])
        .output()
        .unwrap();
    assert_ok(&out);
}

/// An HTTPS server on 127.0.0.1 serving `body` at every path, presenting a
/// certificate of `ca`; the body can be changed while it runs.
struct FileServer {
    port: u16,
    body: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    _rt: tokio::runtime::Runtime,
}

impl FileServer {
    fn start(cert: &ServerCert, body: Vec<u8>) -> FileServer {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Runtime::new().unwrap();
        let body = std::sync::Arc::new(std::sync::Mutex::new(body));
        let served = body.clone();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = cert.server_config();
        rt.spawn(async move {
            rollcage_kube_standin::tls::spawn_https(listener, config, move |_req| {
                let bytes = served.lock().unwrap().clone();
                async move {
                    hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(bytes))
                            .map_err(|never| match never {})
                            .boxed(),
                    )
                }
            });
        });
        FileServer {
            port,
            body,
            _rt: rt,
        }
    }
}

#[test]
fn a_url_source_runs_only_with_the_sha256_its_configuration_gives() {
    let ca = TestCa::new("files CA");
    let cert = ca.issue(&["localhost"]);
    let (_, bytes) = provider_wasm();
    let server = FileServer::start(&cert, bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
    let url = format!("https://localhost:{}/static-provider.wasm", server.port);
    let right = sha256_hex(&bytes);

    let wrong = "0".repeat(64);
    let config = write_config(
        dir.path(),
        &url,
        &format!("sha256 = \"{wrong}\"\ntls_ca = \"ca.pem\""),
    );
    let cfg = config.to_str().unwrap();
    let out = run(&["plugins", "lock", "-c", cfg], &cache);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_says(
        &out,
        &format!(
            "plugin `platform`: {url}: the file has digest sha256:{right}, not the expected sha256:{wrong}"
        ),
    );

    write_config(
        dir.path(),
        &url,
        &format!("sha256 = \"{right}\"\ntls_ca = \"ca.pem\""),
    );
    let out = run(&["plugins", "lock", "-c", cfg], &cache);
    assert_ok(&out);
    let out = run(&["run", "api", "-c", cfg, "--release", "1.0.0"], &cache);
    assert_ok(&out);

    // `plugins check` takes the URL with the digest it must have.
    let ca_arg = dir.path().join("ca.pem");
    let ca_arg = ca_arg.to_str().unwrap();
    let out = run(
        &[
            "plugins", "check", &url, "--sha256", &right, "--tls-ca", ca_arg,
        ],
        &cache,
    );
    assert_ok(&out);
    assert_prints(&out, &format!("fetched:   {url} (sha256:{right})"));
    assert_prints(
        &out,
        "ok: the host can run this environment-provider plugin",
    );
    let out = run(&["plugins", "check", &url, "--tls-ca", ca_arg], &cache);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert_says(&out, "give --sha256 HEX");
    let out = run(
        &[
            "plugins", "check", &url, "--sha256", &wrong, "--tls-ca", ca_arg,
        ],
        &cache,
    );
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert_says(
        &out,
        &format!("{url}: the file has digest sha256:{right}, not the expected sha256:{wrong}"),
    );

    // The file at the URL changes: a host without it cached refuses it.
    let mut changed = bytes.clone();
    changed.extend_from_slice(b"\0");
    *server.body.lock().unwrap() = changed.clone();
    let fresh = dir.path().join("fresh-cache");
    let out = run(&["config", "check", cfg], &fresh);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert_says(
        &out,
        &format!(
            "the file has digest sha256:{}, not the expected sha256:{right}",
            sha256_hex(&changed)
        ),
    );
    // Without the private CA the server is not trusted.
    let config = write_config(dir.path(), &url, &format!("sha256 = \"{right}\""));
    let out = run(&["plugins", "lock", "-c", config.to_str().unwrap()], &fresh);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_says(&out, "TLS handshake with localhost");
}

/// The operator's whole path, as the README tells it: a plugin made with
/// `rollcage plugins new` and built with its own `build.sh` is pushed,
/// locked and run from the registry, and the run records its digest.
#[test]
fn a_plugin_made_by_plugins_new_is_pushed_locked_and_run_from_the_registry() {
    let Some(registry) = Registry::start(Auth::None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let project = dir.path().join("deploy-log");
    let out = run(
        &[
            "plugins",
            "new",
            "deploy-log",
            "--kind",
            "notifier",
            "--lang",
            "rust",
            "--dir",
            project.to_str().unwrap(),
        ],
        &cache,
    );
    assert_ok(&out);
    // The template tests' target folder, so the SDK's dependencies are
    // compiled once for every generated Rust project.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(project.join("build.sh"))
        .env("CARGO_TARGET_DIR", workspace.join("target/plugin-new"))
        .output()
        .unwrap();
    assert!(out.status.success(), "build.sh: {}", all(&out));
    let wasm = project.join("target/deploy-log.wasm");
    let bytes = std::fs::read(&wasm).unwrap();

    let reference = registry.reference("team/deploy-log:0.1.0");
    let out = push(&wasm, &reference, &["--insecure"], &cache);
    assert_ok(&out);
    assert_prints(&out, "(notifier, rollcage:plugin@");

    let (provider, _) = provider_wasm();
    let config = write_pipeline(
        dir.path(),
        &provider.display().to_string(),
        "",
        &format!(
            "[plugins.deploy-log]\ncomponent = \"{reference}\"\ninsecure = true\nconfig = {{ prefix = \"from-the-registry\" }}"
        ),
        "canary",
        "notify = [\"deploy-log\"]",
    );
    let cfg = config.to_str().unwrap();
    let out = run(&["plugins", "lock", "-c", cfg], &cache);
    assert_ok(&out);
    let lock = std::fs::read_to_string(dir.path().join("rollcage.lock")).unwrap();
    assert!(
        lock.contains(&format!("digest = \"sha256:{}\"", sha256_hex(&bytes))),
        "{lock}"
    );

    // `-v`: the plugin's log lines (info) are shown.
    let out = run(
        &["-v", "run", "api", "-c", cfg, "--release", "1.0.0"],
        &cache,
    );
    assert_ok(&out);
    // The plugin from the registry told of the run, in its own words.
    assert_says(&out, "from-the-registry: api 1.0.0 in staging");
    let out = show_latest_run(cfg, &cache);
    assert_prints(
        &out,
        &format!("plugin deploy-log sha256:{}", sha256_hex(&bytes)),
    );
}

/// A registry behind a token service (Bearer challenges), as Docker Hub,
/// GHCR and Harbor are: a login is exchanged for a token; a credential
/// helper's identity token is exchanged by the OAuth2 refresh POST; a bare
/// token goes straight to the registry; with no credentials at all an
/// anonymous token pulls public repositories and nothing else.
#[test]
fn a_registry_behind_a_token_service_takes_a_login_a_refresh_token_a_bare_token_or_nobody() {
    let ca = TestCa::new("registry CA");
    let cert = ca.issue(&["127.0.0.1", "localhost"]);
    let tokens = TokenService::start(&cert);
    let Some(registry) = Registry::start(Auth::Tokens {
        cert: &cert,
        service: &tokens,
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let ca_arg = ca_file.to_str().unwrap();
    // The developer's own Docker config is not used.
    let docker = dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let login = format!("{}:{}", LOGIN.0, LOGIN.1);
    let cli = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = command(&cache);
        c.env("DOCKER_CONFIG", &docker);
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(args).output().unwrap()
    };
    let (file, _) = provider_wasm();
    let file = file.to_str().unwrap();
    let private = registry.reference("team/provider:1");
    let public = registry.reference("public/provider:1");
    let asked = || tokens.requests.lock().unwrap().clone();

    // Nobody: the anonymous token does not allow a push.
    let out = cli(
        &["plugins", "push", file, &private, "--tls-ca", ca_arg],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_says(&out, "the registry wants credentials and none were given");
    // A login, exchanged at the token service for a token with push.
    for reference in [&private, &public] {
        let out = cli(
            &[
                "plugins",
                "push",
                file,
                reference,
                "--tls-ca",
                ca_arg,
                "--auth-env",
                "REGISTRY_LOGIN",
            ],
            &[("REGISTRY_LOGIN", &login)],
        );
        assert_ok(&out);
    }
    assert!(
        asked().iter().any(|r| r.method == "GET"
            && r.subject == "ci"
            && r.scope.starts_with("repository:team/provider:")
            && r.scope.contains("push")),
        "{:?}",
        asked()
    );
    // A wrong login: the token service refuses it; the password is not shown.
    let out = cli(
        &[
            "plugins",
            "pull",
            &private,
            "--tls-ca",
            ca_arg,
            "--auth-env",
            "REGISTRY_LOGIN",
        ],
        &[("REGISTRY_LOGIN", "ci:not-the-password")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_says(&out, "the token service answered HTTP 401");
    assert!(!all(&out).contains("not-the-password"), "{}", all(&out));
    // Nobody pulls a public repository with an anonymous token...
    let out = cli(&["plugins", "pull", &public, "--tls-ca", ca_arg], &[]);
    assert_ok(&out);
    assert!(
        asked()
            .iter()
            .any(|r| r.subject == "anonymous" && r.scope == "repository:public/provider:pull"),
        "{:?}",
        asked()
    );
    // ...but not a private one.
    let out = cli(&["plugins", "pull", &private, "--tls-ca", ca_arg], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_says(&out, "the registry wants credentials and none were given");

    // A bare token as the granted secret: sent as it is, and the token
    // service is not asked.
    let config = write_config(
        dir.path(),
        &private,
        "registry_auth_secret = \"REGISTRY_TOKEN\"\ntls_ca = \"ca.pem\"",
    );
    let cfg = config.to_str().unwrap();
    let token = tokens.token_for("team/provider");
    let before = asked().len();
    let out = cli(
        &["plugins", "lock", "-c", cfg],
        &[("REGISTRY_TOKEN", &token)],
    );
    assert_ok(&out);
    assert_eq!(asked().len(), before, "{:?}", asked());
    let out = cli(
        &["run", "api", "-c", cfg, "--release", "1.0.0"],
        &[("REGISTRY_TOKEN", &token)],
    );
    assert_ok(&out);

    // The Docker config names a credential helper for the registry; it
    // answers an identity token (user `<token>`), exchanged by the refresh
    // POST. A registry the helper does not know gets no credentials.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-rollcage-test");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r registry\nif [ \"$registry\" = \"{addr}\" ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"<token>\",\"Secret\":\"{REFRESH_TOKEN}\"}}' \"$registry\"\nelse\n  echo 'credentials not found in native keychain'\n  exit 1\nfi\n",
            addr = registry.addr
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The helper is this registry's (credHelpers) and the default store
    // (credsStore) for every other.
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"credHelpers": {{"{}": "rollcage-test"}}, "credsStore": "rollcage-test"}}"#,
            registry.addr
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::fs::remove_file(dir.path().join("rollcage.lock")).unwrap();
    let config = write_config(dir.path(), &private, "tls_ca = \"ca.pem\"");
    let cfg = config.to_str().unwrap();
    let fresh = dir.path().join("fresh-cache");
    let out = command(&fresh)
        .env("DOCKER_CONFIG", &docker)
        .env("PATH", &path)
        .args(["plugins", "lock", "-c", cfg])
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(
        asked()
            .iter()
            .any(|r| r.method == "POST" && r.subject == "ci"),
        "{:?}",
        asked()
    );
    assert!(!all(&out).contains(REFRESH_TOKEN), "{}", all(&out));
    // The same registry by another name (`localhost:PORT`) is another
    // registry to the Docker config: the store is asked, has nothing for
    // it, and the anonymous token does not open a private repository.
    let port = registry.addr.rsplit(':').next().unwrap();
    let renamed = format!("oci://localhost:{port}/team/provider:1");
    let out = command(&fresh)
        .env("DOCKER_CONFIG", &docker)
        .env("PATH", &path)
        .args(["plugins", "pull", &renamed, "--tls-ca", ca_arg])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_says(&out, "the registry wants credentials and none were given");

    // A strategy from this registry: granted nothing, it still has the CA
    // its download trusts (`registry_tls_ca`, the host's, not a grant).
    let ramp = dir.path().join("ramp.wasm");
    std::fs::write(&ramp, rollcage_builtins::get("canary").unwrap().wasm).unwrap();
    let ramp_ref = registry.reference("team/ramp:1");
    let out = cli(
        &[
            "plugins",
            "push",
            ramp.to_str().unwrap(),
            &ramp_ref,
            "--tls-ca",
            ca_arg,
            "--auth-env",
            "REGISTRY_LOGIN",
        ],
        &[("REGISTRY_LOGIN", &login)],
    );
    assert_ok(&out);
    let strategy_dir = dir.path().join("strategy");
    std::fs::create_dir_all(&strategy_dir).unwrap();
    std::fs::write(strategy_dir.join("ca.pem"), &ca.cert_pem).unwrap();
    let config = write_pipeline(
        &strategy_dir,
        file,
        "",
        &format!(
            "[plugins.ramp]\ncomponent = \"{ramp_ref}\"\nkind = \"strategy\"\nregistry_tls_ca = \"ca.pem\""
        ),
        "ramp",
        "",
    );
    let cfg = config.to_str().unwrap();
    let strategy_cache = dir.path().join("strategy-cache");
    for args in [
        vec!["plugins", "lock", "-c", cfg],
        vec!["run", "api", "-c", cfg, "--release", "1.0.0"],
    ] {
        let out = command(&strategy_cache)
            .env("DOCKER_CONFIG", &docker)
            .env("PATH", &path)
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", all(&out));
    }
    let out = show_latest_run(cfg, &strategy_cache);
    assert_prints(
        &out,
        &format!(
            "plugin ramp sha256:{}",
            sha256_hex(rollcage_builtins::get("canary").unwrap().wasm)
        ),
    );
}

/// A registry that keeps blobs in a storage bucket answers a blob request
/// with a redirect to a signed URL at another origin: the client follows
/// it without the registry's login, which is not the bucket's business.
#[test]
fn a_blob_redirect_to_storage_is_followed_without_the_registry_login() {
    let ca = TestCa::new("registry CA");
    let cert = ca.issue(&["127.0.0.1", "localhost"]);
    let (_, bytes) = provider_wasm();
    let config = b"{}".to_vec();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.wasm.config.v0+json",
            "digest": format!("sha256:{}", sha256_hex(&config)),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/wasm",
            "digest": format!("sha256:{}", sha256_hex(&bytes)),
            "size": bytes.len(),
        }],
    })
    .to_string()
    .into_bytes();
    let front = RedirectingRegistry::start(
        &cert,
        "team/provider",
        "1",
        manifest,
        vec![bytes.clone(), config],
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
    let ca_file = dir.path().join("ca.pem");
    let reference = format!("oci://localhost:{}/team/provider:1", front.port);
    let out = command(&cache)
        .env("DOCKER_CONFIG", dir.path())
        .env("REGISTRY_LOGIN", format!("{}:{}", LOGIN.0, LOGIN.1))
        .args([
            "plugins",
            "pull",
            &reference,
            "--tls-ca",
            ca_file.to_str().unwrap(),
            "--auth-env",
            "REGISTRY_LOGIN",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_prints(&out, &format!("component sha256:{}", sha256_hex(&bytes)));
    assert!(*front.redirected.lock().unwrap() >= 1);
    assert!(
        front.leaked.lock().unwrap().is_empty(),
        "the login went to storage at port {}: {:?}",
        front.storage_port,
        front.leaked.lock().unwrap()
    );
}

/// The Python of `.tools/venv` with oras-py, another registry client
/// (`.ci/run` installs it); or SKIPPED (a failure under CI=true).
fn oras_py() -> Option<PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/python");
    let found = python.is_file()
        && Command::new(&python)
            .args(["-c", "import oras.client"])
            .output()
            .is_ok_and(|o| o.status.success());
    if found {
        return Some(python);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("oras-py is not installed; .ci/run installs it in .tools/venv");
    }
    eprintln!("SKIPPED: no oras-py (.tools/venv/bin/python -m pip install oras==0.2.43)");
    None
}

/// A component pushed by oras-py, another registry client, as its own
/// code lays it out: with the Wasm config media type, and with none (its
/// default, `application/vnd.unknown.config.v1+json`). Both are locked and
/// run.
#[test]
fn a_component_pushed_by_oras_is_locked_and_run() {
    let Some(python) = oras_py() else {
        return;
    };
    let Some(registry) = Registry::start(Auth::None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (file, bytes) = provider_wasm();
    std::fs::copy(&file, dir.path().join("provider.wasm")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"architecture": "wasm", "os": "wasip2"}"#,
    )
    .unwrap();
    for (repo, config) in [
        (
            "oras/with-config",
            "\"config.json:application/vnd.wasm.config.v0+json\"",
        ),
        ("oras/plain", "None"),
    ] {
        let target = format!("{}/{repo}:1", registry.addr);
        let out = Command::new(&python)
            .current_dir(dir.path())
            .args([
                "-c",
                &format!(
                    "import oras.client\nr = oras.client.OrasClient(insecure=True).push(target={target:?}, files=['provider.wasm:application/wasm'], manifest_config={config})\nassert r.status_code == 201, r.text"
                ),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "oras-py: {}", all(&out));
        let manifest = stored_manifest(&registry, repo, "1");
        assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
        let reference = registry.reference(&format!("{repo}:1"));
        let repo_dir = dir.path().join(repo.replace('/', "-"));
        std::fs::create_dir_all(&repo_dir).unwrap();
        let config = write_config(&repo_dir, &reference, "insecure = true");
        let cfg = config.to_str().unwrap();
        for args in [
            vec!["plugins", "lock", "-c", cfg],
            vec!["run", "api", "-c", cfg, "--release", "1.0.0"],
        ] {
            let out = run(&args, &cache);
            assert!(out.status.success(), "{repo} {args:?}: {}", all(&out));
        }
        let lock = std::fs::read_to_string(repo_dir.join("rollcage.lock")).unwrap();
        assert!(
            lock.contains(&format!("digest = \"sha256:{}\"", sha256_hex(&bytes))),
            "{lock}"
        );
    }
}

/// Components pushed by other wasm tools load too: the layouts `wkg` (and
/// every tool built on the `oci-wasm` crate) and the `oras` CLI (OCI 1.1,
/// with an artifact type) write, and the older wasm layer media type, each
/// stored in the real registry as those tools send them, then checked,
/// locked and run.
#[test]
fn components_laid_out_by_other_wasm_tools_are_pulled_checked_and_run() {
    let Some(registry) = Registry::start(Auth::None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (_, bytes) = provider_wasm();
    let layer = format!("sha256:{}", sha256_hex(&bytes));
    // wkg / oci-wasm: the Wasm OCI config, with the component's WIT.
    let wkg_config = serde_json::json!({
        "created": "2026-11-30T12:00:00Z",
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer],
        "component": {
            "exports": ["rollcage:plugin/provider-api@0.2.0"],
            "imports": ["rollcage:plugin/host@0.2.0"],
            "target": null
        }
    })
    .to_string()
    .into_bytes();
    // oras (OCI 1.1): an artifact type, the empty config, a titled layer.
    let empty = b"{}".to_vec();
    let layouts = [
        (
            "wkg",
            wkg_config.clone(),
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.wasm.config.v0+json",
                    "digest": format!("sha256:{}", sha256_hex(&wkg_config)),
                    "size": wkg_config.len(),
                },
                "layers": [{"mediaType": "application/wasm", "digest": layer, "size": bytes.len()}],
                "annotations": {"org.opencontainers.image.created": "2026-11-30T12:00:00Z"},
            }),
        ),
        (
            "oras",
            empty.clone(),
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/vnd.wasm.component.v1+wasm",
                "config": {
                    "mediaType": "application/vnd.oci.empty.v1+json",
                    "digest": format!("sha256:{}", sha256_hex(&empty)),
                    "size": 2,
                    "data": "e30=",
                },
                "layers": [{
                    "mediaType": "application/wasm",
                    "digest": layer,
                    "size": bytes.len(),
                    "annotations": {"org.opencontainers.image.title": "provider.wasm"},
                }],
                "annotations": {"org.opencontainers.image.created": "2026-11-30T12:00:00Z"},
            }),
        ),
        (
            "older",
            empty.clone(),
            serde_json::json!({
                "schemaVersion": 2,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": format!("sha256:{}", sha256_hex(&empty)),
                    "size": 2,
                },
                "layers": [{
                    "mediaType": "application/vnd.wasm.content.layer.v1+wasm",
                    "digest": layer,
                    "size": bytes.len(),
                }],
            }),
        ),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rollcage_registry::OciClient::new(
        rollcage_registry::Transport::new(None)
            .unwrap()
            .with_plain_http(true),
        None,
    );
    for (tool, config, manifest) in &layouts {
        let reference = registry.reference(&format!("{tool}/provider:1"));
        let parsed = reference.parse().unwrap();
        rt.block_on(async {
            client.push_blob(&parsed, &bytes).await.unwrap();
            client.push_blob(&parsed, config).await.unwrap();
            client
                .put_manifest(
                    &parsed,
                    "application/vnd.oci.image.manifest.v1+json",
                    bytes::Bytes::from(manifest.to_string()),
                )
                .await
                .unwrap();
        });
        let out = run(&["plugins", "check", &reference, "--insecure"], &cache);
        assert!(out.status.success(), "{tool}: {}", all(&out));
        assert!(
            text(&out.stdout).contains("ok: the host can run this environment-provider plugin"),
            "{tool}: {}",
            all(&out)
        );
        let tool_dir = dir.path().join(tool);
        std::fs::create_dir_all(&tool_dir).unwrap();
        let config = write_config(&tool_dir, &reference, "insecure = true");
        let cfg = config.to_str().unwrap();
        for args in [
            vec!["plugins", "lock", "-c", cfg],
            vec!["run", "api", "-c", cfg, "--release", "1.0.0"],
        ] {
            let out = run(&args, &cache);
            assert!(out.status.success(), "{tool} {args:?}: {}", all(&out));
        }
    }
}
