"""A small blocking HTTP client over `wasi:http/outgoing-handler`.

One request at a time, whole bodies in memory. The host lets requests
through only to the plugin's `allow_hosts`; anything else fails with
`HttpDenied` (an `HttpError`) saying so (`request to `example.com` denied:
...`), before any body is sent. A network failure is an `HttpError` of
its own (`request to `127.0.0.1:9` failed: connection refused: ...`).
(Strategies are built with `--stub-wasi` and get no HTTP at all: this
module is for the other kinds.)

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
    ErrorCode_ConnectionRefused,
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
    """The request could not be made (denied, refused, timed out) or its
    response could not be read."""


class HttpDenied(HttpError):
    """The host denied the request: its host is not in the plugin's
    `allow_hosts`, or its address is in a denied network. A grant to fix,
    not a sign of the target's health."""


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


def _error(authority: str, code) -> HttpError:
    """The error for a `wasi:http` error code: `HttpDenied` for a denial."""
    denied = isinstance(code, (ErrorCode_HttpRequestDenied, ErrorCode_DestinationIpProhibited))
    return (HttpDenied if denied else HttpError)(_describe(authority, code))


def _describe(authority: str, code) -> str:
    if isinstance(code, ErrorCode_HttpRequestDenied):
        return f"request to `{authority}` denied: the host is not in this plugin's allow_hosts"
    if isinstance(code, ErrorCode_DestinationIpProhibited):
        return f"request to `{authority}` denied: its address is in a denied network"
    if isinstance(code, ErrorCode_ConnectionRefused):
        return f"request to `{authority}` failed: connection refused: nothing listens at that address and port"
    # `ErrorCode_ConnectionTimeout()` -> `connection timeout`
    name = type(code).__name__.removeprefix("ErrorCode_")
    words = " ".join(w.lower() for w in re.findall(r"[A-Z][a-z0-9]*", name))
    value = getattr(code, "value", None)
    return f"request to `{authority}` failed: {words}" + (f" ({value})" if value is not None else "")


def _write_body(out_body: OutgoingBody, data: bytes) -> Optional[str]:
    """Write and finish a request body; what went wrong, in words, or None.
    Never raises: a stream error is an `Err` whose value is not text, which
    would crash the plugin if it escaped."""
    try:
        with out_body.write() as stream:
            for i in range(0, len(data), _WRITE_CHUNK):
                stream.blocking_write_and_flush(data[i : i + _WRITE_CHUNK])
        OutgoingBody.finish(out_body, None)
    except Err as e:
        if isinstance(e.value, StreamError_Closed):
            return "the host closed the body stream"
        return type(e.value).__name__.removeprefix("StreamError_").removeprefix("ErrorCode_")
    return None


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
        raise _error(parts.netloc, e.value) from None
    # The body is written after the request is handed over (a denied
    # request failed above, before any of it), then finished. A request
    # that fails meanwhile (a refused connection) says why in its response,
    # read below; a failed write only matters when the response does not.
    write_failed = _write_body(out_body, body or b"")

    with future:
        with future.subscribe() as ready:
            ready.block()
        got = future.get()
    # option<result<result<incoming-response, error-code>>>
    if got is None or isinstance(got, Err):
        raise HttpError(f"request to `{parts.netloc}`: the response was lost")
    inner = got.value
    if isinstance(inner, Err):
        raise _error(parts.netloc, inner.value)
    response = inner.value if isinstance(inner, Ok) else inner
    if write_failed is not None:
        response.__exit__(None, None, None)
        raise HttpError(f"request to `{parts.netloc}` failed: writing the request body: {write_failed}")

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
