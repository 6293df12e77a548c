//! Servers around the real registry in the registry tests:
//!
//! * [`TokenService`]: a token service of the distribution token spec
//!   (the realm a registry's Bearer challenge names), on HTTPS. It takes a
//!   login (GET with HTTP Basic), a refresh token (the OAuth2 POST), or
//!   nobody, and answers JSON Web Tokens signed with ES256 whose `x5c`
//!   chain the registry verifies against the signing CA it trusts. `ci`
//!   may pull and push everything; anybody may pull `public/...`.
//! * [`RedirectingRegistry`]: a registry that keeps its blobs elsewhere, as
//!   one backed by a storage bucket does: a login is needed for every
//!   `/v2/` request, and a blob is a redirect to another origin that
//!   refuses any request carrying credentials.
//!
//! Both record what they were asked, so tests can check what a client
//! sent, not only that it got through.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::http;
use rollcage_kube_standin::pki::{ServerCert, TestCa};
use rollcage_kube_standin::tls::{Body, spawn_https};

/// The `iss` of the tokens, which the registry is told to trust.
pub const TOKEN_ISSUER: &str = "rollcage-test-issuer";
/// The `aud` of the tokens: the registry's service name.
pub const TOKEN_AUDIENCE: &str = "rollcage-test-registry";
/// The login the token service takes.
pub const LOGIN: (&str, &str) = ("ci", "s3cret");
/// The refresh token (identity token) the token service takes for `ci`.
pub const REFRESH_TOKEN: &str = "refresh-ci-7f3a";

fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(
            http_body_util::Full::new(body.into())
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

fn der_of_pem(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("PEM")
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What a client asked the token service.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub method: String,
    /// `ci`, or `anonymous`.
    pub subject: String,
    pub scope: String,
}

/// Signs tokens: an ES256 key and the certificate chain naming it.
struct Signer {
    key: ring::signature::EcdsaKeyPair,
    x5c: String,
}

impl Signer {
    fn token(&self, subject: &str, access: serde_json::Value) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]});
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": TOKEN_AUDIENCE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("{subject}-{now}-{}", rand_suffix()),
            "access": access,
        });
        let signed = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let rng = ring::rand::SystemRandom::new();
        let signature = self.key.sign(&rng, signed.as_bytes()).expect("a signature");
        format!("{signed}.{}", b64url(signature.as_ref()))
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The token service. Dropping it stops it.
pub struct TokenService {
    pub port: u16,
    /// The CA that signed the token-signing certificate: what the registry
    /// is configured to trust (`rootcertbundle`).
    pub signer_ca_pem: String,
    pub requests: Arc<Mutex<Vec<TokenRequest>>>,
    signer: Arc<Signer>,
    _rt: tokio::runtime::Runtime,
}

impl TokenService {
    /// A token service presenting `cert` (a server certificate for
    /// `localhost` of the test's CA).
    pub fn start(cert: &ServerCert) -> TokenService {
        let signer_ca = TestCa::new("token signer CA");
        let signing = signer_ca.issue(&["token-signer"]);
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &der_of_pem(&signing.key_pem),
            &rng,
        )
        .expect("a P-256 key");
        let signer = Arc::new(Signer {
            key,
            x5c: base64::engine::general_purpose::STANDARD.encode(der_of_pem(&signing.cert_pem)),
        });
        let requests = Arc::new(Mutex::new(Vec::new()));
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = cert.server_config();
        let (seen, sign) = (requests.clone(), signer.clone());
        rt.spawn(async move {
            spawn_https(listener, config, move |req| {
                let (seen, sign) = (seen.clone(), sign.clone());
                async move { answer_token(req, &seen, &sign).await }
            });
        });
        TokenService {
            port,
            signer_ca_pem: signer_ca.cert_pem,
            requests,
            signer,
            _rt: rt,
        }
    }

    /// The URL a registry's challenge names.
    pub fn realm(&self) -> String {
        format!("https://localhost:{}/token", self.port)
    }

    /// A token for `ci` to pull and push `repository`, made outside any
    /// request: what an operator would keep as a bare token.
    pub fn token_for(&self, repository: &str) -> String {
        self.signer.token(
            "ci",
            serde_json::json!([{"type": "repository", "name": repository, "actions": ["pull", "push"]}]),
        )
    }
}

async fn answer_token(
    req: http::Request<hyper::body::Incoming>,
    seen: &Mutex<Vec<TokenRequest>>,
    signer: &Signer,
) -> http::Response<Body> {
    let method = req.method().to_string();
    let basic = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let params = if method == "POST" { &form } else { &query };
    let denied = || respond(401, "application/json", r#"{"details":"bad credentials"}"#);
    if params.get("service").map(String::as_str) != Some(TOKEN_AUDIENCE) {
        return respond(400, "application/json", r#"{"details":"unknown service"}"#);
    }
    let subject = match (method.as_str(), &basic) {
        ("POST", _) => {
            if form.get("grant_type").map(String::as_str) != Some("refresh_token")
                || form.get("refresh_token").map(String::as_str) != Some(REFRESH_TOKEN)
            {
                return denied();
            }
            "ci"
        }
        (_, Some(login)) if login == &format!("{}:{}", LOGIN.0, LOGIN.1) => "ci",
        (_, Some(_)) => return denied(),
        (_, None) => "anonymous",
    };
    let scope = params.get("scope").cloned().unwrap_or_default();
    seen.lock().unwrap().push(TokenRequest {
        method,
        subject: subject.to_string(),
        scope: scope.clone(),
    });
    // `repository:NAME:ACTIONS`: `ci` gets what it asks; anybody may pull
    // a public repository; anything else is granted nothing (the registry
    // then refuses the request, as a real token service's policy does).
    let mut access = Vec::new();
    if let Some(rest) = scope.strip_prefix("repository:")
        && let Some((name, actions)) = rest.rsplit_once(':')
    {
        let granted: Vec<&str> = actions
            .split(',')
            .filter(|a| subject == "ci" || (*a == "pull" && name.starts_with("public/")))
            .collect();
        if !granted.is_empty() {
            access
                .push(serde_json::json!({"type": "repository", "name": name, "actions": granted}));
        }
    }
    let token = signer.token(subject, serde_json::Value::Array(access));
    respond(
        200,
        "application/json",
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string(),
    )
}

/// A registry whose blobs live at another origin. Dropping it stops it.
pub struct RedirectingRegistry {
    pub port: u16,
    pub storage_port: u16,
    /// Requests that reached the storage origin with credentials on them.
    pub leaked: Arc<Mutex<Vec<String>>>,
    /// Blob requests the registry answered with a redirect.
    pub redirected: Arc<Mutex<u32>>,
    _rt: tokio::runtime::Runtime,
}

impl RedirectingRegistry {
    /// Serve `manifest` (an image manifest) as `repository:tag`, and each
    /// of `blobs` from the storage origin, to the login [`LOGIN`].
    pub fn start(
        cert: &ServerCert,
        repository: &str,
        tag: &str,
        manifest: Vec<u8>,
        blobs: Vec<Vec<u8>>,
    ) -> RedirectingRegistry {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let bind = || {
            rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap()
        };
        let (front, storage) = (bind(), bind());
        let port = front.local_addr().unwrap().port();
        let storage_port = storage.local_addr().unwrap().port();
        let blobs: Arc<BTreeMap<String, Vec<u8>>> = Arc::new(
            blobs
                .into_iter()
                .map(|b| (rollcage_registry::digest_of(&b).hex().to_string(), b))
                .collect(),
        );
        let leaked = Arc::new(Mutex::new(Vec::new()));
        let redirected = Arc::new(Mutex::new(0));

        let config = cert.server_config();
        let (stored, seen) = (blobs.clone(), leaked.clone());
        rt.spawn(async move {
            spawn_https(storage, config, move |req| {
                let (stored, seen) = (stored.clone(), seen.clone());
                async move {
                    let path = req.uri().path().to_string();
                    if req.headers().contains_key(http::header::AUTHORIZATION) {
                        seen.lock().unwrap().push(path);
                        return respond(400, "text/plain", "credentials sent to storage");
                    }
                    let hex = path.trim_start_matches("/bucket/");
                    match stored.get(hex) {
                        Some(b) => respond(200, "application/octet-stream", b.clone()),
                        None => respond(404, "text/plain", "no such object"),
                    }
                }
            });
        });

        let config = cert.server_config();
        let manifest = Bytes::from(manifest);
        let (repository, tag) = (repository.to_string(), tag.to_string());
        let count = redirected.clone();
        rt.spawn(async move {
            spawn_https(front, config, move |req| {
                let (manifest, repository, tag, count) = (
                    manifest.clone(),
                    repository.clone(),
                    tag.clone(),
                    count.clone(),
                );
                async move {
                    let login = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("{}:{}", LOGIN.0, LOGIN.1))
                    );
                    let authorized = req
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .is_some_and(|v| v.as_bytes() == login.as_bytes());
                    if !authorized {
                        let mut r = respond(401, "application/json", r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#);
                        r.headers_mut().insert(
                            http::header::WWW_AUTHENTICATE,
                            http::HeaderValue::from_static("Basic realm=\"stand-in\""),
                        );
                        return r;
                    }
                    let path = req.uri().path();
                    let base = format!("/v2/{repository}");
                    if path == format!("{base}/manifests/{tag}") {
                        return respond(
                            200,
                            "application/vnd.oci.image.manifest.v1+json",
                            manifest,
                        );
                    }
                    if let Some(digest) = path.strip_prefix(&format!("{base}/blobs/sha256:")) {
                        *count.lock().unwrap() += 1;
                        let mut r = respond(307, "text/plain", "");
                        r.headers_mut().insert(
                            http::header::LOCATION,
                            format!(
                                "https://localhost:{storage_port}/bucket/{digest}?X-Amz-Signature=abc"
                            )
                            .parse()
                            .unwrap(),
                        );
                        return r;
                    }
                    respond(404, "application/json", r#"{"errors":[{"code":"NAME_UNKNOWN"}]}"#)
                }
            });
        });
        RedirectingRegistry {
            port,
            storage_port,
            leaked,
            redirected,
            _rt: rt,
        }
    }
}
