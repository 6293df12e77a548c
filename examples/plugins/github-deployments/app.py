"""`github-deployments`: a Rollcage notifier that mirrors each stage of a run
as a GitHub deployment, with deployment statuses as the stage moves.

The plugin keeps no state between calls (each call is a fresh instance):
GitHub is the state. Every deployment it creates carries the run's id in its
`payload` (`{"rollcage": {"run_id": ...}}`); each event lists the deployments
of the release's ref (`GET /repos/{owner}/{repo}/deployments?ref=...`) and
keeps those of its run, so it finds the stage's deployment again, creates it
when it is missing (which also makes a retried delivery harmless), and sees
the run's earlier stages to mark them successful when the next one begins.
"""

import json
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import quote

# Everything is imported at build time (the component is pre-initialized):
# the sandbox has no files to import from later. `wasi_http` is the project
# template's helper, which build.sh puts beside this module (target/helpers).
import wasi_http
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.rollcage_plugin_types import Event, EventKind

KIND_NAMES = {
    EventKind.RUN_STARTED: "run-started",
    EventKind.STAGE_STARTED: "stage-started",
    EventKind.AWAITING_APPROVAL: "awaiting-approval",
    EventKind.STEP: "step",
    EventKind.ANALYSIS_FAILED: "analysis-failed",
    EventKind.ROLLED_BACK: "rolled-back",
    EventKind.SUCCEEDED: "succeeded",
    EventKind.FAILED: "failed",
}

# GitHub keeps at most 140 characters of a status description.
DESCRIPTION_MAX = 140
ACTIVE_STATES = ("queued", "pending", "in_progress")

# (method, url, headers, body) -> (status, lower-cased headers, body)
Send = Callable[[str, str, List[Tuple[str, str]], Optional[bytes]], Tuple[int, Dict[str, str], bytes]]
Log = Callable[[str, str, List[Tuple[str, str]]], None]


class PluginError(Exception):
    """An error the host logs (and retries)."""


@dataclass
class Config:
    owner: str
    repo: str
    token: Optional[str] = None
    token_secret: Optional[str] = None
    api_url: str = "https://api.github.com"
    ref_prefix: str = "v"
    ref_param: str = "ref"
    environments: Dict[str, str] = field(default_factory=dict)
    events: Optional[List[str]] = None
    log_url: Optional[str] = None
    user_agent: str = "rollcage-github-deployments/0.1"

    KEYS = (
        "owner", "repo", "token", "token_secret", "api_url", "ref_prefix",
        "ref_param", "environments", "events", "log_url", "user_agent",
    )

    @classmethod
    def parse(cls, text: str) -> "Config":
        """Parse the plugin's config; every problem is reported at once."""
        try:
            raw = json.loads(text or "{}")
        except ValueError as e:
            raise PluginError(f"config: not JSON: {e}") from None
        if not isinstance(raw, dict):
            raise PluginError("config: expected a table")
        problems = []
        for key in raw:
            if key not in cls.KEYS:
                problems.append(f"unknown key `{key}`; expected one of {', '.join(cls.KEYS)}")

        def string(key, required=False):
            value = raw.get(key)
            if value is None:
                if required:
                    problems.append(f"`{key}` is required")
                return None
            if not isinstance(value, str) or (required and not value):
                problems.append(f"`{key}` must be a non-empty string")
                return None
            return value

        owner = string("owner", required=True)
        repo = string("repo", required=True)
        token = string("token")
        token_secret = string("token_secret")
        if (token is None) == (token_secret is None):
            problems.append(
                'set exactly one of `token` (e.g. "${secret:GITHUB_TOKEN}") and `token_secret` (a secret name)'
            )
        api_url = string("api_url") or cls.api_url
        if not api_url.startswith(("https://", "http://")):
            problems.append(f"`api_url` must be an http(s) URL, not `{api_url}`")
        environments = raw.get("environments", {})
        if not isinstance(environments, dict) or not all(
            isinstance(v, str) and v for v in environments.values()
        ):
            problems.append("`environments` must map Rollcage environments to GitHub environment names")
            environments = {}
        events = raw.get("events")
        if events is not None:
            if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
                problems.append("`events` must be a list of event kinds")
                events = None
            else:
                for e in events:
                    if e not in KIND_NAMES.values():
                        problems.append(
                            f"events: unknown event `{e}`; expected some of {', '.join(KIND_NAMES.values())}"
                        )
        ref_prefix = raw.get("ref_prefix", cls.ref_prefix)
        if not isinstance(ref_prefix, str):
            problems.append("`ref_prefix` must be a string")
        if problems:
            raise PluginError("config: " + "; ".join(problems))
        return cls(
            owner=owner,
            repo=repo,
            token=token,
            token_secret=token_secret,
            api_url=api_url.rstrip("/"),
            ref_prefix=ref_prefix,
            ref_param=string("ref_param") or cls.ref_param,
            environments=environments,
            events=events,
            log_url=string("log_url"),
            user_agent=string("user_agent") or cls.user_agent,
        )


class GitHub:
    """GitHub's REST API with the headers its docs ask for."""

    def __init__(self, config: Config, token: str, send: Send):
        self.base = f"{config.api_url}/repos/{config.owner}/{config.repo}"
        self.headers = [
            ("authorization", f"Bearer {token}"),
            ("accept", "application/vnd.github+json"),
            ("x-github-api-version", "2022-11-28"),
            ("user-agent", config.user_agent),
        ]
        self.send = send

    def call(self, method: str, path: str, body=None):
        url = self.base + path
        headers = list(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers.append(("content-type", "application/json"))
        try:
            status, response_headers, raw = self.send(method, url, headers, data)
        except Exception as e:  # the transport's errors name the request
            raise PluginError(f"GitHub {method} {path}: {e}") from None
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = None
        if 200 <= status < 300:
            return status, answer
        raise PluginError(github_error(method, path, status, answer, raw, response_headers))


def github_error(method, path, status, answer, raw, headers) -> str:
    """`GitHub POST /deployments answered 422: Validation Failed (...)`."""
    message = None
    if isinstance(answer, dict):
        message = answer.get("message")
        details = [
            e.get("message") or " ".join(str(e.get(k, "")) for k in ("field", "code")).strip()
            for e in answer.get("errors") or []
            if isinstance(e, dict)
        ]
        if details:
            message = f"{message} ({'; '.join(details)})"
    if message is None:
        message = raw[:200].decode("utf-8", "replace").strip() or "no message"
    hint = ""
    if status == 401:
        hint = " (check the token)"
    elif status == 404:
        hint = " (no such repository, or the token cannot see it: it needs the `deployments: write` permission)"
    elif status in (403, 429) and headers.get("x-ratelimit-remaining") == "0":
        hint = f" (rate limited until {headers.get('x-ratelimit-reset', '?')}, Unix time)"
    return f"GitHub {method} {path} answered {status}: {message}{hint}"


def truncate(text: str, limit: int = DESCRIPTION_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_of(deployment) -> Optional[str]:
    payload = deployment.get("payload")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            return None
    if isinstance(payload, dict) and isinstance(payload.get("rollcage"), dict):
        return payload["rollcage"].get("run_id")
    return None


class Deployments:
    """One event's work against GitHub."""

    def __init__(self, config: Config, token: str, send: Send, log: Log):
        self.config = config
        self.gh = GitHub(config, token, send)
        self.log = log

    def ref(self, event: Event) -> str:
        params = dict(event.release.params)
        return params.get(self.config.ref_param) or f"{self.config.ref_prefix}{event.release.version}"

    def environment(self, name: str) -> str:
        return self.config.environments.get(name, name)

    def log_url(self, event: Event) -> Optional[str]:
        if event.url:
            return event.url
        if not self.config.log_url:
            return None
        url = self.config.log_url
        for key, value in (
            ("{run_id}", event.run_id),
            ("{pipeline}", event.pipeline),
            ("{environment}", event.environment or ""),
            ("{version}", event.release.version),
        ):
            url = url.replace(key, value)
        return url

    def of_run(self, event: Event, ref: str) -> list:
        """The run's deployments (every stage), newest first."""
        _, listed = self.gh.call("GET", f"/deployments?ref={quote(ref, safe='')}&per_page=100")
        return [d for d in listed or [] if run_of(d) == event.run_id]

    def latest_state(self, deployment) -> Optional[str]:
        _, statuses = self.gh.call("GET", f"/deployments/{deployment['id']}/statuses?per_page=1")
        return statuses[0]["state"] if statuses else None

    def post_status(self, deployment, state: str, description: str, event: Event) -> None:
        body = {
            "state": state,
            "environment": deployment["environment"],
            "description": truncate(description),
        }
        url = self.log_url(event)
        if url:
            body["log_url"] = url
        self.gh.call("POST", f"/deployments/{deployment['id']}/statuses", body)
        self.log("info", f"deployment {deployment['id']} ({deployment['environment']}): {state}",
                 [("deployment", str(deployment["id"])), ("state", state)])

    def finish_active(self, deployments, state: str, description: Callable, event: Event) -> None:
        """Give every still-active deployment a final `state`."""
        for d in deployments:
            if self.latest_state(d) in (None, *ACTIVE_STATES):
                self.post_status(d, state, description(d), event)

    def create(self, event: Event, environment: str, ref: str):
        body = {
            "ref": ref,
            "environment": environment,
            "description": truncate(
                f"{event.pipeline} {event.release.version} to {event.environment} (Rollcage run {event.run_id})"
            ),
            "auto_merge": False,
            "required_contexts": [],
            "payload": {
                "rollcage": {
                    "run_id": event.run_id,
                    "pipeline": event.pipeline,
                    "environment": event.environment,
                    "version": event.release.version,
                }
            },
        }
        status, created = self.gh.call("POST", "/deployments", body)
        if status != 201 or not isinstance(created, dict) or "id" not in created:
            # 202: GitHub merged the default branch into the ref instead.
            message = created.get("message") if isinstance(created, dict) else None
            raise PluginError(f"GitHub did not create a deployment (answered {status}: {message})")
        self.log("info", f"created deployment {created['id']} of {ref} to {environment}",
                 [("deployment", str(created["id"])), ("ref", ref), ("environment", environment)])
        return created

    def handle(self, event: Event) -> None:
        kind = KIND_NAMES[event.kind]
        if self.config.events is not None and kind not in self.config.events:
            return
        ref = self.ref(event)
        version = event.release.version

        if event.environment is None:
            # Run-level events: `succeeded` closes the last stage's deployment.
            if event.kind == EventKind.SUCCEEDED:
                self.finish_active(self.of_run(event, ref), "success",
                                   lambda d: event.message, event)
            elif event.kind == EventKind.FAILED:
                self.finish_active(self.of_run(event, ref), "failure",
                                   lambda d: f"{version} failed: {event.message}", event)
            return

        environment = self.environment(event.environment)
        deployments = self.of_run(event, ref)
        mine = next((d for d in deployments if d["environment"] == environment), None)
        created = mine is None
        if created:
            # Stages run one after the other: the run's earlier stages passed.
            self.finish_active(deployments, "success",
                               lambda d: f"{version} passed {d['environment']}; now in {environment}", event)
            mine = self.create(event, environment, ref)

        if event.kind == EventKind.AWAITING_APPROVAL:
            # Before the stage began (its approval gate), or at an approval step.
            state = "queued" if created else "in_progress"
        elif event.kind in (EventKind.ROLLED_BACK, EventKind.FAILED):
            state = "failure"
        elif event.kind == EventKind.SUCCEEDED:
            state = "success"
        else:
            state = "in_progress"
        prefix = {
            EventKind.ANALYSIS_FAILED: "analysis failed, rolling back: ",
            EventKind.ROLLED_BACK: "rolled back: ",
            EventKind.FAILED: "failed: ",
        }.get(event.kind, "")
        self.post_status(mine, state, f"{version}: {prefix}{event.message}", event)


def deliver(event: Event, config_text: str, secret: Callable[[str], str], send: Send, log: Log) -> None:
    """Everything `notify` does, with the host's functions passed in (for tests)."""
    config = Config.parse(config_text)
    token = config.token if config.token is not None else secret(config.token_secret)
    Deployments(config, token, send, log).handle(event)


def _host_log(level: str, message: str, fields: List[Tuple[str, str]]) -> None:
    host.log(getattr(host.Level, level.upper()), message, fields)


def _host_send(method: str, url: str, headers: List[Tuple[str, str]], body: Optional[bytes]):
    """`Send` over `wasi:http`, with the template's helper. Its errors (a
    denial, `wasi_http.HttpDenied`, apart from a network failure) name the
    host and say why; `GitHub.call` adds the request."""
    response = wasi_http.request(method, url, headers, body)
    return response.status, response.headers, response.body


def _host_secret(name: str) -> str:
    try:
        return host.secret(name)
    except Err as e:
        raise PluginError(str(e.value)) from None


class NotifierApi(exports.NotifierApi):
    def notify(self, event: Event) -> None:
        try:
            deliver(event, host.config(), _host_secret, _host_send, _host_log)
        except PluginError as e:
            raise Err(str(e))
        except Exception as e:  # never trap: the host retries errors, not traps
            raise Err(f"github-deployments: {type(e).__name__}: {e}")
