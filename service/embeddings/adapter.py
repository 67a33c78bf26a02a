"""A fine-tuned query model: a base embedder followed by a trained linear adapter."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from indexes.values import normalize
from service.embeddings.base import Embedder, EmbeddingInput, EmbeddingResult, shorten


class AdapterEmbedder:
    owned_by = "vsearch-fine-tune"

    def __init__(self, model_id: str, base: Embedder, weights: np.ndarray, created: int) -> None:
        self.model_id = model_id
        self.base = base
        self.base_model: str | None = base.model_id  # an index may use this as query_model only over this base
        self.weights = weights.astype(np.float32)
        self.dimensions = base.dimensions
        self.max_input_tokens = base.max_input_tokens
        self.supports_dimensions = base.supports_dimensions
        self.prompts = base.prompts  # its queries are its base's, with the base's prompts
        self.created = created

    @property
    def special_tokens(self) -> int:
        return self.base.special_tokens

    async def start(self) -> None:
        pass  # its base is started by the registry

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self.base.token_offsets(text)

    async def embed(
        self, inputs: Sequence[EmbeddingInput], dimensions: int | None = None, truncate: bool = False,
        bulk: bool = False,
    ) -> EmbeddingResult:  # fmt: skip
        base = await self.base.embed(inputs, None, truncate, bulk)
        adapted = normalize(base.vectors @ self.weights)
        return EmbeddingResult(shorten(adapted, dimensions), base.prompt_tokens)

    def close(self) -> None:
        pass  # the base embedder is closed by the registry
