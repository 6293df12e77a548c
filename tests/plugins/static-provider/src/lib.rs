//! Test fixture: an environment provider that accepts every change and
//! reports one slot named in its config, ready, at one endpoint.

use rollcage_sdk::EnvironmentProvider;
use rollcage_sdk::types::*;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    slot: String,
    release: String,
    endpoint: String,
}

struct StaticProvider;

impl EnvironmentProvider for StaticProvider {
    fn apply_slot(_t: Target, spec: SlotSpec) -> Result<(), String> {
        if spec.replicas > 100 {
            return Err(format!("slot {} asks for too many replicas", spec.name));
        }
        Ok(())
    }
    fn route(_t: Target, weights: Vec<RouteWeight>) -> Result<(), String> {
        let sum: u32 = weights.iter().map(|w| w.weight).sum();
        if sum == 100 {
            Ok(())
        } else {
            Err(format!("weights sum to {sum}"))
        }
    }
    fn status(target: Target) -> Result<EnvironmentStatus, String> {
        let c: Config = rollcage_sdk::config()?;
        rollcage_sdk::log::info(&format!("status of {}", target.environment));
        Ok(EnvironmentStatus {
            slots: vec![SlotStatus {
                name: c.slot.clone(),
                release: c.release,
                desired: 1,
                ready: 1,
                endpoints: vec![c.endpoint],
            }],
            weights: vec![RouteWeight {
                slot: c.slot,
                weight: 100,
            }],
        })
    }
    fn remove_slot(_t: Target, _slot: String) -> Result<(), String> {
        Ok(())
    }
}

rollcage_sdk::export_environment_provider!(StaticProvider);
