"""A small blocking HTTP client over `wasi:http/outgoing-handler`.

One request at a time, whole bodies in memory. The host lets requests
through only to the plugin's `allow_hosts`; anything else fails with an
`HttpError` saying so. (Strategies are built with `--stub-wasi` and get no
HTTP at all: this module is for the other kinds.)

    response = wasi_http.request("GET", "http://127.0.0.1:8080/healthz")
    if not response.ok:
        raise rollcage.PluginError(f"status {response.status}")
    data = response.json()
"""

import json as _json
import re
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from rollcage import PluginError
from wit_world.imports import outgoing_handler
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.wasi_http_types import (
    ErrorCode_DestinationIpProhibited,
    ErrorCode_HttpRequestDenied,
    Fields,
    Method_Delete,
    Method_Get,
    Method_Head,
    Method_Patch,
    Method_Post,
    Method_Put,
    OutgoingBody,
    OutgoingRequest,
    RequestOptions,
    Scheme_Http,
    Scheme_Https,
)

_METHODS = {
    "GET": Method_Get,
    "HEAD": Method_Head,
    "POST": Method_Post,
    "PUT": Method_Put,
    "PATCH": Method_Patch,
    "DELETE": Method_Delete,
}
# `blocking-write-and-flush` takes at most 4096 bytes per call.
_WRITE_CHUNK = 4096
_READ_CHUNK = 64 * 1024


class HttpError(PluginError):
    """The request could not be made (refused, denied, timed out) or its
    response could not be read."""


class Response:
    """A response with its whole body."""

    def __init__(self, status: int, headers: Dict[str, str], body: bytes):
        self.status = status
        self.headers = headers  # names in lower case
        self.body = body

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        try:
            return _json.loads(self.body)
        except ValueError as e:
            raise HttpError(f"the response body is not JSON: {e}") from None


def _describe(authority: str, code) -> str:
    if isinstance(code, ErrorCode_HttpRequestDenied):
        return f"request to `{authority}` denied: the host is not in this plugin's allow_hosts"
    if isinstance(code, ErrorCode_DestinationIpProhibited):
        return f"request to `{authority}` denied: its address is in a denied network"
    # `ErrorCode_ConnectionRefused()` -> `connection refused`
    name = type(code).__name__.removeprefix("ErrorCode_")
    words = " ".join(w.lower() for w in re.findall(r"[A-Z][a-z0-9]*", name))
    value = getattr(code, "value", None)
    return f"request to `{authority}` failed: {words}" + (f" ({value})" if value is not None else "")


def request(
    method: str,
    url: str,
    headers: Optional[List[Tuple[str, str]]] = None,
    body: Optional[bytes] = None,
    json: Any = None,
    timeout_ms: int = 10_000,
) -> Response:
    """Send one request and read the whole response. `json` sets a JSON body
    and its content type; `timeout_ms` bounds connecting and each wait for
    data (the call's own time limit still applies)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HttpError(f"`{url}` is not an http:// or https:// URL")
    if method.upper() not in _METHODS:
        raise HttpError(f"unsupported method {method}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    pairs = [(k, v.encode()) for k, v in headers or []]
    if json is not None:
        body = _json.dumps(json).encode()
        pairs.append(("content-type", b"application/json"))
    if body is not None or method.upper() not in ("GET", "HEAD"):
        # A known length (0 for no body) rather than chunked encoding, which
        # the host would otherwise use for a POST, PUT or DELETE: simpler for
        # every server.
        pairs.append(("content-length", str(len(body or b"")).encode()))

    req = OutgoingRequest(Fields.from_list(pairs))
    req.set_method(_METHODS[method.upper()]())
    req.set_scheme(Scheme_Https() if parts.scheme == "https" else Scheme_Http())
    req.set_authority(parts.netloc)
    req.set_path_with_query(path)
    options = RequestOptions()
    for set_timeout in (options.set_connect_timeout, options.set_first_byte_timeout,
                        options.set_between_bytes_timeout):
        try:
            set_timeout(timeout_ms * 1_000_000)
        except Err:
            pass  # not supported by this host: the call's time limit applies
    out_body = req.body()
    try:
        future = outgoing_handler.handle(req, options)
    except Err as e:
        raise HttpError(_describe(parts.netloc, e.value)) from None
    # The body is written after the request is handed over, then finished.
    with out_body.write() as stream:
        data = body or b""
        for i in range(0, len(data), _WRITE_CHUNK):
            stream.blocking_write_and_flush(data[i : i + _WRITE_CHUNK])
    OutgoingBody.finish(out_body, None)

    with future:
        with future.subscribe() as ready:
            ready.block()
        got = future.get()
    # option<result<result<incoming-response, error-code>>>
    if got is None or isinstance(got, Err):
        raise HttpError(f"request to `{parts.netloc}`: the response was lost")
    inner = got.value
    if isinstance(inner, Err):
        raise HttpError(_describe(parts.netloc, inner.value))
    response = inner.value if isinstance(inner, Ok) else inner

    with response:
        status = response.status()
        with response.headers() as h:
            response_headers = {k.lower(): v.decode("utf-8", "replace") for k, v in h.entries()}
        in_body = response.consume()
        chunks = []
        with in_body.stream() as stream:
            while True:
                try:
                    chunks.append(stream.blocking_read(_READ_CHUNK))
                except Err as e:
                    if isinstance(e.value, StreamError_Closed):
                        break
                    raise HttpError(f"request to `{parts.netloc}`: reading the response failed") from None
        in_body.__exit__(None, None, None)
    return Response(status, response_headers, b"".join(chunks))
