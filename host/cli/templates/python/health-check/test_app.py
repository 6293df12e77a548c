"""Unit tests of app.py under CPython: `./build.sh` once (it writes the
binding stubs to bindings/), then `python3 -m unittest`."""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "bindings")]

import app  # noqa: E402
from wit_world.imports.rollcage_plugin_types import Verdict  # noqa: E402


class HealthCheckTest(unittest.TestCase):
    def test_the_verdict_follows_the_healthy_fraction(self):
        self.assertEqual(app.measure(2, 2, 1.0).verdict, Verdict.PASS)
        self.assertEqual(app.measure(1, 2, 1.0).verdict, Verdict.FAIL)
        self.assertEqual(app.measure(1, 2, 0.5).value, 0.5)
        self.assertEqual(app.measure(0, 0, 1.0).verdict, Verdict.INCONCLUSIVE)


if __name__ == "__main__":
    unittest.main()
