//! A Kubernetes API stand-in for tests: a real HTTPS server on 127.0.0.1
//! with a CA made at test time and bearer authentication, enforcing the
//! semantics of the API server that a client must get right:
//!
//! * discovery (`/version`, `/api`, `/apis`, resource lists);
//! * one global `resourceVersion`; 409 Conflict on a stale update,
//!   AlreadyExists on create; `Status` error objects;
//! * 422 Invalid for bad names and label values, a changed Deployment
//!   selector (immutable) and an apply without a field manager;
//! * server-side apply with field managers (a conflict with another
//!   manager unless forced), merge and JSON patch (415 for a strategic
//!   merge patch of a custom resource such as HTTPRoute);
//! * `metadata.generation` bumped on spec changes only, `/status`
//!   subresources;
//! * simulated controllers ([`sim`]) and injected faults ([`Fault`]).
//!
//! Apply configurations are read as JSON (which is YAML), as kubectl and
//! Rollcage send them. Lists in applied objects are atomic.
//!
//! Tests read what happened from [`StandIn::requests`] and
//! [`StandIn::history`], not from what the client says.

pub mod meta;
pub mod pki;
pub mod server;
pub mod sim;
pub mod store;
pub mod tls;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

pub use server::{Fault, FaultKind, Logged};
pub use sim::Timing;

use crate::server::Shared;
use crate::store::Store;

/// A running stand-in. It stops when dropped (its runtime goes with it).
pub struct StandIn {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    pub port: u16,
    /// The CA certificate clients must trust, PEM.
    pub ca_pem: String,
    /// The bearer token it accepts.
    pub token: String,
    shared: Arc<Shared>,
    _runtime: tokio::runtime::Runtime,
}

impl StandIn {
    /// Start a stand-in on its own runtime, with namespace `default`.
    pub fn start() -> StandIn {
        StandIn::start_with(Timing::default())
    }

    /// [`StandIn::start`] with the simulated cluster's `timing`. Callable
    /// from inside an async runtime too (the stand-in's own is built on a
    /// thread of its own).
    pub fn start_with(timing: Timing) -> StandIn {
        std::thread::spawn(move || StandIn::build(timing))
            .join()
            .expect("the stand-in starts")
    }

    fn build(timing: Timing) -> StandIn {
        let ca = pki::TestCa::new("stand-in cluster CA");
        let cert = ca.issue(&["127.0.0.1", "localhost", "kubernetes.default.svc"]);
        let token = format!("standin-{:016x}", rand_u64());
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            sim: Mutex::new(sim::Sim::default()),
            timing,
            token: token.clone(),
            user: "system:serviceaccount:rollcage:deployer".into(),
            faults: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            denied: Mutex::new(Vec::new()),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = runtime.block_on(async {
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a port")
        });
        let port = listener.local_addr().unwrap().port();
        let _guard = runtime.enter();
        {
            let shared = shared.clone();
            tls::spawn_https(listener, cert.server_config(), move |req| {
                shared.clone().handle(req)
            });
        }
        {
            let shared = shared.clone();
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    let mut store = shared.store.lock().unwrap();
                    shared.sim.lock().unwrap().tick(&mut store, &shared.timing);
                }
            });
        }
        drop(_guard);
        let standin = StandIn {
            url: format!("https://127.0.0.1:{port}"),
            port,
            ca_pem: ca.cert_pem.clone(),
            token,
            shared,
            _runtime: runtime,
        };
        standin.create_namespace("default");
        standin
    }

    /// Create a namespace.
    pub fn create_namespace(&self, name: &str) {
        self.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}));
    }

    /// Create `obj` as an outside client would (its namespace from the
    /// object), with field manager `seed`.
    pub fn seed(&self, obj: Value) {
        let r = meta::resource_of_kind(
            obj["apiVersion"].as_str().unwrap_or(""),
            obj["kind"].as_str().unwrap_or(""),
        )
        .expect("a kind the stand-in knows");
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        self.shared
            .store
            .lock()
            .unwrap()
            .create(r, &ns, obj, "seed")
            .expect("a valid object");
    }

    /// Change an object as another client would (an update by field
    /// manager `kubectl-edit`), through the API's rules.
    pub fn edit(&self, plural: &str, namespace: &str, name: &str, change: impl FnOnce(&mut Value)) {
        let r = meta::RESOURCES
            .iter()
            .find(|r| r.plural == plural)
            .expect("a resource the stand-in knows");
        let key = store::key(r, namespace, name);
        let mut store = self.shared.store.lock().unwrap();
        let mut obj = store.get(&key).cloned().expect("the object exists");
        change(&mut obj);
        store
            .update(r, &key, obj, store::Manage::Update("kubectl-edit"))
            .expect("a valid update");
    }

    /// The object of `plural` `namespace/name` as stored now.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let ns = if plural == "namespaces" {
            ""
        } else {
            namespace
        };
        self.shared
            .store
            .lock()
            .unwrap()
            .get(&(plural.into(), ns.into(), name.into()))
            .cloned()
    }

    /// Every object of `plural` in `namespace`.
    pub fn list(&self, plural: &str, namespace: &str) -> Vec<Value> {
        self.shared
            .store
            .lock()
            .unwrap()
            .list(plural, namespace)
            .into_iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every version of one object written so far, oldest first (`None`
    /// for a deletion).
    pub fn history(&self, plural: &str, namespace: &str, name: &str) -> Vec<Option<Value>> {
        self.shared
            .store
            .lock()
            .unwrap()
            .history
            .iter()
            .filter(|w| w.key.0 == plural && w.key.1 == namespace && w.key.2 == name)
            .map(|w| w.object.clone())
            .collect()
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Add a fault for the next matching requests.
    pub fn inject(&self, fault: Fault) {
        self.shared.faults.lock().unwrap().push(fault);
    }

    /// Faults not used up yet, in total.
    pub fn faults_left(&self) -> u32 {
        self.shared
            .faults
            .lock()
            .unwrap()
            .iter()
            .map(|f| f.times)
            .sum()
    }

    /// Deny the token `verb` on `resource` (`deployments`, `pods/log`) in
    /// `namespace`, as a Role without that rule would.
    pub fn deny(&self, namespace: &str, verb: &str, resource: &str) {
        self.shared
            .denied
            .lock()
            .unwrap()
            .push((namespace.into(), verb.into(), resource.into()));
    }

    /// Every write so far, in order: `(plural, namespace, name, object
    /// after the write or None when deleted)`.
    pub fn write_log(&self) -> Vec<(String, String, String, Option<Value>)> {
        self.shared
            .store
            .lock()
            .unwrap()
            .history
            .iter()
            .map(|w| {
                (
                    w.key.0.clone(),
                    w.key.1.clone(),
                    w.key.2.clone(),
                    w.object.clone(),
                )
            })
            .collect()
    }

    /// Allow everything again.
    pub fn allow_all(&self) {
        self.shared.denied.lock().unwrap().clear();
    }

    /// Write the CA to `dir/ca.pem` and a kubeconfig for the stand-in to
    /// `dir/kubeconfig`; returns the kubeconfig's path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, &self.ca_pem).unwrap();
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: deployer\n  user:\n    token: {}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: deployer\n    namespace: default\ncurrent-context: standin\n",
            self.url,
            ca.display(),
            self.token
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, config).unwrap();
        path
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
