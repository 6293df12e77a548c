//! `builtin:kubernetes`: drives a Kubernetes cluster's API over
//! `wasi:http`. A slot is a Deployment and a Service named
//! `{service}-{slot}`, applied with server-side apply (field manager
//! `rollcage`); traffic goes through the weights of Rollcage's own
//! backendRefs in an HTTPRoute, a front Service's selector, or replica
//! counts; jobs are `batch/v1` Jobs.
//!
//! Rules kept (each learned from another tool's bug reports): `route`
//! writes exactly the split asked for and `status` reads the split back
//! from the cluster; no weight goes to a slot without ready pods of its
//! release, and no slot with weight is removed; only pods of a slot's
//! current release count; `status` reports an unhealthy slot rather than
//! failing, except when Kubernetes itself declared the rollout failed
//! (`ProgressDeadlineExceeded`, with the pods' reasons); only objects
//! labelled as Rollcage's, and only backendRefs naming its Services, are
//! touched; every call is idempotent.

pub mod api;
pub mod config;
pub mod objects;
pub mod state;
pub mod traffic;

use std::time::{Duration, Instant};

use rollcage_sdk::EnvironmentProvider;
use rollcage_sdk::types::{
    EnvironmentStatus, Job, JobResult, Problem, RouteWeight, SlotSpec, SlotStatus, Target,
};
use serde_json::{Value, json};

use crate::api::{Kube, Op, rbac_rule};
use crate::config::{Config, ServiceDef, Traffic, slot_object};
use crate::state::{Slot, service_selector};

/// The content type of server-side apply.
pub const APPLY: &str = "application/apply-patch+yaml";

/// One call's view: the API client, the target's service and definition.
pub struct Client {
    pub kube: Kube,
    pub service: String,
    pub def: ServiceDef,
}

impl Client {
    pub fn new(target: &Target) -> Result<Client, String> {
        let config: Config =
            rollcage_sdk::config().map_err(|e| format!("kubernetes provider: {e}"))?;
        let def = ServiceDef::parse(&target.service, &target.service_spec)?;
        Ok(Client {
            kube: Kube::new(config)?,
            service: target.service.clone(),
            def,
        })
    }

    /// GET one object; `None` when it does not exist.
    pub fn get(&self, group: &str, resource: &str, name: &str) -> Result<Option<Value>, String> {
        let op = Op {
            verb: "get",
            group,
            resource,
            name,
        };
        match self.kube.call(
            op,
            "GET",
            &self.kube.path(group, resource, Some(name)),
            None,
            None,
        )? {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status == 404 => Ok(None),
            Err(e) => Err(e.message),
        }
    }

    /// Every object of `resource` Rollcage manages for this service.
    pub fn list_managed(&self, group: &str, resource: &str) -> Result<Vec<Value>, String> {
        let path = format!(
            "{}?labelSelector={}",
            self.kube.path(group, resource, None),
            rollcage_sdk::http::encode(&service_selector(&self.service))
        );
        let op = Op {
            verb: "list",
            group,
            resource,
            name: "",
        };
        let list = self.kube.must(op, "GET", &path, None, None)?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// Server-side apply of `obj`, after checking that an existing object
    /// of that name is Rollcage's.
    pub fn apply(
        &self,
        group: &str,
        resource: &str,
        name: &str,
        obj: &Value,
    ) -> Result<Value, String> {
        if let Some(existing) = self.get(group, resource, name)?
            && !objects::is_managed(&existing)
        {
            return Err(format!(
                "{resource} `{name}` in namespace `{}` exists and is not Rollcage's (no app.kubernetes.io/managed-by=rollcage label): it is left alone; rename the service or slot, or remove that object",
                self.kube.ns()
            ));
        }
        let path = format!(
            "{}?fieldManager=rollcage&force=true",
            self.kube.path(group, resource, Some(name))
        );
        let op = Op {
            verb: "patch",
            group,
            resource,
            name,
        };
        self.kube.must(op, "PATCH", &path, Some(APPLY), Some(obj))
    }

    /// Delete a managed object in the background; a missing one is fine.
    pub fn delete(&self, group: &str, resource: &str, name: &str) -> Result<(), String> {
        match self.get(group, resource, name)? {
            None => return Ok(()),
            Some(existing) if !objects::is_managed(&existing) => {
                return Err(format!(
                    "{resource} `{name}` in namespace `{}` is not Rollcage's: it is not deleted",
                    self.kube.ns()
                ));
            }
            Some(_) => {}
        }
        let path = format!(
            "{}?propagationPolicy=Background",
            self.kube.path(group, resource, Some(name))
        );
        let op = Op {
            verb: "delete",
            group,
            resource,
            name,
        };
        match self.kube.call(op, "DELETE", &path, None, None)? {
            Ok(_) => Ok(()),
            Err(e) if e.status == 404 => Ok(()),
            Err(e) => Err(e.message),
        }
    }

    /// The slots the cluster holds for this service. A slot whose rollout
    /// Kubernetes declared failed carries why in [`Slot::failed`].
    pub fn slots(&self) -> Result<Vec<Slot>, String> {
        let deployments = self.list_managed("apps", "deployments")?;
        if deployments.is_empty() {
            return Ok(vec![]);
        }
        let pods = self.list_managed("", "pods")?;
        let mut slots: Vec<Slot> = deployments
            .iter()
            .filter_map(|d| state::slot(d, &pods, self.def.port))
            .collect();
        slots.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(slots)
    }
}

/// The provider.
pub struct Kubernetes;

impl EnvironmentProvider for Kubernetes {
    fn validate(service_spec: String) -> Result<(), Vec<Problem>> {
        // The host names the service in the spec (`name`); the pipeline
        // name is what `parse` falls back to at run time.
        ServiceDef::check("", &service_spec)
            .map(drop)
            .map_err(|found| {
                found
                    .into_iter()
                    .map(|(field, message)| Problem { field, message })
                    .collect()
            })
    }

    fn prepare(target: Target) -> Result<(), String> {
        let c = Client::new(&target)?;
        let ns = c.kube.ns().to_string();
        // The namespace must exist (a token limited to a Role may not read
        // namespaces: then the first write says so instead).
        let op = Op {
            verb: "get",
            group: "",
            resource: "namespaces",
            name: &ns,
        };
        match c
            .kube
            .call(op, "GET", &format!("/api/v1/namespaces/{ns}"), None, None)?
        {
            Ok(_) => {}
            Err(e) if e.status == 404 => {
                return Err(format!(
                    "namespace `{ns}` does not exist: create it (kubectl create namespace {ns})"
                ));
            }
            Err(e) if e.status == 403 => {}
            Err(e) => return Err(e.message),
        }
        if c.kube.config.traffic == Traffic::GatewayApi {
            let route = c.kube.config.http_route.clone().unwrap_or_default();
            let Some(found) = c.get(traffic::GATEWAY_GROUP, "httproutes", &route)? else {
                return Err(format!(
                    "HTTPRoute `{route}` does not exist in namespace `{ns}`: create it with a parentRef to your Gateway (see the README's Kubernetes section); Rollcage adds and weighs only its own backendRefs"
                ));
            };
            if let Some(why) = traffic::not_accepted(&found) {
                return Err(format!("HTTPRoute `{route}` in namespace `{ns}` {why}"));
            }
        }
        // What the token may do, asked of the API itself.
        let mut missing = Vec::new();
        for (group, resource, verb) in required(c.kube.config.traffic) {
            let review = json!({
                "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"namespace": ns, "verb": verb, "group": group, "resource": resource}}
            });
            let op = Op {
                verb: "create",
                group: "authorization.k8s.io",
                resource: "selfsubjectaccessreviews",
                name: "",
            };
            let answer = c.kube.must(
                op,
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                None,
                Some(&review),
            )?;
            if answer["status"]["allowed"] != true {
                missing.push(rbac_rule(group, resource, verb));
            }
        }
        if !missing.is_empty() {
            return Err(format!(
                "the token lacks {} permission{} in namespace `{ns}`; add to the Role bound to it: {}",
                missing.len(),
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", ")
            ));
        }
        Ok(())
    }

    fn apply_slot(target: Target, spec: SlotSpec) -> Result<(), String> {
        let c = Client::new(&target)?;
        let name = slot_object(&c.service, &spec.name)?;
        let ns = c.kube.ns().to_string();
        let names = objects::SlotNames {
            namespace: &ns,
            service: &c.service,
            slot: &spec.name,
            object: &name,
        };
        let deployment = objects::deployment(
            &c.def,
            &names,
            &spec.release.version,
            spec.replicas,
            c.kube.config.progress_deadline_seconds,
        );
        c.apply("apps", "deployments", &name, &deployment)?;
        let service = objects::service(
            &c.def,
            &ns,
            &c.service,
            &name,
            Some(&spec.name),
            objects::slot_selector(&c.service, &spec.name),
        );
        c.apply("", "services", &name, &service)?;
        Ok(())
    }

    fn route(target: Target, weights: Vec<RouteWeight>) -> Result<(), String> {
        let c = Client::new(&target)?;
        traffic::route(&c, &weights)
    }

    fn status(target: Target) -> Result<EnvironmentStatus, String> {
        let c = Client::new(&target)?;
        let slots = c.slots()?;
        // Kubernetes declared a rollout failed: that is the one unhealthy
        // state reported as an error, with its reason.
        let failed: Vec<String> = slots.iter().filter_map(|s| s.failed.clone()).collect();
        if !failed.is_empty() {
            return Err(failed.join("; "));
        }
        let weights = traffic::weights(&c, &slots)?;
        Ok(EnvironmentStatus {
            slots: slots
                .into_iter()
                .map(|s| SlotStatus {
                    name: s.name,
                    release: s.release,
                    desired: s.desired,
                    ready: s.ready,
                    endpoints: s.endpoints,
                })
                .collect(),
            weights,
        })
    }

    fn remove_slot(target: Target, slot: String) -> Result<(), String> {
        let c = Client::new(&target)?;
        let name = slot_object(&c.service, &slot)?;
        let slots = c.slots()?;
        let weights = traffic::weights(&c, &slots)?;
        if let Some(w) = weights.iter().find(|w| w.slot == slot && w.weight > 0) {
            return Err(format!(
                "slot `{slot}` still receives {}% of the traffic: route it away before removing it",
                w.weight
            ));
        }
        traffic::forget(&c, &slot)?;
        c.delete("apps", "deployments", &name)?;
        c.delete("", "services", &name)?;
        Ok(())
    }

    fn run_job(target: Target, job: Job) -> Result<JobResult, String> {
        let c = Client::new(&target)?;
        run_job(&c, &job)
    }
}

/// The permissions every call needs, by traffic mode: `(group, resource, verb)`.
pub fn required(traffic: Traffic) -> Vec<(&'static str, &'static str, &'static str)> {
    let mut r = vec![
        ("apps", "deployments", "get"),
        ("apps", "deployments", "list"),
        ("apps", "deployments", "create"),
        ("apps", "deployments", "patch"),
        ("apps", "deployments", "delete"),
        ("", "services", "get"),
        ("", "services", "list"),
        ("", "services", "create"),
        ("", "services", "patch"),
        ("", "services", "delete"),
        ("", "pods", "list"),
        ("", "pods/log", "get"),
        ("batch", "jobs", "get"),
        ("batch", "jobs", "create"),
    ];
    if traffic == Traffic::GatewayApi {
        r.push((traffic::GATEWAY_GROUP, "httproutes", "get"));
        r.push((traffic::GATEWAY_GROUP, "httproutes", "update"));
    }
    r
}

/// The environment variable that names the release a job runs (its image
/// is the service's image of that release).
pub const RELEASE_VAR: &str = "ROLLCAGE_RELEASE";

/// A Job's name: the service, the job, and a hash of everything that makes
/// it this run of it, so that a resumed run adopts the Job it started
/// instead of running a migration twice.
pub fn job_name(service: &str, job: &Job, image: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut eat = |s: &str| {
        for b in s.bytes().chain([0u8]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    };
    eat(image);
    eat(&job.name);
    job.command.iter().for_each(|c| eat(c));
    job.env.iter().for_each(|(k, v)| {
        eat(k);
        eat(v);
    });
    let hash = format!("{h:016x}");
    let mut base: String = format!("{service}-{}", job.name)
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base.truncate(63 - 11);
    format!("{}-{}", base.trim_end_matches('-'), &hash[..10])
}

fn run_job(c: &Client, job: &Job) -> Result<JobResult, String> {
    let release = job
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == RELEASE_VAR)
        .map(|(_, v)| v.clone());
    let image = match release {
        Some(r) => c.def.image_of(&r),
        None if c.def.image.contains("{release}") => {
            return Err(format!(
                "job `{}`: its image is `{}` and no release was given: set {RELEASE_VAR} in the job's env",
                job.name, c.def.image
            ));
        }
        None => c.def.image.clone(),
    };
    let name = job_name(&c.service, job, &image);
    let ns = c.kube.ns().to_string();
    let deadline = job.timeout_ms.div_ceil(1000).max(1);
    match c.get("batch", "jobs", &name)? {
        Some(existing) if !objects::is_managed(&existing) => {
            return Err(format!("Job `{name}` exists and is not Rollcage's"));
        }
        Some(_) => rollcage_sdk::log::info(&format!(
            "job `{}`: adopting Job {name}, started before",
            job.name
        )),
        None => {
            let obj = objects::job(
                &c.def,
                &ns,
                &c.service,
                &name,
                &job.name,
                image,
                &job.command,
                &job.env,
                deadline,
                c.kube.config.job_ttl_seconds,
            );
            let op = Op {
                verb: "create",
                group: "batch",
                resource: "jobs",
                name: &name,
            };
            match c.kube.call(
                op,
                "POST",
                &c.kube.path("batch", "jobs", None),
                None,
                Some(&obj),
            )? {
                Ok(_) => {}
                // Created by a call that did not see its answer: adopt it.
                Err(e) if e.reason == "AlreadyExists" => {}
                Err(e) => return Err(e.message),
            }
        }
    }
    let until = Instant::now() + Duration::from_secs(deadline + 30);
    // Polls start quick (most jobs are short) and slow down to one every
    // 2 s, so that a long job stays within the call's `http_requests`.
    let mut pause = Duration::from_millis(250);
    let finished = loop {
        let Some(j) = c.get("batch", "jobs", &name)? else {
            return Err(format!("Job `{name}` disappeared before it finished"));
        };
        let done = |kind: &str| {
            j["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|x| x["type"] == kind && x["status"] == "True")
            })
        };
        if done("Complete") || done("Failed") {
            break j;
        }
        if Instant::now() > until {
            return Err(format!("Job `{name}` did not finish within {deadline} s"));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
    };
    // Its pod holds the exit code and the log.
    let path = format!(
        "{}?labelSelector={}",
        c.kube.path("", "pods", None),
        rollcage_sdk::http::encode(&format!("job-name={name}"))
    );
    let op = Op {
        verb: "list",
        group: "",
        resource: "pods",
        name: "",
    };
    let pods = c.kube.must(op, "GET", &path, None, None)?;
    let pod = pods["items"].as_array().and_then(|p| p.last()).cloned();
    let exit_code = pod
        .as_ref()
        .and_then(|p| {
            p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"].as_i64()
        })
        .map(|c| c as i32);
    let failed_reason = finished["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|x| x["type"] == "Failed"))
        .and_then(|x| x["reason"].as_str())
        .map(String::from);
    let mut output = String::new();
    if let Some(pod) = &pod {
        let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
        let path = format!(
            "{}/log?tailLines=50",
            c.kube.path("", "pods", Some(pod_name))
        );
        let r = c.kube.send("GET", &path, None, None)?;
        if r.is_success() {
            output = r.text();
        }
    }
    let exit_code = match (exit_code, &failed_reason) {
        (Some(code), _) => code,
        (None, None) => 0,
        (None, Some(reason)) => {
            output.push_str(&format!("Job {name} failed: {reason}\n"));
            1
        }
    };
    Ok(JobResult { exit_code, output })
}

rollcage_sdk::export_environment_provider!(Kubernetes);
