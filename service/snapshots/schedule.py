"""SnapshotSchedule: scheduled snapshots, background work as its own unit. Every `interval_s` each index gets a
snapshot (marked `scheduled`), and only its `keep` newest scheduled ones are kept; snapshots made through the API
are never pruned. The next one is due `interval_s` after the index's newest scheduled snapshot, so a restart does
not snapshot everything again. With replicas sharing PostgreSQL, turn it on for one of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from service.errors import VsearchError
from service.snapshots.service import SnapshotService

log = logging.getLogger("vsearch")


class SnapshotSchedule:
    def __init__(self, snapshots: SnapshotService, interval_s: float, keep: int,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.snapshots = snapshots
        self.interval_s = interval_s
        self.keep = keep
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                wait = await self.run_due()
            except Exception:  # a failed round (a full disk) is logged and tried again next round
                log.exception("scheduled snapshots failed")
                wait = self.interval_s
            await asyncio.sleep(max(1.0, min(wait, self.interval_s)))

    async def run_due(self) -> float:
        """Snapshot every index that is due, prune; returns the seconds until the next is due."""
        next_due = self.interval_s
        for index in await self.snapshots.search.index_names():
            scheduled = [s for s in await self.snapshots.list(index) if s.scheduled]
            due_in = (scheduled[0].created_at + self.interval_s - self.clock()) if scheduled else 0.0
            if due_in <= 0:
                try:
                    scheduled.insert(0, await self.snapshots.create(index, scheduled=True))
                except VsearchError as exc:  # deleted meanwhile, or damaged: the others still get theirs
                    log.warning("no scheduled snapshot of index %s: %s", index, exc.message)
                    continue
                due_in = self.interval_s
            for old in scheduled[self.keep :]:
                await self.snapshots.delete(index, old.id)
            next_due = min(next_due, due_in)
        return next_due
