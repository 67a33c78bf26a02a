"""A fitted projection: a base embedder followed by a learned linear map to fewer dimensions, for documents and
queries alike. Its columns are ordered (principal components first, and trained on nested prefixes), so its first
`dimensions` components are themselves a good shorter vector: `dimensions` up to its width is served by prefix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from indexes.values import normalize
from service.embeddings.base import Embedder, EmbeddingInput, EmbeddingResult, shorten


class ProjectionEmbedder:
    owned_by = "vsearch-fine-tune"
    supports_dimensions = True  # by prefix: the columns are nested
    base_model = None  # a model in its own right: it embeds an index's documents, and may be fine-tuned further

    def __init__(self, model_id: str, base: Embedder, weights: np.ndarray, created: int) -> None:
        """`weights`: [base width, k]."""
        self.model_id = model_id
        self.base = base
        self.weights = weights.astype(np.float32)
        self.dimensions = int(weights.shape[1])
        self.max_input_tokens = base.max_input_tokens
        self.prompts = base.prompts
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
        return EmbeddingResult(self.project(base.vectors, dimensions), base.prompt_tokens)

    def project(self, vectors: np.ndarray, dimensions: int | None = None) -> np.ndarray:
        """The base model's vectors (full width) as this model's: also what re-projects a stored index."""
        return shorten(normalize(vectors @ self.weights), dimensions)

    def close(self) -> None:
        pass  # the base embedder is closed by the registry
