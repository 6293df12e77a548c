//! The objects Rollcage applies, typed with `k8s-openapi`: a slot's
//! Deployment and Service, the front Service, a Job. Every one is labelled
//! as Rollcage's; selectors use only the service and slot labels, so they
//! never change once created (they are immutable).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::config::{
    JOB_LABEL, MANAGED_BY, RELEASE_LABEL, SERVICE_LABEL, SLOT_ANNOTATION, SLOT_LABEL, ServiceDef,
    VERSION_ANNOTATION, release_label, slot_label,
};

/// Labels of everything Rollcage manages for `service`.
pub fn base_labels(def: &ServiceDef, service: &str) -> BTreeMap<String, String> {
    let mut labels = def.labels.clone();
    labels.insert(MANAGED_BY.into(), "rollcage".into());
    labels.insert(SERVICE_LABEL.into(), service.into());
    labels
}

/// The selector of a slot: service and slot, never the release.
pub fn slot_selector(service: &str, slot: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (SERVICE_LABEL.to_string(), service.to_string()),
        (SLOT_LABEL.to_string(), slot_label(slot)),
    ])
}

/// Whether an object carries Rollcage's managed-by label: nothing else is
/// ever modified or deleted.
pub fn is_managed(obj: &Value) -> bool {
    obj["metadata"]["labels"][MANAGED_BY] == "rollcage"
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("Kubernetes objects serialize")
}

fn container(
    def: &ServiceDef,
    name: &str,
    image: String,
    extra_env: &[(String, String)],
) -> Container {
    let mut env: Vec<EnvVar> = def
        .env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            ..EnvVar::default()
        })
        .collect();
    for (k, v) in extra_env {
        env.retain(|e| e.name != *k);
        env.push(EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            ..EnvVar::default()
        });
    }
    Container {
        name: name.to_string(),
        image: Some(image),
        env: (!env.is_empty()).then_some(env),
        resources: def
            .resources
            .as_ref()
            .and_then(|r| serde_json::from_value::<ResourceRequirements>(r.clone()).ok()),
        ..Container::default()
    }
}

/// Where a slot's objects go and what they are called.
#[derive(Clone, Copy)]
pub struct SlotNames<'a> {
    pub namespace: &'a str,
    pub service: &'a str,
    pub slot: &'a str,
    /// The Deployment's and Service's name.
    pub object: &'a str,
}

/// A slot's Deployment: `replicas` of `version`.
pub fn deployment(
    def: &ServiceDef,
    names: &SlotNames<'_>,
    version: &str,
    replicas: u32,
    progress_deadline: u32,
) -> Value {
    let SlotNames {
        namespace,
        service,
        slot,
        object: name,
    } = *names;
    let mut labels = base_labels(def, service);
    labels.extend(slot_selector(service, slot));
    labels.insert(RELEASE_LABEL.into(), release_label(version));
    let annotations = BTreeMap::from([
        (VERSION_ANNOTATION.to_string(), version.to_string()),
        (SLOT_ANNOTATION.to_string(), slot.to_string()),
    ]);
    let mut c = container(def, service, def.image_of(version), &[]);
    c.ports = Some(vec![ContainerPort {
        name: Some("http".into()),
        container_port: def.port as i32,
        ..ContainerPort::default()
    }]);
    c.readiness_probe = def.readiness_path.as_ref().map(|path| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.clone()),
            port: IntOrString::Int(def.port as i32),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(2),
        ..Probe::default()
    });
    let d = Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas as i32),
            progress_deadline_seconds: Some(progress_deadline as i32),
            selector: LabelSelector {
                match_labels: Some(slot_selector(service, slot)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![c],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    to_json(&d)
}

/// A Service named `name` selecting `selector`, on the service's port.
pub fn service(
    def: &ServiceDef,
    namespace: &str,
    service: &str,
    name: &str,
    slot: Option<&str>,
    selector: BTreeMap<String, String>,
) -> Value {
    let mut labels = base_labels(def, service);
    if let Some(slot) = slot {
        labels.insert(SLOT_LABEL.into(), slot_label(slot));
    }
    let s = Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: def.port as i32,
                target_port: Some(IntOrString::Int(def.port as i32)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    to_json(&s)
}

/// A Job running `command` once: no retries, a deadline, removed `ttl`
/// seconds after it ends.
#[allow(clippy::too_many_arguments)]
pub fn job(
    def: &ServiceDef,
    namespace: &str,
    service: &str,
    name: &str,
    job_name: &str,
    image: String,
    command: &[String],
    env: &[(String, String)],
    deadline_seconds: u64,
    ttl: u32,
) -> Value {
    let mut labels = base_labels(def, service);
    labels.insert(JOB_LABEL.into(), job_name.into());
    let mut c = container(def, "job", image, env);
    c.command = Some(command.to_vec());
    let j = Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline_seconds.max(1) as i64),
            ttl_seconds_after_finished: Some(ttl as i32),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![c],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    };
    to_json(&j)
}
