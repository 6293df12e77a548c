"""Unit tests of app.py under CPython: `./build.sh` once (it writes the
binding stubs to bindings/), then `python3 -m unittest`."""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "bindings")]

import app  # noqa: E402
import rollcage  # noqa: E402


class ExposureTest(unittest.TestCase):
    def test_the_config_is_checked_key_by_key(self):
        self.assertEqual(app.problems('{"api_url": "http://127.0.0.1:8080"}'), [])
        self.assertEqual([p.field for p in app.problems('{"api_url": "127.0.0.1:8080"}')], ["api_url"])
        self.assertEqual([p.field for p in app.problems('{"api_ur": "http://x"}')], ["api_ur", "api_url"])

    def test_the_service_answer_becomes_the_status(self):
        status = app.to_status({"percent": 10, "enabled": True, "revision": "7"})
        self.assertEqual((status.percent, status.enabled, status.revision), (10, True, "7"))
        with self.assertRaises(rollcage.PluginError):
            app.to_status({"enabled": True})


if __name__ == "__main__":
    unittest.main()
