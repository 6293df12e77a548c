"""__NAME__: a strategy. Strategies are pure functions of the run's
recorded history: `decide` returns the next step of a plan known up front,
so a run can be previewed, replayed and resumed. This one starts the new
release beside the stable one, sends it `first_weight` percent of traffic,
has it analysed, then moves all traffic and removes the old slot. Any
failure makes the engine execute `rollback`.

A strategy is granted nothing: it is built with `--stub-wasi` (see
build.sh), so it has no HTTP, clock, randomness or stdout; use
`rollcage.log` to log.
"""

from typing import List, Optional, Tuple

import rollcage
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import (
    Action,
    Action_Analyze,
    Action_ApplySlot,
    Action_Done,
    Action_RemoveSlot,
    Action_Route,
    AnalysisRequest,
    DeployState,
    Release,
    RouteWeight,
    SlotSpec,
)

# The strategy's parameters (the rest of the environment's `strategy`
# table): each key with its default.
PARAMS = {
    "first_weight": 10,  # percent of traffic for the first step
}


def params(text: str) -> dict:
    """The parameters, checked; `rollcage.ConfigError` lists every problem."""
    p = rollcage.parse_config(text, PARAMS, what="parameters")
    if not 1 <= p["first_weight"] <= 99:
        raise rollcage.ConfigError("parameters", [f"first_weight = {p['first_weight']}: expected 1 to 99"])
    return p


# Plan helpers, as in the Rust SDK (`rollcage_sdk::strategy::plan`).


def version_slot(release: Release) -> str:
    """A release's slot is named after its version."""
    return release.version


def apply(slot: str, release: Release, replicas: int) -> Action:
    return Action_ApplySlot(SlotSpec(name=slot, release=release, replicas=replicas))


def route(weights: List[Tuple[str, int]]) -> Action:
    """`route` with these (slot, weight) pairs; zero weights are left out."""
    return Action_Route([RouteWeight(slot=s, weight=w) for s, w in weights if w > 0])


def first_deployment(slot: str, release: Release, replicas: int) -> List[Action]:
    """Nothing running yet: everything at once."""
    return [apply(slot, release, replicas), route([(slot, 100)]), Action_Done()]


def back_to_stable(stable_slot: Optional[str], new_slot: str) -> List[Action]:
    """All traffic back to the stable slot (if there is one), then the new slot removed."""
    actions: List[Action] = []
    if stable_slot is not None:
        actions.append(route([(stable_slot, 100)]))
    actions.append(Action_RemoveSlot(new_slot))
    return actions


def stable_slot(state: DeployState) -> Optional[str]:
    """The slot of the release running before this run, unless it is the one being deployed."""
    if state.stable is None or version_slot(state.stable) == version_slot(state.release):
        return None
    return version_slot(state.stable)


def steps(state: DeployState, p: dict) -> List[Action]:
    """The whole plan."""
    new = version_slot(state.release)
    stable = stable_slot(state)
    if stable is None:
        return first_deployment(new, state.release, state.replicas)
    weight = p["first_weight"]
    return [
        apply(new, state.release, state.replicas),
        route([(new, weight), (stable, 100 - weight)]),
        Action_Analyze(AnalysisRequest(checks=[], slot=new)),
        route([(new, 100)]),
        Action_RemoveSlot(stable),
        Action_Done(),
    ]


class StrategyApi(exports.StrategyApi):
    def validate(self, text: str) -> None:
        try:
            params(text)
        except rollcage.ConfigError as e:
            raise Err(e.problems)  # validate's error is the list of every problem
        except Exception as e:
            raise Err([f"{type(e).__name__}: {e}"])

    @rollcage.returns_errors
    def decide(self, state: DeployState) -> Action:
        plan = steps(state, params(state.params))
        done = len(state.history)
        return plan[done] if done < len(plan) else Action_Done()

    @rollcage.returns_errors
    def rollback(self, state: DeployState) -> List[Action]:
        return back_to_stable(stable_slot(state), version_slot(state.release))
