//! Reading what the cluster holds: the slots of a service with readiness
//! judged as `kubectl rollout status` judges it, and endpoints from the
//! ready pods of each slot's current release only.

use serde_json::Value;

use crate::config::{
    MANAGED_BY, RELEASE_LABEL, SERVICE_LABEL, SLOT_ANNOTATION, SLOT_LABEL, VERSION_ANNOTATION,
};

/// One slot as the cluster holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub name: String,
    /// The Deployment's name.
    pub object: String,
    pub release: String,
    pub desired: u32,
    pub ready: u32,
    pub endpoints: Vec<String>,
    /// Why the slot's rollout failed, when Kubernetes says it did
    /// (`ProgressDeadlineExceeded`), with the reasons of its pods.
    pub failed: Option<String>,
}

/// The label selector of every object Rollcage manages for `service`.
pub fn service_selector(service: &str) -> String {
    format!("{MANAGED_BY}=rollcage,{SERVICE_LABEL}={service}")
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// Whether a pod passes its readiness (its `Ready` condition is true).
pub fn pod_ready(pod: &Value) -> bool {
    condition(pod, "Ready").is_some_and(|c| c["status"] == "True")
        && pod["metadata"]["deletionTimestamp"].is_null()
}

/// Why a pod is not ready, in Kubernetes' words: `CrashLoopBackOff`,
/// `ImagePullBackOff`, ... from its containers' waiting states.
pub fn pod_reasons(pod: &Value) -> Vec<String> {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let w = &c["state"]["waiting"];
            let reason = w["reason"].as_str()?;
            if reason == "ContainerCreating" || reason == "PodInitializing" {
                return None;
            }
            Some(match w["message"].as_str() {
                Some(m) if !m.is_empty() => format!("{reason} ({m})"),
                _ => reason.to_string(),
            })
        })
        .collect()
}

/// A slot from its Deployment and the pods of the service.
pub fn slot(deployment: &Value, pods: &[Value], port: u16) -> Option<Slot> {
    let meta = &deployment["metadata"];
    let slot_label = meta["labels"][SLOT_LABEL].as_str()?;
    let name = meta["annotations"][SLOT_ANNOTATION]
        .as_str()
        .unwrap_or(slot_label)
        .to_string();
    let release = meta["annotations"][VERSION_ANNOTATION]
        .as_str()
        .unwrap_or("")
        .to_string();
    let release_label = &meta["labels"][RELEASE_LABEL];
    let desired = deployment["spec"]["replicas"].as_u64().unwrap_or(1) as u32;
    // Only pods of this slot running its current release count.
    let current: Vec<&Value> = pods
        .iter()
        .filter(|p| {
            let l = &p["metadata"]["labels"];
            l[SLOT_LABEL] == slot_label && l[RELEASE_LABEL] == *release_label
        })
        .collect();
    let ready_pods: Vec<&Value> = current.iter().copied().filter(|p| pod_ready(p)).collect();
    let generation = meta["generation"].as_i64().unwrap_or(0);
    let observed = deployment["status"]["observedGeneration"]
        .as_i64()
        .unwrap_or(0);
    let status = &deployment["status"];
    let count = |k: &str| status[k].as_u64().unwrap_or(0) as u32;
    // As `kubectl rollout status`: nothing counts before the controller
    // observed the current generation; then the updated replicas must be
    // all there, no old ones left, and available.
    let rolled_out = observed >= generation
        && count("updatedReplicas") >= desired
        && count("replicas") <= count("updatedReplicas")
        && count("availableReplicas") >= count("updatedReplicas");
    let ready = if observed < generation {
        0
    } else if rolled_out {
        (ready_pods.len() as u32).min(desired)
    } else {
        (ready_pods.len() as u32).min(count("updatedReplicas"))
    };
    let failed = (observed >= generation)
        .then(|| condition(deployment, "Progressing"))
        .flatten()
        .filter(|c| c["reason"] == "ProgressDeadlineExceeded")
        .map(|c| {
            let mut reasons: Vec<String> = current.iter().flat_map(|p| pod_reasons(p)).collect();
            reasons.sort();
            reasons.dedup();
            let why = if reasons.is_empty() {
                String::new()
            } else {
                format!("; its pods: {}", reasons.join(", "))
            };
            format!(
                "slot `{name}` (Deployment {}, release {release}) exceeded its progress deadline (ProgressDeadlineExceeded: {}){why}",
                meta["name"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            )
        });
    let mut endpoints: Vec<String> = ready_pods
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str())
        .map(|ip| {
            if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            }
        })
        .collect();
    endpoints.sort();
    Some(Slot {
        name,
        object: meta["name"].as_str().unwrap_or("").to_string(),
        release,
        desired,
        ready,
        endpoints,
        failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(
        generation: i64,
        observed: i64,
        updated: u32,
        available: u32,
        total: u32,
    ) -> Value {
        json!({
            "metadata": {"name": "web-canary", "generation": generation,
                "labels": {SLOT_LABEL: "canary", RELEASE_LABEL: "1.1.0"},
                "annotations": {VERSION_ANNOTATION: "1.1.0"}},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                "availableReplicas": available, "readyReplicas": available}
        })
    }

    fn pod(release: &str, ready: bool, ip: &str) -> Value {
        json!({"metadata": {"labels": {SLOT_LABEL: "canary", RELEASE_LABEL: release}},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "containerStatuses": [{"state": if ready { json!({"running": {}}) } else { json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}) }}]}})
    }

    #[test]
    fn only_ready_pods_of_the_current_release_count() {
        let pods = [
            pod("1.1.0", true, "10.0.0.1"),
            pod("1.0.0", true, "10.0.0.2"),
            pod("1.1.0", false, "10.0.0.3"),
        ];
        let s = slot(&deployment(2, 2, 2, 1, 2), &pods, 8080).unwrap();
        assert_eq!(s.ready, 1);
        assert_eq!(s.endpoints, ["10.0.0.1:8080"]);
        assert_eq!(s.release, "1.1.0");
        assert_eq!(s.failed, None);
    }

    #[test]
    fn nothing_is_ready_before_the_generation_is_observed() {
        let pods = [
            pod("1.1.0", true, "10.0.0.1"),
            pod("1.1.0", true, "10.0.0.2"),
        ];
        assert_eq!(
            slot(&deployment(3, 2, 2, 2, 2), &pods, 80).unwrap().ready,
            0
        );
        assert_eq!(
            slot(&deployment(3, 3, 2, 2, 2), &pods, 80).unwrap().ready,
            2
        );
    }

    #[test]
    fn a_progress_deadline_names_the_pods_reasons() {
        let mut d = deployment(1, 1, 2, 0, 2);
        d["status"]["conditions"] = json!([{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"web-canary-x\" has timed out progressing."}]);
        let s = slot(&d, &[pod("1.1.0", false, "10.0.0.1")], 80).unwrap();
        let failed = s.failed.unwrap();
        assert!(failed.contains("ProgressDeadlineExceeded"), "{failed}");
        assert!(failed.contains("CrashLoopBackOff (back-off)"), "{failed}");
    }
}
