"""Domain errors: plain Python, no web framework. Each type carries its kind (what went wrong, in the caller's
terms), its OpenAI `code` and the `param` at fault; service/api/errors.py turns kinds into HTTP in one place."""

from __future__ import annotations

import errno
import functools
import inspect
from collections.abc import Callable
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from indexes.databases.sqlite import sqlite3
from indexes.errors import (
    DocumentNotFound,
    IndexExists,
    IndexNotFound,
    IndexReplaced,
    IndexStoreError,
    IndexUnavailable,
    InvalidSnapshot,
    StorageUnavailable,
)

F = TypeVar("F", bound=Callable[..., Any])


class ErrorKind(StrEnum):
    INVALID_REQUEST = "invalid_request"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    UPSTREAM_REJECTED = "upstream_rejected"  # the upstream refused the request (its 4xx)
    UPSTREAM_FAILED = "upstream_failed"  # the upstream broke, lied, or stayed unavailable
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UNAVAILABLE = "unavailable"
    INSUFFICIENT_STORAGE = "insufficient_storage"


class VsearchError(Exception):
    """Base of every error a caller can cause or be told about."""

    kind: ClassVar[ErrorKind] = ErrorKind.INVALID_REQUEST
    code: str | None = None

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(VsearchError):
    pass


class NotFound(VsearchError):
    kind = ErrorKind.NOT_FOUND
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str, param: str = "model") -> None:
        super().__init__(f"The model `{model}` does not exist or you do not have access to it.", param)


class Conflict(VsearchError):
    kind = ErrorKind.CONFLICT
    code = "conflict"


class TooLarge(VsearchError):
    kind = ErrorKind.TOO_LARGE
    code = "too_large"


class Unauthenticated(VsearchError):
    kind = ErrorKind.UNAUTHENTICATED


class Forbidden(VsearchError):
    kind = ErrorKind.FORBIDDEN
    code = "forbidden"


class UnsupportedMediaType(VsearchError):
    kind = ErrorKind.UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"


class InsufficientStorage(VsearchError):
    kind = ErrorKind.INSUFFICIENT_STORAGE
    code = "insufficient_storage"


class RateLimited(VsearchError):
    kind = ErrorKind.RATE_LIMITED
    code = "too_many_requests"

    def __init__(self, message: str, retry_after_s: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class Unavailable(VsearchError):
    kind = ErrorKind.UNAVAILABLE
    code = "unavailable"


class ShuttingDown(Unavailable):
    code = "shutting_down"


class UpstreamRejected(VsearchError):
    """The upstream answered a 4xx that retrying cannot fix; the caller gets the same status."""

    kind = ErrorKind.UPSTREAM_REJECTED
    code = "upstream_error"

    def __init__(self, message: str, upstream_status: int) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status


class UpstreamFailed(VsearchError):
    kind = ErrorKind.UPSTREAM_FAILED
    code = "upstream_error"


class UpstreamTimeout(VsearchError):
    kind = ErrorKind.UPSTREAM_TIMEOUT
    code = "upstream_error"


class UpstreamRateLimited(VsearchError):
    """The upstream kept answering 429 until we gave up."""

    kind = ErrorKind.RATE_LIMITED
    code = "upstream_error"


class ModelNotInstalled(Exception):
    """The bundled model's package is missing or damaged: a start-up problem, not a request error."""


def from_system_error(exc: BaseException) -> VsearchError | None:
    """A machine running out of something, in the caller's terms (None for anything else: a bug)."""
    full = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or (
        isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    )
    if full:
        return InsufficientStorage("No space left on device: the server could not store this request's data.")
    if isinstance(exc, StorageUnavailable):
        return Unavailable(exc.message, code="storage_unavailable")
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        return Unavailable("The server is out of file descriptors; retry shortly.", code="out_of_descriptors")
    return None


def from_store_error(exc: IndexStoreError) -> VsearchError:
    """The storage engine's errors in the domain's terms."""
    if isinstance(exc, IndexReplaced):  # retried by the search service; this is the third time in a row
        return Conflict(exc.message, exc.param, code="index_restored")
    if isinstance(exc, IndexNotFound):
        return NotFound(exc.message, exc.param, code="index_not_found")
    if isinstance(exc, InvalidSnapshot):
        return InvalidRequest(exc.message, exc.param, code="invalid_snapshot")
    if isinstance(exc, DocumentNotFound):
        return NotFound(exc.message, exc.param, code="document_not_found")
    if isinstance(exc, IndexExists):
        return Conflict(exc.message, exc.param, code="index_exists")
    if isinstance(exc, IndexUnavailable):
        return Unavailable(exc.message, exc.param, code="index_unavailable")
    if isinstance(exc, StorageUnavailable):
        return Unavailable(exc.message, code="storage_unavailable")
    return InvalidRequest(exc.message, exc.param)  # a bad config, filter or document


def translates_store_errors(function: F) -> F:
    """Decorates a domain method (sync or async) so that storage errors leave it as domain errors."""
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await function(*args, **kwargs)
            except IndexStoreError as exc:
                raise from_store_error(exc) from None

        return run_async  # type: ignore[return-value]

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except IndexStoreError as exc:
            raise from_store_error(exc) from None

    return run  # type: ignore[return-value]
