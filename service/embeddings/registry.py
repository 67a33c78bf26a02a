"""One place that resolves every model id to the embedder serving it, for the API and indexes alike."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from service.embeddings.base import Embedder, EmbeddingInput, EmbeddingResult, InputType, declared_prompt
from service.errors import InvalidRequest, ModelNotFound

log = logging.getLogger("vsearch")
# No text of N tokens is longer than N x 100 characters: WordPiece never makes a token of a word over 100
# characters (it becomes one [UNK]). Only a text padded with long runs of spaces or such words could be, and
# those are refused too, which is what lets a 15 MB input be refused without being tokenised.
MAX_CHARS_PER_TOKEN = 100


class EmbedderRegistry:
    def __init__(self, on_embedded: Callable[[str, int], None] | None = None) -> None:
        self._embedders: dict[str, Embedder] = {}
        self.on_embedded = on_embedded  # told (model, count) after each embedding call, for metrics
        # Awaited before a model id is missed or the models are listed (known(), listed(), embed()), to add models
        # published elsewhere (by another replica sharing the database); None on a single node, where every model
        # is added here. get() never discovers: it is for ids already known.
        self.discover: Callable[[], Awaitable[None]] | None = None

    def add(self, embedder: Embedder) -> None:
        self._embedders[embedder.model_id] = embedder

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._embedders

    def get(self, model_id: str, param: str = "model") -> Embedder:
        """The embedder of a model known here (ModelNotFound otherwise); known() first looks elsewhere."""
        try:
            return self._embedders[model_id]
        except KeyError:
            raise ModelNotFound(model_id, param) from None

    async def known(self, model_id: str, param: str = "model") -> Embedder:
        """The embedder of `model_id`, discovering it first if it is not known here yet."""
        if model_id not in self._embedders and self.discover is not None:
            await self.discover()
        return self.get(model_id, param)

    async def listed(self) -> list[Embedder]:
        """Every model, those published elsewhere included."""
        if self.discover is not None:
            await self.discover()
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

    def max_input_chars(self, model_id: str) -> int:
        return self.get(model_id).max_input_tokens * MAX_CHARS_PER_TOKEN

    def check_lengths(self, model_id: str, texts: Sequence[EmbeddingInput], param: str = "input") -> None:
        """Refuses, by length alone, a text longer than the model's window could hold."""
        limit = self.max_input_chars(model_id)
        for i, text in enumerate(texts):
            if isinstance(text, str) and len(text) > limit:
                tokens = self.get(model_id).max_input_tokens
                raise InvalidRequest(
                    f"This model's maximum context length is {tokens} tokens; input {i} has {len(text):,} "
                    f"characters, more than {tokens} tokens can hold ({limit:,}). Please reduce your prompt.",
                    param=param,
                )

    async def embed(
        self,
        model_id: str,
        inputs: Sequence[EmbeddingInput],
        dimensions: int | None = None,
        truncate: bool = False,
        bulk: bool = False,
        input_type: InputType | None = None,
    ) -> EmbeddingResult:
        """`input_type`: put the model's prompt for that kind of input before each (it counts toward the window
        and the usage, as any text does)."""
        await self.known(model_id)
        self.output_dimensions(model_id, dimensions)
        if input_type is not None:
            inputs = self._prompted(model_id, inputs, input_type)
        if truncate:  # what lies past the window is cut anyway: never tokenise megabytes to throw them away
            limit = self.max_input_chars(model_id)
            inputs = [text[:limit] if isinstance(text, str) else text for text in inputs]
        else:
            self.check_lengths(model_id, inputs)
        result = await self.get(model_id).embed(inputs, dimensions, truncate, bulk)
        if self.on_embedded is not None:
            self.on_embedded(model_id, len(inputs))
        return result

    def _prompted(self, model_id: str, inputs: Sequence[EmbeddingInput], kind: InputType) -> list[EmbeddingInput]:
        prompts = self.get(model_id).prompts
        if not prompts:
            raise InvalidRequest(
                f"Model '{model_id}' declares no prompts, so 'input_type' does not apply to it (it embeds queries "
                "and documents alike). Leave input_type out, or use a model whose sentence-transformers config "
                "names query or document prompts.",
                param="input_type",
                code="prompts_not_declared",
            )
        if not all(isinstance(text, str) for text in inputs):
            raise InvalidRequest("'input_type' needs text inputs: its prompt is text put before each input.",
                                 param="input_type")  # fmt: skip
        prompt = declared_prompt(prompts, kind)
        return [prompt + text for text in inputs]  # type: ignore[operator]

    async def start(self) -> None:
        for embedder in list(self._embedders.values()):
            try:
                await embedder.start()
            except Exception as exc:  # an upstream may come up later; its requests say so meanwhile
                log.warning("could not start %s: %s", embedder.model_id, exc)

    def close(self) -> None:
        for embedder in self._embedders.values():
            embedder.close()
