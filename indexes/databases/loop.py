"""The async boundary's two halves, shared by both database helpers: run() moves storage work to a worker thread;
forbid_event_loop() refuses storage work on a thread that runs an event loop (a forgotten run() is a loud bug in
the tests, not a server that stalls for SQLite's 30 s busy timeout or a PostgreSQL round trip)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from indexes.errors import BlockingCallOnLoop

T = TypeVar("T")
P = ParamSpec("P")


def forbid_event_loop(what: str, name: str = "") -> None:
    """On every search and write, so nothing is formatted unless it raises. asyncio._get_running_loop (in asyncio's
    __all__) answers None off the loop without raising."""
    if asyncio._get_running_loop() is not None:
        named = f"{what} '{name}'" if name else what
        raise BlockingCallOnLoop(f"{named} was used on the event loop's thread; await it through run()")


async def run(work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`work(*args)` in a worker thread, awaited."""
    return await asyncio.to_thread(work, *args, **kwargs)
