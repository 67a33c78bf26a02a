"""An embedder backed by any OpenAI-compatible upstream (OpenAI, TEI, vLLM, Ollama, another vsearch) over httpx.

Large requests are split within the upstream's limits and sent concurrently; answers are decoded from base64,
checked (count, order, width) and reassembled in order. 429s, 5xx, connection errors and timeouts are retried
with exponential backoff and jitter (honouring Retry-After) until a per-request deadline.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import time
from collections.abc import Sequence
from typing import Annotated

import httpx
import msgspec
import numpy as np
from msgspec import Meta

from indexes.values import normalize
from service.embeddings.base import EmbeddingInput, EmbeddingResult
from service.errors import Unavailable, UpstreamFailed, UpstreamRateLimited, UpstreamRejected, UpstreamTimeout
from service.retries import RetriesExhausted, RetryPolicy, error_message, send_with_retries

RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}
# Without the upstream's tokenizer, texts are chunked by pseudo-tokens (words cut into pieces of at most 4
# characters, and punctuation marks): on English text there are at least as many of them as real tokens.
PSEUDO_TOKEN = re.compile(r"\w{1,4}|[^\w\s]")


class RemoteModelConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    id: str  # the id our clients use
    upstream_id: str | None = None  # the id the upstream knows (default: id)
    max_input_tokens: Annotated[int, Meta(ge=1)] = 8191
    supports_dimensions: bool = False
    dimensions: Annotated[int, Meta(ge=1)] | None = None  # native width; asked of the upstream when absent


class ProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    name: str
    base_url: str
    api_key_env: str | None = None  # the environment variable holding the upstream's API key
    models: list[RemoteModelConfig]
    max_batch_inputs: Annotated[int, Meta(ge=1, le=2048)] = 2048
    max_batch_bytes: Annotated[int, Meta(ge=1)] = 4_000_000
    max_concurrency: Annotated[int, Meta(ge=1)] = 4
    timeout_s: Annotated[float, Meta(gt=0)] = 30.0
    max_retries: Annotated[int, Meta(ge=0)] = 5
    deadline_s: Annotated[float, Meta(gt=0)] = 120.0  # for one of our requests, every part and retry included
    backoff_s: Annotated[float, Meta(gt=0)] = 0.5
    cache: bool = True  # keep its embeddings in the embedding cache


class RemoteProvider:
    """One pooled httpx.AsyncClient per upstream, shared by its models."""

    def __init__(self, config: ProviderConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
        self.client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/") + "/",
            headers={"authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=config.timeout_s,
            transport=transport,
            limits=httpx.Limits(max_connections=config.max_concurrency * 2),
        )
        self.retries = RetryPolicy(max_retries=config.max_retries, backoff_s=config.backoff_s)
        self.calls = 0  # HTTP requests sent, retries included (for tests and metrics)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def post_embeddings(self, body: dict, deadline: float) -> dict:
        name = f"upstream '{self.config.name}'"

        async def send(remaining: float | None) -> httpx.Response:
            self.calls += 1
            timeout = self.config.timeout_s if remaining is None else min(self.config.timeout_s, remaining)
            return await self.client.post("embeddings", json=body, timeout=timeout)

        try:
            response = await send_with_retries(send, self.retries, RETRYABLE.__contains__, deadline, name)
        except RetriesExhausted as exc:
            if exc.timed_out:
                raise UpstreamTimeout(str(exc)) from None
            raise (UpstreamRateLimited if exc.status == 429 else UpstreamFailed)(str(exc)) from None
        if response.status_code >= 400:
            message = f"{name} answered {response.status_code}: {error_message(response)}"
            raise UpstreamRejected(message, response.status_code)
        try:
            return response.json()
        except ValueError:
            raise UpstreamFailed(f"{name} answered with invalid JSON") from None


class RemoteEmbedder:
    special_tokens = 0

    base_model = None

    def __init__(self, provider: RemoteProvider, model: RemoteModelConfig) -> None:
        self.provider = provider
        self.model = model
        self.model_id = model.id
        self.owned_by = provider.config.name
        self.created = int(time.time())
        self.max_input_tokens = model.max_input_tokens
        self.supports_dimensions = model.supports_dimensions
        self._dimensions = model.dimensions
        self.prompts: dict[str, str] = {}  # an upstream's prompts are its own business

    @property
    def dimensions(self) -> int:
        if self._dimensions is None:
            raise Unavailable(
                f"The width of {self.model_id}'s vectors is not known yet: its upstream has not answered. "
                "Set 'dimensions' for the model in the config, or retry once the upstream is up.",
                code="upstream_error",
            )
        return self._dimensions

    async def start(self) -> None:
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
                i - start >= self.provider.config.max_batch_inputs or size + cost > self.provider.config.max_batch_bytes
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
        self, inputs: Sequence[EmbeddingInput], dimensions: int | None = None, truncate: bool = False,
        bulk: bool = False,  # an upstream has no lanes: sent as any other call
    ) -> EmbeddingResult:  # fmt: skip
        if not inputs:
            return EmbeddingResult(np.empty((0, self._dimensions or 0), np.float32), 0)
        items = [self._truncate(item) for item in inputs] if truncate else list(inputs)
        deadline = time.monotonic() + self.provider.config.deadline_s
        limit = asyncio.Semaphore(self.provider.config.max_concurrency)

        async def send(part: range) -> tuple[np.ndarray, int]:
            body: dict = {
                "model": self.model.upstream_id or self.model.id,
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
        name = self.provider.config.name
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != expected:
            got = len(data) if isinstance(data, list) else "no"
            raise UpstreamFailed(f"upstream '{name}' returned {got} embeddings for {expected} inputs")
        rows: list[np.ndarray | None] = [None] * expected
        for item in data:
            index = item.get("index") if isinstance(item, dict) else None
            if not isinstance(index, int) or not 0 <= index < expected or rows[index] is not None:
                raise UpstreamFailed(f"upstream '{name}' returned embeddings with missing or repeated indexes")
            raw = item.get("embedding")
            if isinstance(raw, str):
                vector = np.frombuffer(base64.b64decode(raw), dtype="<f4")
            else:
                vector = np.asarray(raw, dtype=np.float32)
            rows[index] = vector
        widths = {len(v) for v in rows if v is not None}
        wanted = dimensions or self._dimensions
        if len(widths) != 1 or (wanted is not None and widths != {wanted}):
            raise UpstreamFailed(
                f"upstream '{name}' returned vectors of {sorted(widths)} dimensions; expected {wanted}"
            )
        # Some upstreams do not normalise: indexes and cosine scores expect unit vectors.
        vectors = normalize(np.stack(rows))  # type: ignore[arg-type]
        usage = answer.get("usage") or {}
        return vectors, int(usage.get("prompt_tokens") or 0)

    def close(self) -> None:
        pass  # the provider's client is closed by the app, in its event loop
