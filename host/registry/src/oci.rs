//! A small client of the OCI distribution API for Wasm components, in the
//! CNCF Wasm OCI artifact layout that `wkg`, `oras` and other wasm tools
//! push: an image manifest whose config has media type
//! `application/vnd.wasm.config.v0+json` and whose one layer is the
//! component, `application/wasm`.
//!
//! Pull checks every digest it is given: the manifest's against a pinned
//! reference, the layer's bytes against the manifest. Push uploads the
//! config and the layer (monolithic POST then PUT), then the manifest.
//! Auth answers the registry's `WWW-Authenticate` challenge: Basic with the
//! credentials; or Bearer, with a bare token as it is, else through the
//! token service the challenge names: a GET with the login, the OAuth2
//! refresh-token POST with an identity token, or an anonymous GET when
//! there are no credentials (public repositories allow pulls that way).

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;
use rollcage_core::{Digest, OciReference};
use serde::{Deserialize, Serialize};

use crate::{Credentials, Transport, TransportError};

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Layer media types older wasm tools push, accepted on pull.
const OLDER_WASM_LAYER_TYPES: [&str; 3] = [
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
];
const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The annotation keys rollcage writes on push, beside the OCI ones.
pub const ANNOTATION_WIT: &str = "dev.rollcage.wit.version";
pub const ANNOTATION_KIND: &str = "dev.rollcage.plugin.kind";

/// Why a registry gave no component.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("registry unreachable: {0}")]
    Unreachable(#[from] TransportError),
    #[error("{url}: HTTP {status}{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error(
        "{url}: the registry wants credentials and none were given: set `registry_auth_secret`, or log in so the Docker config file (~/.docker/config.json) has them"
    )]
    NoCredentials { url: String },
    #[error("{url}: the registry refused the credentials ({detail})")]
    Unauthorized { url: String, detail: String },
    #[error("{reference}: the manifest has digest {actual}, not the expected {expected}")]
    ManifestMismatch {
        reference: String,
        expected: Digest,
        actual: Digest,
    },
    #[error(
        "{reference}: the component's bytes have digest {actual}, not the {expected} its manifest names"
    )]
    LayerMismatch {
        reference: String,
        expected: Digest,
        actual: Digest,
    },
    #[error(
        "{reference} is not a Wasm component artifact: expected an OCI image manifest with one `{WASM_LAYER_MEDIA_TYPE}` layer (config `{WASM_CONFIG_MEDIA_TYPE}`), found {found}"
    )]
    NotWasm { reference: String, found: String },
}

/// A component pulled and checked.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub manifest_digest: Digest,
    pub layer_digest: Digest,
    pub bytes: Vec<u8>,
}

/// What a push says about the component, beside its bytes.
#[derive(Debug, Clone, Default)]
pub struct PushAnnotations {
    /// Manifest annotations (`org.opencontainers.image.*`, rollcage's).
    pub annotations: BTreeMap<String, String>,
    /// The component's exported and imported interfaces, for the config.
    pub exports: Vec<String>,
    pub imports: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// A registry client for one set of credentials.
pub struct OciClient {
    transport: Transport,
    credentials: Option<Credentials>,
    /// The `Authorization` value that last worked (Basic, or a Bearer
    /// token from the token service), reused for the next requests.
    authorization: Mutex<Option<String>>,
}

impl OciClient {
    pub fn new(transport: Transport, credentials: Option<Credentials>) -> OciClient {
        OciClient {
            transport,
            credentials,
            authorization: Mutex::new(None),
        }
    }

    fn repo_url(&self, r: &OciReference) -> String {
        let scheme = if self.transport.plain_http() {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}/v2/{}", r.registry, r.repository)
    }

    /// Send a request, answering one auth challenge.
    async fn request(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(http::HeaderName, &str)],
        body: Bytes,
    ) -> Result<http::Response<Bytes>, OciError> {
        let build = |auth: Option<&str>| build_request(&method, url, headers, body.clone(), auth);
        let cached = self.authorization.lock().unwrap().clone();
        let response = self.transport.send(build(cached.as_deref())?).await?;
        if response.status() != http::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let auth = self.answer(url, &challenge).await?;
        let response = self.transport.send(build(Some(&auth))?).await?;
        if response.status() == http::StatusCode::UNAUTHORIZED {
            // Without credentials an anonymous token may allow a pull but
            // not this.
            if self.credentials.is_none() {
                return Err(OciError::NoCredentials { url: url.into() });
            }
            return Err(OciError::Unauthorized {
                url: url.into(),
                detail: "check the registry_auth_secret or the Docker config entry".into(),
            });
        }
        *self.authorization.lock().unwrap() = Some(auth);
        Ok(response)
    }

    /// Send a request to `url` with the registry's credentials if it is on
    /// the registry's own origin; elsewhere (a storage bucket's signed URL a
    /// blob redirects to, an upload location) without them.
    async fn request_at(
        &self,
        r: &OciReference,
        method: http::Method,
        url: &str,
        headers: &[(http::HeaderName, &str)],
        body: Bytes,
    ) -> Result<http::Response<Bytes>, OciError> {
        let repo = self.repo_url(r);
        let origin = &repo[..repo.find("/v2/").unwrap_or(repo.len())];
        if url.starts_with(&format!("{origin}/")) {
            return self.request(method, url, headers, body).await;
        }
        let request = build_request(&method, url, headers, body, None)?;
        Ok(self.transport.send(request).await?)
    }

    /// The `Authorization` value answering `challenge`.
    async fn answer(&self, url: &str, challenge: &str) -> Result<String, OciError> {
        let no_credentials = || OciError::NoCredentials { url: url.into() };
        let (scheme, params) = parse_challenge(challenge);
        if scheme.eq_ignore_ascii_case("basic") {
            return match &self.credentials {
                None => Err(no_credentials()),
                Some(Credentials::Token(t)) => Ok(format!("Bearer {t}")),
                Some(Credentials::IdentityToken(_)) => Err(OciError::Unauthorized {
                    url: url.into(),
                    detail: "the credentials are an identity token, which needs a token service, and the registry asks for a login (Basic)".into(),
                }),
                Some(c) => Ok(c.basic_header().expect("a login")),
            };
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(OciError::Unauthorized {
                url: url.into(),
                detail: format!("unknown auth scheme in `{challenge}`"),
            });
        }
        if let Some(Credentials::Token(t)) = &self.credentials {
            return Ok(format!("Bearer {t}"));
        }
        let realm = params.get("realm").ok_or_else(|| OciError::Unauthorized {
            url: url.into(),
            detail: format!("a Bearer challenge without a realm: `{challenge}`"),
        })?;
        let build_err = |token_url: &str, e: http::Error| OciError::Status {
            url: token_url.into(),
            status: 0,
            detail: e.to_string(),
        };
        // The token service: a GET with the login (or none, for anonymous
        // pulls of public repositories), or with an identity token the
        // OAuth2 refresh-token POST of the distribution token spec.
        let (token_url, request) = match &self.credentials {
            Some(Credentials::IdentityToken(refresh)) => {
                let mut form = String::from("grant_type=refresh_token&client_id=rollcage");
                for key in ["service", "scope"] {
                    if let Some(v) = params.get(key) {
                        form.push_str(&format!("&{key}={}", query_escape(v)));
                    }
                }
                form.push_str(&format!("&refresh_token={}", query_escape(refresh)));
                let request = http::Request::post(realm.as_str())
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(Bytes::from(form))
                    .map_err(|e| build_err(realm, e))?;
                (realm.clone(), request)
            }
            credentials => {
                let mut token_url = realm.clone();
                let mut sep = if realm.contains('?') { '&' } else { '?' };
                for key in ["service", "scope"] {
                    if let Some(v) = params.get(key) {
                        token_url.push(sep);
                        token_url.push_str(key);
                        token_url.push('=');
                        token_url.push_str(&query_escape(v));
                        sep = '&';
                    }
                }
                let mut request = http::Request::get(&token_url);
                if let Some(basic) = credentials.as_ref().and_then(|c| c.basic_header()) {
                    request = request.header(http::header::AUTHORIZATION, basic);
                }
                let request = request
                    .body(Bytes::new())
                    .map_err(|e| build_err(&token_url, e))?;
                (token_url, request)
            }
        };
        let response = self.transport.send(request).await?;
        let status = response.status();
        if self.credentials.is_none()
            && (status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN)
        {
            return Err(no_credentials());
        }
        if !status.is_success() {
            return Err(OciError::Unauthorized {
                url: token_url,
                detail: format!(
                    "the token service answered HTTP {}{}",
                    status.as_u16(),
                    if self.credentials.is_some() {
                        ": check the registry_auth_secret or the Docker config entry"
                    } else {
                        ""
                    }
                ),
            });
        }
        let body: serde_json::Value =
            serde_json::from_slice(response.body()).unwrap_or(serde_json::Value::Null);
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| OciError::Unauthorized {
                url: token_url.clone(),
                detail: "the token service gave no token".into(),
            })?;
        Ok(format!("Bearer {token}"))
    }

    /// The manifest `r` names, and its digest (checked against a pinned
    /// reference's).
    pub async fn resolve(&self, r: &OciReference) -> Result<(Digest, Bytes), OciError> {
        let url = format!("{}/manifests/{}", self.repo_url(r), r.manifest_reference());
        let accept = format!("{MANIFEST_MEDIA_TYPE}, {DOCKER_MANIFEST_MEDIA_TYPE}");
        let response = self
            .request(
                http::Method::GET,
                &url,
                &[(http::header::ACCEPT, &accept)],
                Bytes::new(),
            )
            .await?;
        let response = success(&url, response)?;
        let body = response.into_body();
        let actual = crate::digest_of(&body);
        if let Some(expected) = &r.digest
            && &actual != expected
        {
            return Err(OciError::ManifestMismatch {
                reference: r.to_string(),
                expected: expected.clone(),
                actual,
            });
        }
        Ok((actual, body))
    }

    /// The component `r` names, every digest checked.
    pub async fn pull(&self, r: &OciReference) -> Result<Pulled, OciError> {
        let (manifest_digest, body) = self.resolve(r).await?;
        let layer = wasm_layer(r, &body)?;
        let bytes = self.blob(r, &layer).await?;
        Ok(Pulled {
            manifest_digest,
            layer_digest: layer,
            bytes,
        })
    }

    /// A blob's bytes, if they have `digest`.
    async fn blob(&self, r: &OciReference, digest: &Digest) -> Result<Vec<u8>, OciError> {
        let mut url = format!("{}/blobs/{digest}", self.repo_url(r));
        for _ in 0..5 {
            let response = self
                .request_at(r, http::Method::GET, &url, &[], Bytes::new())
                .await?;
            if response.status().is_redirection()
                && let Some(next) = response
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
            {
                url = crate::https::join(&url, next);
                continue;
            }
            let bytes = success(&url, response)?.into_body().to_vec();
            let actual = crate::digest_of(&bytes);
            if &actual != digest {
                return Err(OciError::LayerMismatch {
                    reference: r.to_string(),
                    expected: digest.clone(),
                    actual,
                });
            }
            return Ok(bytes);
        }
        Err(OciError::Status {
            url,
            status: 310,
            detail: "more than five redirects".into(),
        })
    }

    /// Push `wasm` as `r` (its tag, or its digest), in the Wasm OCI
    /// artifact layout; the manifest's digest.
    pub async fn push(
        &self,
        r: &OciReference,
        wasm: &[u8],
        what: &PushAnnotations,
    ) -> Result<Digest, OciError> {
        let layer_digest = crate::digest_of(wasm);
        let created = what
            .annotations
            .get("org.opencontainers.image.created")
            .cloned()
            .unwrap_or_else(now_rfc3339);
        let config = serde_json::json!({
            "created": created,
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [layer_digest.to_string()],
            "component": { "exports": what.exports, "imports": what.imports },
        });
        let config = serde_json::to_vec(&config).expect("json");
        self.push_artifact(
            r,
            (WASM_CONFIG_MEDIA_TYPE, &config),
            &[(WASM_LAYER_MEDIA_TYPE, wasm)],
            &what.annotations,
        )
        .await
    }

    /// Push any artifact: a config blob and layers, each with its media
    /// type, then the image manifest naming them; the manifest's digest.
    pub async fn push_artifact(
        &self,
        r: &OciReference,
        config: (&str, &[u8]),
        layers: &[(&str, &[u8])],
        annotations: &BTreeMap<String, String>,
    ) -> Result<Digest, OciError> {
        let config_digest = self.push_blob(r, config.1).await?;
        let mut descriptors = Vec::new();
        for (media_type, bytes) in layers {
            let digest = self.push_blob(r, bytes).await?;
            descriptors.push(Descriptor {
                media_type: media_type.to_string(),
                digest: digest.to_string(),
                size: bytes.len() as u64,
            });
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.into()),
            artifact_type: None,
            config: Descriptor {
                media_type: config.0.into(),
                digest: config_digest.to_string(),
                size: config.1.len() as u64,
            },
            layers: descriptors,
            annotations: annotations.clone(),
        };
        let body = Bytes::from(serde_json::to_vec(&manifest).expect("json"));
        self.put_manifest(r, MANIFEST_MEDIA_TYPE, body).await
    }

    /// Store `body`, a manifest of `media_type` whose blobs are pushed
    /// already, as `r` (its tag, or its digest); the manifest's digest.
    pub async fn put_manifest(
        &self,
        r: &OciReference,
        media_type: &str,
        body: Bytes,
    ) -> Result<Digest, OciError> {
        let digest = crate::digest_of(&body);
        let url = format!("{}/manifests/{}", self.repo_url(r), r.manifest_reference());
        let response = self
            .request(
                http::Method::PUT,
                &url,
                &[(http::header::CONTENT_TYPE, media_type)],
                body,
            )
            .await?;
        success(&url, response)?;
        Ok(digest)
    }

    /// Upload `bytes` to `r`'s repository unless it has them; their digest.
    pub async fn push_blob(&self, r: &OciReference, bytes: &[u8]) -> Result<Digest, OciError> {
        let digest = crate::digest_of(bytes);
        let bytes = Bytes::copy_from_slice(bytes);
        let base = self.repo_url(r);
        let head_url = format!("{base}/blobs/{digest}");
        let head = self
            .request(http::Method::HEAD, &head_url, &[], Bytes::new())
            .await?;
        if head.status().is_success() {
            return Ok(digest);
        }
        let start_url = format!("{base}/blobs/uploads/");
        let started = self
            .request(http::Method::POST, &start_url, &[], Bytes::new())
            .await?;
        let started = success(&start_url, started)?;
        let location = started
            .headers()
            .get(http::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| OciError::Status {
                url: start_url.clone(),
                status: started.status().as_u16(),
                detail: "no Location for the upload".into(),
            })?;
        let mut put_url = crate::https::join(&start_url, location);
        put_url.push(if put_url.contains('?') { '&' } else { '?' });
        put_url.push_str(&format!("digest={}", query_escape(&digest.to_string())));
        let length = bytes.len().to_string();
        // An upload may go on at another origin (a storage service): the
        // registry's credentials stay with the registry.
        let done = self
            .request_at(
                r,
                http::Method::PUT,
                &put_url,
                &[
                    (http::header::CONTENT_TYPE, "application/octet-stream"),
                    (http::header::CONTENT_LENGTH, &length),
                ],
                bytes,
            )
            .await?;
        success(&put_url, done)?;
        Ok(digest)
    }
}

/// A request with `headers`, and `auth` as its `Authorization` if given.
fn build_request(
    method: &http::Method,
    url: &str,
    headers: &[(http::HeaderName, &str)],
    body: Bytes,
    auth: Option<&str>,
) -> Result<http::Request<Bytes>, OciError> {
    let mut b = http::Request::builder().method(method.clone()).uri(url);
    for (name, value) in headers {
        b = b.header(name, *value);
    }
    if let Some(auth) = auth {
        b = b.header(http::header::AUTHORIZATION, auth);
    }
    b.body(body).map_err(|e| OciError::Status {
        url: url.into(),
        status: 0,
        detail: e.to_string(),
    })
}

/// The digest of the one wasm layer of manifest `body`.
fn wasm_layer(r: &OciReference, body: &[u8]) -> Result<Digest, OciError> {
    let not_wasm = |found: String| OciError::NotWasm {
        reference: r.to_string(),
        found,
    };
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| not_wasm(format!("a manifest that is not JSON ({e})")))?;
    if value.get("manifests").is_some() {
        return Err(not_wasm("an image index (several platforms)".into()));
    }
    let manifest: Manifest = serde_json::from_value(value)
        .map_err(|e| not_wasm(format!("a manifest this client does not read ({e})")))?;
    let wasm: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|l| {
            l.media_type == WASM_LAYER_MEDIA_TYPE
                || OLDER_WASM_LAYER_TYPES.contains(&l.media_type.as_str())
        })
        .collect();
    match wasm.as_slice() {
        [layer] => layer
            .digest
            .parse()
            .map_err(|e| not_wasm(format!("a layer digest that does not parse ({e})"))),
        [] => Err(not_wasm(format!(
            "config `{}` and layers {}",
            manifest.config.media_type,
            if manifest.layers.is_empty() {
                "none".to_string()
            } else {
                manifest
                    .layers
                    .iter()
                    .map(|l| format!("`{}`", l.media_type))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))),
        several => Err(not_wasm(format!("{} wasm layers", several.len()))),
    }
}

fn success(url: &str, response: http::Response<Bytes>) -> Result<http::Response<Bytes>, OciError> {
    if response.status().is_success() {
        return Ok(response);
    }
    // Registries explain a failure in `{"errors": [{"code", "message"}]}`.
    let detail = serde_json::from_slice::<serde_json::Value>(response.body())
        .ok()
        .and_then(|v| {
            v.get("errors")?.as_array().map(|errors| {
                errors
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e.get("code").and_then(|c| c.as_str()).unwrap_or(""),
                            e.get("message").and_then(|m| m.as_str()).unwrap_or("")
                        )
                        .trim()
                        .to_string()
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .unwrap_or_default();
    Err(OciError::Status {
        url: url.into(),
        status: response.status().as_u16(),
        detail,
    })
}

/// `Bearer realm="...",service="...",scope="..."` as its scheme and params.
fn parse_challenge(header: &str) -> (String, BTreeMap<String, String>) {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = BTreeMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(key, value.to_string());
        rest = after.trim_start_matches(',').trim();
    }
    (scheme.to_string(), params)
}

fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The time now, as RFC 3339 in UTC.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_challenge_gives_realm_service_and_scope() {
        let (scheme, p) = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:team/a:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(p["realm"], "https://auth.example.com/token");
        assert_eq!(p["service"], "registry.example.com");
        assert_eq!(p["scope"], "repository:team/a:pull,push");
        let (scheme, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(scheme, "Basic");
        assert_eq!(p["realm"], "Registry Realm");
    }

    #[test]
    fn the_wasm_layer_is_found_or_its_absence_told() {
        let r: OciReference = "oci://127.0.0.1:5000/a:1".parse().unwrap();
        let d = crate::digest_of(b"w");
        let manifest = |layer_type: &str| {
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST_MEDIA_TYPE,
                "config": {"mediaType": WASM_CONFIG_MEDIA_TYPE, "digest": d.to_string(), "size": 1},
                "layers": [{"mediaType": layer_type, "digest": d.to_string(), "size": 1}],
            })
            .to_string()
        };
        assert_eq!(
            wasm_layer(&r, manifest(WASM_LAYER_MEDIA_TYPE).as_bytes()).unwrap(),
            d
        );
        assert_eq!(
            wasm_layer(
                &r,
                manifest("application/vnd.wasm.content.layer.v1+wasm").as_bytes()
            )
            .unwrap(),
            d
        );
        let e = wasm_layer(
            &r,
            manifest("application/vnd.oci.image.layer.v1.tar+gzip").as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("oci://127.0.0.1:5000/a:1 is not a Wasm component artifact"),
            "{e}"
        );
        assert!(
            e.contains("application/vnd.oci.image.layer.v1.tar+gzip"),
            "{e}"
        );
    }
}
