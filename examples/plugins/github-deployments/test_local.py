#!/usr/bin/env python3
"""The plugin's logic under CPython against fake_github.py: no wasm, no cargo.

    ./build.sh            # once: writes the binding stubs to bindings/
    python3 test_local.py

The transport (`wasi_http.request` in the component) is replaced by a
urllib version; everything else is the code that goes into the component.
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
BINDINGS = os.path.join(HERE, "bindings")
if not os.path.isdir(os.path.join(BINDINGS, "wit_world")):
    sys.exit("test_local.py: no bindings/ yet: run ./build.sh first")
# The template's HTTP helper, which build.sh puts in target/helpers.
sys.path[:0] = [HERE, BINDINGS, os.path.join(HERE, "target", "helpers")]

import app  # noqa: E402
from wit_world.imports.rollcage_plugin_types import Event, EventKind, Release  # noqa: E402

TOKEN = "ghp_test"


def urllib_send(method, url, headers, body):
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


class FakeGitHub:
    def __init__(self, *extra):
        self.dir = tempfile.TemporaryDirectory()
        self.record = os.path.join(self.dir.name, "requests.jsonl")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "fake_github.py"), "--port", "0",
             "--record", self.record, "--repo", "octo/app", "--token", TOKEN, *extra],
            stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def requests(self):
        with open(self.record) as f:
            return [json.loads(line) for line in f]

    def close(self):
        self.proc.terminate()
        self.proc.wait(5)
        self.proc.stdout.close()
        self.dir.cleanup()


def event(kind, run="run-1", env=None, message="", version="1.2.0", params=()):
    return Event(kind=kind, run_id=run, pipeline="api", environment=env,
                 release=Release(version=version, notes=None, params=list(params)),
                 message=message, fields=[], url=None, timestamp_ms=1700000000000)


class Test(unittest.TestCase):
    def setUp(self):
        self.gh = FakeGitHub("--refs", "v1.2.0,v1.3.0,abc123")
        self.logs = []
        self.config = {"api_url": self.gh.url, "owner": "octo", "repo": "app",
                       "token": TOKEN, "log_url": "https://rollcage.example.com/runs/{run_id}"}

    def tearDown(self):
        self.gh.close()

    def send(self, e, **config):
        cfg = dict(self.config, **config)
        app.deliver(e, json.dumps(cfg), lambda name: {"GH": TOKEN}[name], urllib_send,
                    lambda level, msg, fields: self.logs.append(msg))

    def writes(self):
        return [(r["method"], r["path"], r["body"]) for r in self.gh.requests() if r["method"] == "POST"]

    def statuses(self):
        return [(r["path"].split("/")[5], r["body"]["state"]) for r in self.gh.requests()
                if r["method"] == "POST" and r["path"].endswith("/statuses")]

    def test_a_promoted_run_through_two_stages(self):
        K = EventKind
        for e in [
            event(K.RUN_STARTED, message="started by alice"),
            event(K.STAGE_STARTED, env="staging", message="staging started"),
            event(K.STEP, env="staging", message="traffic 1.2.0=50% 1.1.0=50%"),
            event(K.STEP, env="staging", message="traffic 1.2.0=100%"),
            event(K.AWAITING_APPROVAL, env="production", message="production waits for approval"),
            event(K.STAGE_STARTED, env="production", message="production started"),
            event(K.STEP, env="production", message="traffic 1.2.0=10% 1.1.0=90%"),
            event(K.SUCCEEDED, message="1.2.0 is live in every stage"),
        ]:
            self.send(e)
        for r in self.gh.requests():
            self.assertLess(r["status"], 300, r)
            h = r["headers"]
            self.assertEqual(h["authorization"], f"Bearer {TOKEN}")
            self.assertEqual(h["accept"], "application/vnd.github+json")
            self.assertEqual(h["x-github-api-version"], "2022-11-28")
            self.assertTrue(h["user-agent"])
        created = [b for m, p, b in self.writes() if p.endswith("/deployments")]
        self.assertEqual([b["environment"] for b in created], ["staging", "production"])
        for b in created:
            self.assertEqual(b["ref"], "v1.2.0")
            self.assertIs(b["auto_merge"], False)
            self.assertEqual(b["required_contexts"], [])
            self.assertEqual(b["payload"]["rollcage"]["run_id"], "run-1")
        self.assertEqual(self.statuses(), [
            ("1", "in_progress"), ("1", "in_progress"), ("1", "in_progress"),
            ("1", "success"),  # staging passed: production is next
            ("2", "queued"), ("2", "in_progress"), ("2", "in_progress"),
            ("2", "success"),
        ])
        posted = [b for m, p, b in self.writes() if p.endswith("/statuses")]
        self.assertEqual(posted[0]["log_url"], "https://rollcage.example.com/runs/run-1")
        self.assertEqual(posted[0]["environment"], "staging")
        self.assertEqual(posted[0]["description"], "1.2.0: staging started")

    def test_a_rollback_is_a_failure_and_a_retry_creates_nothing_twice(self):
        K = EventKind
        self.send(event(K.STAGE_STARTED, env="production", message="production started"))
        self.send(event(K.STAGE_STARTED, env="production", message="production started"))  # a retry
        self.send(event(K.ANALYSIS_FAILED, env="production", message="error ratio 0.31 above 0.05"))
        self.send(event(K.ROLLED_BACK, env="production", message="error-rate failed " + "x" * 200))
        created = [p for m, p, b in self.writes() if p.endswith("/deployments")]
        self.assertEqual(len(created), 1)
        self.assertEqual([s for _, s in self.statuses()], ["in_progress", "in_progress", "in_progress", "failure"])
        last = self.writes()[-1][2]
        self.assertTrue(last["description"].startswith("1.2.0: rolled back: error-rate failed"))
        self.assertLessEqual(len(last["description"]), 140)

    def test_two_runs_of_one_ref_keep_their_own_deployments(self):
        K = EventKind
        self.send(event(K.STAGE_STARTED, run="run-1", env="production"))
        self.send(event(K.STAGE_STARTED, run="run-2", env="production"))
        self.send(event(K.ROLLED_BACK, run="run-1", env="production", message="bad"))
        self.assertEqual(self.statuses(), [("1", "in_progress"), ("2", "in_progress"), ("1", "failure")])

    def test_ref_from_a_run_parameter_and_environment_names(self):
        self.send(event(EventKind.STAGE_STARTED, env="production", params=[("ref", "abc123")]),
                  environments={"production": "prod"}, token=None, token_secret="GH")
        body = self.writes()[0][2]
        self.assertEqual((body["ref"], body["environment"]), ("abc123", "prod"))

    def test_github_errors_name_the_status_and_message(self):
        with self.assertRaises(app.PluginError) as e:
            self.send(event(EventKind.STAGE_STARTED, env="production", version="9.9.9"))
        self.assertEqual(str(e.exception),
                         "GitHub POST /deployments answered 422: No ref found for: v9.9.9")
        with self.assertRaises(app.PluginError) as e:
            self.send(event(EventKind.STAGE_STARTED, env="production"), token="wrong")
        self.assertIn("answered 401: Bad credentials (check the token)", str(e.exception))
        with self.assertRaises(app.PluginError) as e:
            self.send(event(EventKind.STAGE_STARTED, env="production"), repo="other")
        self.assertIn("answered 404: Not Found (no such repository", str(e.exception))

    def test_a_denied_request_reads_apart_from_a_network_failure(self):
        # The errors of the template's helper (target/helpers/wasi_http.py),
        # as the component raises them: each names the request and says why.
        import wasi_http
        for error in [
            wasi_http.HttpDenied("request to `api.github.com:443` denied: the host is not in this plugin's allow_hosts"),
            wasi_http.HttpError("request to `127.0.0.1:9` failed: connection refused: nothing listens at that address and port"),
        ]:
            def send(method, url, headers, body, error=error):
                raise error
            with self.assertRaises(app.PluginError) as e:
                app.deliver(event(EventKind.STAGE_STARTED, env="production"), json.dumps(self.config),
                            lambda name: TOKEN, send, lambda level, msg, fields: None)
            self.assertTrue(str(e.exception).startswith("GitHub GET /deployments?ref=v1.2.0"), str(e.exception))
            self.assertTrue(str(e.exception).endswith(f": {error}"), str(e.exception))
        self.assertTrue(issubclass(wasi_http.HttpDenied, wasi_http.HttpError))

    def test_bad_config_is_reported_at_once(self):
        with self.assertRaises(app.PluginError) as e:
            app.Config.parse(json.dumps({"repo": 3, "tokn": "x", "events": ["nope"]}))
        text = str(e.exception)
        for part in ["unknown key `tokn`", "`owner` is required", "`repo` must be a non-empty string",
                     "set exactly one of `token`", "unknown event `nope`"]:
            self.assertIn(part, text)

    def test_events_filter(self):
        self.send(event(EventKind.STEP, env="staging"), events=["rolled-back"])
        self.assertEqual(self.gh.requests(), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
