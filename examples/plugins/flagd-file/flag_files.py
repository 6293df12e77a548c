#!/usr/bin/env python3
"""A small HTTP file service for flagd flag files, strict about their format.

    python3 flag_files.py --port 0 --dir FLAGS --record requests.jsonl [--token T]

Prints the port it listens on as the first line of stdout, then serves until
killed. Each request is appended to the record file as one JSON line:
{"method", "path", "if_match", "body" (parsed JSON, or the raw text), "status"}.

    GET /flags/{name}   200, the file, with `ETag: "<sha256 of its bytes>"`; 404
    PUT /flags/{name}   `If-Match: <the ETag read>` required (428 without, 412
                        when the file changed since); the body must be a flagd
                        flag file (below), else 400 naming the problem; 204

This is the shape of a service flagd reads from (`flagd start --uri
http://host/flags/production.flagd.json`): flagd polls the file over HTTP.
A body is checked against flagd's documented format
(https://flagd.dev/schema/v0/flags.json): an object with a `flags` object
(and optionally `$schema`, `$evaluators`, `metadata`); each flag with
`state` ENABLED or DISABLED, a non-empty `variants` object, a
`defaultVariant` that is one of them, and an optional `targeting` object,
in which a `fractional` split lists `[variant, weight]` buckets of declared
variants with integer weights that add up to more than 0.

Only the standard library: the end-to-end test runs it as is.
"""

import argparse
import hashlib
import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = re.compile(r"^[A-Za-z0-9._-]+$")
TOP_KEYS = {"$schema", "$evaluators", "metadata", "flags"}
FLAG_KEYS = {"state", "variants", "defaultVariant", "targeting", "metadata"}


def problems(doc):
    """What keeps `doc` from being a flagd flag file, in words."""
    if not isinstance(doc, dict):
        return ["the file must be a JSON object"]
    out = [f"unknown top-level key `{k}`" for k in doc if k not in TOP_KEYS]
    flags = doc.get("flags")
    if not isinstance(flags, dict):
        return out + ["`flags` must be an object"]
    for key, flag in flags.items():
        where = f"flags.{key}"
        if not isinstance(flag, dict):
            out.append(f"{where} must be an object")
            continue
        out += [f"{where}: unknown key `{k}`" for k in flag if k not in FLAG_KEYS]
        if flag.get("state") not in ("ENABLED", "DISABLED"):
            out.append(f"{where}.state must be ENABLED or DISABLED")
        variants = flag.get("variants")
        if not isinstance(variants, dict) or not variants:
            out.append(f"{where}.variants must be a non-empty object")
            variants = {}
        if flag.get("defaultVariant") not in variants:
            out.append(f"{where}.defaultVariant must name one of its variants")
        targeting = flag.get("targeting", {})
        if not isinstance(targeting, dict):
            out.append(f"{where}.targeting must be an object")
        elif "fractional" in targeting:
            buckets = [b for b in targeting["fractional"] if isinstance(b, list)]
            total = 0
            for b in buckets:
                if not b or b[0] not in variants:
                    out.append(f"{where}.targeting.fractional: bucket {b} names no declared variant")
                weight = b[1] if len(b) > 1 else 1
                if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
                    out.append(f"{where}.targeting.fractional: weight {weight!r} is not a whole number")
                else:
                    total += weight
            if total <= 0:
                out.append(f"{where}.targeting.fractional: the weights add up to 0")
    return out


def etag(data):
    return '"' + hashlib.sha256(data).hexdigest() + '"'


class Handler(BaseHTTPRequestHandler):
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def path_of(self):
        m = re.fullmatch(r"/flags/([^/?]+)", self.path)
        if not m or not NAME.match(m.group(1)):
            return None
        return os.path.join(self.server.dir, m.group(1))

    def answer(self, status, body=b"", headers=(), record_body=None):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with self.lock, open(self.server.record, "a") as f:
            f.write(json.dumps({
                "method": self.command, "path": self.path,
                "if_match": self.headers.get("If-Match"),
                "body": record_body, "status": status,
            }) + "\n")

    def authorized(self):
        token = self.server.token
        if token and self.headers.get("Authorization") != f"Bearer {token}":
            self.answer(401, b'{"message": "a valid Authorization: Bearer token is required"}')
            return False
        return True

    def do_GET(self):
        path = self.path_of()
        if not self.authorized():
            return
        if path is None or not os.path.isfile(path):
            return self.answer(404, b'{"message": "no such file"}')
        with self.lock:
            data = open(path, "rb").read()
        self.answer(200, data, [("Content-Type", "application/json"), ("ETag", etag(data))])

    def do_PUT(self):
        path = self.path_of()
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        if not self.authorized():
            return
        if path is None:
            return self.answer(404, b'{"message": "no such file"}', record_body=body)
        if_match = self.headers.get("If-Match")
        if not if_match:
            return self.answer(428, b'{"message": "If-Match is required"}', record_body=body)
        found = problems(body) if not isinstance(body, str) else ["the body is not JSON"]
        if found:
            message = json.dumps({"message": "not a flagd flag file: " + "; ".join(found)}).encode()
            return self.answer(400, message, record_body=body)
        with self.lock:
            current = open(path, "rb").read() if os.path.isfile(path) else b""
            if etag(current) != if_match:
                stale = True
            else:
                stale = False
                with open(path, "wb") as f:
                    f.write(raw)
        if stale:
            return self.answer(412, b'{"message": "the file changed since it was read"}', record_body=body)
        self.answer(204, record_body=body)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--dir", required=True)
    p.add_argument("--record", required=True)
    p.add_argument("--token", default="")
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.dir, server.record, server.token = args.dir, args.record, args.token
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
