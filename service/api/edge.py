"""Edge: one ASGI layer around the whole app, outside the router, so it sees every request, known URL or not.

In order: a request id (X-Request-Id, kept from the client if sent), then the API key check, then one
process-wide bound on requests in flight; on the way out, one JSON access-log line and the route's metrics.
Its refusals use the same error mapping and body as the routes (service/api/errors.py).
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid

import msgspec
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import describe
from service.errors import RateLimited, Unauthenticated, VsearchError
from service.metrics import Metrics

access_log = logging.getLogger("vsearch.access")
OPEN_PATHS = frozenset({"/health", "/ready"})  # reachable without a key: liveness and readiness probes
UNBOUNDED_PATHS = OPEN_PATHS | {"/metrics"}  # never refused for load: probes and scrapes must get through


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def check_api_key(keys: list[str], authorization: str | None) -> None:
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
    status, body = describe(error)
    payload = msgspec.json.encode(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if isinstance(error, RateLimited):
        headers.append((b"retry-after", str(error.retry_after_s).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class Edge:
    def __init__(self, app: ASGIApp, api_keys: list[str], max_in_flight: int, metrics: Metrics) -> None:
        self.app = app
        self.api_keys = api_keys
        self.max_in_flight = max_in_flight
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: straight to the app
            await self.app(scope, receive, send)
            return
        request_id = (header(scope, b"x-request-id") or uuid.uuid4().hex)[:64]
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self._admit(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"  # set by the router on this same scope
            self.metrics.observe_request(scope["method"], route, status, elapsed)
            access_log.info(
                "request",
                extra={"request_id": request_id, "method": scope["method"], "path": scope["path"], "route": route,
                       "status": status, "duration_ms": round(elapsed * 1000, 2)},
            )  # fmt: skip

    async def _admit(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        try:
            if path not in OPEN_PATHS:
                check_api_key(self.api_keys, header(scope, b"authorization"))
            if path not in UNBOUNDED_PATHS and self.in_flight >= self.max_in_flight:
                raise RateLimited(f"Too many requests in flight (limit {self.max_in_flight}); retry shortly.")
        except VsearchError as refusal:
            await send_error(send, refusal)
            return
        bounded = path not in UNBOUNDED_PATHS
        self.in_flight += bounded
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= bounded
