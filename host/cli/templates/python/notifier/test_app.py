"""Unit tests of app.py under CPython: `./build.sh` once (it writes the
binding stubs to bindings/), then `python3 -m unittest`."""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "bindings")]

import app  # noqa: E402
import rollcage  # noqa: E402
from wit_world.imports.rollcage_plugin_types import Event, EventKind, Release  # noqa: E402


def sample_event(kind: EventKind) -> Event:
    return Event(kind=kind, run_id="run-42", pipeline="api", environment="production",
                 release=Release(version="1.2.0", notes=None, params=[]),
                 message="error ratio 0.31 above 0.05", fields=[], url=None,
                 timestamp_ms=1_700_000_000_000)


class NotifierTest(unittest.TestCase):
    def test_a_line_names_pipeline_release_and_environment(self):
        line = app.render("deploys", sample_event(EventKind.SUCCEEDED))
        self.assertEqual(line, "deploys: api 1.2.0 in production: error ratio 0.31 above 0.05")

    def test_an_unknown_config_key_is_an_error(self):
        with self.assertRaises(rollcage.ConfigError) as e:
            rollcage.parse_config('{"prefx": "x"}', app.CONFIG)
        self.assertIn("unknown key `prefx`", str(e.exception))


if __name__ == "__main__":
    unittest.main()
