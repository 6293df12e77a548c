"""`exponential-ramp`: a Rollcage strategy that sends 1, 2, 4, 8, 16, 32, 64
and then 100% of traffic to the new release, with analysis at every step.

It follows `builtin:canary` exactly, only the weights differ: the new release
runs beside the stable one in a slot named after its version; each weight
change (after the canary is scaled to its share, at least one instance) is
followed by an analysis of the new slot and, when `pause` is set, a pause; on
promotion the new slot takes its full size and all the traffic, and the old
stable slot is removed. A first deployment (nothing running) goes all at
once. Rollback: all traffic back to stable, then the new slot removed.

Strategies are pure functions of the state the engine passes in: the whole
plan is computed from the parameters, the replica count and the releases,
and `decide` returns the step after those already recorded
(`plan[len(history)]`, `done` past its end), so a run cut at any point
resumes where it was.
"""

import json
import math
import re
from typing import List, Optional, Union

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import (
    Action,
    Action_Analyze,
    Action_ApplySlot,
    Action_Done,
    Action_Pause,
    Action_RemoveSlot,
    Action_Route,
    AnalysisRequest,
    DeployState,
    Pause,
    Pause_Approval,
    Pause_Duration,
    Release,
    RouteWeight,
    SlotSpec,
)

KEYS = ("start", "factor", "pause", "analysis")
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


class Params:
    """The strategy's parameters, checked."""

    def __init__(self, start: int, factor: float, pause: Optional[Pause], analysis: Union[bool, List[str]]):
        self.start, self.factor, self.pause, self.analysis = start, factor, pause, analysis

    @staticmethod
    def parse(text: str) -> "Params":
        """Parse and check; raises `Invalid` with every problem, each naming its parameter."""
        try:
            raw = json.loads(text) if text.strip() else {}
        except ValueError as e:
            raise Invalid([f"exponential-ramp: parameters are not JSON: {e}"]) from None
        if not isinstance(raw, dict):
            raise Invalid(["exponential-ramp: parameters must be a table"])
        problems = [
            f"{key}: unknown parameter; expected one of {', '.join(KEYS)}" for key in raw if key not in KEYS
        ]

        start = raw.get("start", 1)
        if isinstance(start, bool) or not isinstance(start, int) or not 1 <= start <= 100:
            problems.append(f"start: must be a whole percentage from 1 to 100, not {json.dumps(start)}")
            start = 1

        factor = raw.get("factor", 2)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1 or math.isinf(factor):
            problems.append(f"factor: must be a number above 1, not {json.dumps(factor)}")
            factor = 2

        pause = None
        if "pause" in raw:
            value = raw["pause"]
            if value == "approval":
                pause = Pause_Approval()
            elif isinstance(value, str) and parse_duration(value) is not None:
                pause = Pause_Duration(parse_duration(value))
            else:
                problems.append(
                    f"pause: invalid duration {json.dumps(value)}: use a number and a unit, "
                    'such as 500ms, 30s, 5m, 1h (or "approval")'
                )

        analysis = raw.get("analysis", True)
        if not isinstance(analysis, bool) and not (
            isinstance(analysis, list) and analysis and all(isinstance(c, str) and c for c in analysis)
        ):
            problems.append('analysis: true, false, or a list of check names such as ["error-rate"]')
            analysis = True

        if problems:
            raise Invalid(problems)
        return Params(start, factor, pause, analysis)

    def weights(self) -> List[int]:
        """start, start*factor, ... while below 100 (rounded up, so always growing), then 100."""
        out, w = [], self.start
        while w < 100:
            out.append(w)
            # round() first: 10 * 1.1 is 11.000000000000002, and 11 is meant.
            w = math.ceil(round(w * self.factor, 9))
        out.append(100)
        return out


class Invalid(Exception):
    def __init__(self, problems: List[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_duration(text: str) -> Optional[int]:
    """`500ms`, `30s`, `5m`, `1h30m` -> milliseconds, as the host parses them."""
    text = text.strip()
    if not text:
        return None
    total, pos = 0, 0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            return None
        total += int(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    return total if pos == len(text) else None


# The plan helpers of the Rust SDK (`rollcage_sdk::strategy::plan`).

def version_slot(release: Release) -> str:
    return release.version


def apply(slot: str, release: Release, replicas: int) -> Action:
    return Action_ApplySlot(SlotSpec(name=slot, release=release, replicas=replicas))


def route(weights) -> Action:
    """`route` with these (slot, weight) pairs; zero weights are left out."""
    return Action_Route([RouteWeight(slot=s, weight=w) for s, w in weights if w > 0])


def first_deployment(slot: str, release: Release, replicas: int) -> List[Action]:
    return [apply(slot, release, replicas), route([(slot, 100)]), Action_Done()]


def back_to_stable(stable_slot: Optional[str], new_slot: str) -> List[Action]:
    actions: List[Action] = []
    if stable_slot is not None:
        actions.append(route([(stable_slot, 100)]))
    actions.append(Action_RemoveSlot(new_slot))
    return actions


def canary_size(replicas: int, weight: int) -> int:
    """Instances of the new release at `weight`% of `replicas` (at least one)."""
    if weight >= 100:
        return max(replicas, 1)
    return max(-(-replicas * weight // 100), 1)


def plan(params: Params, replicas: int, stable: Optional[Release], new: Release) -> List[Action]:
    """The full forward plan."""
    canary = version_slot(new)
    stable_slot = version_slot(stable) if stable is not None else None
    if stable_slot is None or stable_slot == canary:
        return first_deployment(canary, new, replicas)
    checks = params.analysis if isinstance(params.analysis, list) else []
    actions: List[Action] = []
    size = 0
    for weight in params.weights():
        wanted = canary_size(replicas, weight)
        if wanted > size:
            actions.append(apply(canary, new, wanted))
            size = wanted
        actions.append(route([(canary, weight), (stable_slot, 100 - weight)]))
        if params.analysis is not False:
            actions.append(Action_Analyze(AnalysisRequest(checks=list(checks), slot=canary)))
        if params.pause is not None and weight < 100:
            actions.append(Action_Pause(params.pause))
    # Promotion: the new release takes its full size (already done at 100%)
    # and every request; the old stable slot goes.
    if size != max(replicas, 1):
        actions.append(apply(canary, new, max(replicas, 1)))
    actions.append(Action_RemoveSlot(stable_slot))
    actions.append(Action_Done())
    return actions


def decide(state: DeployState) -> Action:
    params = Params.parse(state.params)
    steps = plan(params, state.replicas, state.stable, state.release)
    done = len(state.history)
    return steps[done] if done < len(steps) else Action_Done()


def rollback(state: DeployState) -> List[Action]:
    canary = version_slot(state.release)
    stable = version_slot(state.stable) if state.stable is not None else None
    return back_to_stable(stable if stable != canary else None, canary)


class StrategyApi(exports.StrategyApi):
    # The component is built with stubbed WASI (`componentize-py -s`): it
    # imports nothing but the Rollcage interfaces, so it cannot print; every
    # error is returned, never raised past here.

    def validate(self, params: str) -> None:
        try:
            Params.parse(params)
        except Invalid as e:
            raise Err(e.problems)
        except Exception as e:
            raise Err([f"exponential-ramp: {type(e).__name__}: {e}"])

    def decide(self, state: DeployState) -> Action:
        try:
            return decide(state)
        except Exception as e:
            raise Err(str(e) if isinstance(e, Invalid) else f"exponential-ramp: {type(e).__name__}: {e}")

    def rollback(self, state: DeployState) -> List[Action]:
        try:
            return rollback(state)
        except Exception as e:
            raise Err(f"exponential-ramp: {type(e).__name__}: {e}")
