"""What every embedder offers: the protocol the registry, the API and indexes rely on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from indexes.values import normalize

# A text, or a sequence of the model's token ids without special tokens.
EmbeddingInput = str | list[int]
# What an input is, for models that embed queries and documents with different prompts (e5, bge, nomic, arctic).
InputType = Literal["query", "document"]
# The names sentence-transformers configs give each kind's prompt, in the order they are looked for.
PROMPT_NAMES: dict[InputType, tuple[str, ...]] = {
    "query": ("query", "search_query"),
    "document": ("document", "passage", "search_document", "corpus"),
}


@dataclass(frozen=True)
class EmbeddingResult:
    vectors: np.ndarray  # float32 [n, dimensions], L2-normalised
    prompt_tokens: int


class Embedder(Protocol):
    model_id: str
    dimensions: int  # native width of the vectors
    max_input_tokens: int  # the window, special tokens included
    special_tokens: int  # tokens the model adds to every input ([CLS] and [SEP]: 2), inside the window
    supports_dimensions: bool
    created: int
    owned_by: str
    # The model whose document vectors this one's queries are meant to meet (a fine-tuned query model's base);
    # None for a base model. An index may use a model as its query model only over that base.
    base_model: str | None
    prompts: dict[str, str]  # the prompts the model declares, by name (PROMPT_NAMES); {} for most

    async def start(self) -> None:
        """Called once the app runs, before requests: learn what can only be learnt then (a remote width)."""
        ...

    async def embed(
        self, inputs: Sequence[EmbeddingInput], dimensions: int | None = None, truncate: bool = False,
        bulk: bool = False,
    ) -> EmbeddingResult:  # fmt: skip
        """`bulk`: background work (a vector store's files), queued behind interactive calls whatever its size."""
        ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each model token of `text` (without special tokens), for chunking."""
        ...

    def close(self) -> None: ...


def declared_prompt(prompts: dict[str, str], kind: InputType) -> str:
    """The model's prompt for `kind` of input ("" if it declares none for it: bge prefixes queries only)."""
    return next((prompts[name] for name in PROMPT_NAMES[kind] if name in prompts), "")


def shorten(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Keep the first `dimensions` components and re-normalise, as OpenAI's text-embedding-3 models do."""
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    return normalize(vectors[:, :dimensions])
