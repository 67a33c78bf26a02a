"""One way to retry an HTTP call to another OpenAI-shaped service (an upstream embedding provider, or the vsearch
server the ingest client feeds): exponential backoff with full jitter, Retry-After honoured (seconds or an HTTP
date), an optional deadline."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable

import httpx
import msgspec

log = logging.getLogger("vsearch")


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    max_retries: int = 5
    backoff_s: float = 0.5  # the first retry waits up to this; each further one up to twice as long
    max_delay_s: float = 30.0


class RetriesExhausted(Exception):
    def __init__(self, failure: str, attempts: int, timed_out: bool, status: int | None) -> None:
        super().__init__(f"{failure} (gave up after {attempts} attempts)")
        self.failure = failure
        self.attempts = attempts
        self.timed_out = timed_out  # the last attempt timed out
        self.status = status  # the last answer's status, if there was one


def retry_after_s(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds, from delta-seconds or an HTTP date; None if absent or unreadable."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_message(response: httpx.Response) -> str:
    """The message of an OpenAI-shaped error body, else the start of the body."""
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    except (ValueError, AttributeError):
        pass
    return response.text[:500] or response.reason_phrase


async def send_with_retries(
    send: Callable[[float | None], Awaitable[httpx.Response]],
    policy: RetryPolicy,
    retryable: Callable[[int], bool],
    deadline: float | None = None,
    name: str = "upstream",
) -> httpx.Response:
    """Calls `send(seconds left before the deadline, or None)` until an answer whose status is not `retryable`
    (success or not), which it returns. Timeouts and connection errors are retried too. Raises RetriesExhausted
    when retries, or the time before `deadline` (time.monotonic()), run out."""
    failure, timed_out, status = "was not asked: no time left", False, None
    attempt = 0
    for attempt in range(policy.max_retries + 1):
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            break
        response: httpx.Response | None = None
        try:
            response = await send(remaining)
        except httpx.TimeoutException:
            failure, timed_out, status = "timed out", True, None
        except httpx.TransportError as exc:
            failure, timed_out, status = f"could not be reached: {exc.__class__.__name__}", False, None
        else:
            if not retryable(response.status_code):
                return response
            failure, timed_out = f"answered {response.status_code}: {error_message(response)}", False
            status = response.status_code
        if attempt == policy.max_retries:
            break
        after = retry_after_s(response) if response is not None else None
        jitter = random.uniform(0, policy.backoff_s * 2**attempt)
        delay = min(after if after is not None else jitter, policy.max_delay_s)
        if deadline is not None and time.monotonic() + delay >= deadline:
            break
        log.warning("%s %s; retrying in %.2f s", name, failure, delay)
        await asyncio.sleep(delay)
    raise RetriesExhausted(f"{name} {failure}", attempt + 1, timed_out, status)
