"""POST /v1/embeddings: OpenAI's request and response, translated to and from the embedder registry."""

from __future__ import annotations

import base64

from litestar import post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from service.api.errors import error_responses
from service.embeddings.base import EmbeddingInput
from service.embeddings.registry import EmbedderRegistry
from service.errors import InvalidRequest
from service.schemas import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage

TOKEN_IDS_REFUSED = (
    "This server accepts only text as 'input', not token ids (accept_token_ids is off). If this comes from "
    "LangChain's OpenAIEmbeddings, pass check_embedding_ctx_length=False so that it sends text."
)


def embedding_inputs(
    raw: str | list[str | int | list[int]], max_inputs: int, accept_token_ids: bool = True
) -> list[EmbeddingInput]:
    """OpenAI's four input forms, as a list of texts or token-id lists."""
    if isinstance(raw, str):
        items: list[EmbeddingInput] = [raw]
    elif not raw:
        raise InvalidRequest("'input' must not be an empty array.", param="input")
    elif all(isinstance(item, str) for item in raw):
        items = list(raw)  # type: ignore[arg-type]
    elif all(isinstance(item, int) for item in raw):
        items = [list(raw)]  # type: ignore[arg-type]
    elif all(isinstance(item, list) for item in raw):
        items = list(raw)  # type: ignore[arg-type]
    else:
        raise InvalidRequest(
            "'input' must be a string, an array of strings, an array of integers (token ids) or an array of "
            "arrays of integers; its elements must all be of one of those kinds.",
            param="input",
        )
    if not accept_token_ids and not all(isinstance(item, str) for item in items):
        raise InvalidRequest(TOKEN_IDS_REFUSED, param="input", code="token_ids_not_accepted")
    if len(items) > max_inputs:
        raise InvalidRequest(
            f"'input' has {len(items)} items; at most {max_inputs} inputs are allowed per request.", param="input"
        )
    for i, item in enumerate(items):
        if len(item) == 0:
            what = "an empty string" if isinstance(item, str) else "an empty array of tokens"
            raise InvalidRequest(f"'input[{i}]' is {what}; every input must be non-empty.", param="input")
    return items


@post("/v1/embeddings", responses=error_responses(400, 404, 502, 503, 504), status_code=200,
      summary="Create embeddings", tags=["embeddings"])  # fmt: skip
async def create_embeddings(
    data: JSONBody[EmbeddingRequest],
    registry: NamedDependency[EmbedderRegistry],
    max_inputs: NamedDependency[int],
    accept_token_ids: NamedDependency[bool],
) -> EmbeddingList:
    inputs = embedding_inputs(data.input, max_inputs, accept_token_ids)
    result = await registry.embed(data.model, inputs, data.dimensions, input_type=data.input_type)
    if data.encoding_format == "base64":
        # Little-endian float32, as the openai client decodes it.
        encoded: list[list[float] | str] = [
            base64.b64encode(vector.astype("<f4").tobytes()).decode() for vector in result.vectors
        ]
    else:
        encoded = result.vectors.tolist()
    return EmbeddingList(
        data=[Embedding(index=i, embedding=vector) for i, vector in enumerate(encoded)],
        model=data.model,
        usage=EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
    )
