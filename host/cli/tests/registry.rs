//! Plugins from registries, end to end against a real OCI registry (the
//! CNCF distribution `docker-registry`, started on loopback with a
//! temporary storage folder) and a local HTTPS file server: push, lock,
//! run; a moved tag and a tampered blob refused; a registry that is down
//! (a clear error, while the cached, locked component still runs); auth
//! required and given (a secret, the Docker config file); URL sources with
//! the right and the wrong sha256; an artifact that is not a component.
//!
//! Without `docker-registry` (and `htpasswd` for the auth case) the
//! registry tests print SKIPPED, except in CI (`CI=true`), where they fail.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rollcage_kube_standin::pki::{ServerCert, TestCa};

mod common;
use common::{command, text};

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

impl Registry {
    /// Plain HTTP, no auth; or with `auth` an htpasswd login and TLS.
    fn start(auth: Option<(&str, &str, &ServerCert)>) -> Option<Registry> {
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
        if let Some((user, password, cert)) = auth {
            let htpasswd = tool("htpasswd", "apache2-utils")?;
            let out = Command::new(htpasswd)
                .args(["-nbB", user, password])
                .output()
                .unwrap();
            assert!(out.status.success(), "htpasswd: {}", text(&out.stderr));
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            std::fs::write(dir.path().join("cert.pem"), &cert.cert_pem).unwrap();
            std::fs::write(dir.path().join("key.pem"), &cert.key_pem).unwrap();
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                dir.path().join("cert.pem").display(),
                dir.path().join("key.pem").display(),
                file.display()
            ));
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

/// A pipeline whose provider is `component` (the static-provider fixture
/// from a registry or URL), with `extra` keys beside it.
fn write_config(dir: &Path, component: &str, extra: &str) -> PathBuf {
    let path = dir.join("rollcage.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
database = "sqlite://runs.db"

[plugins.platform]
component = "{component}"
{extra}
config = {{ slot = "1.0.0", release = "1.0.0", endpoint = "127.0.0.1:1" }}

[environments.staging]
provider = "platform"
replicas = 1
strategy = {{ plugin = "canary", steps = [50, 100] }}

[pipelines.api]
stages = ["staging"]
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

#[test]
fn a_pushed_plugin_is_locked_and_runs_from_the_registry_even_when_it_is_down() {
    let Some(mut registry) = Registry::start(None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (file, bytes) = provider_wasm();
    let reference = registry.reference("team/static-provider:1.0");

    let out = push(&file, &reference, &["--insecure"], &cache);
    assert!(out.status.success(), "{}", all(&out));
    assert!(
        text(&out.stdout).contains("(environment-provider, rollcage:plugin@"),
        "{}",
        all(&out)
    );
    assert!(text(&out.stdout).contains(&format!("component sha256:{}", sha256_hex(&bytes))));

    let config = write_config(dir.path(), &reference, "insecure = true");
    let cfg = config.to_str().unwrap();
    // Not locked yet: refused, saying what to do.
    let out = run(&["config", "check", cfg], &cache);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert!(
        all(&out).contains(&format!(
            "plugin `platform` ({reference}): not in {}: run `rollcage plugins lock`",
            dir.path().join("rollcage.lock").display()
        )),
        "{}",
        all(&out)
    );

    let out = run(&["plugins", "lock", "-c", cfg], &cache);
    assert!(out.status.success(), "{}", all(&out));
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
    assert!(out.status.success(), "{}", all(&out));

    let out = run(&["run", "api", "-c", cfg, "--release", "1.0.0"], &cache);
    assert!(out.status.success(), "{}", all(&out));
    let out = show_latest_run(cfg, &cache);
    assert!(
        text(&out.stdout).contains(&format!("plugin platform sha256:{}", sha256_hex(&bytes))),
        "{}",
        all(&out)
    );
    // Builtins are recorded too, by the digest of their bytes.
    let canary = rollcage_builtins::get("canary").unwrap().wasm;
    assert!(
        text(&out.stdout).contains(&format!("plugin canary sha256:{}", sha256_hex(canary))),
        "{}",
        all(&out)
    );

    // The registry goes away: fetching says so; the cached, locked
    // component still runs.
    registry.stop();
    let out = run(&["plugins", "pull", &reference, "--insecure"], &cache);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(all(&out).contains("registry unreachable"), "{}", all(&out));
    assert!(
        all(&out).contains("cannot connect to 127.0.0.1"),
        "{}",
        all(&out)
    );
    let out = run(&["plugins", "lock", "-c", cfg], &cache);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(
        all(&out).contains(&format!(
            "plugin `platform` ({reference}): registry unreachable"
        )),
        "{}",
        all(&out)
    );
    let out = run(&["run", "api", "-c", cfg, "--release", "1.0.0"], &cache);
    assert!(out.status.success(), "{}", all(&out));
    // Without the cache, the locked component cannot be had: a clear error.
    let empty = dir.path().join("empty-cache");
    let out = run(&["run", "api", "-c", cfg, "--release", "1.0.0"], &empty);
    assert!(!out.status.success());
    assert!(
        all(&out).contains(&format!(
            "plugin `platform` ({reference}): registry unreachable"
        )),
        "{}",
        all(&out)
    );
}

#[test]
fn a_moved_tag_or_a_tampered_blob_is_refused_naming_both_digests() {
    let Some(registry) = Registry::start(None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (file, bytes) = provider_wasm();
    let reference = registry.reference("team/provider:stable");
    let out = push(&file, &reference, &["--insecure"], &cache);
    assert!(out.status.success(), "{}", all(&out));
    let config = write_config(dir.path(), &reference, "insecure = true");
    let cfg = config.to_str().unwrap();
    let out = run(&["plugins", "lock", "-c", cfg], &cache);
    assert!(out.status.success(), "{}", all(&out));
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
    assert!(out.status.success(), "{}", all(&out));
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
    assert!(all(&out).contains("is out of date"), "{}", all(&out));
    let fresh = dir.path().join("fresh-cache");
    let out = run(&["config", "check", cfg], &fresh);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert!(
        all(&out).contains(&format!(
            "plugin `platform` ({reference}): the tag now names manifest {moved}, rollcage.lock pins {locked_manifest}"
        )),
        "{}",
        all(&out)
    );
    // The host that has it cached runs the locked component still.
    let out = run(&["config", "check", cfg], &cache);
    assert!(out.status.success(), "{}", all(&out));

    // A blob whose bytes are not its digest is refused before anything
    // compiles it.
    let hex = sha256_hex(&bytes);
    let blob = registry.blob_file(&hex);
    let mut tampered = bytes.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    std::fs::write(&blob, &tampered).unwrap();
    let pinned = format!("oci://{}/team/provider@{locked_manifest}", registry.addr);
    let out = run(&["plugins", "pull", &pinned, "--insecure"], &fresh);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(
        all(&out).contains(&format!(
            "the component's bytes have digest sha256:{}, not the sha256:{hex} its manifest names",
            sha256_hex(&tampered)
        )),
        "{}",
        all(&out)
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
    let Some(registry) = Registry::start(None) else {
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
    assert!(
        all(&out).contains(&format!(
            "plugin `platform` ({image}): {image} is not a Wasm component artifact: expected an OCI image manifest with one `application/wasm` layer (config `application/vnd.wasm.config.v0+json`), found config `application/vnd.oci.image.config.v1+json` and layers `application/vnd.oci.image.layer.v1.tar+gzip`"
        )),
        "{}",
        all(&out)
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
    assert!(
        all(&out).contains("not a WebAssembly file"),
        "{}",
        all(&out)
    );
}

#[test]
fn a_registry_that_wants_a_login_takes_a_secret_or_the_docker_config() {
    let ca = TestCa::new("registry CA");
    let cert = ca.issue(&["127.0.0.1", "localhost"]);
    let Some(registry) = Registry::start(Some(("ci", "s3cret", &cert))) else {
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
    assert!(
        all(&out).contains("the registry wants credentials and none were given"),
        "{}",
        all(&out)
    );
    let out = push_with(
        &["--auth-env", "REGISTRY_LOGIN"],
        &[("REGISTRY_LOGIN", "ci:wrong")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(
        all(&out).contains("the registry refused the credentials"),
        "{}",
        all(&out)
    );
    assert!(!all(&out).contains("wrong"), "{}", all(&out));
    let out = push_with(
        &["--auth-env", "REGISTRY_LOGIN"],
        &[("REGISTRY_LOGIN", "ci:s3cret")],
    );
    assert!(out.status.success(), "{}", all(&out));

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
    assert!(out.status.success(), "{}", all(&out));
    let out = command(&cache)
        .env("DOCKER_CONFIG", &docker)
        .env("REGISTRY_LOGIN", "ci:s3cret")
        .args(["run", "api", "-c", cfg, "--release", "1.0.0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", all(&out));

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
    assert!(all(&out).contains("none were given"), "{}", all(&out));
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
    assert!(out.status.success(), "{}", all(&out));
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
    assert!(
        all(&out).contains(&format!(
            "plugin `platform`: {url}: the file has digest sha256:{right}, not the expected sha256:{wrong}"
        )),
        "{}",
        all(&out)
    );

    write_config(
        dir.path(),
        &url,
        &format!("sha256 = \"{right}\"\ntls_ca = \"ca.pem\""),
    );
    let out = run(&["plugins", "lock", "-c", cfg], &cache);
    assert!(out.status.success(), "{}", all(&out));
    let out = run(&["run", "api", "-c", cfg, "--release", "1.0.0"], &cache);
    assert!(out.status.success(), "{}", all(&out));

    // The file at the URL changes: a host without it cached refuses it.
    let mut changed = bytes.clone();
    changed.extend_from_slice(b"\0");
    *server.body.lock().unwrap() = changed.clone();
    let fresh = dir.path().join("fresh-cache");
    let out = run(&["config", "check", cfg], &fresh);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert!(
        all(&out).contains(&format!(
            "the file has digest sha256:{}, not the expected sha256:{right}",
            sha256_hex(&changed)
        )),
        "{}",
        all(&out)
    );
    // Without the private CA the server is not trusted.
    let config = write_config(dir.path(), &url, &format!("sha256 = \"{right}\""));
    let out = run(&["plugins", "lock", "-c", config.to_str().unwrap()], &fresh);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(
        all(&out).contains("TLS handshake with localhost"),
        "{}",
        all(&out)
    );
}

/// The operator's whole path, as the README tells it: a plugin made with
/// `rollcage plugins new` and built with its own `build.sh` is pushed,
/// locked and run from the registry, and the run records its digest.
#[test]
fn a_plugin_made_by_plugins_new_is_pushed_locked_and_run_from_the_registry() {
    let Some(registry) = Registry::start(None) else {
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
    assert!(out.status.success(), "{}", all(&out));
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
    assert!(out.status.success(), "{}", all(&out));
    assert!(
        text(&out.stdout).contains("(notifier, rollcage:plugin@"),
        "{}",
        all(&out)
    );

    let (provider, _) = provider_wasm();
    let config = dir.path().join("rollcage.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
database = "sqlite://runs.db"

[plugins.platform]
component = "{provider}"
config = {{ slot = "1.0.0", release = "1.0.0", endpoint = "127.0.0.1:1" }}

[plugins.deploy-log]
component = "{reference}"
insecure = true
config = {{ prefix = "from-the-registry" }}

[environments.staging]
provider = "platform"
replicas = 1
strategy = {{ plugin = "canary", steps = [50, 100] }}

[pipelines.api]
stages = ["staging"]
notify = ["deploy-log"]
"#,
            provider = provider.display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let out = run(&["plugins", "lock", "-c", cfg], &cache);
    assert!(out.status.success(), "{}", all(&out));
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
    assert!(out.status.success(), "{}", all(&out));
    // The plugin from the registry told of the run, in its own words.
    assert!(
        all(&out).contains("from-the-registry: api 1.0.0 in staging"),
        "{}",
        all(&out)
    );
    let out = show_latest_run(cfg, &cache);
    assert!(
        text(&out.stdout).contains(&format!("plugin deploy-log sha256:{}", sha256_hex(&bytes))),
        "{}",
        all(&out)
    );
}
