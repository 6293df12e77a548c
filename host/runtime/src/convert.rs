//! Conversions between the generated WIT types and `rollcage-core`'s types.
//! Kept in one place so that the rest of the runtime speaks core types only.
//!
//! Each served contract version has its own generated types: [`current`]
//! (0.2.0) and [`v0_1`] (0.1.0). What the versions share is written once
//! ([`shared!`]); what differs is adapted here: a 0.1 strategy never asks
//! for `expose` and never sees one in its history, a 0.1 health check is
//! given its check target without `exposure`.

/// The conversions of the types both versions have unchanged, written in
/// terms of a `wit` module in scope where the macro is used.
macro_rules! shared {
    () => {
        pub fn release_to_wit(r: &core::Release) -> wit::Release {
            wit::Release {
                version: r.version.clone(),
                notes: r.notes.clone(),
                params: r.params.clone(),
            }
        }

        pub fn release_from_wit(r: wit::Release) -> core::Release {
            core::Release {
                version: r.version,
                notes: r.notes,
                params: r.params,
            }
        }

        pub fn target_to_wit(t: &core::Target) -> wit::Target {
            wit::Target {
                environment: t.environment.clone(),
                service: t.service.clone(),
                service_spec: t.service_spec.clone(),
            }
        }

        pub fn slot_spec_to_wit(s: &core::SlotSpec) -> wit::SlotSpec {
            wit::SlotSpec {
                name: s.name.clone(),
                release: release_to_wit(&s.release),
                replicas: s.replicas,
            }
        }

        pub fn slot_spec_from_wit(s: wit::SlotSpec) -> core::SlotSpec {
            core::SlotSpec {
                name: s.name,
                release: release_from_wit(s.release),
                replicas: s.replicas,
            }
        }

        pub fn weights_to_wit(w: &[core::RouteWeight]) -> Vec<wit::RouteWeight> {
            w.iter()
                .map(|w| wit::RouteWeight {
                    slot: w.slot.clone(),
                    weight: w.weight,
                })
                .collect()
        }

        pub fn weights_from_wit(w: Vec<wit::RouteWeight>) -> Vec<core::RouteWeight> {
            w.into_iter()
                .map(|w| core::RouteWeight {
                    slot: w.slot,
                    weight: w.weight,
                })
                .collect()
        }

        pub fn status_to_wit(s: &core::EnvironmentStatus) -> wit::EnvironmentStatus {
            wit::EnvironmentStatus {
                slots: s
                    .slots
                    .iter()
                    .map(|s| wit::SlotStatus {
                        name: s.name.clone(),
                        release: s.release.clone(),
                        desired: s.desired,
                        ready: s.ready,
                        endpoints: s.endpoints.clone(),
                    })
                    .collect(),
                weights: weights_to_wit(&s.weights),
            }
        }

        pub fn status_from_wit(s: wit::EnvironmentStatus) -> core::EnvironmentStatus {
            core::EnvironmentStatus {
                slots: s
                    .slots
                    .into_iter()
                    .map(|s| core::SlotStatus {
                        name: s.name,
                        release: s.release,
                        desired: s.desired,
                        ready: s.ready,
                        endpoints: s.endpoints,
                    })
                    .collect(),
                weights: weights_from_wit(s.weights),
            }
        }

        pub fn job_to_wit(j: &core::Job) -> wit::Job {
            wit::Job {
                name: j.name.clone(),
                command: j.command.clone(),
                env: j.env.clone(),
                timeout_ms: j.timeout_ms,
            }
        }

        pub fn job_result_from_wit(j: wit::JobResult) -> core::JobResult {
            core::JobResult {
                exit_code: j.exit_code,
                output: j.output,
            }
        }

        pub fn outcome_to_wit(o: &core::Outcome) -> wit::Outcome {
            match o {
                core::Outcome::Ok => wit::Outcome::Ok,
                core::Outcome::AnalysisPassed => wit::Outcome::AnalysisPassed,
                core::Outcome::AnalysisFailed(r) => wit::Outcome::AnalysisFailed(r.clone()),
                core::Outcome::Failed(r) => wit::Outcome::Failed(r.clone()),
            }
        }

        pub fn measurement_from_wit(m: wit::Measurement) -> core::Measurement {
            core::Measurement {
                verdict: match m.verdict {
                    wit::Verdict::Pass => core::Verdict::Pass,
                    wit::Verdict::Fail => core::Verdict::Fail,
                    wit::Verdict::Inconclusive => core::Verdict::Inconclusive,
                },
                value: m.value,
                detail: m.detail,
            }
        }

        pub fn event_to_wit(e: &core::Event) -> wit::Event {
            wit::Event {
                kind: match e.kind {
                    core::EventKind::RunStarted => wit::EventKind::RunStarted,
                    core::EventKind::StageStarted => wit::EventKind::StageStarted,
                    core::EventKind::AwaitingApproval => wit::EventKind::AwaitingApproval,
                    core::EventKind::Step => wit::EventKind::Step,
                    core::EventKind::AnalysisFailed => wit::EventKind::AnalysisFailed,
                    core::EventKind::RolledBack => wit::EventKind::RolledBack,
                    core::EventKind::Succeeded => wit::EventKind::Succeeded,
                    core::EventKind::Failed => wit::EventKind::Failed,
                },
                run_id: e.run_id.clone(),
                pipeline: e.pipeline.clone(),
                environment: e.environment.clone(),
                release: release_to_wit(&e.release),
                message: e.message.clone(),
                fields: e.fields.clone(),
                url: e.url.clone(),
                timestamp_ms: e.timestamp_ms,
            }
        }
    };
}

/// The current contract, `rollcage:plugin@0.2.0`.
pub mod current {
    use rollcage_core as core;

    use crate::bindings::wit;

    shared!();

    pub fn action_to_wit(a: &core::Action) -> wit::Action {
        match a {
            core::Action::ApplySlot(s) => wit::Action::ApplySlot(slot_spec_to_wit(s)),
            core::Action::Route { weights } => wit::Action::Route(weights_to_wit(weights)),
            core::Action::RemoveSlot { slot } => wit::Action::RemoveSlot(slot.clone()),
            core::Action::Pause { pause } => wit::Action::Pause(match pause {
                core::Pause::DurationMs(ms) => wit::Pause::Duration(*ms),
                core::Pause::Approval => wit::Pause::Approval,
            }),
            core::Action::Analyze(r) => wit::Action::Analyze(wit::AnalysisRequest {
                checks: r.checks.clone(),
                slot: r.slot.clone(),
            }),
            core::Action::Expose(e) => wit::Action::Expose(wit::ExposureChange {
                control: e.control.clone(),
                flag: e.flag.clone(),
                percent: e.percent,
            }),
            core::Action::Done => wit::Action::Done,
        }
    }

    pub fn action_from_wit(a: wit::Action) -> core::Action {
        match a {
            wit::Action::ApplySlot(s) => core::Action::ApplySlot(slot_spec_from_wit(s)),
            wit::Action::Route(w) => core::Action::Route {
                weights: weights_from_wit(w),
            },
            wit::Action::RemoveSlot(slot) => core::Action::RemoveSlot { slot },
            wit::Action::Pause(p) => core::Action::Pause {
                pause: match p {
                    wit::Pause::Duration(ms) => core::Pause::DurationMs(ms),
                    wit::Pause::Approval => core::Pause::Approval,
                },
            },
            wit::Action::Analyze(r) => core::Action::Analyze(core::AnalysisRequest {
                checks: r.checks,
                slot: r.slot,
            }),
            wit::Action::Expose(e) => core::Action::Expose(core::ExposureChange {
                control: e.control,
                flag: e.flag,
                percent: e.percent,
            }),
            wit::Action::Done => core::Action::Done,
        }
    }

    pub fn state_to_wit(s: &core::DeployState) -> wit::DeployState {
        wit::DeployState {
            environment: s.environment.clone(),
            release: release_to_wit(&s.release),
            stable: s.stable.as_ref().map(release_to_wit),
            replicas: s.replicas,
            params: s.params.clone(),
            history: s
                .history
                .iter()
                .map(|h| wit::StepRecord {
                    action: action_to_wit(&h.action),
                    outcome: outcome_to_wit(&h.outcome),
                })
                .collect(),
            status: status_to_wit(&s.status),
        }
    }

    pub fn check_target_to_wit(t: &core::CheckTarget) -> wit::CheckTarget {
        wit::CheckTarget {
            environment: t.environment.clone(),
            slot: t.slot.clone(),
            release: t.release.clone(),
            endpoints: t.endpoints.clone(),
            exposure: t.exposure.as_ref().map(|e| wit::ExposureTarget {
                flag: e.flag.clone(),
                percent: e.percent,
            }),
        }
    }

    pub fn problem_from_wit(p: wit::Problem) -> core::Problem {
        core::Problem {
            field: p.field,
            message: p.message,
        }
    }

    pub fn exposure_status_from_wit(s: wit::ExposureStatus) -> core::ExposureStatus {
        core::ExposureStatus {
            percent: s.percent,
            enabled: s.enabled,
            revision: s.revision,
        }
    }
}

/// The frozen contract `rollcage:plugin@0.1.0`, adapted to the current types.
pub mod v0_1 {
    use rollcage_core as core;

    use crate::bindings::v0_1::wit;

    shared!();

    /// A 0.1 action, for the history a 0.1 strategy is shown: `None` for an
    /// `expose`, which 0.1 cannot name (and a 0.1 strategy never asks for).
    pub fn action_to_wit(a: &core::Action) -> Option<wit::Action> {
        Some(match a {
            core::Action::ApplySlot(s) => wit::Action::ApplySlot(slot_spec_to_wit(s)),
            core::Action::Route { weights } => wit::Action::Route(weights_to_wit(weights)),
            core::Action::RemoveSlot { slot } => wit::Action::RemoveSlot(slot.clone()),
            core::Action::Pause { pause } => wit::Action::Pause(match pause {
                core::Pause::DurationMs(ms) => wit::Pause::Duration(*ms),
                core::Pause::Approval => wit::Pause::Approval,
            }),
            core::Action::Analyze(r) => wit::Action::Analyze(wit::AnalysisRequest {
                checks: r.checks.clone(),
                slot: r.slot.clone(),
            }),
            core::Action::Expose(_) => return None,
            core::Action::Done => wit::Action::Done,
        })
    }

    pub fn action_from_wit(a: wit::Action) -> core::Action {
        match a {
            wit::Action::ApplySlot(s) => core::Action::ApplySlot(slot_spec_from_wit(s)),
            wit::Action::Route(w) => core::Action::Route {
                weights: weights_from_wit(w),
            },
            wit::Action::RemoveSlot(slot) => core::Action::RemoveSlot { slot },
            wit::Action::Pause(p) => core::Action::Pause {
                pause: match p {
                    wit::Pause::Duration(ms) => core::Pause::DurationMs(ms),
                    wit::Pause::Approval => core::Pause::Approval,
                },
            },
            wit::Action::Analyze(r) => core::Action::Analyze(core::AnalysisRequest {
                checks: r.checks,
                slot: r.slot,
            }),
            wit::Action::Done => core::Action::Done,
        }
    }

    pub fn state_to_wit(s: &core::DeployState) -> wit::DeployState {
        wit::DeployState {
            environment: s.environment.clone(),
            release: release_to_wit(&s.release),
            stable: s.stable.as_ref().map(release_to_wit),
            replicas: s.replicas,
            params: s.params.clone(),
            history: s
                .history
                .iter()
                .filter_map(|h| {
                    Some(wit::StepRecord {
                        action: action_to_wit(&h.action)?,
                        outcome: outcome_to_wit(&h.outcome),
                    })
                })
                .collect(),
            status: status_to_wit(&s.status),
        }
    }

    /// A 0.1 check target: the exposure is left out, 0.1 has no field for it.
    pub fn check_target_to_wit(t: &core::CheckTarget) -> wit::CheckTarget {
        wit::CheckTarget {
            environment: t.environment.clone(),
            slot: t.slot.clone(),
            release: t.release.clone(),
            endpoints: t.endpoints.clone(),
        }
    }
}

pub use current::*;

#[cfg(test)]
mod tests {
    use rollcage_core as core;

    use super::*;

    #[test]
    fn actions_round_trip() {
        let actions = [
            core::Action::ApplySlot(core::SlotSpec {
                name: "canary".into(),
                release: core::Release::new("1.2.0"),
                replicas: 2,
            }),
            core::Action::Route {
                weights: vec![core::RouteWeight {
                    slot: "canary".into(),
                    weight: 100,
                }],
            },
            core::Action::RemoveSlot {
                slot: "stable".into(),
            },
            core::Action::Pause {
                pause: core::Pause::DurationMs(5),
            },
            core::Action::Pause {
                pause: core::Pause::Approval,
            },
            core::Action::Analyze(core::AnalysisRequest {
                checks: vec!["error-rate".into()],
                slot: "canary".into(),
            }),
            core::Action::Expose(core::ExposureChange {
                control: String::new(),
                flag: "checkout-v2".into(),
                percent: 10,
            }),
            core::Action::Done,
        ];
        for a in actions {
            assert_eq!(action_from_wit(action_to_wit(&a)), a);
            match v0_1::action_to_wit(&a) {
                Some(old) => assert_eq!(v0_1::action_from_wit(old), a),
                None => assert!(matches!(a, core::Action::Expose(_))),
            }
        }
    }

    #[test]
    fn a_0_1_strategy_never_sees_an_expose_in_its_history() {
        let step = |action| core::StepRecord {
            action,
            outcome: core::Outcome::Ok,
        };
        let state = core::DeployState {
            history: vec![
                step(core::Action::Expose(core::ExposureChange {
                    control: String::new(),
                    flag: "f".into(),
                    percent: 10,
                })),
                step(core::Action::Done),
            ],
            ..core::DeployState::default()
        };
        assert_eq!(current::state_to_wit(&state).history.len(), 2);
        let old = v0_1::state_to_wit(&state);
        assert_eq!(old.history.len(), 1);
        assert!(matches!(
            old.history[0].action,
            crate::bindings::v0_1::wit::Action::Done
        ));
    }
}
