"""__NAME__: a health check. For every endpoint of the slot under analysis
it GETs `path` and counts the answers with a 2xx status; the value is the
healthy fraction, and the verdict passes when it is at least `min_ratio`.

A check returns an error only when it could not measure at all (its
metrics server is down): an error is "no measurement", not a failure.
"""

import rollcage
import wasi_http
from wit_world import exports
from wit_world.imports.rollcage_plugin_types import CheckTarget, Measurement, Verdict

# The plugin's `config` table: each key with its default.
CONFIG = {
    "path": "/healthz",  # path on each endpoint
    "min_ratio": 1.0,  # healthy fraction needed to pass (1.0: every endpoint)
}


def measure(healthy: int, total: int, min_ratio: float) -> Measurement:
    """The measurement for `healthy` of `total` endpoints."""
    if total == 0:
        return Measurement(verdict=Verdict.INCONCLUSIVE, value=None, detail="no endpoint to check")
    ratio = healthy / total
    return Measurement(
        verdict=Verdict.PASS if ratio >= min_ratio else Verdict.FAIL,
        value=ratio,
        detail=f"{healthy} of {total} endpoints healthy",
    )


class HealthCheckApi(exports.HealthCheckApi):
    @rollcage.returns_errors
    def check(self, target: CheckTarget) -> Measurement:
        config = rollcage.config(CONFIG)
        healthy = 0
        for endpoint in target.endpoints:
            # A refused connection is an unhealthy endpoint, not an error;
            # a denied request (HttpDenied) is a grant to fix: it is raised.
            try:
                if wasi_http.request("GET", f"http://{endpoint}{config['path']}").ok:
                    healthy += 1
            except wasi_http.HttpDenied:
                raise
            except wasi_http.HttpError as e:
                rollcage.log("debug", f"{endpoint}: {e}")
        return measure(healthy, len(target.endpoints), config["min_ratio"])
