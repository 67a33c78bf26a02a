"""Runs a model's forward pass on one worker thread, packing the sequences of concurrent requests into shared,
length-sorted batches, so the event loop never blocks and many small requests cost about as much as one."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

Forward = Callable[[list[list[int]]], np.ndarray]


@dataclass(eq=False)
class _Job:
    sequences: list[list[int]]
    out: np.ndarray
    future: asyncio.Future[np.ndarray]
    cursor: int = 0  # next sequence to schedule
    pending: int = field(init=False)  # sequences scheduled or waiting, not yet computed

    def __post_init__(self) -> None:
        self.pending = len(self.sequences)


class InferenceBatcher:
    def __init__(
        self,
        forward: Forward,
        dimensions: int,
        batch_size: int = 32,
        batch_tokens: int = 1024,
        cycle_tokens: int = 16384,
    ) -> None:
        self._forward = forward
        self._dimensions = dimensions
        self._batch_size = batch_size
        # Padded tokens per forward pass: long sequences run in smaller batches, whose attention matrices stay in
        # cache (measured here: 4 x 256 tokens is 10% faster than 32 x 256, and 4 x 128 16% faster than 32 x 128).
        self._batch_tokens = batch_tokens
        # Tokens computed per trip to the worker: bounds how long a small request waits behind a large one.
        self._cycle_tokens = cycle_tokens
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._jobs: deque[_Job] = deque()
        self._drainer: asyncio.Task[None] | None = None

    async def run(self, sequences: list[list[int]]) -> np.ndarray:
        """Vectors for `sequences` (each already framed with its special tokens), in order."""
        loop = asyncio.get_running_loop()
        job = _Job(sequences, np.empty((len(sequences), self._dimensions), np.float32), loop.create_future())
        if not sequences:
            return job.out
        self._jobs.append(job)
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return await job.future

    def forward_sorted(self, sequences: list[list[int]]) -> np.ndarray:
        """Sort by length so each batch pads little, run batch by batch, restore the order."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out = np.empty((len(sequences), self._dimensions), np.float32)
        chosen: list[int] = []
        for i in order:
            # Sorted ascending: this sequence sets the padded width of the batch it joins.
            if chosen and (
                len(chosen) == self._batch_size or len(sequences[i]) * (len(chosen) + 1) > self._batch_tokens
            ):
                out[chosen] = self._forward([sequences[j] for j in chosen])
                chosen = []
            chosen.append(i)
        if chosen:
            out[chosen] = self._forward([sequences[j] for j in chosen])
        return out

    def _take_cycle(self) -> list[tuple[_Job, int]]:
        """Round-robin over waiting jobs, each getting an equal share of the cycle's token budget."""
        while self._jobs and self._jobs[0].future.done():  # cancelled by a disconnected client
            self._jobs.popleft()
        taken: list[tuple[_Job, int]] = []
        if not self._jobs:
            return taken
        share = max(1, self._cycle_tokens // len(self._jobs))
        for job in list(self._jobs):
            tokens = 0
            while job.cursor < len(job.sequences) and (tokens < share or tokens == 0):
                tokens += len(job.sequences[job.cursor])
                taken.append((job, job.cursor))
                job.cursor += 1
            if job.cursor == len(job.sequences):
                self._jobs.remove(job)
        return taken

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while work := self._take_cycle():
            try:
                vectors = await loop.run_in_executor(
                    self._executor, self.forward_sorted, [job.sequences[i] for job, i in work]
                )
            except Exception as exc:
                for job in {job for job, _ in work}:
                    if job in self._jobs:
                        self._jobs.remove(job)
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for (job, i), vector in zip(work, vectors, strict=True):
                job.out[i] = vector
                job.pending -= 1
                if job.pending == 0 and not job.future.done():
                    job.future.set_result(job.out)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
