"""__NAME__: an exposure plugin. It shows a feature flag to a percent of
users in an environment, so that a release can be deployed dark and exposed
step by step (`{ expose = 10 }`, `{ expose = 50 }`...). This one speaks a
small REST API at `api_url`; replace the calls with your flag service's:

* `PUT {api_url}/flags/{flag}/{environment}` `{"percent": N}`
* `GET {api_url}/flags/{flag}/{environment}` -> `{"percent": N, "enabled": bool, "revision": "..."}`

`set_exposure` is desired state, never a delta: the engine repeats it after
a crash and calls it with the percent from before a run to roll back, so
repeating it must be harmless.
"""

import re
from typing import List
from urllib.parse import quote

import rollcage
import wasi_http
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.rollcage_plugin_types import ExposureStatus, Problem

# The plugin's `config` table: a type for a required key.
CONFIG = {
    "api_url": str,  # the flag service, such as http://127.0.0.1:8080
}


def problems(text: str) -> List[Problem]:
    """The config's problems, each naming its key (`field`)."""
    try:
        config = rollcage.parse_config(text, CONFIG)
    except rollcage.ConfigError as e:
        return [Problem(field=(re.findall(r"`([^`]+)`", p) or [""])[0], message=p) for p in e.problems]
    if not config["api_url"].startswith(("http://", "https://")):
        return [Problem(field="api_url", message=f"`{config['api_url']}` is not an http:// or https:// URL")]
    return []


def flag_url(flag: str, environment: str) -> str:
    config = rollcage.config(CONFIG)
    return f"{config['api_url'].rstrip('/')}/flags/{quote(flag, safe='')}/{quote(environment, safe='')}"


def to_status(data: dict) -> ExposureStatus:
    """The flag service's answer to `GET .../flags/{flag}/{environment}`."""
    try:
        return ExposureStatus(percent=int(data["percent"]), enabled=bool(data["enabled"]),
                              revision=str(data.get("revision", "")))
    except (KeyError, TypeError, ValueError) as e:
        raise rollcage.PluginError(f"unexpected answer from the flag service: {e}: {data}")


class ExposureApi(exports.ExposureApi):
    def validate(self, params: str) -> None:
        try:
            found = problems(params)
        except Exception as e:
            found = [Problem(field="", message=f"{type(e).__name__}: {e}")]
        if found:
            raise Err(found)  # validate's error is the list of every problem

    @rollcage.returns_errors
    def set_exposure(self, flag: str, environment: str, percent: int) -> None:
        if percent > 100:
            raise rollcage.PluginError(f"flag `{flag}` in `{environment}`: {percent}% is not a percent")
        response = wasi_http.request("PUT", flag_url(flag, environment), json={"percent": percent})
        if not response.ok:
            raise rollcage.PluginError(
                f"flag `{flag}` in `{environment}`: the flag service answered {response.status}: {response.text()}")

    @rollcage.returns_errors
    def get_exposure(self, flag: str, environment: str) -> ExposureStatus:
        response = wasi_http.request("GET", flag_url(flag, environment))
        if not response.ok:
            raise rollcage.PluginError(
                f"flag `{flag}` in `{environment}`: the flag service answered {response.status}: {response.text()}")
        return to_status(response.json())
