//! Traffic between slots, three ways: the weights of Rollcage's own
//! backendRefs in an HTTPRoute (every other field kept; GET, edit as JSON,
//! PUT with the resourceVersion read, again on 409), a front Service's
//! selector (one slot takes everything), or ready replica counts behind a
//! front Service (a split the replicas cannot represent is refused).
//! Weights are always read back from the cluster.

use rollcage_sdk::types::RouteWeight;
use serde_json::{Value, json};

use crate::api::Op;
use crate::config::{SLOT_LABEL, Traffic, slot_label, slot_object};
use crate::objects;
use crate::state::Slot;
use crate::{Client, objects::slot_selector};

pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// How many times a route update is tried when others write the HTTPRoute
/// at the same time (409 Conflict).
const CONFLICT_ATTEMPTS: u32 = 10;

/// Set the split to exactly `weights`.
pub fn route(c: &Client, weights: &[RouteWeight]) -> Result<(), String> {
    let total: u32 = weights.iter().map(|w| w.weight).sum();
    if total != 100 {
        return Err(format!("weights sum to {total}, not 100"));
    }
    let slots = c.slots()?;
    // Never weight to a slot without ready pods of its release.
    for w in weights.iter().filter(|w| w.weight > 0) {
        match slots.iter().find(|s| s.name == w.slot) {
            None => {
                return Err(format!(
                    "slot `{}` does not exist: apply it before routing to it",
                    w.slot
                ));
            }
            Some(s) if s.ready == 0 => {
                return Err(format!(
                    "slot `{}` has no ready pod of release {}: no traffic is sent to it",
                    w.slot, s.release
                ));
            }
            Some(_) => {}
        }
    }
    match c.kube.config.traffic {
        Traffic::GatewayApi => gateway_route(c, weights),
        Traffic::ServiceSelector => {
            let Some(to) = weights.iter().find(|w| w.weight == 100) else {
                return Err(format!(
                    "traffic = \"service-selector\" sends everything to one slot; it cannot split {}",
                    shown(weights)
                ));
            };
            front(c, slot_selector(&c.service, &to.slot))
        }
        Traffic::Replicas => {
            // All to one slot: the front selects that slot alone.
            if let Some(to) = weights.iter().find(|w| w.weight == 100) {
                return front(c, slot_selector(&c.service, &to.slot));
            }
            let desired: u32 = slots.iter().map(|s| s.desired).sum();
            for w in weights {
                let replicas = slots
                    .iter()
                    .find(|s| s.name == w.slot)
                    .map_or(0, |s| s.desired);
                let share = (replicas * 100).checked_div(desired).unwrap_or(0);
                if share.abs_diff(w.weight) > 1 {
                    return Err(format!(
                        "traffic = \"replicas\" splits traffic by replica counts ({}): it cannot represent {}; scale the slots to that ratio or use gateway-api",
                        slots
                            .iter()
                            .map(|s| format!("{}={}", s.name, s.desired))
                            .collect::<Vec<_>>()
                            .join(", "),
                        shown(weights)
                    ));
                }
            }
            let mut selector = slot_selector(&c.service, "");
            selector.remove(SLOT_LABEL);
            front(c, selector)
        }
    }
}

fn shown(weights: &[RouteWeight]) -> String {
    weights
        .iter()
        .map(|w| format!("{}={}", w.slot, w.weight))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Apply the front Service `{service}` with `selector`.
fn front(c: &Client, selector: std::collections::BTreeMap<String, String>) -> Result<(), String> {
    let obj = objects::service(&c.def, c.kube.ns(), &c.service, &c.service, None, selector);
    c.apply("", "services", &c.service, &obj).map(|_| ())
}

/// The split the cluster holds now.
pub fn weights(c: &Client, slots: &[Slot]) -> Result<Vec<RouteWeight>, String> {
    match c.kube.config.traffic {
        Traffic::GatewayApi => {
            let name = c.kube.config.http_route.clone().unwrap_or_default();
            let Some(route) = c.get(GATEWAY_GROUP, "httproutes", &name)? else {
                return Ok(vec![]);
            };
            let mut out = Vec::new();
            for slot in slots {
                let object = slot_object(&c.service, &slot.name)?;
                let weight: u64 = backend_refs(&route)
                    .filter(|r| is_ours(r, &object))
                    .map(|r| r["weight"].as_u64().unwrap_or(1))
                    .sum();
                if backend_refs(&route).any(|r| is_ours(r, &object)) {
                    out.push(RouteWeight {
                        slot: slot.name.clone(),
                        weight: weight as u32,
                    });
                }
            }
            Ok(out)
        }
        Traffic::ServiceSelector => {
            let Some(front) = c.get("", "services", &c.service)? else {
                return Ok(vec![]);
            };
            let to = front["spec"]["selector"][SLOT_LABEL].as_str().unwrap_or("");
            Ok(slots
                .iter()
                .map(|s| RouteWeight {
                    slot: s.name.clone(),
                    weight: if slot_label(&s.name) == to { 100 } else { 0 },
                })
                .collect())
        }
        Traffic::Replicas => {
            let Some(front) = c.get("", "services", &c.service)? else {
                return Ok(vec![]);
            };
            // One slot selected: it takes everything.
            if let Some(to) = front["spec"]["selector"][SLOT_LABEL].as_str() {
                return Ok(slots
                    .iter()
                    .map(|s| RouteWeight {
                        slot: s.name.clone(),
                        weight: if slot_label(&s.name) == to { 100 } else { 0 },
                    })
                    .collect());
            }
            let ready: u32 = slots.iter().map(|s| s.ready).sum();
            let mut out: Vec<RouteWeight> = slots
                .iter()
                .map(|s| RouteWeight {
                    slot: s.name.clone(),
                    weight: (s.ready * 100).checked_div(ready).unwrap_or(0),
                })
                .collect();
            // Whole percentages that sum to 100: the rest to the largest.
            let sum: u32 = out.iter().map(|w| w.weight).sum();
            if sum > 0
                && let Some(max) = out.iter_mut().max_by_key(|w| w.weight)
            {
                max.weight += 100 - sum;
            }
            Ok(out)
        }
    }
}

/// Why a Gateway did not accept the route, when one says so (a route no
/// Gateway has looked at yet is not refused here).
pub fn not_accepted(route: &Value) -> Option<String> {
    let parents = route["status"]["parents"].as_array()?;
    let refused: Vec<String> = parents
        .iter()
        .filter_map(|p| {
            let c = p["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Accepted" && c["status"] == "False")?;
            Some(format!(
                "parent `{}`: {} ({})",
                p["parentRef"]["name"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or("no reason"),
                c["message"].as_str().unwrap_or("")
            ))
        })
        .collect();
    (!refused.is_empty()).then(|| {
        format!(
            "is not accepted by its Gateway: {}; traffic through it would go nowhere",
            refused.join("; ")
        )
    })
}

fn backend_refs(route: &Value) -> impl Iterator<Item = &Value> {
    route["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["backendRefs"].as_array().into_iter().flatten())
}

/// Whether a backendRef is Rollcage's: a Service in the route's own
/// namespace named as one of its slot Services.
fn is_ours(r: &Value, object: &str) -> bool {
    r["name"] == object
        && r["kind"].as_str().is_none_or(|k| k == "Service")
        && r["group"].as_str().is_none_or(|g| g.is_empty())
        && r["namespace"].is_null()
}

/// Edit the HTTPRoute: our refs get exactly the weights asked for (0 for
/// our slots not named), missing ones are added to the rule that holds
/// ours (or the first); every other field and backendRef is kept.
fn gateway_route(c: &Client, weights: &[RouteWeight]) -> Result<(), String> {
    let name = c.kube.config.http_route.clone().unwrap_or_default();
    let ours: Vec<(String, String)> = {
        let mut slots: Vec<String> = c.slots()?.into_iter().map(|s| s.name).collect();
        for w in weights {
            if !slots.contains(&w.slot) {
                slots.push(w.slot.clone());
            }
        }
        slots
            .into_iter()
            .map(|s| slot_object(&c.service, &s).map(|o| (s, o)))
            .collect::<Result<_, _>>()?
    };
    edit_route(c, &name, |route| {
        let rules = route["spec"]["rules"].as_array_mut().ok_or_else(|| {
            format!("HTTPRoute `{name}` has no rules: give it one with your matches")
        })?;
        if rules.is_empty() {
            return Err(format!(
                "HTTPRoute `{name}` has no rules: give it one with your matches"
            ));
        }
        let home = rules
            .iter()
            .position(|r| {
                r["backendRefs"].as_array().is_some_and(|refs| {
                    refs.iter().any(|b| ours.iter().any(|(_, o)| is_ours(b, o)))
                })
            })
            .unwrap_or(0);
        for (slot, object) in &ours {
            let weight = weights
                .iter()
                .find(|w| w.slot == *slot)
                .map_or(0, |w| w.weight);
            let mut found = false;
            for rule in rules.iter_mut() {
                for b in rule["backendRefs"].as_array_mut().into_iter().flatten() {
                    if is_ours(b, object) {
                        b["weight"] = json!(weight);
                        found = true;
                    }
                }
            }
            if !found && weight > 0 {
                let rule = &mut rules[home];
                if !rule["backendRefs"].is_array() {
                    rule["backendRefs"] = json!([]);
                }
                rule["backendRefs"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": object, "port": c.def.port, "weight": weight}));
            }
        }
        Ok(())
    })
}

/// Drop a slot's backendRefs (at weight 0) from the HTTPRoute before the
/// slot goes.
pub fn forget(c: &Client, slot: &str) -> Result<(), String> {
    if c.kube.config.traffic != Traffic::GatewayApi {
        return Ok(());
    }
    let name = c.kube.config.http_route.clone().unwrap_or_default();
    let object = slot_object(&c.service, slot)?;
    edit_route(c, &name, |route| {
        for rule in route["spec"]["rules"].as_array_mut().into_iter().flatten() {
            if let Some(refs) = rule["backendRefs"].as_array_mut() {
                refs.retain(|b| !is_ours(b, &object));
            }
        }
        Ok(())
    })
}

/// GET the route, apply `edit`, PUT it back with the version read; on a
/// 409 read again and redo the edit. Nothing is written when the edit
/// changes nothing.
fn edit_route(
    c: &Client,
    name: &str,
    edit: impl Fn(&mut Value) -> Result<(), String>,
) -> Result<(), String> {
    let path = c.kube.path(GATEWAY_GROUP, "httproutes", Some(name));
    for _ in 0..CONFLICT_ATTEMPTS {
        let Some(route) = c.get(GATEWAY_GROUP, "httproutes", name)? else {
            return Err(format!(
                "HTTPRoute `{name}` does not exist in namespace `{}`",
                c.kube.ns()
            ));
        };
        let mut edited = route.clone();
        edit(&mut edited)?;
        if edited == route {
            return Ok(());
        }
        // Status is the gateway's; the version is the one read.
        if let Some(m) = edited.as_object_mut() {
            m.remove("status");
        }
        let op = Op {
            verb: "update",
            group: GATEWAY_GROUP,
            resource: "httproutes",
            name,
        };
        match c.kube.call(op, "PUT", &path, None, Some(&edited))? {
            Ok(_) => return Ok(()),
            Err(e) if e.status == 409 => {
                rollcage_sdk::log::info(&format!(
                    "HTTPRoute `{name}` changed while being edited; reading it again"
                ));
                continue;
            }
            Err(e) => return Err(e.message),
        }
    }
    Err(format!(
        "HTTPRoute `{name}` kept changing: {CONFLICT_ATTEMPTS} updates in a row met a newer version (409 Conflict)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refs_to_our_services_in_the_same_namespace_are_ours() {
        assert!(is_ours(
            &json!({"name": "web-canary", "port": 80}),
            "web-canary"
        ));
        assert!(is_ours(
            &json!({"name": "web-canary", "kind": "Service", "group": ""}),
            "web-canary"
        ));
        assert!(!is_ours(
            &json!({"name": "web-canary", "namespace": "other"}),
            "web-canary"
        ));
        assert!(!is_ours(
            &json!({"name": "web-canary", "kind": "ServiceImport", "group": "multicluster.x-k8s.io"}),
            "web-canary"
        ));
        assert!(!is_ours(&json!({"name": "legacy"}), "web-canary"));
    }
}
