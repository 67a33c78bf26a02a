"""The one place where errors become HTTP: domain errors by kind, Litestar's own by type, all in OpenAI's error
body. Routes document the statuses they can answer with `error_responses(...)`."""

from __future__ import annotations

import logging
import re

from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    SerializationException,
    ValidationException,
)
from litestar.openapi.datastructures import ResponseSpec

from service.errors import ErrorKind, RateLimited, UpstreamRejected, VsearchError, from_system_error
from service.schemas import ErrorBody, ErrorResponse

log = logging.getLogger("vsearch")

STATUS_OF_KIND = {
    ErrorKind.INVALID_REQUEST: 400,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.UPSTREAM_FAILED: 502,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.UPSTREAM_TIMEOUT: 504,
    ErrorKind.INSUFFICIENT_STORAGE: 507,
}
TYPE_OF_KIND = {
    ErrorKind.RATE_LIMITED: "rate_limit_error",
    ErrorKind.UPSTREAM_FAILED: "upstream_error",
    ErrorKind.UPSTREAM_TIMEOUT: "upstream_error",
    ErrorKind.UNAVAILABLE: "server_error",
    ErrorKind.INSUFFICIENT_STORAGE: "server_error",
}  # every other kind is OpenAI's "invalid_request_error"

DESCRIPTIONS = {
    400: "Invalid request",
    401: "Missing or wrong API key (when keys are set)",
    403: "A web origin that is not allowed",
    404: "Not found",
    409: "Already exists",
    413: "Request body or upload too large",
    415: "Not application/json",
    429: "Too many requests in flight, or the upstream's rate limit",
    502: "The upstream embedding provider failed",
    503: "Not ready, or shutting down",
    504: "The upstream embedding provider timed out",
    507: "No space left on the data dir's device",
}
# What the edge can answer on any route (Host, Origin, keys, the in-flight bound): documented on every route.
EDGE_STATUSES = (400, 401, 403, 429)


def error_responses(*statuses: int, edge: bool = True) -> dict[int, ResponseSpec]:
    """OpenAPI responses for the error statuses a route can answer, and the edge's unless it is a probe."""
    return {
        status: ResponseSpec(ErrorResponse, description=DESCRIPTIONS[status], generate_examples=False)
        for status in sorted({*statuses, *(EDGE_STATUSES if edge else ())})
    }


def error_response(message: str, type_: str, param: str | None, code: str | None) -> ErrorResponse:
    return ErrorResponse(error=ErrorBody(message=message, type=type_, param=param, code=code))


def describe(exc: VsearchError) -> tuple[int, ErrorResponse, dict[str, str]]:
    """The status, body and headers for a domain error."""
    status = exc.upstream_status if isinstance(exc, UpstreamRejected) else STATUS_OF_KIND[exc.kind]
    type_ = TYPE_OF_KIND.get(exc.kind, "invalid_request_error")
    headers = {"retry-after": str(exc.retry_after_s)} if isinstance(exc, RateLimited) else {}
    return status, error_response(exc.message, type_, exc.param, exc.code), headers


_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")


def _validation_error(exc: ValidationException) -> tuple[int, ErrorResponse]:
    """msgspec's decoding messages, reworded as OpenAI words them; Litestar passes them as {message, key}."""
    extra = exc.extra if isinstance(exc.extra, list) and exc.extra else [{"message": exc.detail}]
    first = extra[0] if isinstance(extra[0], dict) else {"message": str(extra[0])}
    message = str(first.get("message", exc.detail))
    param = first.get("key")
    if match := _UNKNOWN_FIELD.search(message):
        param = match.group(1)
        message = f"Additional properties are not allowed ('{param}' was unexpected)"
    elif match := _MISSING_FIELD.search(message):
        param = match.group(1)
        message = f"Missing required parameter: '{param}'."
    elif param and param != "data":
        message = f"Invalid value for '{param}': {message}"
    if param == "data":
        param = None
    return 400, error_response(message, "invalid_request_error", param, None)


def _http_error(request: Request, exc: HTTPException) -> tuple[int, ErrorResponse]:
    if isinstance(exc.__cause__, SerializationException):  # the body is not JSON
        return 400, error_response("We could not parse the JSON body of your request.", "invalid_request_error",
                                   None, None)  # fmt: skip
    if isinstance(exc, NotFoundException):
        message = f"Unknown request URL: {request.method} {request.url.path}."
        return 404, error_response(message, "invalid_request_error", None, "unknown_url")
    if isinstance(exc, MethodNotAllowedException):
        message = f"Method {request.method} is not allowed for {request.url.path}."
        return 405, error_response(message, "invalid_request_error", None, "method_not_allowed")
    status = exc.status_code
    type_ = "invalid_request_error" if status < 500 else "server_error"
    return status, error_response(str(exc.detail), type_, None, None)


def exception_to_response(request: Request, exc: Exception) -> Response[ErrorResponse]:
    """Litestar's exception handler for every route: anything a handler or the router raises."""
    headers: dict[str, str] = {}
    if isinstance(exc, VsearchError):
        status, body, headers = describe(exc)
    elif isinstance(exc, ValidationException):
        status, body = _validation_error(exc)
    elif isinstance(exc, HTTPException):
        status, body = _http_error(request, exc)
    elif isinstance(exc, RecursionError):  # JSON nested deeper than the decoder will follow
        status, body = 400, error_response("The JSON body is nested too deeply.", "invalid_request_error",
                                           None, None)  # fmt: skip
    elif isinstance(exc, UnicodeDecodeError):  # msgspec meets a string that is not UTF-8
        status, body = 400, error_response("The request body is not valid UTF-8.", "invalid_request_error",
                                           None, None)  # fmt: skip
    elif (system := from_system_error(exc)) is not None:  # disk full, out of descriptors
        log.error("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
        status, body, headers = describe(system)
    else:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        status, body = 500, error_response("The server had an error while processing your request.",
                                           "server_error", None, None)  # fmt: skip
    return Response(body, status_code=status, headers=headers)
