"""__NAME__: an environment provider. It drives a platform's API to run a
service's slots (a release and its replicas each) and split traffic
between them. This one speaks a small REST API at `api_url`; replace the
calls with your platform's:

* `PUT  {api_url}/services/{service}/slots/{slot}` `{"release", "replicas", "spec"}`
* `DELETE {api_url}/services/{service}/slots/{slot}`
* `PUT  {api_url}/services/{service}/weights` `[{"slot", "weight"}]`
* `GET  {api_url}/services/{service}` -> `{"slots": [...], "weights": [...]}`

Actions are desired state, never deltas: the engine may repeat one after a
crash, and repeating it must be harmless.
"""

from typing import List
from urllib.parse import quote

import rollcage
import wasi_http
from wit_world import exports
from wit_world.imports.rollcage_plugin_types import (
    EnvironmentStatus,
    Job,
    JobResult,
    RouteWeight,
    SlotSpec,
    SlotStatus,
    Target,
)

# The plugin's `config` table: a type for a required key.
CONFIG = {
    "api_url": str,  # the platform API, such as http://127.0.0.1:8080
}


def encode(text: str) -> str:
    """Percent-encode a URL path segment."""
    return quote(text, safe="")


def service_url(target: Target) -> str:
    config = rollcage.config(CONFIG)
    return f"{config['api_url'].rstrip('/')}/services/{encode(target.service)}"


def expect_success(what: str, response: wasi_http.Response) -> None:
    """Nothing for a 2xx answer, else an error with the status."""
    if not response.ok:
        raise rollcage.PluginError(f"{what}: the platform answered {response.status}: {response.text()}")


def to_status(data: dict) -> EnvironmentStatus:
    """The platform's answer to `GET {api_url}/services/{service}`."""
    try:
        return EnvironmentStatus(
            slots=[
                SlotStatus(name=s["name"], release=s["release"], desired=s["desired"], ready=s["ready"],
                           endpoints=s.get("endpoints", []))
                for s in data["slots"]
            ],
            weights=[RouteWeight(slot=w["slot"], weight=w["weight"]) for w in data["weights"]],
        )
    except (KeyError, TypeError) as e:
        raise rollcage.PluginError(f"status: unexpected answer from the platform ({type(e).__name__}: {e})") from None


class ProviderApi(exports.ProviderApi):
    def validate(self, service_spec: str) -> None:
        # A service's spec (its `service = { ... }` table as JSON) before
        # any run uses it: raise `Err([Problem(field=..., message=...)])`
        # for each problem. This platform takes any spec.
        pass

    @rollcage.returns_errors
    def prepare(self, target: Target) -> None:
        pass  # nothing to prepare on this platform

    @rollcage.returns_errors
    def apply_slot(self, target: Target, spec: SlotSpec) -> None:
        url = f"{service_url(target)}/slots/{encode(spec.name)}"
        body = {"release": spec.release.version, "replicas": spec.replicas, "spec": target.service_spec}
        expect_success("apply-slot", wasi_http.request("PUT", url, json=body))

    @rollcage.returns_errors
    def route(self, target: Target, weights: List[RouteWeight]) -> None:
        body = [{"slot": w.slot, "weight": w.weight} for w in weights]
        expect_success("route", wasi_http.request("PUT", f"{service_url(target)}/weights", json=body))

    @rollcage.returns_errors
    def status(self, target: Target) -> EnvironmentStatus:
        response = wasi_http.request("GET", service_url(target))
        if response.status == 404:
            return EnvironmentStatus(slots=[], weights=[])
        expect_success("status", response)
        return to_status(response.json())

    @rollcage.returns_errors
    def remove_slot(self, target: Target, slot: str) -> None:
        response = wasi_http.request("DELETE", f"{service_url(target)}/slots/{encode(slot)}")
        # Removing a slot that is not there succeeds.
        if response.status != 404:
            expect_success("remove-slot", response)

    @rollcage.returns_errors
    def run_job(self, target: Target, job: Job) -> JobResult:
        raise rollcage.PluginError(f"this provider cannot run jobs (job `{job.name}`)")
