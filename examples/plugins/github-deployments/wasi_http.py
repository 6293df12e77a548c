"""A small blocking HTTP client over `wasi:http/outgoing-handler`.

One request at a time, whole bodies in memory: all a notifier needs. The
host only lets requests through to the plugin's `allow_hosts`; anything else
fails with `HTTP request denied`.

`request()` is the only entry point; `test_local.py` swaps it for a urllib
version to run the plugin's logic under CPython.
"""

import re
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world.imports import outgoing_handler
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.wasi_http_types import (
    Fields,
    Method_Delete,
    Method_Get,
    Method_Patch,
    Method_Post,
    Method_Put,
    OutgoingBody,
    OutgoingRequest,
    Scheme_Http,
    Scheme_Https,
)

# `blocking-write-and-flush` takes at most 4096 bytes per call.
_WRITE_CHUNK = 4096
_READ_CHUNK = 64 * 1024

_METHODS = {
    "GET": Method_Get,
    "POST": Method_Post,
    "PUT": Method_Put,
    "PATCH": Method_Patch,
    "DELETE": Method_Delete,
}


class HttpError(Exception):
    """The request could not be made or the response could not be read."""


def _describe(code) -> str:
    """`ErrorCode_HttpRequestDenied()` -> `HTTP request denied`."""
    name = type(code).__name__.removeprefix("ErrorCode_")
    words = [w.lower() for w in re.findall(r"[A-Z][a-z0-9]*", name)]
    acronyms = {"http": "HTTP", "dns": "DNS", "tls": "TLS", "ip": "IP"}
    text = " ".join(acronyms.get(w, w) for w in words)
    value = getattr(code, "value", None)
    return f"{text} ({value})" if value is not None else text


def request(
    method: str,
    url: str,
    headers: List[Tuple[str, str]],
    body: Optional[bytes] = None,
) -> Tuple[int, Dict[str, str], bytes]:
    """Send one request; return (status, lower-cased headers, body)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HttpError(f"not an http(s) URL: {url}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query

    pairs = [(k, v.encode()) for k, v in headers]
    if body is not None:
        # A known length, rather than chunked transfer encoding.
        pairs.append(("content-length", str(len(body)).encode()))
    fields = Fields.from_list(pairs)
    req = OutgoingRequest(fields)
    req.set_method(_METHODS[method]())
    req.set_scheme(Scheme_Https() if parts.scheme == "https" else Scheme_Http())
    req.set_authority(parts.netloc)
    req.set_path_with_query(path)
    out_body = req.body()

    try:
        future = outgoing_handler.handle(req, None)
    except Err as e:
        raise HttpError(f"{method} {url}: {_describe(e.value)}") from None

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
        raise HttpError(f"{method} {url}: no response")
    inner = got.value
    if isinstance(inner, Err):
        raise HttpError(f"{method} {url}: {_describe(inner.value)}")
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
                    raise HttpError(f"{method} {url}: reading the body failed") from None
        in_body.__exit__(None, None, None)
    return status, response_headers, b"".join(chunks)
