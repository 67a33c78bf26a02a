"""Real servers on loopback: the app from create_app(settings), served by uvicorn on a free port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from service.app import create_app
from service.config import Settings, load_settings
from service.services import build_services


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
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)

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


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def server(data_dir: Path) -> Iterator[LiveServer]:
    live = start_server(data_dir)
    yield live
    live.stop()


@pytest.fixture()
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture()
def openai_client(server: LiveServer):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
