"""What the tests share, in one place: free loopback ports, polling a condition with a deadline, servers (the app
in a thread, `vsearch serve` as a process), and fresh PostgreSQL databases. Fixtures live in conftest.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import uvicorn

from service.app import create_app
from service.config import Settings, load_settings
from service.services import build_services

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], T], what: str, timeout: float = 180, every: float = 0.05) -> T:
    """Poll `condition` until it returns something true (returned), failing after a generous `timeout`: tests wait
    for a state, never for a length of time."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(every)
    return value


class ServerThread:
    """Any ASGI app served by uvicorn on a free loopback port, in a background thread."""

    def __init__(self, app: object) -> None:
        self.app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        # A connection an upstream fault left hanging must not hold the teardown for long.
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3)  # type: ignore[arg-type]
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        wait_until(lambda: self._server.started or not self._thread.is_alive(), "the server to start", 30, every=0.01)
        if not self._server.started:
            raise RuntimeError("server did not start")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()


class LiveServer(ServerThread):
    """The vsearch app for `settings`; `services` are its domain services, for tests that look inside."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services = build_services(settings)
        super().__init__(create_app(settings, self.services))


def start_server(data_dir: Path, **settings: object) -> LiveServer:
    """Settings as the command line would give them (flat names, validated), over no environment."""
    return LiveServer(load_settings(environ={}, data_dir=data_dir, **settings))


def serve_process(data_dir: Path, env: dict[str, str] | None = None, **popen: object) -> tuple[subprocess.Popen, str]:
    """`python -m service serve` (what the console script runs) on a free port, once it answers /health; returns the
    process and its URL. `env`: settings to add (VSEARCH_*)."""
    port = free_port()
    popen = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen}
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env={**os.environ, **(env or {})}, **popen,
    )  # type: ignore[call-overload]  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, f"the server exited with {process.returncode}"
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(answers, "the server to start", timeout=120, every=0.2)
    return process, url


def new_database(postgres_url: str) -> str:
    """A URL for a fresh, empty database on the server at `postgres_url` (each test server gets its own)."""
    import uuid

    import psycopg

    name = f"vs_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    base, _, query = postgres_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
