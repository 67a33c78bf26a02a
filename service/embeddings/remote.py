"""An embedder backed by any OpenAI-compatible upstream (OpenAI, TEI, vLLM, Ollama, another vsearch) over httpx.

Large requests are split within the upstream's limits and sent concurrently; answers are decoded from base64,
checked (count, order, width) and reassembled in order. 429s, 5xx, connection errors and timeouts are retried
with exponential backoff and jitter (honouring Retry-After) until a per-request deadline.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import numpy as np

from service.embeddings.base import EmbeddingInput, EmbeddingResult
from service.errors import VsearchError

log = logging.getLogger("vsearch")
RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}
# Without the upstream's tokenizer, texts are chunked by pseudo-tokens (words cut into pieces of at most 4
# characters, and punctuation marks): on English text there are at least as many of them as real tokens.
PSEUDO_TOKEN = re.compile(r"\w{1,4}|[^\w\s]")


class UpstreamError(VsearchError):
    """The upstream failed; status and message say how (4xx from the upstream keep their status)."""

    type = "upstream_error"

    def __init__(self, message: str, status: int, code: str = "upstream_error") -> None:
        super().__init__(message, param=None, code=code)
        self.status_code = status
        if status < 500:
            self.type = "invalid_request_error"


@dataclass(frozen=True)
class RemoteModel:
    id: str  # what our clients ask for
    upstream_id: str  # what the upstream calls it
    max_input_tokens: int = 8191
    supports_dimensions: bool = False
    dimensions: int | None = None  # native width; asked of the upstream at start when not configured


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    base_url: str
    api_key: str | None = None
    max_batch_inputs: int = 2048
    max_batch_bytes: int = 4_000_000
    max_concurrency: int = 4
    timeout_s: float = 30.0
    max_retries: int = 5
    deadline_s: float = 120.0  # for one of our requests, every part and retry included
    backoff_s: float = 0.5


class RemoteProvider:
    """One pooled httpx.AsyncClient per upstream, shared by its models."""

    def __init__(self, settings: ProviderSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        headers = {"authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self.client = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=settings.timeout_s,
            transport=transport,
            limits=httpx.Limits(max_connections=max(settings.max_concurrency, 1) * 2),
        )
        self.calls = 0  # HTTP requests sent, retries included (for tests and metrics)

    async def aclose(self) -> None:
        await self.client.aclose()

    def _retry_delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None and (after := response.headers.get("retry-after")):
            try:
                return max(0.0, float(after))
            except ValueError:
                parsed = email.utils.parsedate_to_datetime(after)
                if parsed is not None:
                    return max(0.0, parsed.timestamp() - time.time())
        return random.uniform(0, self.settings.backoff_s * 2**attempt)  # full jitter

    async def post_embeddings(self, body: dict, deadline: float) -> dict:
        name = self.settings.name
        for attempt in range(self.settings.max_retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            response: httpx.Response | None = None
            try:
                self.calls += 1
                response = await self.client.post(
                    "embeddings", json=body, timeout=min(self.settings.timeout_s, remaining)
                )
            except httpx.TimeoutException:
                failure = f"upstream '{name}' timed out"
            except httpx.TransportError as exc:
                failure = f"upstream '{name}' could not be reached: {exc.__class__.__name__}"
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError:
                        raise UpstreamError(f"upstream '{name}' answered with invalid JSON", 502) from None
                message = _upstream_message(response)
                if response.status_code not in RETRYABLE:
                    raise UpstreamError(
                        f"upstream '{name}' answered {response.status_code}: {message}", response.status_code
                    )
                failure = f"upstream '{name}' answered {response.status_code}: {message}"
            if attempt == self.settings.max_retries:
                break
            delay = self._retry_delay(attempt, response)
            if time.monotonic() + delay >= deadline:
                break
            log.warning("%s; retrying in %.2f s", failure, delay)
            await asyncio.sleep(delay)
        status = 504 if "timed out" in failure else 429 if "answered 429" in failure else 502
        raise UpstreamError(f"{failure} (gave up after {attempt + 1} attempts)", status)


def _upstream_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    except (ValueError, AttributeError):
        pass
    return response.text[:500] or response.reason_phrase


class RemoteEmbedder:
    special_tokens = 0

    def __init__(self, provider: RemoteProvider, model: RemoteModel) -> None:
        self.provider = provider
        self.model = model
        self.model_id = model.id
        self.owned_by = provider.settings.name
        self.created = int(time.time())
        self.max_input_tokens = model.max_input_tokens
        self.supports_dimensions = model.supports_dimensions
        self._dimensions = model.dimensions

    @property
    def dimensions(self) -> int:
        if self._dimensions is None:
            raise UpstreamError(
                f"The width of {self.model_id}'s vectors is not known yet: its upstream has not answered. "
                "Set 'dimensions' for the model in the config, or retry once the upstream is up.",
                503,
            )
        return self._dimensions

    async def probe(self) -> None:
        """Learn the native width with one tiny request (when the config does not give it)."""
        if self._dimensions is None:
            self._dimensions = int((await self.embed(["dimension probe"])).vectors.shape[1])

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in PSEUDO_TOKEN.finditer(text)]

    def _batches(self, inputs: Sequence[EmbeddingInput]) -> list[range]:
        """Consecutive slices within the upstream's count and byte budgets."""
        batches, start, size = [], 0, 0
        for i, item in enumerate(inputs):
            cost = len(item.encode()) if isinstance(item, str) else 6 * len(item)
            if i > start and (
                i - start >= self.provider.settings.max_batch_inputs
                or size + cost > self.provider.settings.max_batch_bytes
            ):
                batches.append(range(start, i))
                start, size = i, 0
            size += cost
        batches.append(range(start, len(inputs)))
        return batches

    def _truncate(self, item: EmbeddingInput) -> EmbeddingInput:
        if isinstance(item, str):
            spans = self.token_offsets(item)
            return item[: spans[self.max_input_tokens - 1][1]] if len(spans) > self.max_input_tokens else item
        return item[: self.max_input_tokens]

    async def embed(
        self, inputs: Sequence[EmbeddingInput], dimensions: int | None = None, truncate: bool = False
    ) -> EmbeddingResult:
        if not inputs:
            return EmbeddingResult(np.empty((0, self._dimensions or 0), np.float32), 0)
        items = [self._truncate(item) for item in inputs] if truncate else list(inputs)
        deadline = time.monotonic() + self.provider.settings.deadline_s
        limit = asyncio.Semaphore(max(1, self.provider.settings.max_concurrency))

        async def send(part: range) -> tuple[np.ndarray, int]:
            body: dict = {
                "model": self.model.upstream_id,
                "input": [items[i] for i in part],
                "encoding_format": "base64",
            }
            if dimensions is not None:
                body["dimensions"] = dimensions
            async with limit:
                answer = await self.provider.post_embeddings(body, deadline)
            return self._decode(answer, len(part), dimensions)

        parts = await asyncio.gather(*(send(part) for part in self._batches(items)))
        vectors = np.concatenate([v for v, _ in parts])
        return EmbeddingResult(vectors, sum(tokens for _, tokens in parts))

    def _decode(self, answer: dict, expected: int, dimensions: int | None) -> tuple[np.ndarray, int]:
        name = self.provider.settings.name
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != expected:
            got = len(data) if isinstance(data, list) else "no"
            raise UpstreamError(f"upstream '{name}' returned {got} embeddings for {expected} inputs", 502)
        rows: list[np.ndarray | None] = [None] * expected
        for item in data:
            index = item.get("index") if isinstance(item, dict) else None
            if not isinstance(index, int) or not 0 <= index < expected or rows[index] is not None:
                raise UpstreamError(f"upstream '{name}' returned embeddings with missing or repeated indexes", 502)
            raw = item.get("embedding")
            if isinstance(raw, str):
                vector = np.frombuffer(base64.b64decode(raw), dtype="<f4")
            else:
                vector = np.asarray(raw, dtype=np.float32)
            rows[index] = vector
        widths = {len(v) for v in rows if v is not None}
        wanted = dimensions or self._dimensions
        if len(widths) != 1 or (wanted is not None and widths != {wanted}):
            raise UpstreamError(
                f"upstream '{name}' returned vectors of {sorted(widths)} dimensions; expected {wanted}", 502
            )
        vectors = np.stack(rows).astype(np.float32)  # type: ignore[arg-type]
        # Some upstreams do not normalise: indexes and cosine scores expect unit vectors.
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        usage = answer.get("usage") or {}
        return vectors, int(usage.get("prompt_tokens") or 0)

    def close(self) -> None:
        pass  # the provider's client is closed by the app, in its event loop
