"""The fence in front of every route: open mode stays on this machine, JSON bodies say they are JSON.

    app.add_middleware(Guard, open_mode=settings.admin_key is None, bound_host=settings.server.host)

Open mode (no admin key) has no credentials, so the browser on this machine is the way in. A page on
any other origin can send a "simple" cross-site request without a CORS preflight
(`fetch(url, {method: "POST", mode: "no-cors", body})`: no body, text/plain or a typeless blob), and
DNS rebinding lets a page at `evil.example` read 127.0.0.1 under its own name. In open mode:

- peer: the connection must come from a loopback address;
- Host: the request must name the gateway by a loopback name (`localhost`, `127.x.y.z`, `[::1]`) or
  the name it was bound to; a rebinding page sends its own name and is refused;
- Origin: a state-changing request (POST, PUT, PATCH, DELETE) that carries an Origin must come from
  the gateway's own origin (scheme, host and port). Browsers send Origin on every cross-origin POST,
  `no-cors` included; SDK clients (openai-python, curl) send none and are not affected.

With an admin key the gateway may sit behind a proxy that rewrites Host, so only the credential
guards it there (no-cors requests cannot carry an Authorization header); the dashboard's forms keep
their own Origin and CSRF checks in both modes.

In both modes a POST, PUT or PATCH to /v1/ or /api/ whose body declares a media type must declare
JSON (`application/json`, or any `+json`); anything else is a 415 naming the header to send. A body
without a Content-Type is read as JSON, as the OpenAI SDKs and `curl --json` expect.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import GatewayError, PermissionDenied, UnsupportedMediaType

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_BODIES = ("/v1/", "/api/", "/chat/")


@lru_cache(maxsize=256)  # a handful of names in practice; parsing an address each request cost ~10 us
def is_loopback(host: str) -> bool:
    """`127.0.0.1`, `::1`, `::ffff:127.0.0.1`, `localhost`: names and addresses of this machine only."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


@lru_cache(maxsize=256)
def host_name(host_header: str) -> str:
    """The name part of a Host header: `[::1]:8080` -> `::1`, `localhost:8080` -> `localhost`."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class Guard:
    """Pure ASGI middleware: a few header reads per request, no body buffering, no task."""

    def __init__(self, app: Any, *, open_mode: bool, bound_host: str = "127.0.0.1"):
        self.app = app
        self.open_mode = open_mode
        bound = host_name(bound_host)
        self.names = {bound} if bound and bound not in ("0.0.0.0", "::") else set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            self.check(scope)
        except GatewayError as exc:
            return await _refuse(exc, send)
        return await self.app(scope, receive, send)

    def check(self, scope: dict[str, Any]) -> None:
        headers = dict(scope["headers"])  # ~7 us for the whole check on this loaded 2-core box (dict alone: 2.8)
        method = scope["method"]
        if self.open_mode:
            self._check_open(scope, headers, method)
        if method in ("POST", "PUT", "PATCH") and scope["path"].startswith(JSON_BODIES):
            declared = headers.get(b"content-type", b"").decode("latin-1").split(";", 1)[0].strip().lower()
            has_body = headers.get(b"content-length", b"0") not in (b"0", b"") or b"transfer-encoding" in headers
            if declared and has_body and not (declared == "application/json" or declared.endswith("+json")):
                raise UnsupportedMediaType(
                    f"The body is declared as `{declared}`; this endpoint reads JSON: send it with the header "
                    "`Content-Type: application/json` (curl: -H 'Content-Type: application/json', or --json)."
                )

    def _check_open(self, scope: dict[str, Any], headers: dict[bytes, bytes], method: str) -> None:
        client = scope.get("client")
        if client and client[0] and not is_loopback(str(client[0])):
            raise PermissionDenied(
                "This gateway runs without an admin key (open mode) and serves this machine only; "
                "set TIERGATE_ADMIN_KEY to serve other hosts."
            )
        host = headers.get(b"host", b"").decode("latin-1")
        name = host_name(host)
        if not (is_loopback(name) or name in self.names):
            raise PermissionDenied(
                f"Host `{host[:100]}` is not this gateway's name: in open mode it answers to localhost, "
                "127.0.0.1 or [::1] only (a page reaching it under another name is refused); "
                "set TIERGATE_ADMIN_KEY to serve it under other names."
            )
        if method not in STATE_CHANGING:
            return
        origin = headers.get(b"origin")
        if origin is None:
            # no Origin: not a browser's cross-site request, unless Fetch metadata says otherwise
            if headers.get(b"sec-fetch-site", b"") in (b"cross-site", b"same-site"):
                raise PermissionDenied("Cross-site request refused: this gateway is in open mode.")
            return
        o = origin.decode("latin-1")
        parts = urlsplit(o) if o != "null" else None
        if parts is None or parts.scheme != scope.get("scheme", "http") or parts.netloc.lower() != host.strip().lower():
            raise PermissionDenied(
                f"Request from the page at `{o[:200]}` refused: in open mode (no admin key) only this "
                "gateway's own pages and programs without an Origin (SDKs, curl) may change anything. "
                "Set TIERGATE_ADMIN_KEY to give other apps a key instead."
            )


async def _refuse(exc: GatewayError, send: Any) -> None:
    body = exc.render()
    await send({"type": "http.response.start", "status": exc.status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]})
    await send({"type": "http.response.body", "body": body})
