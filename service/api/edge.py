"""Edge: one ASGI layer around the whole app, outside the router, so it sees every request, known URL or not.

In order: a request id (X-Request-Id, kept from the client if sent); the Host header (DNS rebinding) and the
Origin (a web page on another site) must be allowed; then the API key; a body must be of the route's media type
(JSON, or multipart for uploads: a page cannot send either cross-site without a preflight); then one
process-wide bound on requests in flight. On the way out, one JSON access-log line and the route's metrics.
Its refusals use the same error mapping and body as the routes (service/api/errors.py).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import re
import time
import uuid
from urllib.parse import urlsplit

import msgspec
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import describe
from service.config import Settings
from service.errors import (
    Forbidden,
    InvalidRequest,
    RateLimited,
    ShuttingDown,
    Unauthenticated,
    UnsupportedMediaType,
    VsearchError,
)
from service.metrics import Metrics

access_log = logging.getLogger("vsearch.access")
OPEN_PATHS = frozenset({"/health", "/ready", "/"})  # reachable without a key: probes, and the console's page
# The console's and the API reference's files (no data in them): the console asks for the key itself.
OPEN_PREFIXES = ("/console/", "/docs")
UNBOUNDED_PATHS = frozenset(
    {"/health", "/ready", "/metrics"}
)  # never refused for load: probes and scrapes must get through
UPLOAD_PATHS = frozenset({"/v1/files"})  # multipart/form-data; every other body is JSON
RESTORE_PATH = re.compile(r"/v1/indexes/[^/]+/snapshots/restore")  # JSON, or the snapshot file itself
WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::", ""})


class EdgePolicy(msgspec.Struct, frozen=True, kw_only=True):
    api_keys: tuple[str, ...] = ()
    max_in_flight: int = 256
    allowed_hosts: frozenset[str] | None = frozenset()  # besides loopback names, always allowed; None: any Host
    allowed_origins: frozenset[str] = frozenset()

    @classmethod
    def of(cls, settings: Settings) -> EdgePolicy:
        hosts: frozenset[str] | None
        if "*" in settings.allowed_hosts or (settings.host in WILDCARD_ADDRESSES and not settings.allowed_hosts):
            hosts = None
        else:
            hosts = frozenset({settings.host.strip("[]").lower(), *(h.lower() for h in settings.allowed_hosts)})
        return cls(
            api_keys=tuple(settings.api_keys),
            max_in_flight=settings.limits.max_requests_in_flight,
            allowed_hosts=hosts,
            allowed_origins=frozenset(origin.rstrip("/").lower() for origin in settings.allowed_origins),
        )


def host_name(host: str) -> str:
    """The name of a Host header, without its port ('[::1]:8000' -> '::1')."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(name: str) -> bool:
    """localhost (and *.localhost, which resolves there by RFC 6761), or a loopback address."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def check_api_key(keys: tuple[str, ...], authorization: str | None) -> None:
    """Raises Unauthenticated unless `authorization` carries one of `keys` (no keys: anyone may pass)."""
    if not keys:
        return
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated(
            "You didn't provide an API key. You need to provide your API key in an Authorization header using "
            "Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    # Compare with every key, always: the time taken says nothing about which key came close.
    if sum(hmac.compare_digest(token.encode(), key.encode()) for key in keys) == 0:
        shown = f"{token[:3]}****{token[-2:]}" if len(token) > 8 else "****"
        raise Unauthenticated(f"Incorrect API key provided: {shown}.", code="invalid_api_key")


async def send_error(send: Send, error: VsearchError) -> None:
    status, body, extra = describe(error)
    payload = msgspec.json.encode(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(name.encode(), value.encode()) for name, value in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def check_host(policy: EdgePolicy, host: str | None) -> None:
    """DNS rebinding: a page on attacker.example that resolves to 127.0.0.1 still sends Host: attacker.example."""
    if policy.allowed_hosts is None:
        return
    name = host_name(host or "")
    if name not in policy.allowed_hosts and not is_loopback(name):
        raise InvalidRequest(
            "This Host is not served here. Set allowed_hosts (VSEARCH_ALLOWED_HOSTS) to the names clients use.",
            code="host_not_allowed",
        )


def check_origin(policy: EdgePolicy, origin: str | None, host: str | None) -> None:
    """A request from a web page carries its Origin: only the server's own pages and allowed_origins may call."""
    if origin is None:
        return
    origin = origin.rstrip("/").lower()
    parts = urlsplit(origin)
    same_origin = parts.scheme in ("http", "https") and parts.netloc == (host or "").strip().lower()
    if not same_origin and origin not in policy.allowed_origins:
        raise Forbidden(
            "Requests from this web origin are not allowed. Add it to allowed_origins (VSEARCH_ALLOWED_ORIGINS) "
            "if its pages should call this API.",
            code="origin_not_allowed",
        )


def check_media_type(scope: Scope) -> None:
    """A body must be JSON (multipart for uploads); a body-less request (a cancel) needs no type."""
    if scope["method"] not in ("POST", "PUT", "PATCH"):
        return
    length = header(scope, b"content-length")
    if length in (None, "0") and header(scope, b"transfer-encoding") is None:
        return
    media_type = (header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
    wanted = "multipart/form-data" if scope["path"] in UPLOAD_PATHS else "application/json"
    if media_type == "application/octet-stream" and RESTORE_PATH.fullmatch(scope["path"]):
        return
    if media_type != wanted:
        raise UnsupportedMediaType(f"Send the request body as {wanted} (Content-Type: {wanted}).")


class Edge:
    def __init__(self, app: ASGIApp, policy: EdgePolicy, metrics: Metrics) -> None:
        self.app = app
        self.policy = policy
        self.metrics = metrics
        self.in_flight = 0  # requests counted against the bound (not probes or scrapes)
        metrics.watch(lambda: {"vsearch_http_requests_in_flight": [({}, self.in_flight)]})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: straight to the app
            await self.app(scope, receive, send)
            return
        request_id = (header(scope, b"x-request-id") or uuid.uuid4().hex)[:64]
        scope.setdefault("state", {})["request_id"] = request_id
        status = 0  # until a response starts
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self._admit(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # The server's shutdown grace ran out while this request ran. Say so in OpenAI's shape rather than
            # leave the server to send a plain-text 500; then end normally, so that the answer is sent whole.
            if status:
                raise
            await send_error(send_with_id, ShuttingDown(
                "The server is shutting down and could not finish this request in time; send it again."))  # fmt: skip
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"  # set by the router on this same scope
            self.metrics.observe_request(scope["method"], route, status or 500, elapsed)
            access_log.info(
                "request",
                extra={"request_id": request_id, "method": scope["method"], "path": scope["path"], "route": route,
                       "status": status or 500, "duration_ms": round(elapsed * 1000, 2)},
            )  # fmt: skip

    async def _admit(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, policy = scope["path"], self.policy
        try:
            host = header(scope, b"host")
            check_host(policy, host)
            check_origin(policy, header(scope, b"origin"), host)
            if path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
                check_api_key(policy.api_keys, header(scope, b"authorization"))
            check_media_type(scope)
            if path not in UNBOUNDED_PATHS and self.in_flight >= policy.max_in_flight:
                raise RateLimited(f"Too many requests in flight (limit {policy.max_in_flight}); retry shortly.")
        except VsearchError as refusal:
            await send_error(send, refusal)
            return
        bounded = path not in UNBOUNDED_PATHS
        self.in_flight += bounded
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= bounded
