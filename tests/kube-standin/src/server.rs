//! The HTTP side of the stand-in: bearer authentication, RBAC denials,
//! injected faults, routing to discovery and resources, watches, and the
//! log of every request.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};

use crate::meta::{self, ApiError, Resource};
use crate::sim::{Sim, Timing};
use crate::store::{Manage, Store, json_patch, key, merge_patch};
use crate::tls::Body;

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    /// The verb RBAC would see: get, list, watch, create, update, patch, delete.
    pub verb: String,
    /// The resource plural (with `/status` or `/log` for a subresource).
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub status: u16,
    /// The request body, when it was JSON.
    pub body: Option<Value>,
}

/// A fault to inject into matching requests.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Only requests with this method (`PUT`), or any.
    pub method: Option<String>,
    /// Only requests whose path contains this.
    pub path_contains: String,
    pub kind: FaultKind,
    /// How many matching requests it hits.
    pub times: u32,
}

#[derive(Debug, Clone)]
pub enum FaultKind {
    /// 409 Conflict, as if another writer won the race.
    Conflict,
    /// 429 with `Retry-After` (seconds).
    TooManyRequests { retry_after: u32 },
    /// 503 Service Unavailable.
    Unavailable,
    /// Answer after this long.
    Slow(Duration),
}

pub struct Shared {
    pub store: Mutex<Store>,
    pub sim: Mutex<Sim>,
    pub timing: Timing,
    pub token: String,
    /// The user the token authenticates, for messages.
    pub user: String,
    pub faults: Mutex<Vec<Fault>>,
    pub requests: Mutex<Vec<Logged>>,
    /// `(namespace, verb, resource)` the token may not do.
    pub denied: Mutex<Vec<(String, String, String)>>,
}

fn whole(status: u16, content_type: &str, body: impl Into<Bytes>) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(
            Full::new(body.into())
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

fn json_response(status: u16, v: &Value) -> http::Response<Body> {
    whole(status, "application/json", v.to_string())
}

fn error_response(e: &ApiError) -> http::Response<Body> {
    let mut r = json_response(e.code, &e.body());
    if let Some(secs) = e.retry_after {
        r.headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    r
}

/// Where a request goes.
enum Route {
    Discovery(Value),
    Resource {
        r: &'static Resource,
        namespace: String,
        name: String,
        sub: String,
    },
    NotFound,
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => return Route::Discovery(meta::version()),
        ["api"] => return Route::Discovery(meta::core_versions()),
        ["apis"] => return Route::Discovery(meta::group_list()),
        ["apis", g] => return meta::group(g).map_or(Route::NotFound, Route::Discovery),
        ["api", "v1"] => return Route::Discovery(meta::resource_list("", "v1").unwrap()),
        ["apis", g, v] => {
            return meta::resource_list(g, v).map_or(Route::NotFound, Route::Discovery);
        }
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return Route::NotFound,
    };
    // namespaces/{ns}/{plural}[/{name}[/{sub}]] or {plural}[/{name}[/{sub}]]
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, more @ ..]
            if meta::resource(group, version, plural).is_some() =>
        {
            (ns.to_string(), [&[*plural][..], more].concat())
        }
        _ => (String::new(), rest.to_vec()),
    };
    let Some(r) = rest.first().and_then(|p| meta::resource(group, version, p)) else {
        return Route::NotFound;
    };
    Route::Resource {
        r,
        namespace,
        name: rest.get(1).map(|s| s.to_string()).unwrap_or_default(),
        sub: rest.get(2).map(|s| s.to_string()).unwrap_or_default(),
    }
}

fn query_map(query: &str) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// Whether `obj` matches a label selector (`a=b,c!=d,e`) and a field
/// selector (`metadata.name=x`).
fn selected(obj: &Value, labels: Option<&String>, fields: Option<&String>) -> bool {
    let label_ok = labels.is_none_or(|sel| {
        sel.split(',').filter(|s| !s.is_empty()).all(|term| {
            let l = &obj["metadata"]["labels"];
            if let Some((k, v)) = term.split_once("!=") {
                l[k.trim()].as_str() != Some(v.trim())
            } else if let Some((k, v)) = term.split_once('=') {
                l[k.trim()].as_str() == Some(v.trim_start_matches('=').trim())
            } else {
                !l[term.trim()].is_null()
            }
        })
    });
    let field_ok = fields.is_none_or(|sel| {
        sel.split(',').filter(|s| !s.is_empty()).all(|term| {
            let Some((k, v)) = term.split_once('=') else {
                return false;
            };
            let v = v.trim_start_matches('=');
            let pointer = format!("/{}", k.replace('.', "/"));
            obj.pointer(&pointer).and_then(Value::as_str) == Some(v)
        })
    });
    label_ok && field_ok
}

impl Shared {
    pub async fn handle(self: Arc<Self>, req: http::Request<Incoming>) -> http::Response<Body> {
        let (parts, body) = req.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let mut logged = Logged {
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            verb: String::new(),
            resource: String::new(),
            namespace: String::new(),
            name: String::new(),
            status: 0,
            body: serde_json::from_slice(&bytes).ok(),
        };
        let response = self
            .clone()
            .answer(&parts, &bytes, &path, &query, &content_type, &mut logged)
            .await;
        logged.status = response.status().as_u16();
        self.requests.lock().unwrap().push(logged);
        response
    }

    async fn answer(
        self: Arc<Self>,
        parts: &http::request::Parts,
        bytes: &[u8],
        path: &str,
        query: &str,
        content_type: &str,
        logged: &mut Logged,
    ) -> http::Response<Body> {
        if path == "/version" || path == "/healthz" || path == "/readyz" {
            return json_response(200, &meta::version());
        }
        let bearer = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer != Some(self.token.as_str()) {
            return error_response(&ApiError::new(401, "Unauthorized", "Unauthorized"));
        }
        let (r, namespace, name, sub) = match route(path) {
            Route::Discovery(doc) => return json_response(200, &doc),
            Route::NotFound => {
                return error_response(&ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ));
            }
            Route::Resource {
                r,
                namespace,
                name,
                sub,
            } => (r, namespace, name, sub),
        };
        let q = query_map(query);
        let method = parts.method.as_str();
        let verb = match (method, name.is_empty()) {
            ("GET", true) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
            ("GET", true) => "list",
            ("GET", false) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", _) => "delete",
            _ => "unknown",
        };
        logged.verb = verb.to_string();
        logged.resource = if sub.is_empty() {
            r.plural.to_string()
        } else {
            format!("{}/{sub}", r.plural)
        };
        logged.namespace = namespace.clone();
        logged.name = name.clone();

        let denied = self
            .denied
            .lock()
            .unwrap()
            .iter()
            .any(|(ns, v, res)| *ns == namespace && v == verb && *res == logged.resource);
        if denied {
            return error_response(&ApiError::forbidden(r, &name, verb, &self.user, &namespace));
        }
        if let Some(response) = self.fault(method, path, r, &name).await {
            return response;
        }

        if !sub.is_empty() && sub != "status" && !(r.plural == "pods" && sub == "log") {
            return error_response(&ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
        let manager = q.get("fieldManager").cloned().unwrap_or_else(|| {
            parts
                .headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .and_then(|ua| ua.split('/').next())
                .unwrap_or("unknown")
                .to_string()
        });
        match verb {
            "watch" => self.watch(r, &namespace, &q),
            "list" => {
                let store = self.store.lock().unwrap();
                let items: Vec<Value> = store
                    .list(r.plural, &namespace)
                    .into_iter()
                    .map(|(_, v)| v.clone())
                    .filter(|v| selected(v, q.get("labelSelector"), q.get("fieldSelector")))
                    .collect();
                json_response(
                    200,
                    &json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(),
                        "metadata": {"resourceVersion": store.resource_version().to_string()}, "items": items}),
                )
            }
            "get" if sub == "log" => {
                let sim = self.sim.lock().unwrap();
                let Some(log) = sim.logs.get(&key(r, &namespace, &name)) else {
                    return error_response(&ApiError::new(
                        400,
                        "BadRequest",
                        format!(
                            "container in pod \"{name}\" is waiting to start: ContainerCreating"
                        ),
                    ));
                };
                let tail: Option<usize> = q.get("tailLines").and_then(|n| n.parse().ok());
                let lines: Vec<&str> = log.lines().collect();
                let from = tail.map_or(0, |t| lines.len().saturating_sub(t));
                let mut text = lines[from..].join("\n");
                text.push('\n');
                whole(200, "text/plain", text)
            }
            "get" => match self.store.lock().unwrap().get(&key(r, &namespace, &name)) {
                Some(v) => json_response(200, v),
                None => error_response(&ApiError::not_found(r, &name)),
            },
            "create" => {
                let Ok(mut obj) = serde_json::from_slice::<Value>(bytes) else {
                    return error_response(&ApiError::new(
                        400,
                        "BadRequest",
                        "the body is not JSON",
                    ));
                };
                if r.plural == "selfsubjectaccessreviews" {
                    let attrs = &obj["spec"]["resourceAttributes"];
                    let verb = attrs["verb"].as_str().unwrap_or("");
                    let res = attrs["resource"].as_str().unwrap_or("");
                    let ns = attrs["namespace"].as_str().unwrap_or("");
                    let allowed = !self
                        .denied
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|(n, v, r)| n == ns && v == verb && r == res);
                    obj["status"] = json!({"allowed": allowed});
                    obj["apiVersion"] = json!(r.api_version());
                    obj["kind"] = json!(r.kind);
                    return json_response(201, &obj);
                }
                if r.namespaced {
                    let body_ns = obj["metadata"]["namespace"].as_str().unwrap_or(&namespace);
                    if body_ns != namespace {
                        return error_response(&ApiError::new(
                            400,
                            "BadRequest",
                            "the namespace of the provided object does not match the namespace sent on the request",
                        ));
                    }
                }
                if r.namespaced && !self.namespace_exists(&namespace) {
                    return error_response(&ApiError::new(
                        404,
                        "NotFound",
                        format!("namespaces \"{namespace}\" not found"),
                    ));
                }
                match self
                    .store
                    .lock()
                    .unwrap()
                    .create(r, &namespace, obj, &manager)
                {
                    Ok(v) => json_response(201, &v),
                    Err(e) => error_response(&e),
                }
            }
            "update" => {
                let Ok(obj) = serde_json::from_slice::<Value>(bytes) else {
                    return error_response(&ApiError::new(
                        400,
                        "BadRequest",
                        "the body is not JSON",
                    ));
                };
                let how = if sub == "status" {
                    Manage::Status
                } else {
                    Manage::Update(&manager)
                };
                match self
                    .store
                    .lock()
                    .unwrap()
                    .update(r, &key(r, &namespace, &name), obj, how)
                {
                    Ok(v) => json_response(200, &v),
                    Err(e) => error_response(&e),
                }
            }
            "patch" => self.patch(
                r,
                &namespace,
                &name,
                &sub,
                content_type,
                bytes,
                &q,
                &manager,
            ),
            "delete" => match self
                .store
                .lock()
                .unwrap()
                .delete(r, &key(r, &namespace, &name))
            {
                Ok(_) => json_response(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": name, "group": r.group, "kind": r.plural}}),
                ),
                Err(e) => error_response(&e),
            },
            _ => error_response(&ApiError::new(
                405,
                "MethodNotAllowed",
                "method not allowed",
            )),
        }
    }

    fn namespace_exists(&self, namespace: &str) -> bool {
        self.store
            .lock()
            .unwrap()
            .get(&("namespaces".into(), String::new(), namespace.into()))
            .is_some()
    }

    /// The first fault matching this request, used up by one.
    async fn fault(
        &self,
        method: &str,
        path: &str,
        r: &Resource,
        name: &str,
    ) -> Option<http::Response<Body>> {
        let kind = {
            let mut faults = self.faults.lock().unwrap();
            let hit = faults.iter_mut().find(|f| {
                f.times > 0
                    && f.method.as_deref().is_none_or(|m| m == method)
                    && path.contains(&f.path_contains)
            })?;
            hit.times -= 1;
            hit.kind.clone()
        };
        match kind {
            FaultKind::Conflict => Some(error_response(&ApiError::conflict(r, name))),
            FaultKind::TooManyRequests { retry_after } => {
                let mut e = ApiError::new(
                    429,
                    "TooManyRequests",
                    "the server has received too many requests and has asked us to try again later",
                );
                e.retry_after = Some(retry_after);
                Some(error_response(&e))
            }
            FaultKind::Unavailable => Some(error_response(&ApiError::new(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ))),
            FaultKind::Slow(d) => {
                tokio::time::sleep(d).await;
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn patch(
        &self,
        r: &'static Resource,
        namespace: &str,
        name: &str,
        sub: &str,
        content_type: &str,
        bytes: &[u8],
        q: &BTreeMap<String, String>,
        manager: &str,
    ) -> http::Response<Body> {
        let Ok(patch) = serde_json::from_slice::<Value>(bytes) else {
            return error_response(&ApiError::new(
                400,
                "BadRequest",
                "the body of the request is not JSON (the stand-in reads apply configurations as JSON)",
            ));
        };
        let k = key(r, namespace, name);
        let mut store = self.store.lock().unwrap();
        if content_type == "application/apply-patch+yaml" {
            let Some(manager) = q.get("fieldManager").filter(|m| !m.is_empty()) else {
                return error_response(&ApiError::new(
                    422,
                    "Invalid",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            };
            if r.namespaced
                && store
                    .get(&("namespaces".into(), String::new(), namespace.into()))
                    .is_none()
            {
                return error_response(&ApiError::new(
                    404,
                    "NotFound",
                    format!("namespaces \"{namespace}\" not found"),
                ));
            }
            let force = q.get("force").is_some_and(|f| f == "true");
            return match store.apply(r, namespace, name, patch, manager, force) {
                Ok(v) => json_response(200, &v),
                Err(e) => error_response(&e),
            };
        }
        let Some(current) = store.get(&k).cloned() else {
            return error_response(&ApiError::not_found(r, name));
        };
        let mut obj = current.clone();
        match content_type {
            "application/merge-patch+json" => merge_patch(&mut obj, &patch),
            "application/strategic-merge-patch+json" if r.strategic_merge() => {
                merge_patch(&mut obj, &patch)
            }
            "application/json-patch+json" => {
                if let Err(e) = json_patch(&mut obj, &patch) {
                    return error_response(&ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                    ));
                }
            }
            _ => {
                return error_response(&ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{}",
                        if r.strategic_merge() {
                            ", application/strategic-merge-patch+json"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
        // A patch carries the stored version unless it names one itself.
        if patch["metadata"]["resourceVersion"].is_null() {
            obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        }
        let how = if sub == "status" {
            Manage::Status
        } else {
            Manage::Update(manager)
        };
        match store.update(r, &k, obj, how) {
            Ok(v) => json_response(200, &v),
            Err(e) => error_response(&e),
        }
    }

    /// A watch: every change after `resourceVersion` to the selected
    /// objects, as a stream of JSON events, until `timeoutSeconds` (at
    /// most a minute) or the client goes.
    fn watch(
        self: Arc<Self>,
        r: &'static Resource,
        namespace: &str,
        q: &BTreeMap<String, String>,
    ) -> http::Response<Body> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let since: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(60u64)
            .min(60);
        let (labels, fields) = (
            q.get("labelSelector").cloned(),
            q.get("fieldSelector").cloned(),
        );
        let namespace = namespace.to_string();
        let shared = self.clone();
        tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs(timeout);
            let mut seen: BTreeMap<String, u64> = BTreeMap::new();
            let mut first = true;
            while Instant::now() < end {
                let events: Vec<Value> = {
                    let store = shared.store.lock().unwrap();
                    let mut events = Vec::new();
                    let current: BTreeMap<String, (u64, Value)> = store
                        .list(r.plural, &namespace)
                        .into_iter()
                        .filter(|(_, v)| selected(v, labels.as_ref(), fields.as_ref()))
                        .map(|(k, v)| {
                            let rv = v["metadata"]["resourceVersion"]
                                .as_str()
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(0);
                            (format!("{}/{}", k.1, k.2), (rv, v.clone()))
                        })
                        .collect();
                    for (k, (rv, v)) in &current {
                        let known = seen.get(k).copied();
                        let kind = match known {
                            None if first && since > 0 && *rv <= since => {
                                seen.insert(k.clone(), *rv);
                                continue;
                            }
                            None => "ADDED",
                            Some(old) if old < *rv => "MODIFIED",
                            Some(_) => continue,
                        };
                        seen.insert(k.clone(), *rv);
                        events.push(json!({"type": kind, "object": v}));
                    }
                    let gone: Vec<String> = seen
                        .keys()
                        .filter(|k| !current.contains_key(*k))
                        .cloned()
                        .collect();
                    for k in gone {
                        seen.remove(&k);
                        let (ns, name) = k.split_once('/').unwrap_or(("", &k));
                        events.push(json!({"type": "DELETED", "object": {
                            "apiVersion": r.api_version(), "kind": r.kind,
                            "metadata": {"name": name, "namespace": ns,
                                "resourceVersion": store.resource_version().to_string()}}}));
                    }
                    events
                };
                first = false;
                for e in events {
                    let mut line = e.to_string();
                    line.push('\n');
                    if tx.send(Bytes::from(line)).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        http::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("transfer-encoding", "chunked")
            .body(BodyExt::boxed(ChannelBody(rx)))
            .unwrap()
    }
}

/// A body streamed from a channel (a watch's events).
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}
