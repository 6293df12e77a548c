//! The weighted router: each service's front port sends every request to a
//! slot chosen by weight (or by a sticky header's hash), and within the
//! slot to its ready instances in turn. The routing table is an `Arc`
//! swapped whole, so a weight change applies at once while requests in
//! flight finish on the table they started with.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode, Uri};
use http_body_util::Full;

use crate::instance::Instance;
use crate::metrics::Metrics;
use crate::upstream::HttpClient;

/// Request bodies are buffered, so that a request can be retried on
/// another instance; this bounds the buffer.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// The instances of one slot as the router sees them: the current ones and,
/// during a release change, the ones being replaced.
pub struct SlotRoute {
    pub name: String,
    instances: RwLock<Arc<Vec<Arc<Instance>>>>,
    next: AtomicUsize,
}

impl SlotRoute {
    pub fn new(name: &str) -> Arc<SlotRoute> {
        Arc::new(SlotRoute {
            name: name.to_owned(),
            instances: RwLock::default(),
            next: AtomicUsize::new(0),
        })
    }

    pub fn set(&self, instances: Vec<Arc<Instance>>) {
        *self.instances.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(instances);
    }

    fn ready(&self) -> Vec<Arc<Instance>> {
        let all = self
            .instances
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        all.iter().filter(|i| i.is_ready()).cloned().collect()
    }
}

/// Where a service's traffic goes: slots with a weight above zero.
#[derive(Default)]
pub struct RouteTable {
    pub sticky: Option<HeaderName>,
    pub slots: Vec<(Arc<SlotRoute>, u32)>,
}

pub struct ServiceRoute {
    pub service: String,
    table: RwLock<Arc<RouteTable>>,
}

impl ServiceRoute {
    pub fn new(service: &str) -> Arc<ServiceRoute> {
        Arc::new(ServiceRoute {
            service: service.to_owned(),
            table: RwLock::default(),
        })
    }

    pub fn set(&self, table: RouteTable) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }

    fn table(&self) -> Arc<RouteTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Choose a slot among those with weight and at least one ready instance,
/// in proportion to their weights. Slots without a ready instance give
/// their share to the others rather than failing requests.
fn choose(table: &RouteTable, point: u64) -> Option<(&Arc<SlotRoute>, Vec<Arc<Instance>>)> {
    let candidates: Vec<_> = table
        .slots
        .iter()
        .filter(|(_, weight)| *weight > 0)
        .map(|(slot, weight)| ((slot, slot.ready()), u64::from(*weight)))
        .filter(|((_, ready), _)| !ready.is_empty())
        .collect();
    by_weight(candidates, point)
}

/// The candidate `point` lands on when the weights are laid end to end
/// (`point` is a random number, or a sticky header's hash).
fn by_weight<T>(candidates: Vec<(T, u64)>, point: u64) -> Option<T> {
    let total: u64 = candidates.iter().map(|(_, w)| w).sum();
    if total == 0 {
        return None;
    }
    let mut point = point % total;
    for (candidate, weight) in candidates {
        if point < weight {
            return Some(candidate);
        }
        point -= weight;
    }
    None
}

fn hash(value: &[u8]) -> u64 {
    // `DefaultHasher::new` has fixed keys: the same value always lands on
    // the same slot.
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

fn random() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()))
    })
}

/// Connection-level headers describe one hop and must not be forwarded.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// The front port of one service.
#[derive(Clone)]
pub struct Proxy {
    pub route: Arc<ServiceRoute>,
    pub client: HttpClient,
    pub metrics: Arc<Metrics>,
}

pub fn app(proxy: Proxy) -> axum::Router {
    axum::Router::new().fallback(forward).with_state(proxy)
}

fn refuse(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

async fn forward(State(p): State<Proxy>, request: Request) -> Response {
    let began = Instant::now();
    let service = &p.route.service;
    let table = p.route.table();
    let sticky = table
        .sticky
        .as_ref()
        .and_then(|name| request.headers().get(name))
        .map(|value| hash(value.as_bytes()));
    let Some((slot, ready)) = choose(&table, sticky.unwrap_or_else(random)) else {
        p.metrics.record(service, "", "", 503, began.elapsed());
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_ready_instance",
            format!("no weighted slot of service `{service}` has a ready instance"),
        );
    };
    let first = match sticky {
        // Another part of the hash than the slot's, so the instance does not
        // depend on which slot was chosen.
        Some(h) => ready[(h >> 32) as usize % ready.len()].clone(),
        None => ready[slot.next.fetch_add(1, Ordering::Relaxed) % ready.len()].clone(),
    };
    let (mut parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        p.metrics
            .record(service, &slot.name, &first.release, 413, began.elapsed());
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are limited to {MAX_BODY} bytes"),
        );
    };
    strip_hop_by_hop(&mut parts.headers);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let send = |to: Arc<Instance>| {
        let inflight = to.enter();
        // The authority is a socket address and the path came from a valid
        // URI, so this parses; the default would fail as a 502.
        let uri = Uri::try_from(format!("http://{}{path}", to.endpoint())).unwrap_or_default();
        let mut upstream = http::Request::new(Full::new(body.clone()));
        *upstream.method_mut() = parts.method.clone();
        *upstream.uri_mut() = uri;
        *upstream.headers_mut() = parts.headers.clone();
        let client = p.client.clone();
        async move {
            let result = client.request(upstream).await;
            drop(inflight);
            result
        }
    };
    let mut served_by = first.clone();
    let mut result = send(first.clone()).await;
    if let Err(e) = &result
        && (e.is_connect() || idempotent(&parts.method))
    {
        // Once, on the next ready instance (the same one when it is alone:
        // a pooled connection may just have gone stale).
        let at = ready
            .iter()
            .position(|i| Arc::ptr_eq(i, &first))
            .unwrap_or(0);
        served_by = ready[(at + 1) % ready.len()].clone();
        result = send(served_by.clone()).await;
    }
    let response = match result {
        Ok(response) => {
            let (mut head, body) = response.into_parts();
            strip_hop_by_hop(&mut head.headers);
            Response::from_parts(head, Body::new(body))
        }
        Err(e) => {
            tracing::debug!(%service, slot = %slot.name, endpoint = %served_by.endpoint(), error = %e,
                "upstream failed");
            refuse(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                format!("no answer from an instance of slot `{}`", slot.name),
            )
        }
    };
    p.metrics.record(
        service,
        &slot.name,
        &served_by.release,
        response.status().as_u16(),
        began.elapsed(),
    );
    response
}

/// Methods that may be repeated when the first attempt may have reached
/// the instance.
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(weights: &[(&str, u32)]) -> RouteTable {
        RouteTable {
            sticky: None,
            slots: weights
                .iter()
                .map(|(name, w)| (SlotRoute::new(name), *w))
                .collect(),
        }
    }

    #[test]
    fn no_ready_instance_means_no_slot() {
        // Instances are only ever ready through their health checks, so a
        // table of fresh slots has nowhere to send anything.
        assert!(choose(&table(&[("stable", 100)]), 7).is_none());
        assert!(choose(&RouteTable::default(), 7).is_none());
    }

    #[test]
    fn weights_split_the_range_in_proportion() {
        let pick = |weights: &[(&'static str, u64)], point| by_weight(weights.to_vec(), point);
        let split = [("stable", 90), ("canary", 10)];
        let canary = (0..1000)
            .filter(|p| pick(&split, *p) == Some("canary"))
            .count();
        assert_eq!(canary, 100);
        assert_eq!(pick(&[("a", 0), ("b", 100)], 0), Some("b"));
        assert_eq!(pick(&[("a", 50), ("b", 50)], 149), Some("a"));
        assert_eq!(pick(&[("a", 0)], 3), None);
    }

    #[test]
    fn sticky_values_hash_consistently() {
        assert_eq!(hash(b"user-1"), hash(b"user-1"));
        assert_ne!(hash(b"user-1"), hash(b"user-2"));
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert("x-request-id", "abc".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-request-id"));
    }
}
