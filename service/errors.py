"""Domain error types, and their one translation into OpenAI's error object and an HTTP status."""

from __future__ import annotations

import logging
import re

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec

from indexes.errors import DocumentNotFound, IndexExists, IndexNotFound, IndexStoreError
from service.middleware import OPEN_PATHS, api_key_problem

log = logging.getLogger("vsearch")


class VsearchError(Exception):
    """Base of every error a caller can cause. Subclasses set the HTTP status and OpenAI `type`/`code`."""

    status_code = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(VsearchError):
    pass


class ModelNotFound(VsearchError):
    status_code = 404
    code = "model_not_found"

    def __init__(self, model: str, param: str = "model") -> None:
        super().__init__(f"The model `{model}` does not exist or you do not have access to it.", param)


class NotFound(VsearchError):
    status_code = 404
    code = "not_found"


class Conflict(VsearchError):
    status_code = 409
    code = "conflict"


class ModelNotInstalled(Exception):
    """The bundled model's package is missing or damaged: a start-up problem, not a request error."""


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


# Documented on every route, so the OpenAPI schema describes the error bodies clients actually get.
ERROR_RESPONSES = {
    status: ResponseSpec(ErrorResponse, description=description, generate_examples=False)
    for status, description in [
        (400, "Invalid request (OpenAI error object)"),
        (401, "Missing or wrong API key"),
        (404, "Unknown model, index, document, file or job"),
        (409, "Already exists"),
        (413, "Request body or upload too large"),
        (429, "Too many requests in flight, or the upstream's rate limit"),
        (502, "The upstream embedding provider failed"),
        (503, "Not ready"),
        (504, "The upstream embedding provider timed out"),
    ]
}


def _error(status: int, message: str, type_: str, param: str | None, code: str | None) -> Response[ErrorResponse]:
    return Response(ErrorResponse(ErrorBody(message, type_, param, code)), status_code=status)


_STORE_ERRORS: dict[type[IndexStoreError], tuple[int, str]] = {
    IndexNotFound: (404, "index_not_found"),
    DocumentNotFound: (404, "document_not_found"),
    IndexExists: (409, "index_exists"),
}
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")
_HTTP_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


def _validation_error(exc: ValidationException) -> Response[ErrorResponse]:
    """Litestar reports msgspec decoding failures as a list of {message, key}; OpenAI names one `param`."""
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
    return _error(400, message, "invalid_request_error", param, None)


def error_to_response(request: Request, exc: Exception) -> Response[ErrorResponse]:
    """The single place where exceptions become HTTP responses."""
    if isinstance(exc, VsearchError):
        return _error(exc.status_code, exc.message, exc.type, exc.param, exc.code)
    if isinstance(exc, IndexStoreError):
        status, code = _STORE_ERRORS.get(type(exc), (400, None))
        return _error(status, exc.message, "invalid_request_error", exc.param, code)
    if isinstance(exc, ValidationException):
        return _validation_error(exc)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        if status in (404, 405):  # routing failed before any middleware ran: still, no key, no route map
            problem = api_key_problem(request.app.state.get("api_keys", []), request.headers.get("authorization"))
            if problem is not None and request.url.path not in OPEN_PATHS:
                return _error(401, problem[0], "invalid_request_error", None, problem[1])
        detail = str(exc.detail)
        if status == 400 and any(word in detail for word in ("JSON", "truncated", "malformed", "decode")):
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error", None, None)
        message = {
            404: f"Unknown request URL: {request.method} {request.url.path}.",
            405: f"Method {request.method} is not allowed for {request.url.path}.",
        }.get(status, detail)
        code = {404: "unknown_url", 405: "method_not_allowed"}.get(status)
        type_ = _HTTP_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        return _error(status, message, type_, None, code)
    if isinstance(exc, RecursionError):  # JSON nested deeper than the decoder will follow
        return _error(400, "The JSON body is nested too deeply.", "invalid_request_error", None, None)
    if isinstance(exc, UnicodeDecodeError):  # msgspec meets a string that is not UTF-8
        return _error(400, "The request body is not valid UTF-8.", "invalid_request_error", None, None)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error(500, "The server had an error while processing your request.", "server_error", None, None)
