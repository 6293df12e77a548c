"""Unit tests of app.py under CPython: `./build.sh` once (it writes the
binding stubs to bindings/), then `python3 -m unittest`."""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "bindings")]

import app  # noqa: E402
import rollcage  # noqa: E402
from wit_world.imports.types import (  # noqa: E402
    Action_Done,
    Action_RemoveSlot,
    Action_Route,
    DeployState,
    EnvironmentStatus,
    Outcome_Ok,
    Release,
    StepRecord,
)


def state(stable, new, history=()):
    release = lambda v: Release(version=v, notes=None, params=[])  # noqa: E731
    return DeployState(environment="production", release=release(new),
                       stable=release(stable) if stable else None, replicas=3, params="{}",
                       history=[StepRecord(action=a, outcome=Outcome_Ok()) for a in history],
                       status=EnvironmentStatus(slots=[], weights=[]))


class StrategyTest(unittest.TestCase):
    def test_parameters_are_checked(self):
        self.assertEqual(app.params("{}"), {"first_weight": 10})
        with self.assertRaises(rollcage.ConfigError):
            app.params('{"first_weight": 100}')
        with self.assertRaises(rollcage.ConfigError):
            app.params('{"first_wieght": 5}')

    def test_the_plan_ends_promoted_and_decide_follows_it(self):
        plan = app.steps(state("1.0.0", "1.1.0"), {"first_weight": 10})
        self.assertEqual(plan[-2:], [Action_RemoveSlot("1.0.0"), Action_Done()])
        for done in range(len(plan) + 1):
            s = state("1.0.0", "1.1.0", plan[:done])
            want = plan[done] if done < len(plan) else Action_Done()
            self.assertEqual(app.StrategyApi().decide(s), want)

    def test_rollback_puts_traffic_back_on_stable(self):
        actions = app.StrategyApi().rollback(state("1.0.0", "1.1.0"))
        self.assertEqual(actions[0], Action_Route([app.RouteWeight(slot="1.0.0", weight=100)]))
        self.assertEqual(actions[1], Action_RemoveSlot("1.1.0"))


if __name__ == "__main__":
    unittest.main()
