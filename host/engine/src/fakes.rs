//! Plain Rust fakes of the plugin traits, for the engine's tests: fast,
//! deterministic, driven with tokio's paused clock.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use rollcage_core::*;

/// A health check answering from a script, one item per call; the last repeats.
pub struct Scripted {
    pub id: PluginId,
    pub script: Mutex<Vec<Result<Verdict, ()>>>,
    pub calls: Mutex<Vec<tokio::time::Instant>>,
    /// What its configuration would hold values against.
    pub threshold: Option<Threshold>,
}

impl Plugin for Scripted {
    fn id(&self) -> &PluginId {
        &self.id
    }
}

#[async_trait]
impl HealthCheck for Scripted {
    async fn check(&self, _t: &CheckTarget) -> Result<Measurement, PluginError> {
        self.calls.lock().unwrap().push(tokio::time::Instant::now());
        let mut script = self.script.lock().unwrap();
        let next = if script.len() > 1 {
            script.remove(0)
        } else {
            script[0]
        };
        match next {
            Ok(verdict) => Ok(Measurement {
                verdict,
                value: Some(0.1),
                detail: format!("{verdict:?}"),
            }),
            Err(()) => Err(PluginError::Failed {
                plugin: self.id.clone(),
                message: "prometheus unreachable".into(),
            }),
        }
    }
    fn threshold(&self) -> Option<Threshold> {
        self.threshold
    }
}

pub fn scripted(id: &str, script: Vec<Result<Verdict, ()>>) -> std::sync::Arc<Scripted> {
    std::sync::Arc::new(Scripted {
        id: id.parse().unwrap(),
        script: Mutex::new(script),
        calls: Mutex::new(Vec::new()),
        threshold: None,
    })
}

/// [`scripted`], with a threshold as a `pass_if` would state it.
pub fn scripted_against(
    id: &str,
    script: Vec<Result<Verdict, ()>>,
    pass_if: &str,
) -> std::sync::Arc<Scripted> {
    std::sync::Arc::new(Scripted {
        id: id.parse().unwrap(),
        script: Mutex::new(script),
        calls: Mutex::new(Vec::new()),
        threshold: Threshold::parse(pass_if),
    })
}

/// An environment held in memory. Applied slots are ready at once, except
/// those named in `never_ready`.
pub struct FakeProvider {
    pub id: PluginId,
    pub slots: Mutex<BTreeMap<String, (String, u32)>>,
    pub weights: Mutex<Vec<RouteWeight>>,
    pub never_ready: Vec<String>,
    /// Every job run, in order.
    pub jobs: Mutex<Vec<Job>>,
    /// Jobs by name that exit with 1.
    pub failing_jobs: Vec<String>,
}

impl FakeProvider {
    /// Running `version` in slot `slot` with `replicas` instances, all traffic to it.
    pub fn running(slot: &str, version: &str, replicas: u32) -> FakeProvider {
        FakeProvider {
            id: "fake".parse().unwrap(),
            slots: Mutex::new(BTreeMap::from([(
                slot.to_string(),
                (version.to_string(), replicas),
            )])),
            weights: Mutex::new(vec![RouteWeight {
                slot: slot.into(),
                weight: 100,
            }]),
            never_ready: vec![],
            jobs: Mutex::default(),
            failing_jobs: vec![],
        }
    }

    /// `(slot, version, replicas)` of every slot.
    pub fn snapshot(&self) -> Vec<(String, String, u32)> {
        self.slots
            .lock()
            .unwrap()
            .iter()
            .map(|(k, (v, n))| (k.clone(), v.clone(), *n))
            .collect()
    }
}

impl Plugin for FakeProvider {
    fn id(&self) -> &PluginId {
        &self.id
    }
}

#[async_trait]
impl EnvironmentProvider for FakeProvider {
    async fn prepare(&self, _t: &Target) -> Result<(), PluginError> {
        Ok(())
    }
    async fn apply_slot(&self, _t: &Target, spec: &SlotSpec) -> Result<(), PluginError> {
        self.slots.lock().unwrap().insert(
            spec.name.clone(),
            (spec.release.version.clone(), spec.replicas),
        );
        Ok(())
    }
    async fn route(&self, _t: &Target, weights: &[RouteWeight]) -> Result<(), PluginError> {
        *self.weights.lock().unwrap() = weights.to_vec();
        Ok(())
    }
    async fn status(&self, _t: &Target) -> Result<EnvironmentStatus, PluginError> {
        let slots = self
            .slots
            .lock()
            .unwrap()
            .iter()
            .map(|(name, (release, n))| SlotStatus {
                name: name.clone(),
                release: release.clone(),
                desired: *n,
                ready: if self.never_ready.contains(name) {
                    0
                } else {
                    *n
                },
                endpoints: vec![format!("127.0.0.1:{}", 9000 + n)],
            })
            .collect();
        Ok(EnvironmentStatus {
            slots,
            weights: self.weights.lock().unwrap().clone(),
        })
    }
    async fn remove_slot(&self, _t: &Target, slot: &str) -> Result<(), PluginError> {
        self.slots.lock().unwrap().remove(slot);
        Ok(())
    }
    async fn run_job(&self, _t: &Target, job: &Job) -> Result<JobResult, PluginError> {
        self.jobs.lock().unwrap().push(job.clone());
        let failing = self.failing_jobs.contains(&job.name);
        Ok(JobResult {
            exit_code: i32::from(failing),
            output: if failing { "smoke test failed" } else { "" }.into(),
        })
    }
}

/// A strategy with a fixed plan: `plan[history.len()]`, then done.
pub struct PlanStrategy {
    pub id: PluginId,
    pub plan: Vec<Action>,
    pub rollback: Vec<Action>,
}

impl Plugin for PlanStrategy {
    fn id(&self) -> &PluginId {
        &self.id
    }
}

#[async_trait]
impl Strategy for PlanStrategy {
    async fn validate(&self, _p: &str) -> Result<(), PluginError> {
        Ok(())
    }
    async fn decide(&self, state: &DeployState) -> Result<Action, PluginError> {
        Ok(self
            .plan
            .get(state.history.len())
            .cloned()
            .unwrap_or(Action::Done))
    }
    async fn rollback(&self, _state: &DeployState) -> Result<Vec<Action>, PluginError> {
        Ok(self.rollback.clone())
    }
}

/// A canary that plans from the releases it is given, as the real ones
/// do: one slot per version, half the traffic, an analysis, then all of
/// it, and the stable slot removed. Rollback: all traffic back to stable.
pub struct VersionStrategy {
    pub id: PluginId,
}

impl VersionStrategy {
    pub fn plan(state: &DeployState) -> Vec<Action> {
        let new = state.release.version.as_str();
        match state.stable.as_ref().map(|s| s.version.as_str()) {
            Some(stable) if stable != new => vec![
                apply(new, new, 1),
                route(&[(new, 50), (stable, 50)]),
                Action::Analyze(AnalysisRequest {
                    checks: vec![],
                    slot: new.into(),
                }),
                apply(new, new, state.replicas),
                route(&[(new, 100)]),
                Action::RemoveSlot {
                    slot: stable.into(),
                },
            ],
            _ => vec![apply(new, new, state.replicas), route(&[(new, 100)])],
        }
    }
}

impl Plugin for VersionStrategy {
    fn id(&self) -> &PluginId {
        &self.id
    }
}

#[async_trait]
impl Strategy for VersionStrategy {
    async fn validate(&self, _p: &str) -> Result<(), PluginError> {
        Ok(())
    }
    async fn decide(&self, state: &DeployState) -> Result<Action, PluginError> {
        Ok(Self::plan(state)
            .get(state.history.len())
            .cloned()
            .unwrap_or(Action::Done))
    }
    async fn rollback(&self, state: &DeployState) -> Result<Vec<Action>, PluginError> {
        let new = state.release.version.as_str();
        let mut plan = Vec::new();
        if let Some(stable) = &state.stable {
            plan.push(route(&[(stable.version.as_str(), 100)]));
        }
        plan.push(Action::RemoveSlot { slot: new.into() });
        Ok(plan)
    }
}

/// `apply-slot` of `n` instances of `version` in slot `slot`.
pub fn apply(slot: &str, version: &str, n: u32) -> Action {
    Action::ApplySlot(SlotSpec {
        name: slot.into(),
        release: Release::new(version),
        replicas: n,
    })
}

/// `route` with these `(slot, weight)` pairs.
pub fn route(pairs: &[(&str, u32)]) -> Action {
    Action::Route {
        weights: pairs
            .iter()
            .map(|(s, w)| RouteWeight {
                slot: s.to_string(),
                weight: *w,
            })
            .collect(),
    }
}

/// A flag service in memory: each flag's exposure by name, and every
/// `set` in order. `fail_sets` makes sets fail (the service down).
pub struct FakeExposure {
    pub id: PluginId,
    pub flags: Mutex<BTreeMap<String, ExposureStatus>>,
    pub sets: Mutex<Vec<(String, u32)>>,
    pub fail_sets: std::sync::atomic::AtomicBool,
}

impl FakeExposure {
    /// A service where `flags` are enabled at these percents.
    pub fn with(id: &str, flags: &[(&str, u32)]) -> Self {
        FakeExposure {
            id: id.parse().unwrap(),
            flags: Mutex::new(
                flags
                    .iter()
                    .map(|(f, p)| {
                        let status = ExposureStatus {
                            percent: *p,
                            enabled: true,
                            revision: "1".into(),
                        };
                        (f.to_string(), status)
                    })
                    .collect(),
            ),
            sets: Mutex::new(Vec::new()),
            fail_sets: Default::default(),
        }
    }

    /// The flag's effective exposure now (0 when absent or disabled).
    pub fn percent(&self, flag: &str) -> u32 {
        self.flags
            .lock()
            .unwrap()
            .get(flag)
            .map_or(0, ExposureStatus::effective_percent)
    }
}

impl Plugin for FakeExposure {
    fn id(&self) -> &PluginId {
        &self.id
    }
}

#[async_trait]
impl ExposureControl for FakeExposure {
    async fn validate(&self, _params: &str) -> Result<Vec<Problem>, PluginError> {
        Ok(vec![])
    }
    async fn set_exposure(
        &self,
        flag: &str,
        _environment: &str,
        percent: u32,
    ) -> Result<(), PluginError> {
        if self.fail_sets.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(PluginError::Failed {
                plugin: self.id.clone(),
                message: "flag service unreachable".into(),
            });
        }
        self.sets.lock().unwrap().push((flag.to_string(), percent));
        self.flags.lock().unwrap().insert(
            flag.to_string(),
            ExposureStatus {
                percent,
                enabled: true,
                revision: String::new(),
            },
        );
        Ok(())
    }
    async fn get_exposure(
        &self,
        flag: &str,
        _environment: &str,
    ) -> Result<ExposureStatus, PluginError> {
        Ok(self
            .flags
            .lock()
            .unwrap()
            .get(flag)
            .cloned()
            .unwrap_or_default())
    }
}
