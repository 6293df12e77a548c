#!/usr/bin/env python3
"""A stand-in for GitHub's Deployments REST API, strict about the contract.

    python3 fake_github.py --port 0 --record requests.jsonl [--repo octo/app]
                           [--token T] [--refs v1.0.0,v1.1.0]

Prints the port it listens on as the first line of stdout, then serves until
killed (SIGTERM or SIGINT). Each request is appended to the record file as one
JSON line: {"method", "path", "headers" (lower-cased names), "body" (parsed
JSON, the raw text when it is not JSON, or null), "status" (the answer)}.

What it serves, as documented at docs.github.com/en/rest/deployments
(API version 2022-11-28):

    POST /repos/{owner}/{repo}/deployments                  201, a deployment
    GET  /repos/{owner}/{repo}/deployments                  ?sha ref task environment per_page page
    GET  /repos/{owner}/{repo}/deployments/{id}
    POST /repos/{owner}/{repo}/deployments/{id}/statuses    201, a deployment status
    GET  /repos/{owner}/{repo}/deployments/{id}/statuses    ?per_page page, newest first

Contract violations are answered the way GitHub answers, with a JSON body
`{"message": ..., "documentation_url": ...}` (plus `errors` on 422):
missing or malformed `Authorization: Bearer` (401 Bad credentials), a missing
`User-Agent` (403), an `Accept` other than `application/vnd.github+json`
(415), an `X-GitHub-Api-Version` other than `2022-11-28` (400), a body that
is not JSON (400 Problems parsing JSON), and 422 Validation Failed for bad
fields. Beyond GitHub's own checks, a created deployment must carry
`auto_merge: false` and `required_contexts: []` (this plugin's contract), and
a status description over 140 characters is refused as GitHub does.

Only the standard library: the Rust end-to-end test runs it as is.
"""

import argparse
import hashlib
import json
import signal
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DOCS = "https://docs.github.com/rest/deployments"
API_VERSION = "2022-11-28"
MEDIA_TYPE = "application/vnd.github+json"
STATES = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")
DEPLOYMENT_KEYS = {
    "ref", "task", "auto_merge", "required_contexts", "payload", "environment",
    "description", "transient_environment", "production_environment",
}
STATUS_KEYS = {"state", "target_url", "log_url", "description", "environment", "environment_url", "auto_inactive"}


class Reject(Exception):
    def __init__(self, status, message, errors=None, doc=DOCS):
        super().__init__(message)
        self.status, self.message, self.errors, self.doc = status, message, errors, doc

    def body(self):
        body = {"message": self.message, "documentation_url": self.doc}
        if self.errors:
            body["errors"] = self.errors
        return body


def invalid(resource, field, message, code="custom"):
    return Reject(422, "Validation Failed",
                  [{"resource": resource, "code": code, "field": field, "message": message}])


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class State:
    def __init__(self, args):
        self.owner, self.repo = args.repo.split("/", 1)
        self.token = args.token
        self.refs = set(args.refs.split(",")) if args.refs else None
        self.record = open(args.record, "a", buffering=1) if args.record else None
        self.lock = threading.Lock()
        self.deployments = []  # oldest first
        self.statuses = {}  # deployment id -> list, oldest first
        self.next_id = 1
        self.next_status_id = 1
        self.base = ""

    def take_status_id(self):
        sid = self.next_status_id
        self.next_status_id += 1
        return sid

    def write(self, entry):
        if self.record:
            with self.lock:
                self.record.write(json.dumps(entry) + "\n")
                self.record.flush()


def user():
    return {"login": "rollcage-bot", "id": 1, "type": "Bot"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-github/1"
    state: State

    def log_message(self, fmt, *args):  # quiet: the record file says it all
        pass

    def do_GET(self):
        self.serve("GET")

    def do_POST(self):
        self.serve("POST")

    def do_PATCH(self):
        self.serve("PATCH")

    def do_DELETE(self):
        self.serve("DELETE")

    def serve(self, method):
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            raw = self.read_chunked()
        else:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
        text = raw.decode("utf-8", "replace")
        try:
            body = json.loads(text) if raw else None
            parsed = True
        except ValueError:
            body, parsed = text, False
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, answer = self.route(method, headers, body, parsed)
        except Reject as r:
            status, answer = r.status, r.body()
        self.state.write({"method": method, "path": self.path, "headers": headers, "body": body, "status": status})
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json; charset=utf-8")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-github-api-version-selected", API_VERSION)
        self.send_header("x-ratelimit-limit", "5000")
        self.send_header("x-ratelimit-remaining", "4999")
        self.end_headers()
        self.wfile.write(data)

    def read_chunked(self):
        data = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return data
            data += self.rfile.read(size)
            self.rfile.readline()

    def check_headers(self, headers):
        if not headers.get("user-agent"):
            raise Reject(403, "Request forbidden by administrative rules. "
                         "Please make sure your request has a User-Agent header "
                         "(https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required).",
                         doc="https://docs.github.com/rest/overview/resources-in-the-rest-api#user-agent-required")
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme != "Bearer" or not token.strip() or (self.state.token and token != self.state.token):
            raise Reject(401, "Bad credentials", doc="https://docs.github.com/rest")
        if headers.get("accept") != MEDIA_TYPE:
            raise Reject(415, f"Unsupported 'Accept' header: {headers.get('accept')!r}. "
                         f"Must accept '{MEDIA_TYPE}'.", doc="https://docs.github.com/rest/overview/media-types")
        version = headers.get("x-github-api-version")
        if version != API_VERSION:
            raise Reject(400, f"Unsupported 'X-GitHub-Api-Version' header: {version!r}. "
                         f"Supported versions are: {API_VERSION}",
                         doc="https://docs.github.com/rest/overview/api-versions")

    def route(self, method, headers, body, parsed):
        self.check_headers(headers)
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        st = self.state
        if len(parts) < 4 or parts[0] != "repos" or parts[3] != "deployments":
            raise Reject(404, "Not Found", doc="https://docs.github.com/rest")
        if (parts[1], parts[2]) != (st.owner, st.repo):
            raise Reject(404, "Not Found", doc="https://docs.github.com/rest")
        if method == "POST":
            if not parsed or not isinstance(body, dict):
                raise Reject(400, "Problems parsing JSON")
            if not headers.get("content-type", "").startswith("application/json"):
                raise Reject(415, "Unsupported 'Content-Type' header: expected application/json")
        rest = parts[4:]
        with st.lock:
            if rest == [] and method == "POST":
                return 201, self.create_deployment(body)
            if rest == [] and method == "GET":
                return 200, self.page(self.list_deployments(query), query)
            deployment = self.find(rest[0]) if rest else None
            if deployment is None:
                raise Reject(404, "Not Found", doc="https://docs.github.com/rest")
            if len(rest) == 1 and method == "GET":
                return 200, deployment
            if rest[1:] == ["statuses"] and method == "POST":
                return 201, self.create_status(deployment, body)
            if rest[1:] == ["statuses"] and method == "GET":
                return 200, self.page(list(reversed(st.statuses[deployment["id"]])), query)
        raise Reject(404, "Not Found", doc="https://docs.github.com/rest")

    def find(self, raw_id):
        try:
            wanted = int(raw_id)
        except ValueError:
            return None
        return next((d for d in self.state.deployments if d["id"] == wanted), None)

    def page(self, items, query):
        try:
            per_page = min(max(int(query.get("per_page", 30)), 1), 100)
            page = max(int(query.get("page", 1)), 1)
        except ValueError:
            raise Reject(400, "Invalid per_page or page")
        return items[(page - 1) * per_page : page * per_page]

    def list_deployments(self, query):
        out = list(reversed(self.state.deployments))  # newest first
        for key in ("sha", "ref", "task", "environment"):
            if key in query:
                out = [d for d in out if d[key] == query[key]]
        return out

    def create_deployment(self, body):
        st = self.state
        unknown = sorted(set(body) - DEPLOYMENT_KEYS)
        if unknown:
            raise invalid("Deployment", unknown[0], f"unknown field `{unknown[0]}`", "invalid")
        ref = body.get("ref")
        if not isinstance(ref, str) or not ref:
            raise invalid("Deployment", "ref", "ref is required", "missing_field")
        if st.refs is not None and ref not in st.refs:
            raise Reject(422, f"No ref found for: {ref}")
        environment = body.get("environment", "production")
        if not isinstance(environment, str) or not environment:
            raise invalid("Deployment", "environment", "environment must be a string")
        # This plugin's contract: never merge, never wait on status checks.
        if body.get("auto_merge", True) is not False:
            raise invalid("Deployment", "auto_merge", "contract: auto_merge must be false")
        if body.get("required_contexts") != []:
            raise invalid("Deployment", "required_contexts", "contract: required_contexts must be []")
        payload = body.get("payload", {})
        if not isinstance(payload, (dict, str)):
            raise invalid("Deployment", "payload", "payload must be an object or a JSON string")
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            raise invalid("Deployment", "description", "description must be a string")
        did = st.next_id
        st.next_id += 1
        base = f"{st.base}/repos/{st.owner}/{st.repo}"
        deployment = {
            "url": f"{base}/deployments/{did}",
            "id": did,
            "node_id": f"DE_fake{did}",
            "sha": hashlib.sha1(ref.encode()).hexdigest(),
            "ref": ref,
            "task": body.get("task", "deploy"),
            "payload": payload,
            "original_environment": environment,
            "environment": environment,
            "description": description,
            "creator": user(),
            "created_at": now(),
            "updated_at": now(),
            "statuses_url": f"{base}/deployments/{did}/statuses",
            "repository_url": base,
            "transient_environment": bool(body.get("transient_environment", False)),
            "production_environment": bool(body.get("production_environment", environment == "production")),
        }
        st.deployments.append(deployment)
        st.statuses[did] = []
        return deployment

    def create_status(self, deployment, body):
        st = self.state
        unknown = sorted(set(body) - STATUS_KEYS)
        if unknown:
            raise invalid("DeploymentStatus", unknown[0], f"unknown field `{unknown[0]}`", "invalid")
        state = body.get("state")
        if state not in STATES:
            raise invalid("DeploymentStatus", "state", f"state is not included in the list: {state!r}", "invalid")
        description = body.get("description", "")
        if not isinstance(description, str):
            raise invalid("DeploymentStatus", "description", "description must be a string")
        if len(description) > 140:
            raise invalid("DeploymentStatus", "description", "description is too long (maximum is 140 characters)")
        for key in ("log_url", "target_url", "environment_url"):
            value = body.get(key)
            if value is not None and not (isinstance(value, str) and value.startswith(("http://", "https://"))):
                raise invalid("DeploymentStatus", key, f"{key} must be an http(s) URL")
        environment = body.get("environment", deployment["environment"])
        sid = st.take_status_id()
        status = {
            "url": f"{deployment['url']}/statuses/{sid}",
            "id": sid,
            "node_id": f"DES_fake{sid}",
            "state": state,
            "creator": user(),
            "description": description,
            "environment": environment,
            "target_url": body.get("log_url") or body.get("target_url") or "",
            "log_url": body.get("log_url") or body.get("target_url") or "",
            "environment_url": body.get("environment_url", ""),
            "created_at": now(),
            "updated_at": now(),
            "deployment_url": deployment["url"],
            "repository_url": deployment["repository_url"],
        }
        st.statuses[deployment["id"]].append(status)
        deployment["updated_at"] = status["updated_at"]
        if environment != deployment["environment"]:
            deployment["environment"] = environment
        # auto_inactive (default true): a success makes the environment's
        # earlier successful deployments inactive.
        if state == "success" and body.get("auto_inactive", True):
            for other in st.deployments:
                if other is deployment or other["environment"] != deployment["environment"]:
                    continue
                history = st.statuses[other["id"]]
                if history and history[-1]["state"] == "success":
                    iid = st.take_status_id()
                    history.append(dict(history[-1], state="inactive", id=iid, node_id=f"DES_fake{iid}",
                                        url=f"{other['url']}/statuses/{iid}", description="superseded",
                                        created_at=now(), updated_at=now()))
        return status


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed first)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--record", help="append each request as a JSON line to this file")
    parser.add_argument("--repo", default="octo/app", help="the only repository served (owner/name)")
    parser.add_argument("--token", help="the only token accepted (default: any)")
    parser.add_argument("--refs", help="comma-separated refs that exist (default: any)")
    args = parser.parse_args()
    if "/" not in args.repo:
        parser.error("--repo must be owner/name")

    state = State(args)
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    port = server.server_address[1]
    state.base = f"http://{args.host}:{port}"
    print(port, flush=True)

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
