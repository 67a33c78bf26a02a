"""A sentence-transformers model run in-process with onnxruntime and Hugging Face tokenizers (no torch)."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from tokenizers import Tokenizer

from service.embeddings.base import EmbeddingInput, EmbeddingResult, shorten
from service.embeddings.batcher import InferenceBatcher
from service.embeddings.model_files import ModelFiles
from service.embeddings.onnx_bert import build_bert_graph
from service.errors import InvalidRequest

log = logging.getLogger("vsearch")
INLINE_TOKENIZE_CHARS = 4096
Precision = Literal["fp32", "int8"]
INT8_SUFFIX = "-int8"  # the int8 variant's model id, and its graph file, add this


def cached_onnx_model(files: ModelFiles, cache_dir: Path, precision: Precision = "fp32") -> Path:
    """The ONNX graph for these weights, built once and kept in the data dir (keyed by the weights' hash). The
    int8 graph is the fp32 one, quantized."""
    variant = INT8_SUFFIX if precision == "int8" else ""
    path = cache_dir / f"{files.model_id}-{files.weights_sha256[:16]}-{files.pooling}{variant}.onnx"
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    if precision == "int8":
        log.info("quantizing the ONNX graph of %s into %s", files.model_id, path)
        quantize_int8(cached_onnx_model(files, cache_dir), partial)
    else:
        log.info("building the ONNX graph of %s into %s", files.model_id, path)
        partial.write_bytes(build_bert_graph(files.weights, files.config, pooling=files.pooling).SerializeToString())
    partial.replace(path)  # atomic: a crash mid-write never leaves a truncated graph behind
    return path


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization, per channel: weights int8 once, activations quantized per batch. Measured here
    against per-tensor and reduced-range variants (docs/architecture.md): per channel keeps the vectors at cosine
    0.984 or more to fp32, per tensor fell to 0.86 for some passages."""
    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=True,
        # The fused contrib ops (Attention, SkipLayerNormalization) defeat shape inference: their tensors are fp32.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class InferenceOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How a local model's sessions use the cores."""

    threads: int = 0  # intra-op threads shared by the workers (0: every core this process may use)
    workers: int = 1  # sessions running batches side by side
    # Whether onnxruntime's threads spin waiting for work during a run; they stop when it returns (spinning on
    # between runs took the core hybrid's lexical search runs on: hybrid 1.45-1.56x dense, then 1.46-1.51x, and
    # 1.37-1.41x with SQLite 3.51's faster bm25; README). On by
    # default: it gives the lowest latency to one query (/v1/embeddings p50 3.1 vs 4.2 ms; SciFact dense 6.8 vs
    # 7.8 ms, 2 cores, one client). Off, the cores are left to whatever runs beside inference: hybrid's lexical
    # search (8.9 vs 9.2 ms) and other requests (8 clients: dense 191 vs 180 q/s, hybrid 140 vs 117).
    spinning: bool = True


class LocalEmbedder:
    supports_dimensions = True  # by truncation and re-normalisation (see README: not Matryoshka-trained)
    owned_by = "vsearch"
    base_model = None

    def __init__(
        self,
        files: ModelFiles,
        cache_dir: Path,
        precision: Precision = "fp32",
        inference: InferenceOptions = InferenceOptions(),  # noqa: B008 (frozen)
    ) -> None:
        """`precision` int8: the quantized variant, served as its own model (`{id}-int8`) so that no index mixes
        the two kinds of vectors; its graph is made on first use (about 2 s), then kept in the data dir."""
        self.model_id = files.model_id + (INT8_SUFFIX if precision == "int8" else "")
        self.dimensions = int(files.config["hidden_size"])
        self.prompts = files.prompts
        self.max_input_tokens = files.max_seq_length  # the window, special tokens included
        self.vocab_size = int(files.config["vocab_size"])
        self.created = int(files.weights.stat().st_mtime)

        self.tokenizer = Tokenizer.from_file(str(files.tokenizer))
        # The shipped tokenizer.json pads and truncates at 128; we frame, check and pad ourselves.
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        framed = self.tokenizer.encode("", add_special_tokens=True).ids
        self._prefix, self._suffix = framed[:1], framed[1:]  # [CLS] and [SEP] for BERT-family models
        self.pad_id = int(files.config.get("pad_token_id", 0))

        self._graph = lambda: cached_onnx_model(files, cache_dir, precision)
        workers = inference.workers
        self._threads = max(1, (inference.threads or available_cores()) // workers)  # each worker's share
        self._spinning = inference.spinning
        self._sessions: list[ort.InferenceSession | None] = [None] * workers
        self._session_lock = threading.Lock()
        if precision == "fp32":
            self._load(0)  # a model that cannot load stops the start, with its reason
        forwards = [functools.partial(self.forward, worker=worker) for worker in range(workers)]
        self._batcher = InferenceBatcher(forwards, self.dimensions)

    def _load(self, worker: int) -> ort.InferenceSession:
        with self._session_lock:
            session = self._sessions[worker]
            if session is None:
                options = ort.SessionOptions()
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                options.intra_op_num_threads = self._threads
                options.inter_op_num_threads = 1
                if self._spinning:  # while a run lasts, never after it: between runs the cores are free for other work
                    options.add_session_config_entry("session.force_spinning_stop", "1")
                else:  # idle threads sleep instead of spinning on the cores (InferenceOptions)
                    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                session = ort.InferenceSession(str(self._graph()), options, providers=["CPUExecutionProvider"])
                self._sessions[worker] = session
            return session

    @property
    def special_tokens(self) -> int:
        return len(self._prefix) + len(self._suffix)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids without special tokens."""
        if len(texts) == 1:  # skip the batch path's thread pool: a single query is the latency-critical case
            return [self.tokenizer.encode(texts[0], add_special_tokens=False).ids]
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token of `text` (special tokens excluded), for chunking by tokens."""
        return self.tokenizer.encode(text, add_special_tokens=False).offsets

    async def start(self) -> None:
        pass  # built and loaded in __init__

    def forward(self, batch: list[list[int]], worker: int = 0) -> np.ndarray:
        """One padded batch of framed sequences through worker `worker`'s session; runs on its thread."""
        width = max(len(ids) for ids in batch)
        input_ids = np.full((len(batch), width), self.pad_id, np.int64)
        attention_mask = np.zeros((len(batch), width), np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        session = self._sessions[worker] or self._load(worker)
        return session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]

    def _frame(self, inputs: Sequence[EmbeddingInput], truncate: bool) -> list[list[int]]:
        texts = [(i, text) for i, text in enumerate(inputs) if isinstance(text, str)]
        token_ids: list[list[int]] = [ids if not isinstance(ids, str) else [] for ids in inputs]
        for (i, _), ids in zip(texts, self.tokenize([text for _, text in texts]), strict=True):
            token_ids[i] = ids
        room = self.max_input_tokens - self.special_tokens
        framed = []
        for i, ids in enumerate(token_ids):
            if not isinstance(inputs[i], str) and any(not 0 <= t < self.vocab_size for t in ids):
                bad = next(t for t in ids if not 0 <= t < self.vocab_size)
                raise InvalidRequest(
                    f"Invalid token id {bad} in input {i}: {self.model_id} has a vocabulary of {self.vocab_size} "
                    f"tokens (ids 0 to {self.vocab_size - 1}). Token ids must come from this model's own "
                    "tokenizer; LangChain's OpenAIEmbeddings sends tiktoken's unless it is given "
                    "check_embedding_ctx_length=False (then it sends text).",
                    param="input",
                )
            if len(ids) > room:
                if not truncate:
                    requested = len(ids) + self.special_tokens
                    raise InvalidRequest(
                        f"This model's maximum context length is {self.max_input_tokens} tokens, however you "
                        f"requested {requested} tokens ({requested} in your prompt; input {i}). "
                        "Please reduce your prompt.",
                        param="input",
                    )
                ids = ids[:room]
            framed.append(self._prefix + ids + self._suffix)
        return framed

    async def embed(
        self, inputs: Sequence[EmbeddingInput], dimensions: int | None = None, truncate: bool = False,
        bulk: bool = False,
    ) -> EmbeddingResult:  # fmt: skip
        # Tokenising a few short texts takes microseconds; anything larger runs off the event loop.
        if len(inputs) <= 16 and sum(len(text) for text in inputs) <= INLINE_TOKENIZE_CHARS:
            framed = self._frame(inputs, truncate)
        else:
            framed = await asyncio.to_thread(self._frame, inputs, truncate)
        vectors = await self._batcher.run(framed, bulk)
        return EmbeddingResult(shorten(vectors, dimensions), sum(len(ids) for ids in framed))

    def close(self) -> None:
        self._batcher.close()
