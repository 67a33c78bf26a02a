"""The client's tests run against a live vsearch server: the project's own test fixtures, reused."""

from tests.conftest import data_dir, server, start_server  # noqa: F401  (fixtures, and the server factory)
