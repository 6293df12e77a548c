//! The controllers a cluster runs, simulated: Deployments make pods that
//! get ready one by one (or crash-loop, or never pull, when the image's
//! name asks for it) and report progress as the Deployment controller does;
//! Jobs run one pod to an exit code and a log; HTTPRoutes are accepted by
//! a gateway (unless their parent is `missing-gateway`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::store::{Key, Store, timestamp};

/// How fast the simulated cluster moves.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// From a Deployment's spec change to its controller observing it.
    pub observe: Duration,
    /// Between two pods of one Deployment becoming ready.
    pub ready_step: Duration,
    /// From a Job's pod starting to its exit.
    pub job_run: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            observe: Duration::from_millis(100),
            ready_step: Duration::from_millis(100),
            job_run: Duration::from_millis(300),
        }
    }
}

#[derive(Default)]
pub struct Sim {
    deployments: BTreeMap<Key, DeploySim>,
    jobs: BTreeMap<Key, Instant>,
    pod_ips: u32,
    /// Logs of pods, by pod key.
    pub logs: BTreeMap<Key, String>,
}

struct DeploySim {
    generation: i64,
    seen_at: Instant,
    hash: String,
    /// The last time the rollout made progress (what the progress
    /// deadline counts from).
    progressed_at: Instant,
}

/// A short stable hash of a pod template, as `pod-template-hash` is.
fn template_hash(template: &Value) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in template.to_string().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| ALPHABET[((h >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

fn pod_key(namespace: &str, name: &str) -> Key {
    ("pods".into(), namespace.into(), name.into())
}

fn owned_pods(store: &Store, uid: &Value) -> Vec<(Key, Value)> {
    store
        .list("pods", "")
        .into_iter()
        .filter(|(_, p)| {
            p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == *uid))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// A condition, keeping its times when its status and reason did not change.
fn condition(old: &Value, kind: &str, status: bool, reason: &str, message: String) -> Value {
    let status = if status { "True" } else { "False" };
    let previous = old["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind));
    let unchanged = previous.is_some_and(|p| p["status"] == status && p["reason"] == reason);
    let (updated, transition) = match previous {
        Some(p) if unchanged => (p["lastUpdateTime"].clone(), p["lastTransitionTime"].clone()),
        _ => (json!(timestamp()), json!(timestamp())),
    };
    json!({"type": kind, "status": status, "reason": reason, "message": message,
           "lastUpdateTime": updated, "lastTransitionTime": transition})
}

impl Sim {
    /// One step of every controller.
    pub fn tick(&mut self, store: &mut Store, timing: &Timing) {
        let now = Instant::now();
        let deployments: Vec<Key> = store
            .list("deployments", "")
            .into_iter()
            .map(|(k, _)| k.clone())
            .collect();
        self.deployments.retain(|k, _| deployments.contains(k));
        for key in deployments {
            self.deployment(store, &key, now, timing);
        }
        let jobs: Vec<Key> = store
            .list("jobs", "")
            .into_iter()
            .map(|(k, _)| k.clone())
            .collect();
        self.jobs.retain(|k, _| jobs.contains(k));
        for key in jobs {
            self.job(store, &key, now, timing);
        }
        let routes: Vec<Key> = store
            .list("httproutes", "")
            .into_iter()
            .map(|(k, _)| k.clone())
            .collect();
        for key in routes {
            route(store, &key);
        }
    }

    fn deployment(&mut self, store: &mut Store, key: &Key, now: Instant, timing: &Timing) {
        let Some(d) = store.get(key).cloned() else {
            return;
        };
        let generation = d["metadata"]["generation"].as_i64().unwrap_or(1);
        let sim = self
            .deployments
            .entry(key.clone())
            .or_insert_with(|| DeploySim {
                generation,
                seen_at: now,
                hash: String::new(),
                progressed_at: now,
            });
        if sim.generation != generation {
            sim.generation = generation;
            sim.seen_at = now;
        }
        let observed = d["status"]["observedGeneration"].as_i64().unwrap_or(0);
        if observed < generation && now.duration_since(sim.seen_at) < timing.observe {
            return;
        }
        let hash = template_hash(&d["spec"]["template"]);
        if hash != sim.hash {
            sim.hash = hash.clone();
            sim.progressed_at = now;
        }
        let (ns, name) = (key.1.clone(), key.2.clone());
        let uid = d["metadata"]["uid"].clone();
        let desired = d["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
        let pods = owned_pods(store, &uid);
        // Old pods go at once (the stand-in's rollout is a recreate).
        let mut current = Vec::new();
        for (k, p) in pods {
            if p["metadata"]["labels"]["pod-template-hash"] != json!(hash) {
                let _ = store.delete(crate::meta::resource("", "v1", "pods").unwrap(), &k);
            } else {
                current.push((k, p));
            }
        }
        current.sort_by(|a, b| a.0.cmp(&b.0));
        while current.len() > desired {
            let (k, _) = current.pop().unwrap();
            let _ = store.delete(crate::meta::resource("", "v1", "pods").unwrap(), &k);
        }
        let mut index = 0;
        while current.len() < desired {
            let pod_name = format!("{name}-{hash}-{index}");
            index += 1;
            let k = pod_key(&ns, &pod_name);
            if current.iter().any(|(c, _)| *c == k) {
                continue;
            }
            self.pod_ips += 1;
            let mut labels = d["spec"]["template"]["metadata"]["labels"].clone();
            labels["pod-template-hash"] = json!(hash);
            let containers = d["spec"]["template"]["spec"]["containers"].clone();
            let statuses: Vec<Value> = containers.as_array().cloned().unwrap_or_default().iter().map(|c| json!({
                "name": c["name"], "image": c["image"], "ready": false, "restartCount": 0, "started": false,
                "state": {"waiting": {"reason": "ContainerCreating"}}
            })).collect();
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": ns, "labels": labels,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid, "controller": true}]},
                "spec": d["spec"]["template"]["spec"],
                "status": {"phase": "Pending", "podIP": format!("10.244.{}.{}", self.pod_ips / 250, self.pod_ips % 250 + 1),
                    "conditions": [{"type": "Ready", "status": "False"}], "containerStatuses": statuses}
            });
            store.put_controlled(&k, pod.clone());
            current.push((
                k,
                store.get(&pod_key(&ns, &pod_name)).cloned().unwrap_or(pod),
            ));
        }
        // Pods move on: one gets ready per step; images that ask for it fail.
        let mut may_get_ready = now.duration_since(sim.progressed_at) >= timing.ready_step;
        for (k, p) in &current {
            if is_ready(p) {
                continue;
            }
            let image = p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let mut p = p.clone();
            let mut s = p["status"]["containerStatuses"][0].clone();
            if image.contains("crashloop") {
                p["status"]["phase"] = json!("Running");
                s["restartCount"] = json!(1);
                s["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error"}});
                s["state"] = json!({"waiting": {"reason": "CrashLoopBackOff",
                    "message": format!("back-off 10s restarting failed container={} pod={}", s["name"].as_str().unwrap_or(""), k.2)}});
            } else if image.contains("nopull") {
                s["state"] = json!({"waiting": {"reason": "ImagePullBackOff",
                    "message": format!("Back-off pulling image \"{image}\"")}});
            } else if may_get_ready {
                may_get_ready = false;
                sim.progressed_at = now;
                p["status"]["phase"] = json!("Running");
                p["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
                s["ready"] = json!(true);
                s["started"] = json!(true);
                s["state"] = json!({"running": {"startedAt": timestamp()}});
            } else {
                continue;
            }
            p["status"]["containerStatuses"][0] = s;
            store.put_controlled(k, p);
        }
        let pods = owned_pods(store, &uid);
        let updated = pods
            .iter()
            .filter(|(_, p)| p["metadata"]["labels"]["pod-template-hash"] == json!(hash))
            .count();
        let ready = pods.iter().filter(|(_, p)| is_ready(p)).count();
        let rs = format!("{name}-{hash}");
        let deadline = d["spec"]["progressDeadlineSeconds"].as_u64().unwrap_or(600);
        let complete = updated == desired && ready == desired && pods.len() == desired;
        let progressing = if complete {
            condition(
                &d,
                "Progressing",
                true,
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{rs}\" has successfully progressed."),
            )
        } else if now.duration_since(sim.progressed_at) > Duration::from_secs(deadline) {
            condition(
                &d,
                "Progressing",
                false,
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{rs}\" has timed out progressing."),
            )
        } else {
            condition(
                &d,
                "Progressing",
                true,
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{rs}\" is progressing."),
            )
        };
        let available = if ready >= desired {
            condition(
                &d,
                "Available",
                true,
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            )
        } else {
            condition(
                &d,
                "Available",
                false,
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            )
        };
        let mut status = json!({
            "observedGeneration": generation, "replicas": pods.len(), "updatedReplicas": updated,
            "readyReplicas": ready, "availableReplicas": ready,
            "conditions": [available, progressing],
        });
        if pods.len() > ready {
            status["unavailableReplicas"] = json!(pods.len() - ready);
        }
        store.set_status(key, status);
    }

    fn job(&mut self, store: &mut Store, key: &Key, now: Instant, timing: &Timing) {
        let Some(job) = store.get(key).cloned() else {
            return;
        };
        if !job["status"]["completionTime"].is_null() || !job["status"]["failed"].is_null() {
            return;
        }
        let started = *self.jobs.entry(key.clone()).or_insert(now);
        let (ns, name) = (key.1.clone(), key.2.clone());
        let pod_name = format!("{name}-run");
        let pk = pod_key(&ns, &pod_name);
        let container = job["spec"]["template"]["spec"]["containers"][0].clone();
        if store.get(&pk).is_none() {
            let mut labels = job["spec"]["template"]["metadata"]["labels"].clone();
            labels["job-name"] = json!(name);
            labels["batch.kubernetes.io/job-name"] = json!(name);
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": ns, "labels": labels,
                    "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job["metadata"]["uid"], "controller": true}]},
                "spec": job["spec"]["template"]["spec"],
                "status": {"phase": "Running", "containerStatuses": [{"name": container["name"], "image": container["image"], "ready": true, "restartCount": 0, "state": {"running": {}}}]}
            });
            store.put_controlled(&pk, pod);
            store.set_status(
                key,
                json!({"active": 1, "ready": 1, "startTime": timestamp()}),
            );
            return;
        }
        if now.duration_since(started) < timing.job_run {
            return;
        }
        let words: Vec<String> = ["command", "args"]
            .iter()
            .flat_map(|f| container[*f].as_array().cloned().unwrap_or_default())
            .filter_map(|w| w.as_str().map(String::from))
            .collect();
        let line = words.join(" ");
        let code: i64 = line
            .split("exit ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut log = format!("running: {line}\n");
        for e in container["env"].as_array().cloned().unwrap_or_default() {
            log.push_str(&format!(
                "{}={}\n",
                e["name"].as_str().unwrap_or(""),
                e["value"].as_str().unwrap_or("")
            ));
        }
        log.push_str(&format!("exit code {code}\n"));
        self.logs.insert(pk.clone(), log);
        if let Some(mut pod) = store.get(&pk).cloned() {
            pod["status"]["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
            pod["status"]["containerStatuses"][0]["ready"] = json!(false);
            pod["status"]["containerStatuses"][0]["state"] = json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }}});
            store.put_controlled(&pk, pod);
        }
        let t = timestamp();
        let status = if code == 0 {
            json!({"succeeded": 1, "ready": 0, "startTime": job["status"]["startTime"], "completionTime": t,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "lastTransitionTime": t},
                    {"type": "Complete", "status": "True", "reason": "CompletionsReached", "lastTransitionTime": t}]})
        } else {
            json!({"failed": 1, "ready": 0, "startTime": job["status"]["startTime"],
                "conditions": [
                    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastTransitionTime": t},
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastTransitionTime": t}]})
        };
        store.set_status(key, status);
    }
}

/// A gateway accepts every HTTPRoute, at its current generation.
fn route(store: &mut Store, key: &Key) {
    let Some(r) = store.get(key).cloned() else {
        return;
    };
    let generation = r["metadata"]["generation"].clone();
    let parents: Vec<Value> = r["spec"]["parentRefs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            // A parent named `missing-gateway` stands for a Gateway that
            // does not exist.
            let (accepted, reason, message) = if p["name"] == "missing-gateway" {
                ("False", "NoMatchingParent", "no Gateway named missing-gateway")
            } else {
                ("True", "Accepted", "")
            };
            json!({"parentRef": p, "controllerName": "standin.rollcage.dev/gateway",
                "conditions": [
                    {"type": "Accepted", "status": accepted, "reason": reason, "observedGeneration": generation, "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z"},
                    {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "observedGeneration": generation, "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
        })
        .collect();
    store.set_status(key, json!({"parents": parents}));
}
