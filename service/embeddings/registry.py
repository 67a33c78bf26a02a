"""One place that resolves every model id to the embedder serving it, for the API and indexes alike."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from service.embeddings.base import Embedder, EmbeddingInput, EmbeddingResult
from service.errors import InvalidRequest, ModelNotFound

log = logging.getLogger("vsearch")


class EmbedderRegistry:
    def __init__(self, on_embedded: Callable[[str, int], None] | None = None) -> None:
        self._embedders: dict[str, Embedder] = {}
        self.on_embedded = on_embedded  # told (model, count) after each embedding call, for metrics

    def add(self, embedder: Embedder) -> None:
        self._embedders[embedder.model_id] = embedder

    def get(self, model_id: str, param: str = "model") -> Embedder:
        try:
            return self._embedders[model_id]
        except KeyError:
            raise ModelNotFound(model_id, param) from None

    def all(self) -> list[Embedder]:
        return list(self._embedders.values())

    def output_dimensions(self, model_id: str, dimensions: int | None) -> int:
        """The width of the vectors `model_id` gives for a requested `dimensions`, or an OpenAI-style error."""
        embedder = self.get(model_id)
        if dimensions is None:
            return embedder.dimensions
        if not embedder.supports_dimensions:
            raise InvalidRequest("This model does not support specifying dimensions.", param="dimensions")
        if not 1 <= dimensions <= embedder.dimensions:
            raise InvalidRequest(
                f"Invalid value for 'dimensions': {dimensions}. {model_id} gives at most {embedder.dimensions} "
                "dimensions; the value must be between 1 and that.",
                param="dimensions",
            )
        return dimensions

    async def embed(
        self,
        model_id: str,
        inputs: Sequence[EmbeddingInput],
        dimensions: int | None = None,
        truncate: bool = False,
    ) -> EmbeddingResult:
        self.output_dimensions(model_id, dimensions)
        result = await self.get(model_id).embed(inputs, dimensions, truncate)
        if self.on_embedded is not None:
            self.on_embedded(model_id, len(inputs))
        return result

    async def start(self) -> None:
        for embedder in self.all():
            try:
                await embedder.start()
            except Exception as exc:  # an upstream may come up later; its requests say so meanwhile
                log.warning("could not start %s: %s", embedder.model_id, exc)

    def close(self) -> None:
        for embedder in self._embedders.values():
            embedder.close()
