#!/usr/bin/env python3
"""The strategy's logic under CPython: no wasm, no cargo.

    ./build.sh            # once: writes the binding stubs to bindings/
    python3 test_local.py

The checks mirror `plugins/canary`'s tests: every plan keeps the invariants
of `rollcage_sdk::testing::simulate` and ends promoted; `decide` resumes from
any cut of the history; `rollback` from any point before the stable slot is
removed restores the stable slot exactly.
"""

import json
import os
import random
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
BINDINGS = os.path.join(HERE, "bindings")
if not os.path.isdir(os.path.join(BINDINGS, "wit_world")):
    sys.exit("test_local.py: no bindings/ yet: run ./build.sh first")
sys.path[:0] = [HERE, BINDINGS]

import app  # noqa: E402
from componentize_py_types import Err  # noqa: E402
from wit_world.imports.types import (  # noqa: E402
    Action_Analyze,
    Action_ApplySlot,
    Action_Done,
    Action_Pause,
    Action_RemoveSlot,
    Action_Route,
    AnalysisRequest,
    DeployState,
    EnvironmentStatus,
    Outcome_Ok,
    Pause_Approval,
    Pause_Duration,
    Release,
    StepRecord,
)


def release(version):
    return Release(version=version, notes=None, params=[])


def simulate(initial, actions):
    """`rollcage_sdk::testing::simulate`: the slots at the end, or AssertionError."""
    slots = dict(initial)
    routed = set(initial)
    for i, a in enumerate(actions):
        if isinstance(a, Action_ApplySlot):
            if a.value.replicas == 0 and a.value.name in routed:
                raise AssertionError(f"step {i}: slot `{a.value.name}` scaled to zero while it receives traffic")
            slots[a.value.name] = a.value.replicas
        elif isinstance(a, Action_RemoveSlot):
            if a.value in routed:
                raise AssertionError(f"step {i}: slot `{a.value}` removed while it receives traffic")
            slots.pop(a.value, None)
        elif isinstance(a, Action_Route):
            routed = {w.slot for w in a.value if w.weight > 0}
            total = sum(w.weight for w in a.value)
            if total != 100:
                raise AssertionError(f"step {i}: route weights sum to {total}")
            for w in a.value:
                if w.weight > 0 and slots.get(w.slot, 0) == 0:
                    raise AssertionError(f"step {i}: {w.weight}% routed to `{w.slot}`, which has no instance")
    return slots


def state(params, replicas, history, stable="1.0.0", new="2.0.0"):
    return DeployState(
        environment="production",
        release=release(new),
        stable=release(stable) if stable else None,
        replicas=replicas,
        params=params,
        history=[StepRecord(action=a, outcome=Outcome_Ok()) for a in history],
        status=EnvironmentStatus(slots=[], weights=[]),
    )


def forward(params, replicas):
    return app.plan(app.Params.parse(params), replicas, release("1.0.0"), release("2.0.0"))


def routes(actions):
    return [[(w.slot, w.weight) for w in a.value] for a in actions if isinstance(a, Action_Route)]


API = app.StrategyApi()


class Test(unittest.TestCase):
    def test_defaults_double_from_1_to_100_with_analysis_after_each(self):
        actions = forward("{}", 4)
        self.assertEqual(
            [r[0][1] for r in routes(actions)], [1, 2, 4, 8, 16, 32, 64, 100])
        self.assertEqual(routes(actions)[0], [("2.0.0", 1), ("1.0.0", 99)])
        self.assertEqual(routes(actions)[-1], [("2.0.0", 100)])
        analyses = [a for a in actions if isinstance(a, Action_Analyze)]
        self.assertEqual(len(analyses), 8)
        self.assertEqual(analyses[0].value, AnalysisRequest(checks=[], slot="2.0.0"))
        self.assertEqual(actions[-2:], [Action_RemoveSlot("1.0.0"), Action_Done()])
        # The canary grows with its share: 1 instance up to 25%, 2 to 50%, 3 to 75%, then 4.
        sizes = [a.value.replicas for a in actions if isinstance(a, Action_ApplySlot)]
        self.assertEqual(sizes, [1, 2, 3, 4])
        self.assertEqual(simulate({"1.0.0": 4}, actions), {"2.0.0": 4})

    def test_start_factor_pause_and_named_checks(self):
        actions = forward('{"start": 5, "factor": 3, "pause": "1m30s", "analysis": ["error-rate"]}', 10)
        self.assertEqual([r[0][1] for r in routes(actions)], [5, 15, 45, 100])
        pauses = [a for a in actions if isinstance(a, Action_Pause)]
        self.assertEqual(pauses, [Action_Pause(Pause_Duration(90_000))] * 3)  # none after 100%
        self.assertIn(Action_Analyze(AnalysisRequest(checks=["error-rate"], slot="2.0.0")), actions)
        self.assertEqual(simulate({"1.0.0": 10}, actions), {"2.0.0": 10})
        approval = forward('{"factor": 10, "pause": "approval", "analysis": false}', 2)
        self.assertEqual([r[0][1] for r in routes(approval)], [1, 10, 100])
        self.assertFalse(any(isinstance(a, Action_Analyze) for a in approval))
        self.assertEqual(approval.count(Action_Pause(Pause_Approval())), 2)

    def test_a_fractional_factor_still_grows_every_step(self):
        p = app.Params.parse('{"factor": 1.5}')
        w = p.weights()
        self.assertEqual(w[:6], [1, 2, 3, 5, 8, 12])
        self.assertTrue(all(a < b for a, b in zip(w, w[1:])))
        self.assertEqual(app.Params.parse('{"start": 100}').weights(), [100])

    def test_bad_parameters_are_all_reported(self):
        with self.assertRaises(Err) as e:
            API.validate('{"start": 0, "factor": 1, "pause": "soon", "analysis": "yes", "steps": [1]}')
        self.assertEqual(e.exception.value, [
            "steps: unknown parameter; expected one of start, factor, pause, analysis",
            "start: must be a whole percentage from 1 to 100, not 0",
            "factor: must be a number above 1, not 1",
            'pause: invalid duration "soon": use a number and a unit, such as 500ms, 30s, 5m, 1h (or "approval")',
            'analysis: true, false, or a list of check names such as ["error-rate"]',
        ])
        API.validate("")
        API.validate('{"start": 10, "factor": 2.5, "pause": "250ms"}')
        with self.assertRaises(Err) as e:
            API.decide(state('{"factor": true}', 3, []))
        self.assertEqual(e.exception.value, "factor: must be a number above 1, not true")

    def test_a_first_deployment_goes_all_at_once(self):
        for stable in (None, "2.0.0"):
            actions = app.plan(app.Params.parse("{}"), 3, release(stable) if stable else None, release("2.0.0"))
            self.assertEqual(len(actions), 3)
            self.assertEqual(simulate({}, actions), {"2.0.0": 3})
        self.assertEqual(API.rollback(state("{}", 3, [], stable=None)), [Action_RemoveSlot("2.0.0")])

    def test_decide_resumes_from_any_cut_and_rollback_restores_stable(self):
        p = '{"start": 10, "pause": "1s"}'
        full = forward(p, 3)
        for cut in range(len(full) + 2):
            nxt = API.decide(state(p, 3, full[:cut]))
            self.assertEqual(nxt, full[cut] if cut < len(full) else Action_Done())
            if Action_RemoveSlot("1.0.0") not in full[:cut]:
                back = API.rollback(state(p, 3, full[:cut]))
                self.assertEqual(back[-1], Action_RemoveSlot("2.0.0"))
                self.assertEqual(simulate({"1.0.0": 3}, full[:cut] + back), {"1.0.0": 3}, f"cut {cut}")

    def test_random_parameters_keep_the_invariants(self):
        rng = random.Random(7)
        for _ in range(300):
            params = {"start": rng.randint(1, 100), "factor": rng.choice([1.1, 1.5, 2, 3, 10])}
            if rng.random() < 0.5:
                params["pause"] = rng.choice(["approval", "10ms", "1h"])
            if rng.random() < 0.3:
                params["analysis"] = False
            text = json.dumps(params)
            replicas = rng.randint(1, 12)
            full = forward(text, replicas)
            self.assertEqual(simulate({"1.0.0": replicas}, full), {"2.0.0": replicas}, text)
            self.assertEqual(full[-1], Action_Done())
            removal = full.index(Action_RemoveSlot("1.0.0"))
            cut = rng.randint(0, removal)
            back = API.rollback(state(text, replicas, full[:cut]))
            self.assertEqual(simulate({"1.0.0": replicas}, full[:cut] + back), {"1.0.0": replicas}, text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
