"""ASGI middleware: API keys, a bound on requests in flight, and per-request observability (id, log, metrics)."""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

access_log = logging.getLogger("vsearch.access")
OPEN_PATHS = {"/health", "/ready"}  # reachable without a key: liveness and readiness probes
UNLIMITED_PATHS = OPEN_PATHS | {"/metrics"}


async def send_error(
    send: Send, status: int, message: str, type_: str, code: str | None, headers: dict | None = None
) -> None:
    body = json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()
    extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    headers_out = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers_out})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def api_key_problem(keys: list[str], authorization: str | None) -> tuple[str, str | None] | None:
    """Why a request with this Authorization header may not pass (message, code), or None if it may."""
    if not keys:
        return None
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return (
            "You didn't provide an API key. You need to provide your API key in an Authorization header using "
            "Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            None,
        )
    # Compare with every key, always: the time taken says nothing about which key came close.
    if sum(hmac.compare_digest(token.encode(), key.encode()) for key in keys) == 0:
        shown = f"{token[:3]}****{token[-2:]}" if len(token) > 8 else "****"
        return f"Incorrect API key provided: {shown}.", "invalid_api_key"
    return None


class ApiKeyMiddleware:
    """When keys are configured, every request but the health probes needs `Authorization: Bearer KEY`.
    (Unknown URLs never reach route middleware: error_to_response applies the same check to them.)"""

    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            problem = api_key_problem(self.keys, _header(scope, b"authorization"))
            if problem is not None:
                await send_error(send, 401, problem[0], "invalid_request_error", problem[1])
                return
        await self.app(scope, receive, send)


class InFlightLimitMiddleware:
    """At most `limit` requests at once; the rest get 429 at once instead of waiting in an unbounded queue."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            await send_error(send, 429, f"Too many requests in flight (limit {self.limit}); retry shortly.",
                             "rate_limit_error", "too_many_requests", {"retry-after": "1"})  # fmt: skip
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class ObservabilityMiddleware:
    """Gives each request an id (X-Request-Id, kept from the client if sent), logs it as one JSON line, and
    counts and times it per route."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = (_header(scope, b"x-request-id") or uuid.uuid4().hex)[:64]
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
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            self.metrics.observe_request(scope["method"], route, status, elapsed)
            access_log.info(
                "request",
                extra={"request_id": request_id, "method": scope["method"], "path": scope["path"], "route": route,
                       "status": status, "duration_ms": round(elapsed * 1000, 2)},
            )  # fmt: skip
