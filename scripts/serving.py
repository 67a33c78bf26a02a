"""Starting a `vsearch serve` process on a free loopback port, for the scripts (benchmarks, evals, crash, load)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    data_dir: str, port: int, log_level: str = "warning", env: dict[str, str] | None = None
) -> subprocess.Popen:
    """A server process, returned once /health answers. `env`: settings to add to the environment (VSEARCH_*)."""
    command = [sys.executable, "-m", "service", "serve", "--port", str(port), "--data-dir", data_dir]
    process = subprocess.Popen(
        [*command, "--log-level", log_level],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("vsearch serve did not start")


@contextlib.contextmanager
def local_server() -> Iterator[tuple[str, subprocess.Popen]]:
    """A server on a temporary data dir: (its URL, its process), stopped on exit."""
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        process = start_server(data_dir, port)
        try:
            yield f"http://127.0.0.1:{port}", process
        finally:
            process.terminate()
            process.wait()
