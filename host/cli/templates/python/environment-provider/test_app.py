"""Unit tests of app.py under CPython: `./build.sh` once (it writes the
binding stubs to bindings/), then `python3 -m unittest`."""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "bindings")]

import app  # noqa: E402
import rollcage  # noqa: E402


class ProviderTest(unittest.TestCase):
    def test_the_platform_status_becomes_the_environment_status(self):
        status = app.to_status({
            "slots": [{"name": "1.0.0", "release": "1.0.0", "desired": 2, "ready": 1, "endpoints": ["10.0.0.5:8080"]}],
            "weights": [{"slot": "1.0.0", "weight": 100}],
        })
        self.assertEqual(status.slots[0].endpoints, ["10.0.0.5:8080"])
        self.assertEqual(status.weights[0].weight, 100)
        with self.assertRaises(rollcage.PluginError):
            app.to_status({"slots": [{"name": "1.0.0"}], "weights": []})

    def test_names_are_encoded_in_urls(self):
        self.assertEqual(app.encode("web/blue 1"), "web%2Fblue%201")


if __name__ == "__main__":
    unittest.main()
