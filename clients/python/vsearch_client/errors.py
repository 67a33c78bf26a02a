"""The server's errors as exceptions: each carries OpenAI's `type`, `code` and `param`, and the HTTP status."""

from __future__ import annotations


class VsearchError(Exception):
    """A request vsearch refused or could not serve."""

    def __init__(self, message: str, status: int, type: str, code: str | None, param: str | None) -> None:
        super().__init__(message)
        self.message, self.status, self.type, self.code, self.param = message, status, type, code, param

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, code={self.code!r}, param={self.param!r}: {self.message})"


class BadRequest(VsearchError):
    """400 (or 413, 415): the request itself is wrong; `param` names the field."""


class AuthenticationError(VsearchError):
    """401: no API key, or a wrong one."""


class PermissionDenied(VsearchError):
    """403: the Host or Origin is not allowed."""


class NotFound(VsearchError):
    """404: no such index, document, model, file or job."""


class Conflict(VsearchError):
    """409: it exists already, or its state does not allow this."""


class RateLimited(VsearchError):
    """429: the server is at capacity (retried first, honouring Retry-After)."""


class ServerUnavailable(VsearchError):
    """5xx: shutting down, an index that cannot be opened, an upstream that failed (503s are retried first)."""


_BY_STATUS = {400: BadRequest, 401: AuthenticationError, 403: PermissionDenied, 404: NotFound, 409: Conflict,
              413: BadRequest, 415: BadRequest, 429: RateLimited}  # fmt: skip


def error_for(status: int, body: dict) -> VsearchError:
    """The exception for an error response (`body`: OpenAI's `{"error": {...}}`, or anything else)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"message": f"HTTP {status}", "type": "server_error", "code": None, "param": None}
    kind = _BY_STATUS.get(status, ServerUnavailable if status >= 500 else VsearchError)
    return kind(str(error.get("message")), status, str(error.get("type")), error.get("code"), error.get("param"))
